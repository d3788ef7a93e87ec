/* test_gw_json.c - the JSON gateway's converter (services/gatewayd/gw_json.c): requests from
 * JSON as etcd 3.4's grpc-gateway reads them (texts of its errors included, as checked with
 * curl against etcd 3.4.23), responses to JSON as it writes them.
 *
 * CMake links a unit test with the library its name names (test_h2*, test_gateway* get
 * gatewayd's); gw_json.c needs only protobuf-c and the generated protos of cairn_shared, so
 * it is compiled into this test directly. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "../../services/gatewayd/gw_json.c"

static Etcdserverpb__RangeRequest *range_from(const char *json, char *err)
{
    uint8_t *pb;
    size_t n;
    err[0] = 0;
    int rc = gw_json_to_pb(&etcdserverpb__range_request__descriptor, json, strlen(json), &pb, &n, err, 256);
    if (rc)
        return NULL;
    Etcdserverpb__RangeRequest *r = etcdserverpb__range_request__unpack(NULL, n, pb);
    free(pb);
    cr_assert_not_null(r);
    return r;
}

static void expect_err(const ProtobufCMessageDescriptor *d, const char *json, const char *want)
{
    uint8_t *pb = NULL;
    size_t n;
    char err[256];
    int rc = gw_json_to_pb(d, json, strlen(json), &pb, &n, err, sizeof err);
    cr_assert_eq(rc, CAIRN_EINVAL, "%s: rc %d", json, rc);
    cr_assert_null(pb);
    cr_assert_str_eq(err, want, "%s", json);
}

Test(gw_json, range_request_fields)
{
    char err[256];
    Etcdserverpb__RangeRequest *r =
        range_from("{\"key\":\"Zm9v\",\"range_end\":\"Zm9w\",\"limit\":\"10\",\"revision\":7,"
                   "\"sort_order\":\"DESCEND\",\"sort_target\":2,\"keys_only\":true,\"bogus\":[1,{}],"
                   "\"maxCreateRevision\":\" 9 \",\"count_only\":null}",
                   err);
    cr_assert_not_null(r, "%s", err);
    cr_assert_eq(r->key.len, 3);
    cr_assert(memcmp(r->key.data, "foo", 3) == 0);
    cr_assert(r->range_end.len == 3 && memcmp(r->range_end.data, "fop", 3) == 0);
    cr_assert_eq(r->limit, 10);
    cr_assert_eq(r->revision, 7);
    cr_assert_eq(r->sort_order, ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__DESCEND);
    cr_assert_eq(r->sort_target, ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__CREATE);
    cr_assert(r->keys_only);
    cr_assert_eq(r->max_create_revision, 9);
    cr_assert(!r->count_only);
    etcdserverpb__range_request__free_unpacked(r, NULL);
}

Test(gw_json, empty_and_trailing)
{
    char err[256];
    const char *ok[] = {"", "  \n", "{}", "null", "{\"key\":\"YQ==\"} trailing", "{\"key\":\"YQ==\",\"key\":\"Yg==\"}"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        Etcdserverpb__RangeRequest *r = range_from(ok[i], err);
        cr_assert_not_null(r, "%s: %s", ok[i], err);
        if (i == 5)
            cr_assert(r->key.len == 1 && r->key.data[0] == 'b', "the last of a name given twice wins");
        etcdserverpb__range_request__free_unpacked(r, NULL);
    }
}

Test(gw_json, go_syntax_errors)
{
    const ProtobufCMessageDescriptor *d = &etcdserverpb__range_request__descriptor;
    expect_err(d, "{\"key\":\"Zm9v\"", "unexpected EOF");
    expect_err(d, "x", "invalid character 'x' looking for beginning of value");
    expect_err(d, "{\"key\":\"Zm9v\",}", "invalid character '}' looking for beginning of object key string");
    expect_err(d, "{\"key\" \"Zm9v\"}", "invalid character '\"' after object key");
    expect_err(d, "{\"key\":\"Zm9v\" \"limit\":1}", "invalid character '\"' after object key:value pair");
    expect_err(d, "{\"limit\":01}", "invalid character '1' after object key:value pair");
    expect_err(d, "{\"keys_only\":tru}", "invalid character '}' in literal true (expecting 'e')");
    expect_err(d, "{\"key\":\"a\tb\"}", "invalid character '\\t' in string literal");
    expect_err(d, "{\"key\":\"\\q\"}", "invalid character 'q' in string escape code");
    expect_err(d, "{\"a\":[1 2]}", "invalid character '2' after array element");
    expect_err(d, "{\"a\":-x}", "invalid character 'x' in numeric literal");
    expect_err(d, "[]", "json: cannot unmarshal array into Go value of type map[string]json.RawMessage");
}

Test(gw_json, go_type_errors)
{
    const ProtobufCMessageDescriptor *d = &etcdserverpb__range_request__descriptor;
    expect_err(d, "{\"key\":12}", "json: cannot unmarshal number into Go value of type []uint8");
    expect_err(d, "{\"limit\":1.5}", "json: cannot unmarshal number 1.5 into Go value of type int64");
    expect_err(d, "{\"limit\":\"1e2\"}", "json: cannot unmarshal number 1e2 into Go value of type int64");
    expect_err(d, "{\"limit\":\"x\"}", "invalid character 'x' looking for beginning of value");
    expect_err(d, "{\"limit\":\"01\"}", "invalid character '1' after top-level value");
    expect_err(d, "{\"limit\":\"\"}", "unexpected end of JSON input");
    expect_err(d, "{\"limit\":\"9223372036854775808\"}",
               "json: cannot unmarshal number 9223372036854775808 into Go value of type int64");
    expect_err(d, "{\"keys_only\":\"true\"}", "json: cannot unmarshal string into Go value of type bool");
    expect_err(d, "{\"sort_order\":\"descend\"}",
               "unknown value \"descend\" for enum etcdserverpb.RangeRequest_SortOrder");
    expect_err(d, "{\"key\":\"Y\"}", "illegal base64 data at input byte 0");
    expect_err(d, "{\"key\":\"YQ\"}", "illegal base64 data at input byte 0");
    expect_err(d, "{\"key\":\"Y Q==\"}", "illegal base64 data at input byte 1");
    expect_err(d, "{\"key\":\"YQ==YQ==\"}", "illegal base64 data at input byte 4");
    expect_err(&etcdserverpb__txn_request__descriptor, "{\"success\":{}}",
               "json: cannot unmarshal object into Go value of type []json.RawMessage");
    expect_err(&etcdserverpb__txn_request__descriptor, "{\"success\":[{\"request_put\":[]}]}",
               "json: cannot unmarshal array into Go value of type map[string]json.RawMessage");
    expect_err(&etcdserverpb__lease_grant_request__descriptor, "{\"TTL\":4294967296000000000000}",
               "json: cannot unmarshal number 4294967296000000000000 into Go value of type int64");
}

Test(gw_json, txn_request_oneofs)
{
    const char *j = "{\"compare\":[{\"key\":\"YQ==\",\"target\":\"MOD\",\"mod_revision\":0}],"
                    "\"success\":[{\"request_put\":{\"key\":\"YQ==\",\"value\":\"MQ==\"}},{\"request_range\":{}}],"
                    "\"failure\":[{\"requestDeleteRange\":{\"key\":\"YQ==\",\"prev_kv\":true}}]}";
    uint8_t *pb;
    size_t n;
    char err[256];
    cr_assert_eq(gw_json_to_pb(&etcdserverpb__txn_request__descriptor, j, strlen(j), &pb, &n, err, sizeof err), 0,
                 "%s", err);
    Etcdserverpb__TxnRequest *t = etcdserverpb__txn_request__unpack(NULL, n, pb);
    free(pb);
    cr_assert_not_null(t);
    cr_assert_eq(t->n_compare, 1);
    /* a oneof member given at its zero value is still the member set */
    cr_assert_eq(t->compare[0]->target_union_case, ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION);
    cr_assert_eq(t->compare[0]->target, ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD);
    cr_assert_eq(t->n_success, 2);
    cr_assert_eq(t->success[0]->request_case, ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT);
    cr_assert_eq(t->success[1]->request_case, ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE);
    cr_assert_eq(t->n_failure, 1);
    cr_assert_eq(t->failure[0]->request_case, ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE);
    cr_assert(t->failure[0]->request_delete_range->prev_kv);
    etcdserverpb__txn_request__free_unpacked(t, NULL);
}

