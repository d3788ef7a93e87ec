/* gw_json.c - see gw_json.h. Two halves:
 *
 *   JSON -> protobuf: the body is first parsed whole into a flat tree of nodes (jp_*: Go's
 *   encoding/json grammar and error texts; nothing is converted until the whole value is
 *   known to be well formed, as jsonpb first reads the body into a map of raw values), then
 *   the tree is encoded straight to protobuf wire format field by field, in the descriptor's
 *   order (cv_*). Values are written even when zero: a proto3 decoder reads an explicit zero
 *   as the default, and an explicit empty message or oneof member must stay present.
 *
 *   protobuf -> JSON: protobuf-c unpacks the message; the struct is walked through the field
 *   descriptors (name, type, label, offset, quantifier_offset) and written out (w_*).
 *
 * Wire format written (protobuf encoding): each field is a varint key (number << 3 | wire
 * type) then: wire type 0 a varint (int32/enum negative: sign-extended to 10 bytes; sint: zig-
 * zag), 1 eight bytes little-endian, 5 four bytes little-endian, 2 a varint length and that
 * many bytes (string, bytes, sub-message). Repeated fields are written one key per element
 * (unpacked), which every proto3 reader accepts.
 */
#include "gw_json.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cairn_err.h"
#include "rpc.pb-c.h"
#include "v3election.pb-c.h"
#include "v3lock.pb-c.h"

/* ------------------------------------------------------------------ growable buffer */

typedef struct {
    char *p;
    size_t n, cap;
    int oom;
} buf_t;

static void b_put(buf_t *b, const void *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->n + n + 1)
            nc *= 2;
        char *np = realloc(b->p, nc);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = nc;
    }
    if (n) /* s may be NULL for an empty field (memcpy's arguments must not be, even for 0 bytes) */
        memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void b_byte(buf_t *b, uint8_t c) { b_put(b, &c, 1); }
static void b_str(buf_t *b, const char *s) { b_put(b, s, strlen(s)); }

