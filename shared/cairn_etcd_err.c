/* cairn_etcd_err.c - lookups in the tables of cairn_etcd_err.h. */
#include "cairn_etcd_err.h"

#include <stddef.h>
#include <string.h>

#include "cairn_config.h"  /* CAIRN_PEER_TLS_REFUSED, in a row of the table */
#include "cairn_kvcheck.h" /* CAIRN_KVCHECK_MAX_TXN_DEPTH, likewise */

static const struct {
    const char *name, *text;
    int code;
} rows[] = {
    [CAIRN_ETCD_NONE] = {"NONE", "", CAIRN_GRPC_OK},
#define CAIRN_ETCD_ROW_(sym, code, text) [CAIRN_ETCD_##sym] = {#sym, text, CAIRN_GRPC_##code},
    CAIRN_ETCD_ERR_MAP(CAIRN_ETCD_ROW_)
#undef CAIRN_ETCD_ROW_
};

static int in_table(cairn_etcd_err_t e) { return (int)e >= 0 && e < CAIRN_ETCD_ERR_END_; }

int cairn_etcd_err_code(cairn_etcd_err_t e) { return in_table(e) ? rows[e].code : CAIRN_GRPC_UNKNOWN; }

const char *cairn_etcd_err_text(cairn_etcd_err_t e)
{
    return in_table(e) ? rows[e].text : "etcdserver: unknown error";
}

const char *cairn_etcd_err_name(cairn_etcd_err_t e) { return in_table(e) ? rows[e].name : NULL; }

const char *cairn_etcd_err(cairn_etcd_err_t e, int *code)
{
    if (code)
        *code = cairn_etcd_err_code(e);
    return cairn_etcd_err_text(e);
}

cairn_etcd_err_t cairn_etcd_err_find(const char *text)
{
    if (text && *text)
        for (int e = CAIRN_ETCD_NONE + 1; e < CAIRN_ETCD_ERR_END_; e++)
            if (strcmp(rows[e].text, text) == 0)
                return (cairn_etcd_err_t)e;
    return CAIRN_ETCD_NONE;
}

const char *cairn_grpc_code_name(int code)
{
    switch (code) {
#define CAIRN_GRPC_NAME_(name, num) \
    case num:                       \
        return #name;
        CAIRN_GRPC_CODE_MAP(CAIRN_GRPC_NAME_)
#undef CAIRN_GRPC_NAME_
    default:
        return NULL;
    }
}
