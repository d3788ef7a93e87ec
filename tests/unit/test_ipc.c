/* Unit tests for the IPC codec (shared/cairn_ipc.c): every type round-trips, and every kind
 * of malformed frame is rejected with an error instead of being misread. */
#include <criterion/criterion.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "cairn_err.h"
#include "cairn_ipc.h"

static void roundtrip(const cairn_ipc_msg_t *in, cairn_ipc_msg_t *out, uint8_t **buf)
{
    size_t len;
    cr_assert_eq(cairn_ipc_encode(in, buf, &len), 0);
    cr_assert_eq(cairn_ipc_decode(*buf, len, out), 0);
    cr_assert_eq(out->type, in->type);
}

Test(ipc, append_roundtrip_with_entries)
{
    cairn_ipc_entry_t ents[3] = {{5, 2, 0, (const uint8_t *)"abc", 3}, {6, 2, 1, NULL, 0},
                                 {7, 3, 0, (const uint8_t *)"\x00\xff", 2}};
    cairn_ipc_msg_t m = {.type = CAIRN_IPC_APPEND, .seq = 99, .has_hs = 1, .term = 3, .vote = 1,
                         .commit = 4, .entries = ents, .n_entries = 3};
    cairn_ipc_msg_t d;
    uint8_t *buf;
    roundtrip(&m, &d, &buf);
    cr_assert_eq(d.seq, 99);
    cr_assert_eq(d.term, 3);
    cr_assert_eq(d.commit, 4);
    cr_assert_eq(d.n_entries, 3);
    cr_assert_eq(d.entries[0].index, 5);
    cr_assert_eq(d.entries[0].len, 3);
    cr_assert(memcmp(d.entries[0].data, "abc", 3) == 0);
    cr_assert_eq(d.entries[1].type, 1);
    cr_assert_eq(d.entries[1].len, 0);
    cr_assert_eq(d.entries[2].term, 3);
    cr_assert(memcmp(d.entries[2].data, "\x00\xff", 2) == 0);
    cairn_ipc_msg_release(&d);
    free(buf);
}

Test(ipc, every_type_roundtrips)
{
    for (int t = 1; t < CAIRN_IPC_TYPE_MAX_; t++) {
        cairn_ipc_msg_t m = {.type = (uint8_t)t, .req_id = 0xfffffffffffffff0ull, .index = 7, .term = 8,
                             .code = -5, .revision = -1, .compact_rev = 1ll << 40, .leader = 3};
        cairn_ipc_set_message(&m, "etcdserver: key is not provided");
        m.body = (const uint8_t *)"body";
        m.body_len = 4;
        cairn_ipc_msg_t d;
        uint8_t *buf;
        roundtrip(&m, &d, &buf);
        cr_assert_str_neq(cairn_ipc_type_name(t), "unknown");
        cairn_ipc_msg_release(&d);
        free(buf);
    }
}

Test(ipc, result_fields_survive)
{
    cairn_ipc_msg_t m = {.type = CAIRN_IPC_RESULT, .req_id = 42, .code = 11};
    cairn_ipc_set_message(&m, "etcdserver: mvcc: required revision has been compacted");
    m.body = (const uint8_t *)"\x0a\x00";
    m.body_len = 2;
    cairn_ipc_msg_t d;
    uint8_t *buf;
    roundtrip(&m, &d, &buf);
    cr_assert_eq(d.req_id, 42);
    cr_assert_eq(d.code, 11);
    cr_assert_eq(d.message_len, strlen("etcdserver: mvcc: required revision has been compacted"));
    cr_assert(memcmp(d.body, "\x0a\x00", 2) == 0);
    cairn_ipc_msg_release(&d);
    free(buf);
}

