/* fuzz_proto.c - libFuzzer target: every protobuf request the gateway accepts.
 *
 * The gateway takes each method's request from a client either as protobuf bytes (gRPC) or as
 * JSON (the JSON gateway, gw_json.c), runs the KV checks on it (shared/cairn_kvcheck.c) and
 * proposes it. Byte 0 of the input picks the method (in the order of the services' protobuf-c
 * descriptors, the same ones gw_json_method serves), byte 1 the form of the rest:
 *   even: protobuf bytes - unpacked, checked (cairn_kvcheck_request for the KV/lease/alarm
 *         kinds), converted to JSON (gw_json_from_pb) and that JSON read back (gw_json_to_pb),
 *         which must succeed: what we print, etcd's clients send back;
 *   odd:  JSON text - gw_json_to_pb (and gw_json_to_pb_next over the body as a stream of
 *         values), then the protobuf path above on what it produced.
 * The method's response descriptor gets the bytes too (gw_json_from_pb), since the same
 * printer turns stored's answers into JSON.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <protobuf-c/protobuf-c.h>

#include "cairn_err.h"
#include "cairn_kvcheck.h"
#include "cairn_log.h"
#include "gw_json.h"
#include "rpc.pb-c.h"
#include "v3election.pb-c.h"
#include "v3lock.pb-c.h"

static const ProtobufCServiceDescriptor *const services[] = {
    &etcdserverpb__kv__descriptor,          &etcdserverpb__watch__descriptor, &etcdserverpb__lease__descriptor,
    &etcdserverpb__cluster__descriptor,     &etcdserverpb__maintenance__descriptor,
    &etcdserverpb__auth__descriptor,        &v3lockpb__lock__descriptor,       &v3electionpb__election__descriptor,
};

typedef struct {
    const ProtobufCMessageDescriptor *in, *out;
    int kind; /* cairn_req_kind_t, 0: no kvcheck */
} method_t;

static method_t methods[256];
static size_t n_methods;

static int kind_of(const ProtobufCMessageDescriptor *d)
{
    if (d == &etcdserverpb__range_request__descriptor) return CAIRN_REQ_RANGE;
    if (d == &etcdserverpb__put_request__descriptor) return CAIRN_REQ_PUT;
    if (d == &etcdserverpb__delete_range_request__descriptor) return CAIRN_REQ_DELETE_RANGE;
    if (d == &etcdserverpb__txn_request__descriptor) return CAIRN_REQ_TXN;
    if (d == &etcdserverpb__compaction_request__descriptor) return CAIRN_REQ_COMPACT;
    if (d == &etcdserverpb__lease_grant_request__descriptor) return CAIRN_REQ_LEASE_GRANT;
    if (d == &etcdserverpb__lease_revoke_request__descriptor) return CAIRN_REQ_LEASE_REVOKE;
    if (d == &etcdserverpb__lease_time_to_live_request__descriptor) return CAIRN_REQ_LEASE_TTL;
    if (d == &etcdserverpb__alarm_request__descriptor) return CAIRN_REQ_ALARM;
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    cairn_log_set_level(CAIRN_LOG_FATAL);
    for (size_t i = 0; i < sizeof services / sizeof services[0]; i++)
        for (unsigned k = 0; k < services[i]->n_methods && n_methods < 256; k++) {
            const ProtobufCMethodDescriptor *md = &services[i]->methods[k];
            methods[n_methods++] = (method_t){md->input, md->output, kind_of(md->input)};
        }
    return 0;
}

/* Does the message of d nest txns (TxnRequest, or one that carries RequestOps)? Those must pass
 * cairn_kvcheck_txn_depth before protobuf-c unpacks them (its unpack recurses per level), as
 * the gateway does. */
static int nests_txn(const ProtobufCMessageDescriptor *d)
{
    return d == &etcdserverpb__txn_request__descriptor;
}

static void pb_path(const method_t *m, const uint8_t *pb, size_t len, int from_json)
{
    if (nests_txn(m->in) && cairn_kvcheck_txn_depth(pb, len) < 0) {
        if (from_json)
            abort(); /* our own JSON reader produced a txn the depth check refuses */
        return;
    }
    const char *msg = NULL;
    if (m->kind)
        (void)cairn_kvcheck_request(m->kind, pb, len, 0, &msg);
    ProtobufCMessage *u = protobuf_c_message_unpack(m->in, NULL, len, pb);
    if (!u) {
        if (from_json)
            abort(); /* gw_json_to_pb produced bytes protobuf-c cannot read */
        return;
    }
    protobuf_c_message_free_unpacked(u, NULL);

    char *json = NULL;
    size_t jlen = 0;
    if (gw_json_from_pb(m->in, pb, len, &json, &jlen) == 0) {
        uint8_t *back = NULL;
        size_t blen = 0;
        char err[256];
        int rc = gw_json_to_pb(m->in, json, jlen, &back, &blen, err, sizeof err);
        if (rc != 0 && rc != CAIRN_ENOMEM)
            abort(); /* the JSON we print is not JSON we read */
        free(back);
        free(json);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2 || n_methods == 0)
        return 0;
    const method_t *m = &methods[data[0] % n_methods];
    int json_form = data[1] & 1;
    size_t len = size - 2;
    /* An exact-size copy, so ASan catches a read past the body. */
    uint8_t *body = malloc(len ? len : 1);
    if (!body)
        return 0;
    memcpy(body, data + 2, len);

    if (!json_form) {
        pb_path(m, body, len, 0);
        /* the response printer, on the same bytes (stored's answers are protobuf too); a
           TxnResponse nests like a TxnRequest and comes only from our own stored */
        if (m->out != &etcdserverpb__txn_response__descriptor) {
            char *json = NULL;
            size_t jlen = 0;
            if (gw_json_from_pb(m->out, body, len, &json, &jlen) == 0)
                free(json);
        }
    } else {
        uint8_t *pb = NULL;
        size_t pblen = 0;
        char err[256];
        if (gw_json_to_pb(m->in, (const char *)body, len, &pb, &pblen, err, sizeof err) == 0) {
            pb_path(m, pb, pblen, 1);
            free(pb);
        }
        /* the same body as a stream's sequence of values (Watch, LeaseKeepAlive over JSON) */
        size_t off = 0;
        for (int i = 0; i < 64 && off <= len; i++) {
            size_t used = 0;
            pb = NULL;
            int rc = gw_json_to_pb_next(m->in, (const char *)body + off, len - off, &used, &pb, &pblen, err,
                                        sizeof err);
            free(pb);
            if (rc != 0)
                break;
            if (used == 0 || used > len - off)
                abort(); /* no progress, or past the body */
            off += used;
        }
    }
    free(body);
    return 0;
}