static void b_varint(buf_t *b, uint64_t v)
{
    uint8_t t[10];
    size_t n = 0;
    do {
        t[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    b_put(b, t, n);
}

static void b_le(buf_t *b, uint64_t v, size_t n)
{
    uint8_t t[8];
    for (size_t i = 0; i < n; i++)
        t[i] = (uint8_t)(v >> (8 * i));
    b_put(b, t, n);
}

/* ------------------------------------------------------------------ the JSON reader */

enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

typedef struct {
    uint8_t type, bval;
    int32_t child, next; /* first child (array, object), next sibling; -1: none */
    const char *raw;     /* number: its text; string: between the quotes, still escaped */
    size_t raw_len;
    const char *key; /* object member: its name between the quotes, still escaped */
    size_t key_len;
} jnode_t;

typedef struct {
    const char *s;
    size_t n, i;
    jnode_t *nodes;
    size_t nn, cap;
    char *err;
    size_t errlen;
    const char *eof_text; /* "unexpected EOF" (json.Decoder) or "unexpected end of JSON input" */
    int failed, oom;
} jp_t;

static const char *kind_name(int t)
{
    switch (t) {
    case J_BOOL: return "bool";
    case J_NUM: return "number";
    case J_STR: return "string";
    case J_ARR: return "array";
    case J_OBJ: return "object";
    default: return "null";
    }
}

/* Go's quoteChar: 'x', '\'', '"', '\n', '\x01', '\u00e9' */
static void quote_char(uint8_t c, char *out, size_t cap)
{
    if (c == '\'')
        snprintf(out, cap, "'\\''");
    else if (c == '"')
        snprintf(out, cap, "'\"'");
    else if (c >= 0x20 && c < 0x7f)
        snprintf(out, cap, "'%c'", c);
    else {
        const char *e = NULL;
        switch (c) {
        case '\a': e = "\\a"; break;
        case '\b': e = "\\b"; break;
        case '\f': e = "\\f"; break;
        case '\n': e = "\\n"; break;
        case '\r': e = "\\r"; break;
        case '\t': e = "\\t"; break;
        case '\v': e = "\\v"; break;
        }
        if (e)
            snprintf(out, cap, "'%s'", e);
        else if (c < 0x80)
            snprintf(out, cap, "'\\x%02x'", c);
        else if (c < 0xa1 || c == 0xad) /* not printable as U+0080..U+00A0, U+00AD */
            snprintf(out, cap, "'\\u%04x'", c);
        else
            snprintf(out, cap, "'%c%c'", 0xc0 | (c >> 6), 0x80 | (c & 0x3f));
    }
}

static int jp_fail(jp_t *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int jp_fail(jp_t *p, const char *fmt, ...)
{
    if (!p->failed) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->err, p->errlen, fmt, ap);
        va_end(ap);
        p->failed = 1;
    }
    return -1;
}

/* "invalid character 'c' <ctx>", or the EOF text at the end of the input */
static int jp_bad(jp_t *p, const char *ctx)
{
    if (p->i >= p->n)
        return jp_fail(p, "%s", p->eof_text);
    char q[16];
    quote_char((uint8_t)p->s[p->i], q, sizeof q);
    return jp_fail(p, "invalid character %s %s", q, ctx);
}

static void jp_ws(jp_t *p)
{
    while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r'))
        p->i++;
}

static int32_t jp_node(jp_t *p, int type)
{
    if (p->nn == p->cap) {
        size_t nc = p->cap ? p->cap * 2 : 64;
        jnode_t *nn = realloc(p->nodes, nc * sizeof *nn);
        if (!nn) {
            p->oom = 1;
            return jp_fail(p, "out of memory");
        }
        p->nodes = nn;
        p->cap = nc;
    }
    if (p->nn >= INT32_MAX)
        return jp_fail(p, "too many JSON values");
    jnode_t *x = &p->nodes[p->nn];
    memset(x, 0, sizeof *x);
    x->type = (uint8_t)type;
    x->child = x->next = -1;
    return (int32_t)p->nn++;
}

static int is_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

/* A string at p->i (the opening quote); [*raw, *raw + *len) is what lies between the quotes. */
static int jp_string(jp_t *p, const char **raw, size_t *len)
{
    p->i++; /* '"' */
    size_t start = p->i;
    while (p->i < p->n) {
        uint8_t c = (uint8_t)p->s[p->i];
        if (c == '"') {
            *raw = p->s + start;
            *len = p->i - start;
            p->i++;
            return 0;
        }
        if (c < 0x20)
            return jp_bad(p, "in string literal");
        if (c == '\\') {
            p->i++;
            if (p->i >= p->n)
                break;
            c = (uint8_t)p->s[p->i];
            if (c == 'u') {
                for (int k = 0; k < 4; k++) {
                    p->i++;
                    if (p->i >= p->n)
                        return jp_bad(p, "");
                    if (!is_hex(p->s[p->i]))
                        return jp_bad(p, "in \\u hexadecimal character escape");
                }
            } else if (!strchr("\"\\/bfnrt", c))
                return jp_bad(p, "in string escape code");
        }
        p->i++;
    }
    return jp_fail(p, "%s", p->eof_text);
}

static int is_digit(char c) { return c >= '0' && c <= '9'; }

static int jp_number(jp_t *p)
{
    size_t start = p->i;
    if (p->s[p->i] == '-') {
        p->i++;
        if (p->i >= p->n)
            return jp_fail(p, "%s", p->eof_text);
        if (!is_digit(p->s[p->i]))
            return jp_bad(p, "in numeric literal");
    }
    if (p->s[p->i] == '0')
        p->i++;
    else
        while (p->i < p->n && is_digit(p->s[p->i]))
            p->i++;
    if (p->i < p->n && p->s[p->i] == '.') {
        p->i++;
        if (p->i >= p->n)
            return jp_fail(p, "%s", p->eof_text);
        if (!is_digit(p->s[p->i]))
            return jp_bad(p, "after decimal point in numeric literal");
        while (p->i < p->n && is_digit(p->s[p->i]))
            p->i++;
    }
    if (p->i < p->n && (p->s[p->i] == 'e' || p->s[p->i] == 'E')) {
        p->i++;
        if (p->i < p->n && (p->s[p->i] == '+' || p->s[p->i] == '-'))
            p->i++;
        if (p->i >= p->n)
            return jp_fail(p, "%s", p->eof_text);
        if (!is_digit(p->s[p->i]))
            return jp_bad(p, "in exponent of numeric literal");
        while (p->i < p->n && is_digit(p->s[p->i]))
            p->i++;
    }
    /* a number that ends the input is incomplete to a streaming decoder (json.Decoder) but
     * whole to json.Unmarshal; at top level only the latter reads numbers here */
    (void)start;
    return 0;
}

static int jp_literal(jp_t *p, const char *word)
{
    for (size_t k = 0; word[k]; k++, p->i++) {
        if (p->i >= p->n)
            return jp_fail(p, "%s", p->eof_text);
        if (p->s[p->i] != word[k]) {
            char ctx[64];
            snprintf(ctx, sizeof ctx, "in literal %s (expecting '%c')", word, word[k]);
            return jp_bad(p, ctx);
        }
    }
    return 0;
}

static int32_t jp_value(jp_t *p, int depth)
{
    jp_ws(p);
    if (p->i >= p->n)
        return jp_fail(p, "%s", p->eof_text);
    if (depth > GW_JSON_MAX_DEPTH)
        return jp_fail(p, "exceeded max depth");
    char c = p->s[p->i];
    int32_t id;
    if (c == '{' || c == '[') {
        int obj = c == '{';
        if ((id = jp_node(p, obj ? J_OBJ : J_ARR)) < 0)
            return -1;
        p->i++;
        jp_ws(p);
        int32_t last = -1;
        if (p->i < p->n && p->s[p->i] == (obj ? '}' : ']')) {
            p->i++;
            return id;
        }
        for (;;) {
            const char *key = NULL;
            size_t key_len = 0;
            if (obj) {
                jp_ws(p);
                if (p->i >= p->n || p->s[p->i] != '"')
                    return jp_bad(p, "looking for beginning of object key string");
                if (jp_string(p, &key, &key_len))
                    return -1;
                jp_ws(p);
                if (p->i >= p->n || p->s[p->i] != ':')
                    return jp_bad(p, "after object key");
                p->i++;
            }
            int32_t v = jp_value(p, depth + 1);
            if (v < 0)
                return -1;
            p->nodes[v].key = key;
            p->nodes[v].key_len = key_len;
            if (last < 0)
                p->nodes[id].child = v;
            else
                p->nodes[last].next = v;
            last = v;
            jp_ws(p);
            if (p->i < p->n && p->s[p->i] == ',') {
                p->i++;
                continue;
            }
            if (p->i < p->n && p->s[p->i] == (obj ? '}' : ']')) {
                p->i++;
                return id;
            }
            return jp_bad(p, obj ? "after object key:value pair" : "after array element");
        }
    }
    if (c == '"') {
        const char *raw;
        size_t len;
        if ((id = jp_node(p, J_STR)) < 0 || jp_string(p, &raw, &len))
            return -1;
        p->nodes[id].raw = raw;
        p->nodes[id].raw_len = len;
        return id;
    }
    if (c == '-' || is_digit(c)) {
        size_t start = p->i;
        if ((id = jp_node(p, J_NUM)) < 0 || jp_number(p))
            return -1;
        p->nodes[id].raw = p->s + start;
        p->nodes[id].raw_len = p->i - start;
        return id;
    }
    if (c == 't' || c == 'f' || c == 'n') {
        const char *w = c == 't' ? "true" : c == 'f' ? "false" : "null";
        if ((id = jp_node(p, c == 'n' ? J_NULL : J_BOOL)) < 0 || jp_literal(p, w))
            return -1;
        p->nodes[id].bval = c == 't';
        return id;
    }
    return jp_bad(p, "looking for beginning of value");
}

/* Appends the decoded text of the escaped string [s, s+n) to b: escapes resolved (a lone
 * surrogate becomes U+FFFD), invalid UTF-8 replaced by U+FFFD, as Go's unquote does. */
static void unescape(buf_t *b, const char *s, size_t n)
{
    static const char repl[] = "\xef\xbf\xbd";
    size_t i = 0;
    while (i < n) {
        uint8_t c = (uint8_t)s[i];
        if (c == '\\') {
            char e = s[i + 1];
            i += 2;
            switch (e) {
            case 'b': b_byte(b, '\b'); break;
            case 'f': b_byte(b, '\f'); break;
            case 'n': b_byte(b, '\n'); break;
            case 'r': b_byte(b, '\r'); break;
            case 't': b_byte(b, '\t'); break;
            case 'u': {
                uint32_t u = (uint32_t)strtoul((char[]){s[i], s[i + 1], s[i + 2], s[i + 3], 0}, NULL, 16);
                i += 4;
                if (u >= 0xd800 && u < 0xdc00 && i + 6 <= n && s[i] == '\\' && s[i + 1] == 'u') {
                    uint32_t lo =
                        (uint32_t)strtoul((char[]){s[i + 2], s[i + 3], s[i + 4], s[i + 5], 0}, NULL, 16);
                    if (lo >= 0xdc00 && lo < 0xe000) {
                        u = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
                        i += 6;
                    } else
                        u = 0xfffd;
                } else if (u >= 0xd800 && u < 0xe000)
                    u = 0xfffd;
                uint8_t t[4];
                size_t k;
                if (u < 0x80)
                    t[0] = (uint8_t)u, k = 1;
                else if (u < 0x800)
                    t[0] = (uint8_t)(0xc0 | (u >> 6)), t[1] = (uint8_t)(0x80 | (u & 0x3f)), k = 2;
                else if (u < 0x10000)
                    t[0] = (uint8_t)(0xe0 | (u >> 12)), t[1] = (uint8_t)(0x80 | ((u >> 6) & 0x3f)),
                    t[2] = (uint8_t)(0x80 | (u & 0x3f)), k = 3;
                else
                    t[0] = (uint8_t)(0xf0 | (u >> 18)), t[1] = (uint8_t)(0x80 | ((u >> 12) & 0x3f)),
                    t[2] = (uint8_t)(0x80 | ((u >> 6) & 0x3f)), t[3] = (uint8_t)(0x80 | (u & 0x3f)), k = 4;
                b_put(b, t, k);
                break;
            }
            default: b_byte(b, (uint8_t)e); /* " \ / */
            }
            continue;
        }
        if (c < 0x80) {
            b_byte(b, c);
            i++;
            continue;
        }
        /* one UTF-8 sequence, or U+FFFD for one bad byte */
        size_t k = c >= 0xf0 && c < 0xf5 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c < 0xe0 ? 2 : 0;
        int ok = k && i + k <= n;
        for (size_t j = 1; ok && j < k; j++)
            ok = ((uint8_t)s[i + j] & 0xc0) == 0x80;
        if (ok && k == 3) {
            uint8_t c1 = (uint8_t)s[i + 1];
            ok = !(c == 0xe0 && c1 < 0xa0) && !(c == 0xed && c1 >= 0xa0);
        } else if (ok && k == 4) {
            uint8_t c1 = (uint8_t)s[i + 1];
            ok = !(c == 0xf0 && c1 < 0x90) && !(c == 0xf4 && c1 >= 0x90);
        }
        if (ok) {
            b_put(b, s + i, k);
            i += k;
        } else {
            b_put(b, repl, 3);
            i++;
        }
    }
}

/* ------------------------------------------------------------------ JSON -> protobuf */

typedef struct {
    jp_t *p;
    char *err;
    size_t errlen;
    int failed;
} cv_t;

static int cv_fail(cv_t *cv, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int cv_fail(cv_t *cv, const char *fmt, ...)
{
    if (!cv->failed) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(cv->err, cv->errlen, fmt, ap);
        va_end(ap);
        cv->failed = 1;
    }
    return -1;
}

static int cv_oom(cv_t *cv)
{
    cv->p->oom = 1;
    return cv_fail(cv, "out of memory");
}

/* Go's base64.StdEncoding.Decode (CR and LF skipped, padding required, the index of the
 * first bad byte in its error). Appends to out. */
static int b64_decode(cv_t *cv, const uint8_t *src, size_t n, buf_t *out)
{
    static int8_t map[256];
    static int init;
    if (!init) {
        memset(map, -1, sizeof map);
        const char *a = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        for (int k = 0; k < 64; k++)
            map[(uint8_t)a[k]] = (int8_t)k;
        init = 1;
    }
#define CORRUPT(at) return cv_fail(cv, "illegal base64 data at input byte %zu", (size_t)(at))
    size_t si = 0;
    while (si < n) {
        uint8_t d[4];
        size_t j, dlen = 4;
        for (j = 0; j < 4; j++) {
            if (si == n) {
                if (j == 0)
                    return 0;
                CORRUPT(si - j);
            }
            uint8_t in = src[si++];
            if (map[in] >= 0) {
                d[j] = (uint8_t)map[in];
                continue;
            }
            if (in == '\n' || in == '\r') {
                j--;
                continue;
            }
            if (in != '=')
                CORRUPT(si - 1);
            if (j < 2)
                CORRUPT(si - 1);
            if (j == 2) {
                while (si < n && (src[si] == '\n' || src[si] == '\r'))
                    si++;
                if (si == n)
                    CORRUPT(n);
                if (src[si] != '=')
                    CORRUPT(si - 1);
                si++;
            }
            while (si < n && (src[si] == '\n' || src[si] == '\r'))
                si++;
            if (si < n)
                CORRUPT(si);
            dlen = j;
            break;
        }
        uint8_t o[3] = {(uint8_t)(d[0] << 2 | d[1] >> 4), (uint8_t)(d[1] << 4 | (dlen > 2 ? d[2] >> 2 : 0)),
                        (uint8_t)(dlen > 3 ? (d[2] << 6 | d[3]) : 0)};
        b_put(out, o, dlen - 1);
        if (dlen < 4)
            return 0;
    }
#undef CORRUPT
    return 0;
}

/* The Go name of an enum type (etcdserverpb.RangeRequest.SortOrder -> etcdserverpb.RangeRequest_SortOrder). */
static void go_enum_name(const ProtobufCEnumDescriptor *ed, char *out, size_t cap)
{
    size_t pl = ed->package_name ? strlen(ed->package_name) : 0;
    snprintf(out, cap, "%s", ed->name);
    for (char *c = out + (pl ? pl + 1 : 0); *c; c++)
        if (*c == '.')
            *c = '_';
}

static const char *go_int_type(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32: return "int32";
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32: return "uint32";
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64: return "uint64";
    case PROTOBUF_C_TYPE_FLOAT: return "float32";
    case PROTOBUF_C_TYPE_DOUBLE: return "float64";
    default: return "int64";
    }
}

