/* cairn_yaml.h - a reader of the subset of YAML that etcd's config files use.
 *
 * Format (what is accepted; anything else is an error naming the file and the line):
 *
 *   # a comment line; blank lines; "---" and "..." document markers at column 0
 *   key: plain value        # a comment after a plain value starts at " #"
 *   key: 'single quoted'    # '' is a quote inside
 *   key: "double quoted"    # escapes \\ \" \/ \n \t only
 *   key:                    # empty, ~ or null: a null value
 *   section:                # a null key at column 0 may own a nested block, if the caller
 *     key: value            #   says so (CAIRN_YAML_MAP): key: value lines, all indented
 *     key: value            #   alike, one level deep
 *   ignored:                # or has it skipped unread (CAIRN_YAML_SKIP): every following
 *     - anything            #   indented line, and list items even at column 0
 *   - anything
 *
 * - Indentation is spaces; a tab in it is an error (YAML forbids it).
 * - A key ends at the first ':' followed by a blank or the end of the line.
 * - Flow collections ([a, b], {a: b}) come back as plain text; block lists ("- x") are
 *   refused except inside a skipped block.
 * - Lines end in \n or \r\n; a NUL byte is an error.
 *
 * Every error reads "<what> <path> line <n>: <message>" (what is the caller's name for the
 * file, "config file"), so an operator can go straight to the line; a file that cannot be
 * opened or read is "cannot read <what> <path>: <strerror>".
 *
 * Usage:
 *
 *   static int on_entry(void *arg, const cairn_yaml_entry_t *e, char *why, size_t wl)
 *   {   ... e->parent (NULL at column 0), e->key, e->value, e->quoted, e->null, e->line ...
 *       return 0;  // or CAIRN_YAML_MAP / CAIRN_YAML_SKIP for a null key at column 0,
 *   }              // or CAIRN_ECONFIG with why: reported as "<what> <path> line <n>: <why>"
 *   rc = cairn_yaml_read_file(path, "config file", on_entry, arg, errbuf, errlen);
 */
#ifndef CAIRN_YAML_H
#define CAIRN_YAML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* What an entry callback may return for a null-valued key at column 0: the indented lines
 * after it are its nested block of key: value lines, or are skipped unread. 0 (the default)
 * means the key owns no block, and indentation after it is an error. */
enum { CAIRN_YAML_MAP = 1, CAIRN_YAML_SKIP = 2 };

typedef struct {
    const char *parent; /* the key of the nested block this entry is in; NULL at column 0 */
    const char *key;
    const char *value;  /* unquoted; "" when null */
    bool quoted;        /* written in '...' or "..." */
    bool null;          /* empty, ~ or null, unquoted */
    int line;           /* 1-based */
} cairn_yaml_entry_t;

/* Called once per key, in file order. Returns 0, CAIRN_YAML_MAP, CAIRN_YAML_SKIP, or a
 * negative CAIRN_E* code: CAIRN_ECONFIG for a mistake in the file (why says what; the reader
 * adds file and line), any other code (CAIRN_ENOMEM) is passed on with why as it is. The
 * entry's strings live until the callback returns. */
typedef int(cairn_yaml_fn)(void *arg, const cairn_yaml_entry_t *e, char *why, size_t wl);

/* Reads the file at path, calling fn for each entry. 0, CAIRN_ECONFIG (errbuf says where
 * and what), or the callback's error. errbuf may be NULL. */
int cairn_yaml_read_file(const char *path, const char *what, cairn_yaml_fn *fn, void *arg, char *errbuf,
                         size_t errlen);

/* The same from an open stream (not closed), named path in messages. */
int cairn_yaml_read(FILE *fp, const char *what, const char *path, cairn_yaml_fn *fn, void *arg, char *errbuf,
                    size_t errlen);

/* Reads one scalar value starting at s (leading blanks allowed), unquoting it in place: *val
 * points into s. *quoted when it was quoted, *null when empty, ~ or null. 0, or CAIRN_ECONFIG
 * with why ("unterminated quoted string", ...). */
int cairn_yaml_scalar(char *s, char **val, bool *quoted, bool *null, char *why, size_t wl);

#endif
