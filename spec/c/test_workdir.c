/*
 * test_workdir.c: packing a directory (what goes in, in which order, the
 * caps and links), unpacking it back, and hostile blobs refused without
 * writing outside the target.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "fflua.h"
#include "net.h"
#include "test.h"
#include "workdir.h"

static char top[256];

static void put(const char *rel, const char *text) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", top, rel);
    FILE *f = fopen(p, "w");
    ASSERT(f != NULL);
    fputs(text, f);
    fclose(f);
}

static void dir(const char *rel) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", top, rel);
    ASSERT_EQ(mkdir(p, 0755), 0);
}

static char *slurp(const char *path) {
    static char buf[256];
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return NULL;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

static void setup(void) {
    snprintf(top, sizeof top, "/tmp/ffwd-test-XXXXXX");
    ASSERT(mkdtemp(top) != NULL);
    char p[512];
    snprintf(p, sizeof p, "%s/src", top);
    ASSERT_EQ(mkdir(p, 0755), 0);
    snprintf(top + strlen(top), sizeof top - strlen(top), "/src");
    put("b.lua", "return 'b'\n");
    put("a.txt", "alpha\n");
    dir("lib");
    put("lib/init.lua", "return {}\n");
    dir(".git");
    put(".git/HEAD", "x");
    dir("build-asan");
    put("build-asan/x", "x");
    dir("sub");
    dir("sub/build");
    put("sub/build/y", "y");
    dir("store");
    put("store/data.mdb", "db");
    char l[512];
    snprintf(l, sizeof l, "%s/link.lua", top);
    ASSERT_EQ(symlink("b.lua", l), 0);
}

static void test_pack_unpack(void) {
    char err[600], store[512];
    snprintf(store, sizeof store, "%s/store", top);
    const char *ex[] = {store, "/nonexistent"};
    ff_buf a = {0}, b = {0};
    ASSERT_EQ(ff_wd_pack(top, ex, 2, &a, err, sizeof err), 0);
    ASSERT_EQ(ff_wd_pack(top, ex, 2, &b, err, sizeof err), 0);
    ASSERT_EQ(a.n, b.n);
    ASSERT(memcmp(a.p, b.p, a.n) == 0); /* the same tree, the same bytes */
    ASSERT_EQ(ff_wd_check(a.p, a.n, err, sizeof err), 0);
    /* Names in order, excluded ones absent. */
    const char *order[] = {"a.txt", "b.lua", "lib", "lib/init.lua", "link.lua", "sub"};
    const char *at = a.p;
    for (size_t i = 0; i < sizeof order / sizeof *order; i++) {
        const char *f = memmem(at, a.n - (size_t)(at - a.p), order[i], strlen(order[i]));
        ASSERT(f != NULL);
        at = f;
    }
    ASSERT(memmem(a.p, a.n, ".git", 4) == NULL);
    ASSERT(memmem(a.p, a.n, "build", 5) == NULL);
    ASSERT(memmem(a.p, a.n, "data.mdb", 8) == NULL);
    char out[512];
    snprintf(out, sizeof out, "%s/../out", top);
    ASSERT_EQ(ff_wd_unpack(a.p, a.n, out, err, sizeof err), 0);
    char p[600];
    snprintf(p, sizeof p, "%s/lib/init.lua", out);
    ASSERT_STR_EQ(slurp(p), "return {}\n");
    snprintf(p, sizeof p, "%s/link.lua", out);
    ASSERT_STR_EQ(slurp(p), "return 'b'\n");
    struct stat st;
    ASSERT_EQ(lstat(p, &st), 0);
    ASSERT(S_ISREG(st.st_mode)); /* a copy, not a link */
    snprintf(p, sizeof p, "%s/sub", out);
    ASSERT_EQ(stat(p, &st), 0);
    ASSERT(S_ISDIR(st.st_mode));
    /* Unpacking over an existing directory is refused. */
    ASSERT_EQ(ff_wd_unpack(a.p, a.n, out, err, sizeof err), -EEXIST);
    ASSERT_EQ(ff_wd_remove(out), 0);
    ASSERT_EQ(access(out, F_OK), -1);
    ff_buf_free(&a);
    ff_buf_free(&b);
}

static void test_links_refused(void) {
    char l[512], err[600];
    snprintf(l, sizeof l, "%s/out.lua", top);
    ASSERT_EQ(symlink("/etc/hostname", l), 0);
    ff_buf a = {0};
    ASSERT_EQ(ff_wd_pack(top, NULL, 0, &a, err, sizeof err), -EINVAL);
    ASSERT(strstr(err, "the symbolic link 'out.lua' leads outside the directory") != NULL);
    unlink(l);
    snprintf(l, sizeof l, "%s/dirlink", top);
    ASSERT_EQ(symlink("lib", l), 0);
    ASSERT_EQ(ff_wd_pack(top, NULL, 0, &a, err, sizeof err), -EINVAL);
    ASSERT(strstr(err, "the symbolic link 'dirlink' does not lead to a file") != NULL);
    unlink(l);
    ff_buf_free(&a);
}

static void test_caps(void) {
    char p[512], err[600];
    snprintf(p, sizeof p, "%s/huge", top);
    FILE *f = fopen(p, "w");
    ASSERT(f != NULL);
    ASSERT_EQ(ftruncate(fileno(f), (off_t)FF_WD_MAX_BYTES + 1), 0);
    fclose(f);
    ff_buf a = {0};
    ASSERT_EQ(ff_wd_pack(top, NULL, 0, &a, err, sizeof err), -EFBIG);
    ASSERT(strstr(err, "holds 100.0 MiB of files, more than the 100 MiB") != NULL);
    ASSERT_EQ(a.n, 0);
    unlink(p);
    ASSERT_EQ(ff_wd_pack("/nonexistent/x", NULL, 0, &a, err, sizeof err), -ENOENT);
    ASSERT_STR_EQ(err, "working_dir '/nonexistent/x': No such file or directory");
}

