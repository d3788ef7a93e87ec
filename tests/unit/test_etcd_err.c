/* Unit tests for cairn_etcd_err: the table against ETCD_API.md §3, and its lookups. */
#include <criterion/criterion.h>
#include <string.h>

#include "cairn_etcd_err.h"

/* ETCD_API.md §3, copied by hand (the code and the exact text of each etcd error): a row of
 * the table that disagrees with it, or an error of §3 missing from the table, fails. */
static const struct {
    int code;
    const char *text;
} api[] = {
    {3, "etcdserver: key is not provided"},
    {3, "etcdserver: key not found"},
    {3, "etcdserver: value is provided"},
    {3, "etcdserver: lease is provided"},
    {3, "etcdserver: too many operations in txn request"},
    {3, "etcdserver: duplicate key given in txn request"},
    {3, "etcdserver: request is too large"},
    {3, "etcdserver: user name is empty"},
    {3, "etcdserver: role name is empty"},
    {3, "etcdserver: authentication failed, invalid user ID or password"},
    {3, "etcdserver: invalid auth management"},
    {3, "etcdserver: revision of auth store is old"},
    {3, "etcdserver: given member URLs are invalid"},
    {11, "etcdserver: mvcc: required revision has been compacted"},
    {11, "etcdserver: mvcc: required revision is a future revision"},
    {11, "etcdserver: too large lease TTL"},
    {8, "etcdserver: mvcc: database space exceeded"},
    {8, "etcdserver: too many requests"},
    {5, "etcdserver: requested lease not found"},
    {5, "etcdserver: member not found"},
    {9, "etcdserver: lease already exists"},
    {9, "etcdserver: member ID already exist"},
    {9, "etcdserver: Peer URLs already exists"},
    {9, "etcdserver: re-configuration failed due to not enough started members"},
    {9, "etcdserver: can only promote a learner member"},
    {9, "etcdserver: can only promote a learner member which is in sync with leader"},
    {9, "etcdserver: too many learner members in cluster"},
    {9, "etcdserver: root user does not exist"},
    {9, "etcdserver: root user does not have root role"},
    {9, "etcdserver: user name already exists"},
    {9, "etcdserver: user name not found"},
    {9, "etcdserver: role name already exists"},
    {9, "etcdserver: role name not found"},
    {9, "etcdserver: role is not granted to the user"},
    {9, "etcdserver: permission is not granted to the role"},
    {9, "etcdserver: authentication is not enabled"},
    {9, "etcdserver: not leader"},
    {9, "etcdserver: bad leader transferee"},
    {7, "etcdserver: permission denied"},
    {16, "etcdserver: invalid auth token"},
    {15, "etcdserver: corrupt cluster"},
    {1, "etcdserver: watch canceled"},
    {14, "etcdserver: no leader"},
    {14, "etcdserver: leader changed"},
    {14, "etcdserver: not capable"},
    {14, "etcdserver: server stopped"},
    {14, "etcdserver: request timed out"},
    {14, "etcdserver: request timed out, possibly due to previous leader failure"},
    {14, "etcdserver: request timed out, possibly due to connection lost"},
    {14, "etcdserver: request timed out, waiting for the applied index took too long"},
    {14, "etcdserver: unhealthy cluster"},
    {14, "etcdserver: rpc not supported for learner"},
    /* not in ETCD_API.md, but etcd's (ErrTimeoutLeaderTransfer) */
    {14, "etcdserver: request timed out, leader transfer took too long"},
};
#define N_API (sizeof api / sizeof api[0])

/* Rows that are Cairn's own texts: exempt from matching etcd, not from the other checks. */
static const cairn_etcd_err_t ours[] = {CAIRN_ETCD_TXN_TOO_DEEP, CAIRN_ETCD_PEER_TLS_REFUSED, CAIRN_ETCD_INTERNAL,
                                        CAIRN_ETCD_STORAGE, CAIRN_ETCD_ANSWER_LOST,
                                        CAIRN_ETCD_ANSWER_TOO_LARGE};

static int is_ours(int e)
{
    for (size_t i = 0; i < sizeof ours / sizeof ours[0]; i++)
        if ((int)ours[i] == e)
            return 1;
    return 0;
}

