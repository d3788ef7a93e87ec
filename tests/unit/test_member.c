/* Unit tests for shared/cairn_member: the membership table, its blob and the context of a
 * configuration entry. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "../../services/raftd/core/raft.h"
#include "cairn_config.h"
#include "cairn_err.h"
#include "cairn_member.h"

static cairn_config_t *cfg_of(const char *state)
{
    cairn_config_t *c = cairn_config_new();
    cr_assert(c);
    char err[256];
    cr_assert_eq(cairn_config_set(c, "name", "b", err, sizeof err), 0, "%s", err);
    cr_assert_eq(cairn_config_set(c, "initial-cluster", "a=http://10.0.0.1:2380,b=http://10.0.0.2:2380,c=http://10.0.0.3:2380",
                                  err, sizeof err), 0, "%s", err);
    cr_assert_eq(cairn_config_set(c, "initial-advertise-peer-urls", "http://10.0.0.2:2380", err, sizeof err), 0, "%s", err);
    cr_assert_eq(cairn_config_set(c, "initial-cluster-state", state, err, sizeof err), 0, "%s", err);
    cr_assert_eq(cairn_config_finalize(c, err, sizeof err), 0, "%s", err);
    return c;
}

Test(member, op_values_match_the_raft_core)
{
    /* cairn_member.c repeats these numbers; a change in raft.h must show up here */
    cr_assert_eq(CAIRN_RAFT_CONF_ADD_VOTER, 1);
    cr_assert_eq(CAIRN_RAFT_CONF_ADD_LEARNER, 2);
    cr_assert_eq(CAIRN_RAFT_CONF_PROMOTE, 3);
    cr_assert_eq(CAIRN_RAFT_CONF_REMOVE, 4);
    cr_assert_eq(CAIRN_RAFT_CONF_UPDATE, 5);
}

Test(member, initial_new_cluster_is_every_member_as_voter)
{
    cairn_config_t *c = cfg_of("new");
    cairn_members_t ms;
    cr_assert_eq(cairn_members_initial(&ms, c), 0);
    cr_assert_eq(ms.n, 3);
    cr_assert_eq(ms.cluster_id, cairn_config_cluster_id(c));
    for (size_t i = 0; i < ms.n; i++)
        cr_assert_eq(ms.v[i].learner, 0);
    cr_assert(cairn_members_find(&ms, cairn_config_member_id(c)));
    cairn_members_clear(&ms);
    cairn_config_destroy(&c);
}

Test(member, initial_existing_leaves_out_self_and_the_cluster_id)
{
    cairn_config_t *c = cfg_of("existing");
    cairn_members_t ms;
    cr_assert_eq(cairn_members_initial(&ms, c), 0);
    cr_assert_eq(ms.n, 2);
    cr_assert_eq(ms.cluster_id, 0);
    cr_assert_null(cairn_members_find(&ms, cairn_config_member_id(c)));
    cairn_members_clear(&ms);
    cairn_config_destroy(&c);
}

Test(member, blob_round_trip_and_garbage)
{
    cairn_config_t *c = cfg_of("new");
    cairn_members_t ms, back;
    cr_assert_eq(cairn_members_initial(&ms, c), 0);
    ms.v[1].learner = 1;
    uint8_t *blob;
    size_t len;
    cr_assert_eq(cairn_members_encode(&ms, &blob, &len), 0);
    cr_assert_eq(cairn_members_decode(&back, blob, len), 0);
    cr_assert_eq(back.n, 3);
    cr_assert_eq(back.cluster_id, ms.cluster_id);
    for (size_t i = 0; i < 3; i++) {
        cr_assert_eq(back.v[i].id, ms.v[i].id);
        cr_assert_str_eq(back.v[i].name, ms.v[i].name);
        cr_assert_eq(back.v[i].learner, ms.v[i].learner);
        cr_assert_str_eq(back.v[i].peer_urls[0], ms.v[i].peer_urls[0]);
    }
    cairn_members_clear(&back);
    const uint8_t junk[] = {0xff, 0xff, 0xff, 0x01};
    cr_assert_eq(cairn_members_decode(&back, junk, sizeof junk), CAIRN_EPROTO);
    cr_assert_eq(back.n, 0);
    free(blob);
    cairn_members_clear(&ms);
    cairn_config_destroy(&c);
}

Test(member, apply_add_promote_update_remove)
{
    cairn_config_t *c = cfg_of("existing"); /* starts with a and c, cluster ID unknown */
    cairn_members_t ms;
    cr_assert_eq(cairn_members_initial(&ms, c), 0);
    char *urls[] = {"http://10.0.0.9:2380"};
    uint8_t *ctx;
    size_t len;
    cr_assert_eq(cairn_member_ctx_encode(0xabc, 42, "", urls, 1, 1, &ctx, &len), 0);
    cr_assert_eq(cairn_members_apply(&ms, CAIRN_RAFT_CONF_ADD_LEARNER, 42, ctx, len), 0);
    free(ctx);
    cr_assert_eq(ms.n, 3);
    cr_assert_eq(ms.cluster_id, 0xabc, "a joining member learns the cluster ID from the entry that adds it");
    cairn_member_t *m = cairn_members_find(&ms, 42);
    cr_assert(m && m->learner && strcmp(m->name, "") == 0);
    cr_assert_eq(cairn_members_find_url(&ms, urls, 1, 0), m);
    cr_assert_null(cairn_members_find_url(&ms, urls, 1, 42));
    cr_assert_eq(cairn_members_apply(&ms, CAIRN_RAFT_CONF_PROMOTE, 42, NULL, 0), 0);
    cr_assert_eq(cairn_members_find(&ms, 42)->learner, 0);
    char *moved[] = {"http://10.0.0.10:2380", "http://10.0.0.11:2380"};
    cr_assert_eq(cairn_member_ctx_encode(0xabc, 42, "", moved, 2, 0, &ctx, &len), 0);
    cr_assert_eq(cairn_members_apply(&ms, CAIRN_RAFT_CONF_UPDATE, 42, ctx, len), 0);
    free(ctx);
    cr_assert_eq(cairn_members_find(&ms, 42)->n_peer_urls, 2);
    cr_assert_str_eq(cairn_members_find(&ms, 42)->peer_urls[1], "http://10.0.0.11:2380");
    cr_assert_eq(cairn_members_apply(&ms, CAIRN_RAFT_CONF_REMOVE, 42, NULL, 0), 0);
    cr_assert_null(cairn_members_find(&ms, 42));
    cr_assert_eq(ms.n, 2);
    /* replaying an entry already reflected changes nothing (a joiner's approximate start) */
    cr_assert_eq(cairn_members_apply(&ms, CAIRN_RAFT_CONF_REMOVE, 42, NULL, 0), 0);
    cr_assert_eq(ms.n, 2);
    /* a bad context is refused and leaves the table alone */
    const uint8_t junk[] = {0x0a, 0xff};
    cr_assert_eq(cairn_members_apply(&ms, CAIRN_RAFT_CONF_ADD_VOTER, 7, junk, sizeof junk), CAIRN_EPROTO);
    cr_assert_eq(cairn_members_apply(&ms, 99, 7, NULL, 0), CAIRN_EPROTO);
    cr_assert_eq(ms.n, 2);
    cairn_members_clear(&ms);
    cairn_config_destroy(&c);
}