/* A blob of one entry (kind, path, content). */
static void blob1(ff_buf *b, int kind, const char *path, const char *content) {
    b->n = 0;
    ff_wr_fixed(b, "FFWD", 4);
    ff_wr_varint(b, 1);
    ff_wr_varint(b, 1);
    ff_wr_varint(b, (uint64_t)kind);
    ff_wr_str(b, path, strlen(path));
    if (content != NULL)
        ff_wr_str(b, content, strlen(content));
}

static void test_hostile(void) {
    struct {
        int kind;
        const char *path, *why;
    } cases[] = {
        {2, "../evil", "entry 1 has a path with '.' or '..'"},
        {2, "a/../../evil", "entry 1 has a path with '.' or '..'"},
        {2, "/tmp/evil", "entry 1 has an absolute path"},
        {2, "a//b", "entry 1 has a path with an empty component"},
        {2, "", "entry 1 has an empty path"},
        {2, "d/evil", "entry 'd/evil' comes before its directory"},
        {9, "x", "entry 1 is malformed"},
    };
    ff_buf b = {0};
    char err[600], out[512];
    snprintf(out, sizeof out, "%s/../hostile", top);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        blob1(&b, cases[i].kind, cases[i].path, cases[i].kind == 1 ? NULL : "x");
        ASSERT_EQ(ff_wd_check(b.p, b.n, err, sizeof err), FFLUA_EPROTO);
        ASSERT_STR_EQ(err, cases[i].why);
        ASSERT_EQ(ff_wd_unpack(b.p, b.n, out, err, sizeof err), FFLUA_EPROTO);
        ASSERT_STR_EQ(err, cases[i].why);
        ASSERT_EQ(ff_wd_remove(out), 0);
    }
    char evil[600];
    snprintf(evil, sizeof evil, "%s/../evil", top);
    ASSERT_EQ(access(evil, F_OK), -1);
    /* The same path twice: the second is not written over the first. */
    b.n = 0;
    ff_wr_fixed(&b, "FFWD", 4);
    ff_wr_varint(&b, 1);
    ff_wr_varint(&b, 2);
    for (int i = 0; i < 2; i++) {
        ff_wr_varint(&b, 2);
        ff_wr_str(&b, "f", 1);
        ff_wr_str(&b, i ? "second" : "first", i ? 6 : 5);
    }
    ASSERT(ff_wd_unpack(b.p, b.n, out, err, sizeof err) == -EEXIST);
    ASSERT_EQ(ff_wd_remove(out), 0);
    /* Cut short at every length, and bytes left over. */
    blob1(&b, 2, "ok", "content");
    for (size_t n = 0; n < b.n; n++)
        ASSERT_EQ(ff_wd_check(b.p, n, err, sizeof err), FFLUA_EPROTO);
    ASSERT_EQ(ff_wd_check(b.p, b.n, err, sizeof err), 0);
    ff_wr_fixed(&b, "z", 1);
    ASSERT_EQ(ff_wd_check(b.p, b.n, err, sizeof err), FFLUA_EPROTO);
    ASSERT_STR_EQ(err, "it has bytes left over after its entries");
    ff_buf_free(&b);
}

/* Removing a run's copy never follows a link: a link in place of a
 * directory (a node of the run may have made one) goes, what it points to
 * stays. */
static void test_remove_links(void) {
    char run[512], target[512], l[600], kept[600];
    snprintf(run, sizeof run, "%s/run-x", top);
    snprintf(target, sizeof target, "%s/elsewhere", top);
    ASSERT_EQ(mkdir(run, 0755), 0);
    ASSERT_EQ(mkdir(target, 0755), 0);
    put("elsewhere/keep.txt", "kept\n");
    put("run-x/a.txt", "a\n");
    snprintf(l, sizeof l, "%s/sub", run);
    ASSERT_EQ(symlink(target, l), 0);
    snprintf(l, sizeof l, "%s/dir", run);
    ASSERT_EQ(mkdir(l, 0755), 0);
    snprintf(l, sizeof l, "%s/dir/up", run);
    ASSERT_EQ(symlink(target, l), 0);
    ASSERT_EQ(ff_wd_remove(run), 0);
    struct stat st;
    ASSERT(lstat(run, &st) != 0 && errno == ENOENT);
    snprintf(kept, sizeof kept, "%s/keep.txt", target);
    ASSERT_STR_EQ(slurp(kept), "kept\n");
    /* A link given itself is removed as a link. */
    snprintf(l, sizeof l, "%s/link", top);
    ASSERT_EQ(symlink(target, l), 0);
    ASSERT_EQ(ff_wd_remove(l), 0);
    ASSERT_STR_EQ(slurp(kept), "kept\n");
    ASSERT_EQ(ff_wd_remove(target), 0);
}

int main(void) {
    setup();
    RUN(test_remove_links);
    RUN(test_pack_unpack);
    RUN(test_links_refused);
    RUN(test_caps);
    RUN(test_hostile);
    char up[300];
    snprintf(up, sizeof up, "%s/..", top);
    char *real = realpath(up, NULL);
    ASSERT(real != NULL);
    ASSERT_EQ(ff_wd_remove(real), 0);
    free(real);
    return 0;
}
