/* Unit tests for cairn_yaml: the YAML subset of etcd's config files (scalars and quoting,
 * comments, document markers, nested and skipped blocks) and errors that name file and
 * line. What the keys mean is test_config's business. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cairn_err.h"
#include "cairn_yaml.h"

/* Every entry read, as "parent/key=value|flags@line" lines; blocks opened per the table. */
typedef struct {
    char out[4096];
    const char *const *maps;  /* keys that own a nested block */
    const char *const *skips; /* keys whose block is skipped */
    const char *fail_key;     /* the callback refuses this key */
} rec_t;

static bool in(const char *const *list, const char *s)
{
    for (; list && *list; list++)
        if (!strcmp(*list, s))
            return true;
    return false;
}

static int record(void *arg, const cairn_yaml_entry_t *e, char *why, size_t wl)
{
    rec_t *r = arg;
    size_t n = strlen(r->out);
    snprintf(r->out + n, sizeof r->out - n, "%s%s%s=%s%s%s@%d\n", e->parent ? e->parent : "", e->parent ? "/" : "",
             e->key, e->value, e->quoted ? "|q" : "", e->null ? "|null" : "", e->line);
    if (r->fail_key && !strcmp(e->key, r->fail_key)) {
        snprintf(why, wl, "no %s here", e->key);
        return strcmp(e->key, "oom") ? CAIRN_ECONFIG : CAIRN_ENOMEM;
    }
    if (in(r->maps, e->key))
        return CAIRN_YAML_MAP;
    if (in(r->skips, e->key))
        return CAIRN_YAML_SKIP;
    return 0;
}

static char g_err[512];

/* Reads text as the file "t.yml". */
static int read_text(rec_t *r, const char *text)
{
    FILE *fp = fmemopen((void *)text, strlen(text), "r");
    cr_assert_not_null(fp);
    g_err[0] = 0;
    int rc = cairn_yaml_read(fp, "config file", "t.yml", record, r, g_err, sizeof g_err);
    fclose(fp);
    return rc;
}

Test(yaml, scalars_comments_and_markers)
{
    rec_t r = {0};
    cr_assert_eq(read_text(&r, "# a comment\n"
                               "---\n"
                               "plain: a b  # comment\n"
                               "url: http://a:1#frag\n"
                               "single: 'it''s # not a comment'\n"
                               "double: \"tab\\there \\\"q\\\" \\\\ \\/\" # c\n"
                               "empty:\n"
                               "tilde: ~\n"
                               "nul: null\n"
                               "quoted-empty: ''\n"
                               "colon:in:key: v\n"
                               "flow: [a, b]\n"
                               "\n"
                               "crlf: yes\r\n"
                               "...\n"),
                 0, "%s", g_err);
    cr_assert_str_eq(r.out, "plain=a b@3\n"
                            "url=http://a:1#frag@4\n"
                            "single=it's # not a comment|q@5\n"
                            "double=tab\there \"q\" \\ /|q@6\n"
                            "empty=|null@7\n"
                            "tilde=~|null@8\n"
                            "nul=null|null@9\n"
                            "quoted-empty=|q@10\n"
                            "colon:in:key=v@11\n"
                            "flow=[a, b]@12\n"
                            "crlf=yes@14\n");
}

Test(yaml, nested_and_skipped_blocks)
{
    static const char *const maps[] = {"tls", NULL}, *const skips[] = {"outputs", "other", NULL};
    rec_t r = {.maps = maps, .skips = skips};
    cr_assert_eq(read_text(&r, "tls:\n"
                               "  # inside\n"
                               "  cert: /c\n"
                               "\n"
                               "  auto: false\n"
                               "outputs:\n"
                               "  - stderr\n"
                               "  - {deep: [x]}\n"
                               "other:\n"
                               "- at column 0\n"
                               "name: x\n"
                               "tls2:\n"),
                 0, "%s", g_err);
    cr_assert_str_eq(r.out, "tls=|null@1\n"
                            "tls/cert=/c@3\n"
                            "tls/auto=false@5\n"
                            "outputs=|null@6\n"
                            "other=|null@9\n"
                            "name=x@11\n"
                            "tls2=|null@12\n");
}

Test(yaml, only_null_keys_at_column_0_own_blocks)
{
    static const char *const maps[] = {"tls", "cert", NULL};
    rec_t r = {.maps = maps};
    /* a key with a value owns nothing, so what follows is unexpected */
    cr_assert_eq(read_text(&r, "tls: x\n  cert: a\n"), CAIRN_ECONFIG);
    cr_assert_str_eq(g_err, "config file t.yml line 2: unexpected indentation");
    /* one level only: a block inside a block is not opened */
    memset(r.out, 0, sizeof r.out);
    cr_assert_eq(read_text(&r, "tls:\n  cert:\n    deeper: 1\n"), CAIRN_ECONFIG);
    cr_assert_str_eq(g_err, "config file t.yml line 3: inconsistent indentation");
}

