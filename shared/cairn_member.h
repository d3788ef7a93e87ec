/* cairn_member.h - the cluster membership as replicated state (etcd's membership.RaftCluster).
 *
 * The membership lives in two places that must agree: the raft core's voter/learner sets
 * (which decide quorums) and this table of member metadata (name, peer URLs) that raftd
 * needs to reach each member and that MemberList shows. Both change only through
 * configuration entries of the raft log, so every member derives the same table.
 *
 * Formats (both are etcd protobuf messages from shared/proto/rpc.proto, so no new codec):
 *   - membership blob: a packed etcdserverpb.MemberListResponse; header.cluster_id is the
 *     cluster ID (0 = not known yet), each member has ID, name, peerURLs, isLearner (client
 *     URLs are soft state and are not stored). stored keeps one per configuration entry in
 *     the mvcc 'C' table; LOAD_RESP hands the one at raftd's log start to raftd.
 *   - configuration-entry context (the ctx of cairn_raft_propose_conf_ctx): a membership blob
 *     with exactly one member - ADD_*: the new member (ID, name, peerURLs); UPDATE: its new
 *     peerURLs; PROMOTE, REMOVE: empty. Its header carries the cluster ID, so that a member
 *     that joins a running cluster learns the ID from the log entry that added it.
 */
#ifndef CAIRN_MEMBER_H
#define CAIRN_MEMBER_H

#include <stddef.h>
#include <stdint.h>

#include "cairn_config.h"

typedef struct {
    uint64_t id;
    char *name;       /* "" for a member added at runtime that has not started yet */
    char **peer_urls;
    size_t n_peer_urls;
    int learner;
} cairn_member_t;

typedef struct {
    uint64_t cluster_id;
    cairn_member_t *v;
    size_t n;
} cairn_members_t;

/* Frees the contents (not the struct itself) and zeroes it. */
void cairn_members_clear(cairn_members_t *ms);
/* The membership a member starts with before any configuration entry: --initial-cluster, all
 * voters, for a new cluster; for --initial-cluster-state=existing the OTHER members listed
 * (this member learns itself and the real membership from the leader's log or snapshot) and
 * cluster_id 0 (learned from the cluster). 0 or CAIRN_ENOMEM. */
int cairn_members_initial(cairn_members_t *ms, const cairn_config_t *cfg);
/* Blob <-> table. decode: 0, CAIRN_EPROTO (not a membership blob) or CAIRN_ENOMEM. */
int cairn_members_encode(const cairn_members_t *ms, uint8_t **blob, size_t *len);
int cairn_members_decode(cairn_members_t *ms, const uint8_t *blob, size_t len);
int cairn_members_copy(cairn_members_t *dst, const cairn_members_t *src);

cairn_member_t *cairn_members_find(const cairn_members_t *ms, uint64_t id);
/* Adds member id, or overwrites its URLs and learner flag (and its name, unless name is "" or
 * NULL: a name learned earlier stays). 0 or CAIRN_ENOMEM. */
int cairn_members_put(cairn_members_t *ms, uint64_t id, const char *name, char *const *urls, size_t n, int learner);
/* The member (other than except_id) that has any of urls as a peer URL, or NULL. */
cairn_member_t *cairn_members_find_url(const cairn_members_t *ms, char *const *urls, size_t n, uint64_t except_id);

/* Applies one configuration entry (op is a cairn_raft_conf_op_t; ctx as above). Idempotent on
 * what it can be (adding an existing member overwrites its metadata, removing an absent one
 * does nothing), because a member joining with an approximate starting membership replays
 * entries that may already be reflected in it. 0, CAIRN_EPROTO (bad ctx) or CAIRN_ENOMEM. */
int cairn_members_apply(cairn_members_t *ms, int op, uint64_t node_id, const uint8_t *ctx, size_t ctx_len);

/* A configuration-entry context for a member with these fields. */
int cairn_member_ctx_encode(uint64_t cluster_id, uint64_t id, const char *name, char *const *peer_urls, size_t n,
                            int learner, uint8_t **ctx, size_t *len);

#endif
