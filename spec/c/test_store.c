/*
 * test_store.c: the LMDB store from C, without a Lua state: records,
 * checksums, group commit, sharing an environment, fork().
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fflua.h"
#include "store.h"
#include "test.h"
#include "verify.h"

static char dir[96];

static ff_store *open_store(void) {
    ff_store *s;
    char err[256];
    int rc = ff_store_open(&s, dir, 1, err, sizeof err);
    if (rc != 0)
        FAIL_("open: %s", err);
    return s;
}

static const uint8_t fp1[FF_FP_LEN] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};

static void put(ff_store *s, const char *wf, const char *task, const char *val) {
    ASSERT_EQ(ff_store_put(s, wf, strlen(wf), task, strlen(task), fp1, 1234, val, strlen(val)), 0);
}

static void test_put_get(void) {
    ff_store *s = open_store();
    put(s, "w", "a", "alpha");
    put(s, "w", "b", "beta");
    ff_rec rec;
    /* Puts are queued; a flush commits them, and reads see them. */
    ASSERT_EQ(ff_store_flush(s), 0);
    ASSERT_EQ(ff_store_get(s, "w", 1, "a", 1, &rec), 0);
    ASSERT_EQ(rec.len, 5);
    ASSERT(memcmp(rec.val, "alpha", 5) == 0);
    ASSERT(memcmp(rec.fp, fp1, FF_FP_LEN) == 0);
    ASSERT_EQ(rec.compute_ns, 1234);
    ASSERT(rec.stored_ns > 0);
    ASSERT_EQ(ff_store_get(s, "w", 1, "zz", 2, &rec), FFLUA_ENOTFOUND);
    ASSERT_EQ(ff_store_get(s, "nowf", 4, "a", 1, &rec), FFLUA_ENOTFOUND);
    ff_store_read_end(s);
    ASSERT_EQ(ff_store_close(s), 0);
}

static void test_group_commit_timing(void) {
    /* Without a flush, a queued record is committed within the commit
     * interval by the committer thread. */
    ff_store *s = open_store();
    put(s, "t", "late", "value");
    ff_rec rec;
    int found = 0;
    for (int i = 0; i < 100 && !found; i++) {
        usleep(10000);
        found = ff_store_get(s, "t", 1, "late", 4, &rec) == 0;
        ff_store_read_end(s);
    }
    ASSERT(found);
    ASSERT_EQ(ff_store_close(s), 0);
}

static void test_checksum(void) {
    ff_store *s = open_store();
    put(s, "c", "x", "0123456789");
    ASSERT_EQ(ff_store_flush(s), 0);
    ASSERT_EQ(ff_store_poke(s, "c", 1, "x", 1, 4, 0x20), 0);
    ff_rec rec;
    ASSERT_EQ(ff_store_get(s, "c", 1, "x", 1, &rec), FFLUA_ECHECKSUM);
    ASSERT_EQ(rec.ok, 0);
    ff_store_read_end(s);
    ASSERT_EQ(ff_store_poke(s, "c", 1, "nope", 4, 0, 1), FFLUA_ENOTFOUND);
    ASSERT_EQ(ff_store_poke(s, "c", 1, "x", 1, 10, 1), FFLUA_ENOTFOUND); /* past the end */
    ASSERT_EQ(ff_store_close(s), 0);
}

static int count_each(void *ud, const char *task, size_t tl, const ff_rec *rec) {
    (void)task, (void)tl, (void)rec;
    ++*(int *)ud;
    return 0;
}