Test(yaml, errors_name_file_and_line)
{
    static const char *const maps[] = {"tls", NULL}, *const skips[] = {"skip", NULL};
    static const struct {
        const char *text, *want;
    } cases[] = {
        {"a: 1\n  b: 2\n", "config file t.yml line 2: unexpected indentation"},
        {"\ta: 1\n", "config file t.yml line 1: tab in indentation (YAML indents with spaces)"},
        {"a 1\n", "config file t.yml line 1: expected 'key: value'"},
        {"a:1\n", "config file t.yml line 1: expected 'key: value'"},
        {"a: 'x\n", "config file t.yml line 1: a: unterminated quoted string"},
        {"a: \"x\\q\"\n", "config file t.yml line 1: a: unsupported escape \\q in quoted string"},
        {"a: 'x' y\n", "config file t.yml line 1: a: unexpected text after the quoted string"},
        {"a: 1\n- b\n", "config file t.yml line 2: YAML lists are not supported here"},
        {"tls:\n  - b\n", "config file t.yml line 2: YAML lists are not supported here"},
        {"tls:\n  a: 1\n   b: 2\n", "config file t.yml line 3: inconsistent indentation"},
        {"a:\n  - x\n", "config file t.yml line 2: unexpected indentation"},
        {"skip:\n  - x\nb: 1\n  c: 2\n", "config file t.yml line 4: unexpected indentation"},
        {"a: 1\nbad: 2\n", "config file t.yml line 2: no bad here"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rec_t r = {.maps = maps, .skips = skips, .fail_key = "bad"};
        cr_assert_eq(read_text(&r, cases[i].text), CAIRN_ECONFIG, "case %zu", i);
        cr_assert(!strncmp(g_err, cases[i].want, strlen(cases[i].want)), "case %zu: got \"%s\"", i, g_err);
    }
    /* a NUL byte is refused, not read as the end of the line */
    static const char nul[] = "a: 1\nb: x\0y\n";
    FILE *fp = fmemopen((void *)nul, sizeof nul - 1, "r");
    rec_t r = {0};
    cr_assert_eq(cairn_yaml_read(fp, "config file", "t.yml", record, &r, g_err, sizeof g_err), CAIRN_ECONFIG);
    fclose(fp);
    cr_assert_str_eq(g_err, "config file t.yml line 2: NUL byte in line");
    /* other callback errors pass through with their own text */
    rec_t o = {.fail_key = "oom"};
    cr_assert_eq(read_text(&o, "oom: 1\n"), CAIRN_ENOMEM);
    cr_assert_str_eq(g_err, "no oom here");
}

Test(yaml, files)
{
    char path[] = "/tmp/cairn_yaml_XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    const char *text = "name: n1\nbogus\n";
    cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    rec_t r = {0};
    char err[512];
    cr_assert_eq(cairn_yaml_read_file(path, "config file", record, &r, err, sizeof err), CAIRN_ECONFIG);
    char want[600];
    snprintf(want, sizeof want, "config file %s line 2: expected 'key: value'", path);
    cr_assert_str_eq(err, want);
    cr_assert_str_eq(r.out, "name=n1@1\n");
    unlink(path);
    cr_assert_eq(cairn_yaml_read_file("/nonexistent/c.yml", "config file", record, &r, err, sizeof err),
                 CAIRN_ECONFIG);
    cr_assert_str_eq(err, "cannot read config file /nonexistent/c.yml: No such file or directory");
    cr_assert_eq(cairn_yaml_read_file(NULL, "x", record, &r, err, sizeof err), CAIRN_EINVAL);
}

Test(yaml, scalar_alone)
{
    char s[] = "  'a''b'  # c", *v;
    bool q, nul;
    cr_assert_eq(cairn_yaml_scalar(s, &v, &q, &nul, NULL, 0), 0);
    cr_assert_str_eq(v, "a'b");
    cr_assert(q && !nul);
    char t[] = " NULL ";
    cr_assert_eq(cairn_yaml_scalar(t, &v, &q, &nul, NULL, 0), 0);
    cr_assert(!q && nul);
    char u[] = "\"open";
    char why[64];
    cr_assert_eq(cairn_yaml_scalar(u, &v, &q, &nul, why, sizeof why), CAIRN_ECONFIG);
    cr_assert_str_eq(why, "unterminated quoted string");
}
