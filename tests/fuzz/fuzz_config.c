/* fuzz_config.c - libFuzzer target: the configuration file reader.
 *
 * etcd's --config-file is YAML; Cairn reads the subset etcd's sample uses (shared/cairn_yaml.c)
 * and maps it onto the flags (shared/cairn_config.c). The input is the file: it is read
 * directly by cairn_yaml_read with a callback that asks for every nested block (so the nesting
 * paths are walked too), each value also through cairn_yaml_scalar, and then as the
 * --config-file of a whole cairn_config_load (which reads, checks and finalizes the options).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cairn_config.h"
#include "cairn_log.h"
#include "cairn_yaml.h"
#include "fuzz_common.h"

static char g_file[300];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    cairn_log_set_level(CAIRN_LOG_FATAL);
    char dir[256];
    cairn_fuzz_tmpdir("config", dir, sizeof dir);
    snprintf(g_file, sizeof g_file, "%s/conf.yml", dir);
    /* the environment is an input of cairn_config_load too: keep it out of the way */
    extern char **environ;
    for (char **e = environ; *e; e++)
        if (strncmp(*e, "ETCD_", 5) == 0 || strncmp(*e, "CAIRN_", 6) == 0) {
            char name[128];
            size_t n = strcspn(*e, "=");
            if (n < sizeof name) {
                memcpy(name, *e, n);
                name[n] = 0;
                unsetenv(name);
                e = environ - 1; /* environ changed under us: start over */
            }
        }
    return 0;
}

static int on_entry(void *arg, const cairn_yaml_entry_t *e, char *why, size_t wl)
{
    (void)why, (void)wl;
    (*(int *)arg)++;
    if (!e->key || !e->value)
        abort(); /* the reader promises both */
    /* each value through the scalar reader too (it unquotes in place: a copy) */
    char *copy = strdup(e->value);
    if (copy) {
        char *val;
        bool q, nul;
        char w[128];
        (void)cairn_yaml_scalar(copy, &val, &q, &nul, w, sizeof w);
        free(copy);
    }
    if (!e->parent && e->null)
        return (*(int *)arg & 1) ? CAIRN_YAML_MAP : CAIRN_YAML_SKIP;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65536)
        return 0;
    FILE *fp = size ? fmemopen((void *)data, size, "r") : NULL; /* glibc refuses size 0 */
    if (fp) {
        int n = 0;
        char err[512];
        (void)cairn_yaml_read(fp, "config file", "fuzz.yml", on_entry, &n, err, sizeof err);
        fclose(fp);
    }

    FILE *out = fopen(g_file, "w");
    if (!out)
        abort();
    if (size && fwrite(data, 1, size, out) != size)
        abort();
    fclose(out);
    cairn_config_t *c = cairn_config_new();
    if (!c)
        return 0;
    char *argv[] = {"fuzz", "--config-file", g_file, NULL};
    char err[1024];
    (void)cairn_config_load(c, 3, argv, err, sizeof err);
    cairn_config_destroy(&c);
    return 0;
}