Test(gw_json, depth_bounded)
{
    size_t depth = GW_JSON_MAX_DEPTH + 10;
    char *j = malloc(depth * 2 + 16);
    size_t n = 0;
    for (size_t i = 0; i < depth; i++)
        j[n++] = '[';
    for (size_t i = 0; i < depth; i++)
        j[n++] = ']';
    char *body = malloc(n + 16);
    snprintf(body, n + 16, "{\"a\":%.*s}", (int)n, j);
    expect_err(&etcdserverpb__range_request__descriptor, body, "exceeded max depth");
    free(j);
    free(body);
}

static char *to_json(const ProtobufCMessageDescriptor *d, const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *pb = malloc(n ? n : 1);
    protobuf_c_message_pack(m, pb);
    char *out;
    size_t len;
    cr_assert_eq(gw_json_from_pb(d, pb, n, &out, &len), 0);
    cr_assert_eq(strlen(out), len);
    free(pb);
    return out;
}

Test(gw_json, range_response_as_etcd)
{
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    h.cluster_id = 7801232528081817440ULL;
    h.member_id = 13458989633860879742ULL;
    h.revision = 3;
    h.raft_term = 2;
    Mvccpb__KeyValue kv = MVCCPB__KEY_VALUE__INIT;
    kv.key.data = (uint8_t *)"foo";
    kv.key.len = 3;
    kv.value.data = (uint8_t *)"bar";
    kv.value.len = 3;
    kv.create_revision = 2;
    kv.mod_revision = 3;
    kv.version = 2;
    Mvccpb__KeyValue *kvs[] = {&kv};
    Etcdserverpb__RangeResponse r = ETCDSERVERPB__RANGE_RESPONSE__INIT;
    r.header = &h;
    r.kvs = kvs;
    r.n_kvs = 1;
    r.count = 1;
    char *j = to_json(&etcdserverpb__range_response__descriptor, &r.base);
    cr_assert_str_eq(j, "{\"header\":{\"cluster_id\":\"7801232528081817440\",\"member_id\":\"13458989633860879742\","
                        "\"revision\":\"3\",\"raft_term\":\"2\"},\"kvs\":[{\"key\":\"Zm9v\",\"create_revision\":\"2\","
                        "\"mod_revision\":\"3\",\"version\":\"2\",\"value\":\"YmFy\"}],\"count\":\"1\"}");
    free(j);
    Etcdserverpb__RangeResponse e = ETCDSERVERPB__RANGE_RESPONSE__INIT;
    j = to_json(&etcdserverpb__range_response__descriptor, &e.base);
    cr_assert_str_eq(j, "{}");
    free(j);
}