/* The number node v (or a string holding exactly one JSON value, as jsonpb drops the quotes
 * of a number given as a string and reads what is between them) as an integer of type t. */
static int cv_number(cv_t *cv, const jnode_t *v, ProtobufCType t, uint64_t *u, double *dbl)
{
    const char *gt = go_int_type(t);
    const char *txt;
    size_t len;
    if (v->type == J_STR) {
        jp_t sub = {.s = v->raw, .n = v->raw_len, .err = cv->err, .errlen = cv->errlen,
                    .eof_text = "unexpected end of JSON input"};
        int32_t id = jp_value(&sub, 0);
        if (id >= 0) {
            jp_ws(&sub);
            if (sub.i < sub.n)
                jp_bad(&sub, "after top-level value");
        }
        if (sub.failed) {
            free(sub.nodes);
            cv->failed = 1;
            if (sub.oom)
                cv->p->oom = 1;
            return -1;
        }
        jnode_t in = sub.nodes[id];
        free(sub.nodes);
        if (in.type != J_NUM)
            return cv_fail(cv, "json: cannot unmarshal %s into Go value of type %s", kind_name(in.type), gt);
        txt = in.raw;
        len = in.raw_len;
    } else if (v->type == J_NUM) {
        txt = v->raw;
        len = v->raw_len;
    } else
        return cv_fail(cv, "json: cannot unmarshal %s into Go value of type %s", kind_name(v->type), gt);
    char tmp[400];
    if (len >= sizeof tmp)
        return cv_fail(cv, "json: cannot unmarshal number %.*s into Go value of type %s", 64, txt, gt);
    memcpy(tmp, txt, len);
    tmp[len] = 0;
    if (t == PROTOBUF_C_TYPE_FLOAT || t == PROTOBUF_C_TYPE_DOUBLE) {
        *dbl = strtod(tmp, NULL);
        return 0;
    }
    int bad = strpbrk(tmp, ".eE") != NULL;
    int is_unsigned = gt[0] == 'u';
    int bits = strstr(gt, "32") ? 32 : 64;
    char *end;
    errno = 0;
    if (!bad && is_unsigned) {
        unsigned long long x = tmp[0] == '-' ? (bad = 1, 0) : strtoull(tmp, &end, 10);
        if (!bad && (errno || (bits == 32 && x > UINT32_MAX)))
            bad = 1;
        *u = x;
    } else if (!bad) {
        long long x = strtoll(tmp, &end, 10);
        if (errno || (bits == 32 && (x < INT32_MIN || x > INT32_MAX)))
            bad = 1;
        *u = (uint64_t)x;
    }
    if (bad)
        return cv_fail(cv, "json: cannot unmarshal number %s into Go value of type %s", tmp, gt);
    return 0;
}