static void test_shared_env_and_delete(void) {
    ff_store *a = open_store(), *b = open_store();
    put(a, "d", "one", "1");
    put(b, "d", "two", "2");
    ASSERT_EQ(ff_store_flush(a), 0);
    ASSERT_EQ(ff_store_flush(b), 0);
    int n = 0;
    ASSERT_EQ(ff_store_each(b, "d", 1, count_each, &n), 0);
    ASSERT_EQ(n, 2);
    ASSERT_EQ(ff_store_del(a, "d", 1, "one", 3), 0);
    ASSERT_EQ(ff_store_del(a, "d", 1, "one", 3), FFLUA_ENOTFOUND);
    n = 0;
    ASSERT_EQ(ff_store_each(b, "d", 1, count_each, &n), 0);
    ASSERT_EQ(n, 1);
    ASSERT_EQ(ff_store_drop(b, "d", 1), 0);
    ASSERT_EQ(ff_store_each(a, "d", 1, count_each, &n), FFLUA_ENOTFOUND);
    ASSERT_EQ(ff_store_close(a), 0);
    ASSERT_EQ(ff_store_close(b), 0);
}

static void test_map_grows(void) {
    ff_store *s = open_store();
    size_t before = ff_store_mapsize(s);
    size_t len = 4u << 20;
    char *big = malloc(len);
    ASSERT(big != NULL);
    memset(big, 'q', len);
    char task[16];
    for (int i = 0; i < 40; i++) { /* 160 MiB through a 64 MiB map */
        snprintf(task, sizeof task, "b%d", i);
        ASSERT_EQ(ff_store_put(s, "big", 3, task, strlen(task), fp1, 0, big, len), 0);
    }
    free(big);
    ASSERT_EQ(ff_store_flush(s), 0);
    ASSERT(ff_store_mapsize(s) > before);
    ff_rec rec;
    ASSERT_EQ(ff_store_get(s, "big", 3, "b39", 3, &rec), 0);
    ASSERT_EQ(rec.len, len);
    ff_store_read_end(s);
    ASSERT_EQ(ff_store_drop(s, "big", 3), 0);
    ASSERT_EQ(ff_store_close(s), 0);
}

/* ThreadSanitizer cannot follow a child of a threaded process that starts
 * threads of its own (it takes the child's first thread for the parent's
 * committer): in that build the child only checks the inherited handle. */
#if defined(__SANITIZE_THREAD__)
#define UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define UNDER_TSAN 1
#endif
#endif
#ifndef UNDER_TSAN
#define UNDER_TSAN 0
#endif

static void test_fork(void) {
    ff_store *s = open_store();
    put(s, "f", "parent", "p");
    ASSERT_EQ(ff_store_flush(s), 0);
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        /* The inherited handle refuses to work; a fresh open does. */
        ff_rec rec;
        if (ff_store_get(s, "f", 1, "parent", 6, &rec) != FFLUA_ECLOSED)
            _exit(10);
        if (strstr(ff_store_errmsg(s), "fork") == NULL)
            _exit(11);
        ff_store_close(s); /* frees the handle only */
        if (UNDER_TSAN)
            _exit(0);
        ff_store *c = open_store();
        if (ff_store_get(c, "f", 1, "parent", 6, &rec) != 0)
            _exit(12);
        ff_store_read_end(c);
        put(c, "f", "child", "c");
        if (ff_store_close(c) != 0)
            _exit(13);
        _exit(0);
    }
    int status;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT(WIFEXITED(status));
    ASSERT_EQ(WEXITSTATUS(status), 0);
    ff_rec rec;
    if (!UNDER_TSAN) {
        ASSERT_EQ(ff_store_get(s, "f", 1, "child", 5, &rec), 0);
        ff_store_read_end(s);
    }
    ASSERT_EQ(ff_store_close(s), 0);
}

/* The workflows' trees of a file, from its main tree. */
struct roots {
    ff_vdb db[8];
    int n;
};

static const char *collect_root(void *ud, const unsigned char *key, size_t klen,
                                const unsigned char *data, size_t dlen) {
    struct roots *r = ud;
    (void)key;
    (void)klen;
    if (r->n < 8 && ff_verify_db(data, dlen, &r->db[r->n]) == 0)
        r->n++;
    return NULL;
}

