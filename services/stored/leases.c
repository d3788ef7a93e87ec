/* leases.c - stored's side of leases (DESIGN.md "raftd": the durable lease table is replicated
 * state here; the clock that expires leases is the leader raftd's).
 *
 * - After each applied batch, raftd is told which leases it granted and revoked
 *   (CAIRN_IPC_LEASE_APPLIED), so the leader's clock follows the table without reading it.
 * - A new leader reads the whole table page by page (CAIRN_IPC_LEASE_LIST); a gateway reads it
 *   the same way for LeaseLeases.
 * - A gateway reads a lease's granted TTL and keys for LeaseTimeToLive (CAIRN_IPC_LEASE_READ).
 *
 * Record format of LEASE_APPLIED and LEASE_LIST_RESP bodies, byte by byte: 16 bytes per lease,
 *     id  i64 big-endian | ttl  i64 big-endian      (ttl 0 in LEASE_APPLIED: revoked)
 */
#include <stdlib.h>
#include <string.h>

#include "cairn_err.h"
#include "cairn_log.h"
#include "stored.h"

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

/* Called for every applied request of a lease kind that succeeded (inside the batch). */
void stored_lease_applied(stored_t *s, int kind, const uint8_t *body, size_t len)
{
    int64_t id = 0, ttl = 0;
    if (kind == CAIRN_REQ_LEASE_GRANT) {
        Etcdserverpb__LeaseGrantRequest *r = etcdserverpb__lease_grant_request__unpack(NULL, len, body);
        if (!r)
            return;
        id = r->id;
        ttl = r->ttl > 0 ? r->ttl : 1;
        etcdserverpb__lease_grant_request__free_unpacked(r, NULL);
    } else if (kind == CAIRN_REQ_LEASE_REVOKE) {
        Etcdserverpb__LeaseRevokeRequest *r = etcdserverpb__lease_revoke_request__unpack(NULL, len, body);
        if (!r)
            return;
        id = r->id;
        etcdserverpb__lease_revoke_request__free_unpacked(r, NULL);
    } else {
        return;
    }
    if (s->lease_n + 16 > s->lease_cap) {
        size_t nc = s->lease_cap ? s->lease_cap * 2 : 1024;
        uint8_t *nb = realloc(s->lease_buf, nc);
        if (!nb) {
            /* raftd misses this one: a grant it does not know expires only after its next
             * leadership change (it reads the table then); a revoke it misses is proposed
             * again at expiry and refused as not found. Neither loses data. */
            cairn_warn("out of memory for a lease notice to raftd", "lease=%lld", (long long)id);
            return;
        }
        s->lease_buf = nb;
        s->lease_cap = nc;
    }
    put_be64(s->lease_buf + s->lease_n, (uint64_t)id);
    put_be64(s->lease_buf + s->lease_n + 8, (uint64_t)ttl);
    s->lease_n += 16;
}

/* After the batch was written. */
void stored_lease_flush(stored_t *s)
{
    if (!s->lease_n)
        return;
    if (s->raftd_ident_len) {
        cairn_ipc_msg_t m = {.type = CAIRN_IPC_LEASE_APPLIED, .body = s->lease_buf, .body_len = s->lease_n};
        stored_reply(s, s->raftd_ident, s->raftd_ident_len, &m);
    }
    s->lease_n = 0;
    if (s->lease_cap > (1u << 20)) {
        free(s->lease_buf);
        s->lease_buf = NULL;
        s->lease_cap = 0;
    }
}

typedef struct {
    uint8_t *buf;
    size_t n, max;
    uint64_t after;
    int64_t last;
    int more;
} page_t;

static int page_fn(void *arg, int64_t id, int64_t ttl)
{
    page_t *p = arg;
    if ((uint64_t)id <= p->after && p->after)
        return 0; /* the cursor itself */
    if (p->n / 16 >= p->max) {
        p->more = 1;
        return 1;
    }
    put_be64(p->buf + p->n, (uint64_t)id);
    put_be64(p->buf + p->n + 8, (uint64_t)ttl);
    p->n += 16;
    p->last = id;
    return 0;
}

void stored_lease_list(stored_t *s, const uint8_t *ident, size_t ident_len, const cairn_ipc_msg_t *m)
{
    page_t p = {.max = CAIRN_IPC_LEASE_PAGE, .after = (uint64_t)m->lease_id, .last = m->lease_id};
    cairn_ipc_msg_t r = {.type = CAIRN_IPC_LEASE_LIST_RESP, .req_id = m->req_id};
    if (!(p.buf = malloc(CAIRN_IPC_LEASE_PAGE * 16))) {
        stored_reply_error(s, ident, ident_len, m->req_id, CAIRN_ETCD_TOO_MANY_REQUESTS);
        return;
    }
    int rc = cairn_mvcc_lease_scan(s->mvcc, p.after ? p.after : 0, page_fn, &p);
    if (rc < 0) {
        free(p.buf);
        stored_reply_error(s, ident, ident_len, m->req_id, CAIRN_ETCD_STORAGE);
        return;
    }
    r.lease_id = p.last;
    r.more = (uint64_t)p.more;
    r.body = p.buf;
    r.body_len = p.n;
    stored_reply(s, ident, ident_len, &r);
    free(p.buf);
}

void stored_lease_read(stored_t *s, const uint8_t *ident, size_t ident_len, const cairn_ipc_msg_t *m)
{
    cairn_hdr_ctx_t h = stored_hdr_ctx(s);
    uint8_t *resp = NULL;
    size_t resp_len = 0;
    cairn_apply_err_t err = {0};
    int rc = cairn_apply_read(s->mvcc, CAIRN_REQ_LEASE_TTL, m->body, m->body_len, &h, &resp, &resp_len, &err);
    if (rc < 0)
        stored_reply_error(s, ident, ident_len, m->req_id, CAIRN_ETCD_STORAGE);
    else if (err.grpc_code)
        stored_reply_result(s, ident, ident_len, m->req_id, err.grpc_code, err.message, NULL, 0);
    else
        stored_reply_result(s, ident, ident_len, m->req_id, CAIRN_GRPC_OK, NULL, resp, resp_len);
    free(resp);
}