static int cv_message(cv_t *cv, const ProtobufCMessageDescriptor *d, int32_t obj, buf_t *out, int depth);

static int key_is(cv_t *cv, const jnode_t *v, const char *name)
{
    size_t nl = strlen(name);
    if (!memchr(v->key, '\\', v->key_len))
        return v->key_len == nl && memcmp(v->key, name, nl) == 0;
    buf_t k = {0};
    unescape(&k, v->key, v->key_len);
    int eq = !k.oom && k.n == nl && memcmp(k.p, name, nl) == 0;
    free(k.p);
    return eq;
}

/* One value of field f (v not null) appended to out with its key. */
static int cv_value(cv_t *cv, const ProtobufCFieldDescriptor *f, const jnode_t *v, buf_t *out, int depth)
{
    uint32_t num = f->id;
    uint64_t u = 0;
    double dbl = 0;
    switch (f->type) {
    case PROTOBUF_C_TYPE_BOOL:
        if (v->type != J_BOOL)
            return cv_fail(cv, "json: cannot unmarshal %s into Go value of type bool", kind_name(v->type));
        b_varint(out, (uint64_t)num << 3);
        b_varint(out, v->bval);
        return 0;
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumDescriptor *ed = f->descriptor;
        char gname[256];
        go_enum_name(ed, gname, sizeof gname);
        int64_t val;
        if (v->type == J_STR) {
            const ProtobufCEnumValue *ev = NULL;
            char nm[256];
            if (v->raw_len < sizeof nm) {
                memcpy(nm, v->raw, v->raw_len);
                nm[v->raw_len] = 0;
                ev = protobuf_c_enum_descriptor_get_value_by_name(ed, nm);
            }
            if (!ev) {
                buf_t q = {0};
                for (size_t k = 0; k < v->raw_len; k++) {
                    char c = v->raw[k];
                    if (c == '"' || c == '\\')
                        b_byte(&q, '\\');
                    b_byte(&q, (uint8_t)c);
                }
                cv_fail(cv, "unknown value \"%s\" for enum %s", q.p ? q.p : "", gname);
                free(q.p);
                return -1;
            }
            val = ev->value;
        } else if (v->type == J_NUM) {
            if (cv_number(cv, v, PROTOBUF_C_TYPE_INT32, &u, &dbl)) {
                cv->failed = 0;
                return cv_fail(cv, "cannot unmarshal `%.*s` into enum %s", (int)v->raw_len, v->raw, gname);
            }
            val = (int64_t)u;
        } else
            return cv_fail(cv, "cannot unmarshal `%s` into enum %s",
                           v->type == J_BOOL ? (v->bval ? "true" : "false") : kind_name(v->type), gname);
        b_varint(out, (uint64_t)num << 3);
        b_varint(out, (uint64_t)val);
        return 0;
    }
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_BYTES: {
        int bytes = f->type == PROTOBUF_C_TYPE_BYTES;
        if (v->type != J_STR)
            return cv_fail(cv, "json: cannot unmarshal %s into Go value of type %s", kind_name(v->type),
                           bytes ? "[]uint8" : "string");
        buf_t s = {0}, raw = {0};
        unescape(&s, v->raw, v->raw_len);
        int rc = 0;
        if (bytes) {
            rc = b64_decode(cv, (const uint8_t *)(s.p ? s.p : ""), s.n, &raw);
            free(s.p);
            s = raw;
        }
        if (s.oom)
            rc = cv_oom(cv);
        if (!rc) {
            b_varint(out, (uint64_t)num << 3 | 2);
            b_varint(out, s.n);
            b_put(out, s.p, s.n);
        }
        free(s.p);
        return rc;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        if (v->type != J_OBJ)
            return cv_fail(cv, "json: cannot unmarshal %s into Go value of type map[string]json.RawMessage",
                           kind_name(v->type));
        buf_t sub = {0};
        int rc = cv_message(cv, f->descriptor, (int32_t)(v - cv->p->nodes), &sub, depth + 1);
        if (!rc && sub.oom)
            rc = cv_oom(cv);
        if (!rc) {
            b_varint(out, (uint64_t)num << 3 | 2);
            b_varint(out, sub.n);
            b_put(out, sub.p, sub.n);
        }
        free(sub.p);
        return rc;
    }
    default:
        break;
    }
    /* numbers */
    if (cv_number(cv, v, f->type, &u, &dbl))
        return -1;
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
        b_varint(out, (uint64_t)num << 3);
        b_varint(out, (uint64_t)(int64_t)(int32_t)u);
        break;
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SINT64: {
        int64_t x = (int64_t)u;
        b_varint(out, (uint64_t)num << 3);
        b_varint(out, ((uint64_t)x << 1) ^ (uint64_t)(x >> 63));
        break;
    }
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_FIXED32:
        b_varint(out, (uint64_t)num << 3 | 5);
        b_le(out, u, 4);
        break;
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_FIXED64:
        b_varint(out, (uint64_t)num << 3 | 1);
        b_le(out, u, 8);
        break;
    case PROTOBUF_C_TYPE_FLOAT: {
        float fl = (float)dbl;
        uint32_t bits;
        memcpy(&bits, &fl, 4);
        b_varint(out, (uint64_t)num << 3 | 5);
        b_le(out, bits, 4);
        break;
    }
    case PROTOBUF_C_TYPE_DOUBLE: {
        uint64_t bits;
        memcpy(&bits, &dbl, 8);
        b_varint(out, (uint64_t)num << 3 | 1);
        b_le(out, bits, 8);
        break;
    }
    default: /* INT64, UINT32, UINT64 */
        b_varint(out, (uint64_t)num << 3);
        b_varint(out, u);
    }
    return 0;
}

