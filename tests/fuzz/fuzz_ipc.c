/* fuzz_ipc.c - libFuzzer target: the IPC msgpack decoder (shared/cairn_ipc.c).
 *
 * Every frame a process receives goes through cairn_ipc_decode, including the peer messages
 * (RAFT, PEER_*) that come over TCP from other members, so the decoder must refuse any byte
 * string without reading past it. The input is one frame; a frame that decodes is encoded
 * again and decoded once more (the round trip must succeed: what we decoded we must be able to
 * send). The same bytes are also given to the request envelope decoder (the data of a proposed
 * entry, read back from the WAL and from peers' APPENDs).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cairn_ipc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A private copy of exactly size bytes, so ASan sees any read past the frame. */
    uint8_t *frame = malloc(size ? size : 1);
    if (!frame)
        return 0;
    memcpy(frame, data, size);

    cairn_ipc_msg_t m;
    memset(&m, 0, sizeof m);
    if (cairn_ipc_decode(frame, size, &m) == 0) {
        (void)cairn_ipc_type_name(m.type);
        uint8_t *out = NULL;
        size_t out_len = 0;
        if (cairn_ipc_encode(&m, &out, &out_len) == 0) {
            cairn_ipc_msg_t m2;
            memset(&m2, 0, sizeof m2);
            if (cairn_ipc_decode(out, out_len, &m2) != 0)
                abort(); /* a decoded message must survive a round trip */
            if (m2.type != m.type || m2.n_entries != m.n_entries || m2.body_len != m.body_len)
                abort();
            cairn_ipc_msg_release(&m2);
            free(out);
        }
        cairn_ipc_msg_release(&m);
    }

    cairn_ipc_req_t r;
    memset(&r, 0, sizeof r);
    if (cairn_ipc_req_decode(frame, size, &r) == 0) {
        uint8_t *out = NULL;
        size_t out_len = 0;
        if (cairn_ipc_req_encode(&r, &out, &out_len) == 0) {
            cairn_ipc_req_t r2;
            if (cairn_ipc_req_decode(out, out_len, &r2) != 0 || r2.body_len != r.body_len ||
                r2.origin_len != r.origin_len || r2.req_id != r.req_id || r2.kind != r.kind)
                abort();
            free(out);
        }
    }
    free(frame);
    return 0;
}