Test(ipc, rejects_malformed)
{
    cairn_ipc_msg_t d;
    cr_assert_eq(cairn_ipc_decode((const uint8_t *)"", 0, &d), CAIRN_EPROTO);
    cr_assert_eq(cairn_ipc_decode((const uint8_t *)"\xc1", 1, &d), CAIRN_EPROTO); /* never-used byte */
    cr_assert_eq(cairn_ipc_decode((const uint8_t *)"\x92\x02\x01", 3, &d), CAIRN_EVERSION);
    cr_assert_eq(cairn_ipc_decode((const uint8_t *)"\x92\x01\x7f", 3, &d), CAIRN_EUNKNOWN_MSG);
    cr_assert_eq(cairn_ipc_decode((const uint8_t *)"\x92\x01\x00", 3, &d), CAIRN_EUNKNOWN_MSG);
    /* STATUS with a missing field */
    cr_assert_eq(cairn_ipc_decode((const uint8_t *)"\x92\x01\x0d", 3, &d), CAIRN_EPROTO);
    /* STATUS whose req_id is a string */
    cr_assert_eq(cairn_ipc_decode((const uint8_t *)"\x93\x01\x0d\xa1x", 5, &d), CAIRN_EPROTO);
    /* STATUS with trailing garbage */
    cr_assert_eq(cairn_ipc_decode((const uint8_t *)"\x93\x01\x0d\x05\x00", 5, &d), CAIRN_EPROTO);
    /* negative where unsigned expected */
    cr_assert_eq(cairn_ipc_decode((const uint8_t *)"\x93\x01\x0d\xff", 4, &d), CAIRN_EPROTO);
    /* APPEND claiming 2^32-1 entries in a tiny frame: no huge allocation, just an error */
    const uint8_t huge[] = {0x98, 1, 7, 1, 0, 1, 1, 1, 0xdd, 0xff, 0xff, 0xff, 0xff};
    cr_assert_eq(cairn_ipc_decode(huge, sizeof huge, &d), CAIRN_EPROTO);
    /* bin whose length runs past the end */
    const uint8_t bin[] = {0x94, 1, 1, 5, 0xc6, 0, 0, 1, 0, 'x'};
    cr_assert_eq(cairn_ipc_decode(bin, sizeof bin, &d), CAIRN_EPROTO);
}

Test(ipc, every_truncation_of_a_valid_frame_is_rejected)
{
    cairn_ipc_entry_t ents[2] = {{5, 2, 0, (const uint8_t *)"abcdef", 6}, {6, 2, 1, (const uint8_t *)"z", 1}};
    cairn_ipc_msg_t m = {.type = CAIRN_IPC_LOAD_RESP, .boot_id = 77, .term = 300, .entries = ents, .n_entries = 2};
    uint8_t *buf;
    size_t len;
    cr_assert_eq(cairn_ipc_encode(&m, &buf, &len), 0);
    for (size_t cut = 0; cut < len; cut++) {
        cairn_ipc_msg_t d;
        int rc = cairn_ipc_decode(buf, cut, &d);
        cr_assert_lt(rc, 0, "prefix of %zu bytes accepted", cut);
    }
    /* random byte flips never crash (ASan would catch a bad read) */
    srand(7);
    for (int i = 0; i < 2000; i++) {
        uint8_t *c = malloc(len);
        memcpy(c, buf, len);
        c[rand() % len] ^= (uint8_t)(1 + rand() % 255);
        cairn_ipc_msg_t d;
        if (cairn_ipc_decode(c, len, &d) == 0)
            cairn_ipc_msg_release(&d);
        free(c);
    }
    free(buf);
}

Test(ipc, raft_message_roundtrip)
{
    cairn_ipc_entry_t ents[2] = {{11, 4, 0, (const uint8_t *)"put", 3}, {12, 4, 2, (const uint8_t *)"\x01", 1}};
    cairn_ipc_msg_t m = {.type = CAIRN_IPC_RAFT, .cluster_id = 0xdeadbeefcafef00dull, .raft_type = 1, .from = 7,
                         .to = 9, .term = 4, .log_term = 3, .index = 10, .commit = 9, .reject = 1, .reject_hint = 5,
                         .context = 77, .snap_index = 2, .snap_term = 1, .entries = ents, .n_entries = 2};
    cairn_ipc_msg_t d;
    uint8_t *buf;
    roundtrip(&m, &d, &buf);
    cr_assert_eq(d.cluster_id, 0xdeadbeefcafef00dull);
    cr_assert_eq(d.from, 7);
    cr_assert_eq(d.to, 9);
    cr_assert_eq(d.log_term, 3);
    cr_assert_eq(d.reject_hint, 5);
    cr_assert_eq(d.context, 77);
    cr_assert_eq(d.snap_term, 1);
    cr_assert_eq(d.n_entries, 2);
    cr_assert_eq(d.entries[1].type, 2);
    cairn_ipc_msg_release(&d);
    free(buf);
}

Test(ipc, request_envelope)
{
    cairn_ipc_req_t r = {(const uint8_t *)"gw-1", 4, 12345, 3, (const uint8_t *)"\x0a\x01k", 3};
    uint8_t *buf;
    size_t len;
    cr_assert_eq(cairn_ipc_req_encode(&r, &buf, &len), 0);
    cairn_ipc_req_t d;
    cr_assert_eq(cairn_ipc_req_decode(buf, len, &d), 0);
    cr_assert_eq(d.origin_len, 4);
    cr_assert(memcmp(d.origin, "gw-1", 4) == 0);
    cr_assert_eq(d.req_id, 12345);
    cr_assert_eq(d.kind, 3);
    cr_assert_eq(d.body_len, 3);
    cr_assert_eq(cairn_ipc_req_decode(buf, len - 1, &d), CAIRN_EPROTO);
    free(buf);
}