/* lowerCamelCase JSON name of a proto field name (range_end -> rangeEnd), protoc's rule */
static void json_name(const char *name, char *out, size_t cap)
{
    size_t n = 0;
    int up = 0;
    for (const char *c = name; *c && n + 1 < cap; c++) {
        if (*c == '_') {
            up = 1;
            continue;
        }
        out[n++] = up && *c >= 'a' && *c <= 'z' ? (char)(*c - 32) : *c;
        up = 0;
    }
    out[n] = 0;
}

static int cv_message(cv_t *cv, const ProtobufCMessageDescriptor *d, int32_t obj, buf_t *out, int depth)
{
    jnode_t *nodes = cv->p->nodes;
    if (depth > GW_JSON_MAX_DEPTH)
        return cv_fail(cv, "exceeded max depth");
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        char jn[128];
        json_name(f->name, jn, sizeof jn);
        const jnode_t *v = NULL;
        for (int32_t c = nodes[obj].child; c >= 0; c = nodes[c].next)
            if (key_is(cv, &nodes[c], f->name))
                v = &nodes[c]; /* the last one wins */
        if (!v && strcmp(jn, f->name) != 0)
            for (int32_t c = nodes[obj].child; c >= 0; c = nodes[c].next)
                if (key_is(cv, &nodes[c], jn))
                    v = &nodes[c];
        if (!v || v->type == J_NULL)
            continue;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            if (v->type != J_ARR)
                return cv_fail(cv, "json: cannot unmarshal %s into Go value of type []json.RawMessage",
                               kind_name(v->type));
            for (int32_t e = v->child; e >= 0; e = nodes[e].next) {
                if (nodes[e].type == J_NULL) { /* an element left at its zero value */
                    if (f->type == PROTOBUF_C_TYPE_MESSAGE || f->type == PROTOBUF_C_TYPE_STRING ||
                        f->type == PROTOBUF_C_TYPE_BYTES) {
                        b_varint(out, (uint64_t)f->id << 3 | 2);
                        b_varint(out, 0);
                    } else if (f->type == PROTOBUF_C_TYPE_DOUBLE || f->type == PROTOBUF_C_TYPE_FIXED64 ||
                               f->type == PROTOBUF_C_TYPE_SFIXED64) {
                        b_varint(out, (uint64_t)f->id << 3 | 1);
                        b_le(out, 0, 8);
                    } else if (f->type == PROTOBUF_C_TYPE_FLOAT || f->type == PROTOBUF_C_TYPE_FIXED32 ||
                               f->type == PROTOBUF_C_TYPE_SFIXED32) {
                        b_varint(out, (uint64_t)f->id << 3 | 5);
                        b_le(out, 0, 4);
                    } else {
                        b_varint(out, (uint64_t)f->id << 3);
                        b_varint(out, 0);
                    }
                    continue;
                }
                if (cv_value(cv, f, &nodes[e], out, depth))
                    return -1;
                nodes = cv->p->nodes;
            }
        } else if (cv_value(cv, f, v, out, depth))
            return -1;
        nodes = cv->p->nodes;
    }
    return out->oom ? cv_oom(cv) : 0;
}

