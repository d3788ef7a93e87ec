/* snapxfer.c - snapshot transfer (Raft thesis §5.1): the core sends only the snapshot's
 * metadata; the follower's raftd pulls the leader's state machine chunk by chunk over the peer
 * link (PEER_SNAP_PULL -> the leader's stored -> PEER_SNAP_DATA), one chunk in flight, and
 * hands each chunk to its own stored (SNAP_RECV) until stored reports it installed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cairn_err.h"
#include "cairn_log.h"
#include "cairn_zmq.h"
#include "raftd.h"

/* ------------------------------------------------------------------ snapshot transfer */

void raftd_snap_fail(raftd_t *r, const char *why)
{
    if (!r->snap.active)
        return;
    cairn_warn("snapshot install failed; the leader will send it again", "index=%llu err=\"%s\"",
               (unsigned long long)r->snap.index, why);
    memset(&r->snap, 0, sizeof r->snap);
    if (r->raft)
        cairn_raft_snapshot_failed(r->raft);
}

void raftd_snap_pull(raftd_t *r)
{
    r->snap.last_progress = cairn_now_ms();
    /* snap_index: the leader's stored may serve any state at or past it */
    cairn_ipc_msg_t m = {.type = CAIRN_IPC_PEER_SNAP_PULL, .snap_id = r->snap.id, .offset = r->snap.offset,
                         .snap_index = r->snap.index};
    raftd_send_peer_msg(r, r->snap.from, &m);
}

void raftd_snap_on_data(raftd_t *r, const cairn_ipc_msg_t *m)
{
    if (!r->snap.active || m->from != r->snap.from || m->offset != r->snap.offset ||
        (r->snap.id && m->snap_id != r->snap.id))
        return; /* stale: an earlier pull's answer */
    if (m->code) {
        char why[256];
        snprintf(why, sizeof why, "%.*s", (int)m->message_len, m->message ? (const char *)m->message : "");
        raftd_snap_fail(r, why);
        return;
    }
    if (m->total == 0 || m->offset + m->body_len > m->total) {
        raftd_snap_fail(r, "malformed snapshot chunk");
        return;
    }
    r->snap.id = m->snap_id;
    r->snap.last_progress = cairn_now_ms();
    r->snap.restoring = m->offset + m->body_len >= m->total;
    cairn_ipc_msg_t q = {.type = CAIRN_IPC_SNAP_RECV, .snap_id = m->snap_id, .offset = m->offset,
                         .total = m->total, .snap_index = r->snap.index, .snap_term = r->snap.term,
                         .body = m->body, .body_len = m->body_len};
    raftd_send_stored(r, &q);
}

void raftd_snap_on_ack(raftd_t *r, const cairn_ipc_msg_t *m)
{
    if (!r->snap.active || m->snap_id != r->snap.id)
        return;
    if (m->code) {
        char why[256];
        snprintf(why, sizeof why, "%.*s", (int)m->message_len, m->message ? (const char *)m->message : "");
        raftd_snap_fail(r, why);
        return;
    }
    if (m->installed) {
        uint64_t index = r->snap.index, term = r->snap.term;
        memset(&r->snap, 0, sizeof r->snap);
        int rc = r->raft ? cairn_raft_snapshot_installed(r->raft, index, term) : CAIRN_ESTATE;
        cairn_info("snapshot installed", "index=%llu term=%llu err=\"%s\"", (unsigned long long)index,
                   (unsigned long long)term, rc ? cairn_strerror(rc) : "");
        if (index > r->persisted_index)
            r->persisted_index = index;
        return;
    }
    r->snap.offset = m->offset;
    raftd_snap_pull(r);
}

/* Leader side: stored read a chunk for a member; pass it on. */
void raftd_snap_on_chunk(raftd_t *r, const cairn_ipc_msg_t *m)
{
    cairn_ipc_msg_t d = {.type = CAIRN_IPC_PEER_SNAP_DATA, .snap_id = m->snap_id, .offset = m->offset,
                         .total = m->total, .code = m->code, .message = m->message, .message_len = m->message_len,
                         .body = m->code ? NULL : m->body, .body_len = m->code ? 0 : m->body_len};
    if (m->code && !m->message_len)
        cairn_ipc_set_message(&d, "snapshot unavailable");
    raftd_send_peer_msg(r, m->req_id, &d);
    if (!m->code && m->offset + m->body_len >= m->total)
        cairn_info("snapshot sent", "to=%016llx bytes=%llu applied=%llu", (unsigned long long)m->req_id,
                   (unsigned long long)m->total, (unsigned long long)m->applied);
}