/* Checks a whole file's bytes; returns how many checks failed. */
static int check_bytes(const unsigned char *p, size_t len) {
    ff_vfile f;
    char why[256];
    if (ff_verify_meta(&f, p, len, 0, why, sizeof why) != 0)
        return 1;
    int bad = 0;
    struct roots r = {.n = 0};
    bad += ff_verify_tree(&f, &f.main_db, FF_VTREE_MAIN, collect_root, &r, why, sizeof why) != 0;
    for (int i = 0; i < r.n; i++)
        bad += ff_verify_tree(&f, &r.db[i], FF_VTREE_RECORDS, NULL, NULL, why, sizeof why) != 0;
    bad += ff_verify_free(&f, why, sizeof why) != 0;
    return bad;
}

static void test_verify(void) {
    /* A file of its own with small values, values on overflow pages,
     * deletes (so a free list) and two workflows. */
    char home[sizeof dir];
    memcpy(home, dir, sizeof dir);
    strcat(dir, "/verify");
    ASSERT_EQ(mkdir(dir, 0755), 0);
    ff_store *s = open_store();
    char task[32], val[20000];
    memset(val, 'v', sizeof val);
    for (int i = 0; i < 400; i++) {
        snprintf(task, sizeof task, "task-%05d", i);
        size_t len = i % 37 == 0 ? 9000 + (size_t)i : (size_t)(i % 50);
        const char *wf = i % 2 ? "odd" : "even";
        ASSERT_EQ(ff_store_put(s, wf, strlen(wf), task, strlen(task), fp1, 0, val, len), 0);
    }
    ASSERT_EQ(ff_store_flush(s), 0);
    for (int i = 0; i < 400; i += 3) {
        snprintf(task, sizeof task, "task-%05d", i);
        const char *wf = i % 2 ? "odd" : "even";
        ASSERT_EQ(ff_store_del(s, wf, strlen(wf), task, strlen(task)), 0);
    }
    ASSERT_EQ(ff_store_verify(s, NULL, NULL), 0);
    ASSERT_EQ(ff_store_close(s), 0);
    char path[128];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    FILE *f = fopen(path, "rb");
    ASSERT(f != NULL);
    fseek(f, 0, SEEK_END);
    size_t len = (size_t)ftell(f);
    rewind(f);
    unsigned char *orig = malloc(len), *copy = malloc(len);
    ASSERT(orig != NULL && copy != NULL);
    ASSERT_EQ(fread(orig, 1, len, f), len);
    fclose(f);
    ASSERT_EQ(check_bytes(orig, len), 0);
    /* Damage anywhere: the checker reads only inside the buffer (the
     * sanitizer build would see any other read) and never loops. */
    unsigned seed = 12345;
    int found = 0;
    for (int round = 0; round < 3000; round++) {
        memcpy(copy, orig, len);
        int flips = 1 + (int)(seed % 8);
        for (int i = 0; i < flips; i++) {
            seed = seed * 1103515245u + 12345u;
            size_t at = (seed >> 8) % len;
            seed = seed * 1103515245u + 12345u;
            copy[at] = (unsigned char)(seed >> 16);
        }
        found += check_bytes(copy, len) > 0;
    }
    /* Damage to values, free pages and the free space of pages is not the
     * structure's: about a tenth of the rounds hit the structure. */
    ASSERT(found > 150);
    /* Cut short, the file is damaged, not a crash. */
    ASSERT(check_bytes(orig, len / 2) > 0);
    ASSERT(check_bytes(orig, 100) > 0);
    free(orig);
    free(copy);
    memcpy(dir, home, sizeof dir);
}

static void test_bad_open(void) {
    ff_store *s;
    char err[256];
    ASSERT(ff_store_open(&s, "/proc/version", 1, err, sizeof err) != 0);
    ASSERT(s == NULL);
    ASSERT(strstr(err, "not a directory") != NULL);
}

int main(void) {
    strcpy(dir, "/tmp/fflua-test-store.XXXXXX");
    ASSERT(mkdtemp(dir) != NULL);
    RUN(test_put_get);
    RUN(test_group_commit_timing);
    RUN(test_checksum);
    RUN(test_shared_env_and_delete);
    RUN(test_map_grows);
    RUN(test_fork);
    RUN(test_verify);
    RUN(test_bad_open);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : 1;
}