Test(etcd_err, every_text_has_etcds_prefix_and_a_grpc_error_code)
{
    for (int e = CAIRN_ETCD_NONE + 1; e < CAIRN_ETCD_ERR_END_; e++) {
        const char *t = cairn_etcd_err_text(e);
        cr_assert(strncmp(t, "etcdserver: ", 12) == 0, "%s: \"%s\"", cairn_etcd_err_name(e), t);
        cr_assert_gt(strlen(t), 12, "%s: empty text", cairn_etcd_err_name(e));
        int c = cairn_etcd_err_code(e);
        cr_assert(c > CAIRN_GRPC_OK && c <= CAIRN_GRPC_UNAUTHENTICATED, "%s: code %d", cairn_etcd_err_name(e), c);
        cr_assert_not_null(cairn_grpc_code_name(c));
    }
}

Test(etcd_err, codes_match_etcd_api_and_every_error_of_it_is_there)
{
    for (size_t i = 0; i < N_API; i++) {
        cairn_etcd_err_t e = cairn_etcd_err_find(api[i].text);
        cr_assert_neq(e, CAIRN_ETCD_NONE, "missing from the table: \"%s\"", api[i].text);
        cr_assert_eq(cairn_etcd_err_code(e), api[i].code, "%s: code %d, etcd says %d", cairn_etcd_err_name(e),
                     cairn_etcd_err_code(e), api[i].code);
    }
    /* and every row is either etcd's (in the list above) or one of ours */
    for (int e = CAIRN_ETCD_NONE + 1; e < CAIRN_ETCD_ERR_END_; e++) {
        int found = 0;
        for (size_t i = 0; i < N_API && !found; i++)
            found = strcmp(api[i].text, cairn_etcd_err_text(e)) == 0;
        cr_assert(found || is_ours(e), "%s: \"%s\" is not etcd's and not listed as ours", cairn_etcd_err_name(e),
                  cairn_etcd_err_text(e));
    }
}

Test(etcd_err, names_and_texts_are_unique)
{
    for (int a = CAIRN_ETCD_NONE + 1; a < CAIRN_ETCD_ERR_END_; a++)
        for (int b = a + 1; b < CAIRN_ETCD_ERR_END_; b++) {
            cr_assert_str_neq(cairn_etcd_err_name(a), cairn_etcd_err_name(b));
            cr_assert_str_neq(cairn_etcd_err_text(a), cairn_etcd_err_text(b), "%s and %s", cairn_etcd_err_name(a),
                              cairn_etcd_err_name(b));
        }
}

Test(etcd_err, lookups)
{
    cr_assert_eq(cairn_etcd_err_code(CAIRN_ETCD_TOO_MANY_REQUESTS), 8);
    cr_assert_str_eq(cairn_etcd_err_text(CAIRN_ETCD_TOO_MANY_REQUESTS), "etcdserver: too many requests");
    cr_assert_str_eq(cairn_etcd_err_name(CAIRN_ETCD_TOO_MANY_REQUESTS), "TOO_MANY_REQUESTS");
    int code = -1;
    cr_assert_str_eq(cairn_etcd_err(CAIRN_ETCD_NO_LEADER, &code), "etcdserver: no leader");
    cr_assert_eq(code, CAIRN_GRPC_UNAVAILABLE);
    cr_assert_str_eq(cairn_etcd_err_text(CAIRN_ETCD_TXN_TOO_DEEP),
                     "etcdserver: txn nested too deeply (more than 128 levels)");
    /* no error, and values outside the table */
    cr_assert_eq(cairn_etcd_err_code(CAIRN_ETCD_NONE), 0);
    cr_assert_str_eq(cairn_etcd_err_text(CAIRN_ETCD_NONE), "");
    cr_assert_eq(cairn_etcd_err_code(CAIRN_ETCD_ERR_END_), CAIRN_GRPC_UNKNOWN);
    cr_assert_eq(cairn_etcd_err_code((cairn_etcd_err_t)-1), CAIRN_GRPC_UNKNOWN);
    cr_assert_null(cairn_etcd_err_name(CAIRN_ETCD_ERR_END_));
    cr_assert_eq(cairn_etcd_err_find("etcdserver: no such thing"), CAIRN_ETCD_NONE);
    cr_assert_eq(cairn_etcd_err_find(""), CAIRN_ETCD_NONE);
    cr_assert_eq(cairn_etcd_err_find(NULL), CAIRN_ETCD_NONE);
    /* the gRPC codes */
    cr_assert_eq(CAIRN_GRPC_INVALID_ARGUMENT, 3);
    cr_assert_eq(CAIRN_GRPC_UNIMPLEMENTED, 12);
    cr_assert_str_eq(cairn_grpc_code_name(8), "RESOURCE_EXHAUSTED");
    cr_assert_str_eq(cairn_grpc_code_name(16), "UNAUTHENTICATED");
    cr_assert_null(cairn_grpc_code_name(17));
    cr_assert_null(cairn_grpc_code_name(-1));
}
