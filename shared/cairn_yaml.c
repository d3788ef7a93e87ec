/* cairn_yaml.c - see cairn_yaml.h for the subset of YAML it reads.
 *
 * A line reader, not a YAML parser: etcd's config files are flat key: value lines with two
 * nested blocks (client-transport-security, peer-transport-security) and the odd list for a
 * key Cairn ignores. Which key owns which kind of block is the caller's knowledge, so the
 * callback says it as each key is read; the reader keeps only the block it is in. */
#include "cairn_yaml.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "cairn_err.h"

int cairn_yaml_scalar(char *s, char **val, bool *quoted, bool *null, char *why, size_t wl)
{
    while (*s == ' ' || *s == '\t')
        s++;
    *quoted = *null = false;
    if (*s == '\'' || *s == '"') {
        char q = *s, *w = s, *r = s + 1;
        for (;;) {
            if (!*r) {
                cairn_errbuf_set(why, wl, "unterminated quoted string");
                return CAIRN_ECONFIG;
            }
            if (*r == q) {
                if (q == '\'' && r[1] == '\'') { /* '' is a quote inside '...' */
                    *w++ = '\'';
                    r += 2;
                    continue;
                }
                break;
            }
            if (q == '"' && *r == '\\') {
                r++;
                switch (*r) {
                case '\\': *w++ = '\\'; break;
                case '"': *w++ = '"'; break;
                case '/': *w++ = '/'; break;
                case 'n': *w++ = '\n'; break;
                case 't': *w++ = '\t'; break;
                default:
                    cairn_errbuf_set(why, wl, "unsupported escape \\%c in quoted string", *r ? *r : ' ');
                    return CAIRN_ECONFIG;
                }
                r++;
                continue;
            }
            *w++ = *r++;
        }
        *w = 0;
        char *rest = r + 1;
        while (*rest == ' ' || *rest == '\t')
            rest++;
        if (*rest && *rest != '#') {
            cairn_errbuf_set(why, wl, "unexpected text after the quoted string");
            return CAIRN_ECONFIG;
        }
        *val = s;
        *quoted = true;
        return 0;
    }
    /* Plain scalar: a comment starts at " #" (a '#' inside a word, as in a URL, is text). */
    char *end = s;
    while (*end && !(*end == '#' && (end == s || end[-1] == ' ' || end[-1] == '\t')))
        end++;
    while (end > s && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    *end = 0;
    *val = s;
    *null = !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
    return 0;
}

int cairn_yaml_read(FILE *fp, const char *what, const char *path, cairn_yaml_fn *fn, void *arg, char *eb,
                    size_t el)
{
    if (!fp || !fn)
        return CAIRN_EINVAL;
    what = what ? what : "file";
    path = path ? path : "-";
    /* The block the lines are in: none (indentation is an error), the nested map of parent,
     * or one being skipped. block_indent is the indentation its first line set. */
    int block = 0, block_indent = -1, lineno = 0, rc = 0;
    char *parent = NULL, *line = NULL, why[384], msg[400];
    size_t cap = 0;
    ssize_t got;
#define YERR(...)                                                                      \
    do {                                                                               \
        cairn_errbuf_set(msg, sizeof msg, __VA_ARGS__);                                \
        cairn_errbuf_set(eb, el, "%s %s line %d: %s", what, path, lineno, msg);        \
        rc = CAIRN_ECONFIG;                                                            \
        goto out;                                                                      \
    } while (0)
    while ((got = getline(&line, &cap, fp)) >= 0) {
        lineno++;
        if ((size_t)got != strlen(line))
            YERR("NUL byte in line");
        while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r'))
            line[--got] = 0;
        int indent = (int)strspn(line, " ");
        char *s = line + indent;
        if (*s == '\t')
            YERR("tab in indentation (YAML indents with spaces)");
        if (!*s || *s == '#')
            continue;
        if (indent == 0 && (!strncmp(s, "---", 3) || !strncmp(s, "...", 3)) && (!s[3] || s[3] == ' ' || s[3] == '#'))
            continue;
        /* YAML lets a block list sit at its key's own indentation: in a skipped block a
         * list item at column 0 still belongs to it. */
        bool item = *s == '-' && (s[1] == ' ' || !s[1]);
        if (indent > 0 || (item && block == CAIRN_YAML_SKIP)) {
            if (block == 0)
                YERR("unexpected indentation");
            if (block == CAIRN_YAML_SKIP)
                continue;
            if (block_indent < 0)
                block_indent = indent;
            if (indent != block_indent)
                YERR("inconsistent indentation");
        } else {
            block = 0;
            block_indent = -1;
            free(parent);
            parent = NULL;
        }
        if (item)
            YERR("YAML lists are not supported here; write a comma-separated string");
        /* key: the text before the first ':' that ends the line or is followed by a blank */
        char *colon = s;
        while (*colon && !(*colon == ':' && (!colon[1] || colon[1] == ' ' || colon[1] == '\t')))
            colon++;
        if (!*colon)
            YERR("expected 'key: value'");
        char *kend = colon;
        while (kend > s && (kend[-1] == ' ' || kend[-1] == '\t'))
            kend--;
        *kend = 0;
        cairn_yaml_entry_t e = {.parent = parent, .key = s, .line = lineno};
        char *val;
        if (cairn_yaml_scalar(colon + 1, &val, &e.quoted, &e.null, why, sizeof why))
            YERR("%s: %.300s", s, why);
        e.value = val;
        why[0] = 0;
        int r = fn(arg, &e, why, sizeof why);
        if (r == CAIRN_ECONFIG)
            YERR("%s", why);
        if (r < 0) {
            cairn_errbuf_set(eb, el, "%s", why[0] ? why : cairn_strerror(r));
            rc = r;
            goto out;
        }
        /* Only a null key at column 0 can own a block: one level, as etcd's files have. */
        if ((r == CAIRN_YAML_MAP || r == CAIRN_YAML_SKIP) && e.null && !parent && block == 0) {
            if (r == CAIRN_YAML_MAP && !(parent = strdup(s))) {
                cairn_errbuf_set(eb, el, "%s", cairn_strerror(CAIRN_ENOMEM));
                rc = CAIRN_ENOMEM;
                goto out;
            }
            block = r;
        }
    }
#undef YERR
    if (ferror(fp)) {
        cairn_errbuf_set(eb, el, "cannot read %s %s: %s", what, path, strerror(errno));
        rc = CAIRN_ECONFIG;
    }
out:
    free(parent);
    free(line);
    return rc;
}

int cairn_yaml_read_file(const char *path, const char *what, cairn_yaml_fn *fn, void *arg, char *eb, size_t el)
{
    if (!path || !fn)
        return CAIRN_EINVAL;
    FILE *fp = fopen(path, "r");
    if (!fp) {
        cairn_errbuf_set(eb, el, "cannot read %s %s: %s", what ? what : "file", path, strerror(errno));
        return CAIRN_ECONFIG;
    }
    int rc = cairn_yaml_read(fp, what, path, fn, arg, eb, el);
    fclose(fp);
    return rc;
}