Test(gw_json, response_types)
{
    /* 32-bit as numbers, enums by name, strings escaped as Go does */
    Etcdserverpb__HashResponse hr = ETCDSERVERPB__HASH_RESPONSE__INIT;
    hr.hash = 1581147581;
    char *j = to_json(&etcdserverpb__hash_response__descriptor, &hr.base);
    cr_assert_str_eq(j, "{\"hash\":1581147581}");
    free(j);
    Etcdserverpb__Member m = ETCDSERVERPB__MEMBER__INIT;
    m.id = 1;
    m.name = "a<b>&\"c\"\n\x01";
    m.islearner = 1;
    j = to_json(&etcdserverpb__member__descriptor, &m.base);
    cr_assert_str_eq(j, "{\"ID\":\"1\",\"name\":\"a\\u003cb\\u003e\\u0026\\\"c\\\"\\n\\u0001\",\"isLearner\":true}");
    free(j);
    Mvccpb__Event ev = MVCCPB__EVENT__INIT;
    ev.type = MVCCPB__EVENT__EVENT_TYPE__DELETE;
    j = to_json(&mvccpb__event__descriptor, &ev.base);
    cr_assert_str_eq(j, "{\"type\":\"DELETE\"}");
    free(j);
    Etcdserverpb__LeaseTimeToLiveResponse t = ETCDSERVERPB__LEASE_TIME_TO_LIVE_RESPONSE__INIT;
    t.id = 99;
    t.ttl = -1;
    j = to_json(&etcdserverpb__lease_time_to_live_response__descriptor, &t.base);
    cr_assert_str_eq(j, "{\"ID\":\"99\",\"TTL\":\"-1\"}");
    free(j);
}

Test(gw_json, round_trip_base64)
{
    /* every length mod 3, every byte value */
    for (size_t len = 0; len < 260; len += 1) {
        uint8_t v[260];
        for (size_t i = 0; i < len; i++)
            v[i] = (uint8_t)(i * 7 + len);
        Etcdserverpb__PutRequest p = ETCDSERVERPB__PUT_REQUEST__INIT;
        p.key.data = (uint8_t *)"k";
        p.key.len = 1;
        p.value.data = v;
        p.value.len = len;
        char *j = to_json(&etcdserverpb__put_request__descriptor, &p.base);
        uint8_t *pb;
        size_t n;
        char err[256];
        cr_assert_eq(gw_json_to_pb(&etcdserverpb__put_request__descriptor, j, strlen(j), &pb, &n, err, sizeof err), 0,
                     "%s: %s", j, err);
        Etcdserverpb__PutRequest *q = etcdserverpb__put_request__unpack(NULL, n, pb);
        cr_assert_not_null(q);
        cr_assert_eq(q->value.len, len);
        cr_assert(len == 0 || memcmp(q->value.data, v, len) == 0);
        etcdserverpb__put_request__free_unpacked(q, NULL);
        free(pb);
        free(j);
    }
}

