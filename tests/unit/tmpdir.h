/* tmpdir.h - a temporary directory for the unit tests that use real files (header only).
 *
 * cairn_test_mkdtemp makes /tmp/cairn_test_<tag>_XXXXXX and fails the test if it cannot;
 * cairn_test_rmtree removes a tree without following symbolic links (a test that planted one
 * must not make the clean-up delete outside its directory). One copy here instead of one per
 * test file. */
#ifndef CAIRN_TEST_TMPDIR_H
#define CAIRN_TEST_TMPDIR_H

#include <criterion/criterion.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>

static int cairn_test_rm_cb_(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static inline int cairn_test_rmtree(const char *dir)
{
    return dir && dir[0] ? nftw(dir, cairn_test_rm_cb_, 16, FTW_DEPTH | FTW_PHYS) : 0;
}

static inline void cairn_test_mkdtemp(char *dir, size_t cap, const char *tag)
{
    snprintf(dir, cap, "/tmp/cairn_test_%s_XXXXXX", tag);
    cr_assert_not_null(mkdtemp(dir), "mkdtemp %s", dir);
}

/* The fixture most file-backed suites want: one fresh directory per test. Defines g_dir,
 * mkdir_tmp and rm_tmp (the suite's .init and .fini) and at(name), a path in g_dir (four
 * rotating buffers, so a call may take two or three at() paths at once). */
#define CAIRN_TEST_DIR_FIXTURE(tag)                                                              \
    static char g_dir[256];                                                                      \
    static void mkdir_tmp(void) { cairn_test_mkdtemp(g_dir, sizeof g_dir, tag); }                \
    static void rm_tmp(void)                                                                     \
    {                                                                                            \
        if (g_dir[0])                                                                            \
            cairn_test_rmtree(g_dir);                                                            \
        g_dir[0] = 0;                                                                            \
    }                                                                                            \
    __attribute__((unused)) static char *at(const char *name)                                    \
    {                                                                                            \
        static char p_[4][400];                                                                  \
        static int i_;                                                                           \
        i_ = (i_ + 1) % 4;                                                                       \
        snprintf(p_[i_], sizeof p_[i_], "%s/%s", g_dir, name);                                   \
        return p_[i_];                                                                           \
    }

#endif