/* One JSON value from the start of json (after white space) -> *out; *used: the bytes up to
 * the end of that value. No value at all (only white space): the empty request when
 * eof_is_empty, else CAIRN_NOTFOUND (json.Decoder's io.EOF). */
static int to_pb(const ProtobufCMessageDescriptor *d, const char *json, size_t len, int eof_is_empty, size_t *used,
                 uint8_t **out, size_t *out_len, char *err, size_t errlen)
{
    *out = NULL;
    *out_len = 0;
    if (used)
        *used = 0;
    char dummy[8];
    if (!err || !errlen)
        err = dummy, errlen = sizeof dummy;
    err[0] = 0;
    jp_t p = {.s = json ? json : "", .n = json ? len : 0, .err = err, .errlen = errlen, .eof_text = "unexpected EOF"};
    buf_t b = {0};
    int rc = 0;
    jp_ws(&p);
    if (p.i >= p.n && !eof_is_empty) {
        if (used)
            *used = p.n;
        return CAIRN_ENOTFOUND;
    }
    if (p.i < p.n) { /* else: io.EOF, which grpc-gateway takes for the empty request */
        int32_t root = jp_value(&p, 0);
        if (root < 0) {
            rc = p.oom ? CAIRN_ENOMEM : CAIRN_EINVAL;
            goto done;
        }
        if (p.nodes[root].type != J_OBJ && p.nodes[root].type != J_NULL) {
            snprintf(err, errlen, "json: cannot unmarshal %s into Go value of type map[string]json.RawMessage",
                     kind_name(p.nodes[root].type));
            rc = CAIRN_EINVAL;
            goto done;
        }
        if (p.nodes[root].type == J_OBJ) {
            cv_t cv = {.p = &p, .err = err, .errlen = errlen};
            if (cv_message(&cv, d, root, &b, 0)) {
                rc = p.oom || b.oom ? CAIRN_ENOMEM : CAIRN_EINVAL;
                goto done;
            }
        }
    }
    if (b.oom) {
        rc = CAIRN_ENOMEM;
        goto done;
    }
    if (!b.p && !(b.p = malloc(1))) {
        rc = CAIRN_ENOMEM;
        goto done;
    }
    *out = (uint8_t *)b.p;
    *out_len = b.n;
    b.p = NULL;
    if (used)
        *used = p.i;
done:
    free(b.p);
    free(p.nodes);
    if (rc == CAIRN_ENOMEM)
        snprintf(err, errlen, "out of memory");
    return rc;
}