Test(gw_json, errors_and_routes)
{
    size_t n;
    char *e = gw_json_error(11, "etcdserver: mvcc: required revision has been compacted", &n);
    cr_assert_str_eq(e, "{\"error\":\"etcdserver: mvcc: required revision has been compacted\",\"message\":"
                        "\"etcdserver: mvcc: required revision has been compacted\",\"code\":11}");
    cr_assert_eq(strlen(e), n);
    free(e);
    cr_assert_eq(gw_json_http_status(3), 400);
    cr_assert_eq(gw_json_http_status(5), 404);
    cr_assert_eq(gw_json_http_status(9), 412);
    cr_assert_eq(gw_json_http_status(11), 400);
    cr_assert_eq(gw_json_http_status(14), 503);
    const ProtobufCMessageDescriptor *in, *out;
    cr_assert_eq(gw_json_method("/etcdserverpb.KV/Range", &in, &out), 0);
    cr_assert_eq(in, &etcdserverpb__range_request__descriptor);
    cr_assert_eq(out, &etcdserverpb__range_response__descriptor);
    cr_assert_eq(gw_json_method("/v3lockpb.Lock/Unlock", &in, &out), 0);
    cr_assert_eq(gw_json_method("/etcdserverpb.KV/Nope", &in, &out), -1);
    cr_assert_eq(gw_json_method("/etcdserverpb.K/Range", &in, &out), -1);
}

/* A client stream's body (POST /v3/watch, /v3/lease/keepalive) holds a sequence of requests,
 * read one at a time as grpc-gateway's json.Decoder does: each converts on its own, the end
 * (only white space left) is io.EOF, a bad one stops the reading with Go's text. */
Test(gw_json, stream_body_sequence)
{
    const char *body = " {\"ID\":7}\n{\"ID\":\"8\"}{} {\"ID\":\"x\"} {\"ID\":9}";
    const ProtobufCMessageDescriptor *d = &etcdserverpb__lease_keep_alive_request__descriptor;
    size_t off = 0, used = 0, len = strlen(body);
    int64_t want[] = {7, 8, 0};
    for (int i = 0; i < 3; i++) {
        uint8_t *pb = NULL;
        size_t n = 0;
        char err[256];
        int rc = gw_json_to_pb_next(d, body + off, len - off, &used, &pb, &n, err, sizeof err);
        cr_assert_eq(rc, 0, "request %d: %s", i, err);
        Etcdserverpb__LeaseKeepAliveRequest *r = etcdserverpb__lease_keep_alive_request__unpack(NULL, n, pb);
        cr_assert_not_null(r);
        cr_assert_eq(r->id, want[i]);
        etcdserverpb__lease_keep_alive_request__free_unpacked(r, NULL);
        free(pb);
        off += used;
    }
    uint8_t *pb = NULL;
    size_t n = 0;
    char err[256];
    cr_assert_eq(gw_json_to_pb_next(d, body + off, len - off, &used, &pb, &n, err, sizeof err), CAIRN_EINVAL);
    cr_assert_null(pb);
    cr_assert_str_eq(err, "invalid character 'x' looking for beginning of value");
    /* the end: nothing, or only white space */
    cr_assert_eq(gw_json_to_pb_next(d, " \n\t ", 4, &used, &pb, &n, err, sizeof err), CAIRN_ENOTFOUND);
    cr_assert_eq(gw_json_to_pb_next(d, "", 0, &used, &pb, &n, err, sizeof err), CAIRN_ENOTFOUND);
    cr_assert_null(pb);
    /* a truncated request is Go's "unexpected EOF" */
    cr_assert_eq(gw_json_to_pb_next(d, "{\"ID\":", 6, &used, &pb, &n, err, sizeof err), CAIRN_EINVAL);
    cr_assert_str_eq(err, "unexpected EOF");
}

/* The last object of a stream that fails: grpc-gateway 1.x's streamChunk of the error. */
Test(gw_json, stream_error_chunk)
{
    size_t n = 0;
    char *j = gw_json_stream_error(14, "etcdserver: no leader", &n);
    cr_assert_str_eq(j, "{\"error\":{\"grpc_code\":14,\"http_code\":503,\"message\":\"etcdserver: no leader\","
                        "\"http_status\":\"Service Unavailable\"}}");
    cr_assert_eq(n, strlen(j));
    free(j);
    j = gw_json_stream_error(8, "a <b>", NULL);
    cr_assert_str_eq(j, "{\"error\":{\"grpc_code\":8,\"http_code\":429,\"message\":\"a \\u003cb\\u003e\","
                        "\"http_status\":\"Too Many Requests\"}}");
    free(j);
}