int gw_json_to_pb(const ProtobufCMessageDescriptor *d, const char *json, size_t len, uint8_t **out, size_t *out_len,
                  char *err, size_t errlen)
{
    return to_pb(d, json, len, 1, NULL, out, out_len, err, errlen);
}

int gw_json_to_pb_next(const ProtobufCMessageDescriptor *d, const char *json, size_t len, size_t *used, uint8_t **out,
                       size_t *out_len, char *err, size_t errlen)
{
    return to_pb(d, json, len, 0, used, out, out_len, err, errlen);
}

/* ------------------------------------------------------------------ protobuf -> JSON */

/* A JSON string as Go's encoding/json writes it (HTML-safe, U+2028/9 escaped, bad UTF-8 as U+FFFD). */
static void w_string(buf_t *b, const char *s, size_t n)
{
    buf_t clean = {0};
    /* make the text valid UTF-8 first: unescape() does exactly that for text without '\\' */
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && s[j] != '\\')
            j++;
        unescape(&clean, s + i, j - i);
        if (j < n)
            b_byte(&clean, '\\');
        i = j + 1;
    }
    const char *t = clean.p ? clean.p : "";
    size_t tn = clean.n;
    static const char hex[] = "0123456789abcdef";
    b_byte(b, '"');
    for (size_t i = 0; i < tn; i++) {
        uint8_t c = (uint8_t)t[i];
        if (c == '"' || c == '\\') {
            b_byte(b, '\\');
            b_byte(b, c);
        } else if (c == '\n')
            b_str(b, "\\n");
        else if (c == '\r')
            b_str(b, "\\r");
        else if (c == '\t')
            b_str(b, "\\t");
        else if (c < 0x20 || c == '<' || c == '>' || c == '&') {
            char e[7] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15], 0};
            b_str(b, e);
        } else if (c == 0xe2 && i + 2 < tn && (uint8_t)t[i + 1] == 0x80 &&
                   ((uint8_t)t[i + 2] == 0xa8 || (uint8_t)t[i + 2] == 0xa9)) {
            b_str(b, (uint8_t)t[i + 2] == 0xa8 ? "\\u2028" : "\\u2029");
            i += 2;
        } else
            b_byte(b, c);
    }
    b_byte(b, '"');
    if (clean.oom)
        b->oom = 1;
    free(clean.p);
}

static void w_base64(buf_t *b, const uint8_t *s, size_t n)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    b_byte(b, '"');
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0) | (i + 2 < n ? s[i + 2] : 0);
        char o[4] = {a[v >> 18 & 63], a[v >> 12 & 63], i + 1 < n ? a[v >> 6 & 63] : '=', i + 2 < n ? a[v & 63] : '='};
        b_put(b, o, 4);
    }
    b_byte(b, '"');
}

static void w_message(buf_t *b, const ProtobufCMessage *m);

/* One value of f at p. */
static void w_value(buf_t *b, const ProtobufCFieldDescriptor *f, const void *p)
{
    char t[64];
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        snprintf(t, sizeof t, "%" PRId32, *(const int32_t *)p);
        break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        snprintf(t, sizeof t, "%" PRIu32, *(const uint32_t *)p);
        break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        snprintf(t, sizeof t, "\"%" PRId64 "\"", *(const int64_t *)p);
        break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        snprintf(t, sizeof t, "\"%" PRIu64 "\"", *(const uint64_t *)p);
        break;
    case PROTOBUF_C_TYPE_FLOAT:
        snprintf(t, sizeof t, "%.9g", (double)*(const float *)p);
        break;
    case PROTOBUF_C_TYPE_DOUBLE:
        snprintf(t, sizeof t, "%.17g", *(const double *)p);
        break;
    case PROTOBUF_C_TYPE_BOOL:
        snprintf(t, sizeof t, "%s", *(const protobuf_c_boolean *)p ? "true" : "false");
        break;
    case PROTOBUF_C_TYPE_ENUM: {
        int v = *(const int *)p;
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(f->descriptor, v);
        if (ev) {
            b_byte(b, '"');
            b_str(b, ev->name);
            b_byte(b, '"');
            return;
        }
        snprintf(t, sizeof t, "%d", v);
        break;
    }
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        w_string(b, s ? s : "", s ? strlen(s) : 0);
        return;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        const ProtobufCBinaryData *bd = p;
        w_base64(b, bd->data, bd->len);
        return;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *sub = *(const ProtobufCMessage *const *)p;
        if (sub)
            w_message(b, sub);
        else
            b_str(b, "null");
        return;
    }
    default:
        snprintf(t, sizeof t, "null");
    }
    b_str(b, t);
}

static size_t elem_size(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_DOUBLE: return 8;
    case PROTOBUF_C_TYPE_BOOL: return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_MESSAGE: return sizeof(void *);
    case PROTOBUF_C_TYPE_BYTES: return sizeof(ProtobufCBinaryData);
    default: return 4;
    }
}

/* Is the single value at p its type's zero (left out of the JSON)? */
static int is_zero(const ProtobufCFieldDescriptor *f, const void *p)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        return !s || !*s;
    }
    case PROTOBUF_C_TYPE_BYTES: return ((const ProtobufCBinaryData *)p)->len == 0;
    case PROTOBUF_C_TYPE_MESSAGE: return *(void *const *)p == NULL;
    case PROTOBUF_C_TYPE_BOOL: return *(const protobuf_c_boolean *)p == 0;
    default: break;
    }
    size_t n = elem_size(f->type);
    return n == 8 ? *(const uint64_t *)p == 0 : *(const uint32_t *)p == 0;
}

static void w_message(buf_t *b, const ProtobufCMessage *m)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    const char *base = (const char *)m;
    int first = 1;
    b_byte(b, '{');
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const void *p = base + f->offset;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            if (!n)
                continue;
            b_str(b, first ? "\"" : ",\"");
            b_str(b, f->name);
            b_str(b, "\":[");
            const char *arr = *(const char *const *)p;
            size_t es = elem_size(f->type);
            for (size_t k = 0; k < n; k++) {
                if (k)
                    b_byte(b, ',');
                w_value(b, f, arr + k * es);
            }
            b_byte(b, ']');
            first = 0;
            continue;
        }
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            if (*(const uint32_t *)(base + f->quantifier_offset) != f->id)
                continue; /* a set oneof member is written even at its zero value */
        } else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_MESSAGE &&
                   f->type != PROTOBUF_C_TYPE_STRING) {
            if (!*(const protobuf_c_boolean *)(base + f->quantifier_offset))
                continue;
        } else if (is_zero(f, p))
            continue;
        b_str(b, first ? "\"" : ",\"");
        b_str(b, f->name);
        b_str(b, "\":");
        w_value(b, f, p);
        first = 0;
    }
    b_byte(b, '}');
}

int gw_json_from_pb(const ProtobufCMessageDescriptor *d, const uint8_t *pb, size_t len, char **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, len, pb);
    if (!m)
        return CAIRN_EINVAL;
    buf_t b = {0};
    w_message(&b, m);
    protobuf_c_message_free_unpacked(m, NULL);
    if (b.oom) {
        free(b.p);
        return CAIRN_ENOMEM;
    }
    *out = b.p;
    *out_len = b.n;
    return 0;
}

/* ------------------------------------------------------------------ errors, methods */

char *gw_json_error(int code, const char *message, size_t *out_len)
{
    buf_t b = {0};
    const char *m = message ? message : "";
    b_str(&b, "{\"error\":");
    w_string(&b, m, strlen(m));
    b_str(&b, ",\"message\":");
    w_string(&b, m, strlen(m));
    char t[32];
    snprintf(t, sizeof t, ",\"code\":%d}", code);
    b_str(&b, t);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    if (out_len)
        *out_len = b.n;
    return b.p;
}

/* Go's http.StatusText for the statuses gw_json_http_status gives. */
static const char *status_text(int http)
{
    switch (http) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 412: return "Precondition Failed";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "";
    }
}

char *gw_json_stream_error(int code, const char *message, size_t *out_len)
{
    buf_t b = {0};
    const char *m = message ? message : "";
    int http = gw_json_http_status(code);
    char t[64];
    /* internal.StreamError through jsonpb (OrigName, zero values left out) */
    b_str(&b, "{\"error\":{");
    if (code)
        snprintf(t, sizeof t, "\"grpc_code\":%d,", code), b_str(&b, t);
    snprintf(t, sizeof t, "\"http_code\":%d", http);
    b_str(&b, t);
    if (*m) {
        b_str(&b, ",\"message\":");
        w_string(&b, m, strlen(m));
    }
    if (*status_text(http)) {
        b_str(&b, ",\"http_status\":");
        b_str(&b, "\"");
        b_str(&b, status_text(http));
        b_str(&b, "\"");
    }
    b_str(&b, "}}");
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    if (out_len)
        *out_len = b.n;
    return b.p;
}

int gw_json_http_status(int grpc_code)
{
    switch (grpc_code) {
    case 0: return 200;
    case 1: return 408;  /* Canceled */
    case 2: return 500;  /* Unknown */
    case 3: return 400;  /* InvalidArgument */
    case 4: return 504;  /* DeadlineExceeded */
    case 5: return 404;  /* NotFound */
    case 6: return 409;  /* AlreadyExists */
    case 7: return 403;  /* PermissionDenied */
    case 8: return 429;  /* ResourceExhausted */
    case 9: return 412;  /* FailedPrecondition (grpc-gateway 1.x; 2.x says 400) */
    case 10: return 409; /* Aborted */
    case 11: return 400; /* OutOfRange */
    case 12: return 501; /* Unimplemented */
    case 13: return 500; /* Internal */
    case 14: return 503; /* Unavailable */
    case 15: return 500; /* DataLoss */
    case 16: return 401; /* Unauthenticated */
    default: return 500;
    }
}

static const ProtobufCServiceDescriptor *const services[] = {
    &etcdserverpb__kv__descriptor,          &etcdserverpb__watch__descriptor, &etcdserverpb__lease__descriptor,
    &etcdserverpb__cluster__descriptor,     &etcdserverpb__maintenance__descriptor,
    &etcdserverpb__auth__descriptor,        &v3lockpb__lock__descriptor,      &v3electionpb__election__descriptor,
};

int gw_json_method(const char *path, const ProtobufCMessageDescriptor **in, const ProtobufCMessageDescriptor **out)
{
    if (!path || path[0] != '/')
        return -1;
    const char *slash = strchr(path + 1, '/');
    if (!slash)
        return -1;
    size_t sl = (size_t)(slash - path - 1);
    for (size_t i = 0; i < sizeof services / sizeof services[0]; i++) {
        const ProtobufCServiceDescriptor *s = services[i];
        if (strlen(s->name) != sl || memcmp(s->name, path + 1, sl) != 0)
            continue;
        for (unsigned k = 0; k < s->n_methods; k++)
            if (strcmp(s->methods[k].name, slash + 1) == 0) {
                if (in)
                    *in = s->methods[k].input;
                if (out)
                    *out = s->methods[k].output;
                return 0;
            }
    }
    return -1;
}
