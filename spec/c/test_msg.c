/*
 * test_msg.c: the cluster's messages (msg.h) without sockets: every
 * message written and read back field for field; every prefix of it, and
 * it with a byte more, refused; counts larger than what follows refused;
 * writers that fail leave no frame behind.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fflua.h"
#include "msg.h"
#include "test.h"

/* The payload of the one frame in b; returns the frame's type. */
static int payload(const ff_buf *b, const char **p, size_t *n) {
    int type;
    size_t total;
    ASSERT_EQ(ff_frame_parse(b->p, b->n, FF_FRAME_MAX, &type, p, n, &total), 0);
    ASSERT_EQ(total, b->n);
    return type;
}

typedef int (*reader_fn)(const char *p, size_t n);

/* rd takes p[0..n); it refuses every prefix and the same with a byte
 * more. Each input is a copy of its exact size, so that AddressSanitizer
 * sees a read past its end. */
static void strict(reader_fn rd, const char *p, size_t n) {
    ASSERT_EQ(rd(p, n), 0);
    for (size_t cut = 0; cut <= n + 1; cut++) {
        if (cut == n)
            continue;
        char *q = malloc(cut ? cut : 1);
        ASSERT(q != NULL);
        memcpy(q, p, cut <= n ? cut : n);
        if (cut > n)
            q[n] = 0;
        if (rd(q, cut) == 0)
            FAIL_("a reader took %zu bytes of a %zu-byte payload", cut, n);
        free(q);
    }
}

/* Writes with write_fn into a fresh buffer, checks the frame's type, and
 * runs strict over its payload with rd. */
#define CHECK_MSG(type_, write_expr, rd)                                                           \
    do {                                                                                           \
        ff_buf msg_buf = {0};                                                                      \
        ff_buf *b = &msg_buf;                                                                      \
        ASSERT_EQ((write_expr), 0);                                                                \
        const char *msg_p;                                                                         \
        size_t msg_n;                                                                              \
        ASSERT_EQ(payload(b, &msg_p, &msg_n), (type_));                                            \
        strict(rd, msg_p, msg_n);                                                                  \
        ff_buf_free(b);                                                                            \
    } while (0)

static int str_is(const char *p, size_t n, const char *s) {
    return n == strlen(s) && memcmp(p, s, n) == 0;
}

/* --- the handshake ------------------------------------------------------- */

static unsigned char nonce[FF_NONCE_LEN], mac[FF_MAC_LEN];

static int rd_hello(const char *p, size_t n) {
    ff_msg_hello m;
    int rc = ff_msg_hello_read(p, n, &m);
    if (rc == 0) {
        ff_versions mine;
        ff_versions_local(&mine);
        char msg[256];
        ASSERT_EQ(ff_versions_check(&mine, &m.v, msg, sizeof msg), 0);
        ASSERT(memcmp(m.nonce, nonce, FF_NONCE_LEN) == 0);
    }
    return rc;
}

static int rd_auth(const char *p, size_t n) {
    ff_msg_auth m;
    int rc = ff_msg_auth_read(p, n, &m);
    if (rc == 0) {
        ASSERT_EQ(m.role, FF_ROLE_STATUS);
        ASSERT(memcmp(m.nonce, nonce, FF_NONCE_LEN) == 0);
        ASSERT(memcmp(m.mac, mac, FF_MAC_LEN) == 0);
    }
    return rc;
}

static int rd_welcome(const char *p, size_t n) {
    unsigned char got[FF_MAC_LEN];
    int rc = ff_msg_welcome_read(p, n, got);
    if (rc == 0)
        ASSERT(memcmp(got, mac, FF_MAC_LEN) == 0);
    return rc;
}

static int rd_refuse(const char *p, size_t n) {
    const char *why;
    size_t len;
    int rc = ff_msg_refuse_read(p, n, &why, &len);
    if (rc == 0 || n > 8) /* bytes left over: still the reason */
        ASSERT(str_is(why, len, "go away"));
    return rc;
}

static void test_handshake(void) {
    ff_nonce(nonce);
    ff_nonce(mac);
    CHECK_MSG(FF_M_HELLO, ff_msg_hello_write(b, nonce), rd_hello);
    CHECK_MSG(FF_M_AUTH, ff_msg_auth_write(b, FF_ROLE_STATUS, nonce, mac), rd_auth);
    CHECK_MSG(FF_M_WELCOME, ff_msg_welcome_write(b, mac), rd_welcome);
    CHECK_MSG(FF_M_REFUSE, ff_msg_refuse_write(b, "go away"), rd_refuse);
    /* A role out of range. */
    ff_buf b = {0};
    ASSERT_EQ(ff_msg_auth_write(&b, 4, nonce, mac), 0);
    ff_msg_auth a;
    ASSERT_EQ(ff_msg_auth_read(b.p + FF_FRAME_HDR, b.n - FF_FRAME_HDR, &a), FFLUA_EPROTO);
    ff_buf_free(&b);
}

/* --- worker -> head ------------------------------------------------------ */

static const ff_msg_res two_res[] = {{"gpu", 3, 5000}, {"_disk", 5, 1}};
static const unsigned char machine_a[FF_MACHINE_LEN] = "machine-a:012345";
static const unsigned char machine_b[FF_MACHINE_LEN] = "machine-b:012345";

static int rd_register(const char *p, size_t n) {
    ff_msg_register m;
    ff_msg_list res;
    int rc = ff_msg_register_read(p, n, &m, &res);
    if (rc != 0)
        return rc;
    ASSERT_EQ(m.cpus, 20000);
    ASSERT(str_is(m.host, m.host_len, "build7"));
    ASSERT_EQ(m.pid, 41822);
    ASSERT(memcmp(m.machine, machine_a, FF_MACHINE_LEN) == 0);
    ASSERT_EQ(res.n, 2);
    for (int k = 0; k < 2; k++) {
        ff_msg_res r;
        ff_msg_next_res(&res, &r);
        ASSERT(str_is(r.name, r.len, two_res[k].name));
        ASSERT_EQ(r.amount, two_res[k].amount);
    }
    ASSERT_EQ(res.n, 0);
    return 0;
}

static int rd_result(const char *p, size_t n) {
    ff_msg_result m;
    int rc = ff_msg_result_read(p, n, &m);
    if (rc == 0)
        ASSERT(m.run == 7 && m.index == 300 && m.status == FF_RESULT_OK &&
               str_is(m.bytes, m.len, "\x01\x81") && m.ns == 123456789);
    return rc;
}

static void test_worker_messages(void) {
    ff_msg_register reg = {20000, "build7", 6, 41822, machine_a};
    CHECK_MSG(FF_M_REGISTER, ff_msg_register_write(b, &reg, two_res, 2), rd_register);
    ff_msg_result res = {7, 300, 1, "\x01\x81", 2, 123456789};
    CHECK_MSG(FF_M_RESULT, ff_msg_result_write(b, &res), rd_result);
    /* status is an FF_RESULT_*; a REGISTER has at most FF_MSG_RES_MAX resources. */
    ff_buf b = {0};
    res.status = FF_RESULT_LAST;
    ASSERT_EQ(ff_msg_result_write(&b, &res), 0);
    ff_msg_result m;
    ASSERT_EQ(ff_msg_result_read(b.p + FF_FRAME_HDR, b.n - FF_FRAME_HDR, &m), FFLUA_EPROTO);
    b.n = 0;
    ff_msg_res many[FF_MSG_RES_MAX + 1];
    for (int k = 0; k <= FF_MSG_RES_MAX; k++)
        many[k] = (ff_msg_res){"r", 1, 1};
    ASSERT_EQ(ff_msg_register_write(&b, &reg, many, FF_MSG_RES_MAX + 1), 0);
    ff_msg_register r;
    ff_msg_list l;
    ASSERT_EQ(ff_msg_register_read(b.p + FF_FRAME_HDR, b.n - FF_FRAME_HDR, &r, &l), FFLUA_EPROTO);
    b.n = 0;
    ASSERT_EQ(ff_msg_register_write(&b, &reg, many, FF_MSG_RES_MAX), 0);
    ASSERT_EQ(ff_msg_register_read(b.p + FF_FRAME_HDR, b.n - FF_FRAME_HDR, &r, &l), 0);
    ASSERT_EQ(l.n, FF_MSG_RES_MAX);
    ff_buf_free(&b);
}

/* --- driver -> head ------------------------------------------------------ */

static int rd_func(const char *p, size_t n) {
    ff_msg_func m;
    int rc = ff_msg_func_read(p, n, &m);
    if (rc == 0)
        ASSERT(m.run == 1 && m.fid == 2 && str_is(m.code, m.len, "code"));
    return rc;
}

/* Two tasks, 5 and 6, of a run of 10: 6 depends on 2 and 5 and asks for
 * resources. */
static const uint32_t deps6[] = {2, 5};

static int rd_submit(const char *p, size_t n) {
    ff_msg_submit m;
    ff_msg_tasks tasks;
    int rc = ff_msg_submit_read(p, n, &m, &tasks);
    if (rc != 0)
        return rc;
    ASSERT(m.run == 3 && m.max_pending == 8 && m.flags == FF_RUN_KEEP_GOING && m.total == 10 &&
           m.first == 5 && m.count == 2);
    ff_msg_subtask t;
    ff_msg_list deps, res;
    for (int k = 0; (rc = ff_msg_submit_next(&tasks, &t, &deps, &res)) == 0; k++) {
        ASSERT_EQ(t.index, 5 + k);
        ASSERT_EQ(t.fid, 1 + k);
        ASSERT(str_is(t.name, t.name_len, k ? "f_0006" : "f_0005"));
        ASSERT_EQ(t.leaf, k);
        ASSERT(str_is(t.args, t.nargs, "args"));
        ASSERT_EQ(t.npre, k ? 3 : 0);
        ASSERT_EQ(t.ndeps, k ? 2 : 0);
        ASSERT_EQ(deps.n, t.ndeps);
        for (uint32_t d = 0; d < t.ndeps; d++)
            ASSERT_EQ(ff_msg_next_index(&deps), deps6[d]);
        ASSERT_EQ(t.nres, k ? 2 : 0);
        ASSERT_EQ(t.max_retries, k ? 7 : 0);
        ASSERT_EQ(t.timeout_ms, k ? 2500 : 0);
        ASSERT_EQ(t.retry_exceptions, k);
        ASSERT_EQ(t.max_restarts, 0);
        ASSERT_EQ(res.n, t.nres);
        for (uint32_t j = 0; j < t.nres; j++) {
            ff_msg_res r;
            ff_msg_next_res(&res, &r);
            ASSERT(str_is(r.name, r.len, two_res[j].name) && r.amount == two_res[j].amount);
        }
    }
    return rc == 1 ? 0 : rc;
}

/* The SUBMIT of rd_submit, in b. */
static int write_submit(ff_buf *b) {
    ff_buf tasks = {0};
    ff_msg_subtask t5 = {.fid = 1,
                         .name = "f_0005",
                         .name_len = 6,
                         .args = "args",
                         .nargs = 4,
                         .pre = "",
                         .npre = 0};
    ff_msg_subtask t6 = {.fid = 2,
                         .name = "f_0006",
                         .name_len = 6,
                         .leaf = 1,
                         .ndeps = 2,
                         .args = "args",
                         .nargs = 4,
                         .pre = "pre",
                         .npre = 3,
                         .nres = 2,
                         .max_retries = 7,
                         .timeout_ms = 2500,
                         .retry_exceptions = 1};
    ASSERT_EQ(ff_msg_subtask_write(&tasks, &t5, NULL, NULL), 0);
    ASSERT_EQ(ff_msg_subtask_write(&tasks, &t6, deps6, two_res), 0);
    ff_msg_submit m = {3, 8, 1, 10, 5, 2};
    int rc = ff_msg_submit_write(b, &m, tasks.p, tasks.n);
    ff_buf_free(&tasks);
    return rc;
}

static int rd_run_end(const char *p, size_t n) {
    uint64_t run;
    int rc = ff_msg_run_end_read(p, n, &run);
    if (rc == 0)
        ASSERT_EQ(run, 300);
    return rc;
}

static const unsigned char WD_HASH[FF_MSG_HASH_LEN] = "0123456789abcdef";

static int rd_workdir(const char *p, size_t n) {
    const unsigned char *hash;
    const char *blob;
    size_t len;
    int rc = ff_msg_workdir_read(p, n, &hash, &blob, &len);
    if (rc == 0) {
        ASSERT(memcmp(hash, WD_HASH, FF_MSG_HASH_LEN) == 0);
        ASSERT_EQ(len, 4);
        ASSERT(memcmp(blob, "FFWD", 4) == 0);
    }
    return rc;
}

static int rd_run_workdir(const char *p, size_t n) {
    uint64_t run;
    const unsigned char *hash;
    int rc = ff_msg_run_workdir_read(p, n, &run, &hash);
    if (rc == 0) {
        ASSERT_EQ(run, 301);
        ASSERT(memcmp(hash, WD_HASH, FF_MSG_HASH_LEN) == 0);
    }
    return rc;
}

static void test_driver_messages(void) {
    ff_msg_func f = {1, 2, "code", 4};
    CHECK_MSG(FF_M_FUNC, ff_msg_func_write(b, &f), rd_func);
    CHECK_MSG(FF_M_SUBMIT, write_submit(b), rd_submit);
    CHECK_MSG(FF_M_RUN_END, ff_msg_run_end_write(b, 300), rd_run_end);
    CHECK_MSG(FF_M_WORKDIR, ff_msg_workdir_write(b, WD_HASH, "FFWD", 4), rd_workdir);
    CHECK_MSG(FF_M_RUN_WORKDIR, ff_msg_run_workdir_write(b, 301, WD_HASH), rd_run_workdir);
    ff_buf b = {0};
    ASSERT_EQ(ff_msg_status_write(&b), 0);
    ASSERT_EQ(b.n, FF_FRAME_HDR);
    ASSERT_EQ(b.p[4], FF_M_STATUS);
    ASSERT_EQ(ff_msg_status_read(b.p, 0), 0);
    ASSERT_EQ(ff_msg_status_read("x", 1), FFLUA_EPROTO);
    ff_buf_free(&b);
}

/* What a SUBMIT may not say: its counts are checked against what follows,
 * a task depends only on earlier tasks. */
static void test_submit_claims(void) {
    ff_buf b = {0}, tasks = {0};
    ff_msg_submit m;
    ff_msg_tasks it;
    ff_msg_subtask t;
    ff_msg_list deps, res;
    /* A count of a million tasks in a few bytes. */
    ff_msg_submit big = {1, 0, 0, 2000000, 0, 1000000};
    ASSERT_EQ(ff_msg_submit_write(&b, &big, "abc", 3), 0);
    ASSERT_EQ(ff_msg_submit_read(b.p + FF_FRAME_HDR, b.n - FF_FRAME_HDR, &m, &it), FFLUA_EPROTO);
    /* Past the run's total; none; a total of 0. */
    ff_msg_submit bad[] = {{1, 0, 0, 2, 1, 2}, {1, 0, 0, 2, 0, 0}, {1, 0, 0, 0, 0, 1}};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        b.n = 0;
        ASSERT_EQ(ff_msg_submit_write(&b, &bad[k], "abcdefghijklmnop", 16), 0);
        ASSERT_EQ(ff_msg_submit_read(b.p + FF_FRAME_HDR, b.n - FF_FRAME_HDR, &m, &it),
                  FFLUA_EPROTO);
    }
    /* Task 1 depending on task 1, then on more tasks than come before it. */
    uint32_t self[] = {1}, two[] = {0, 0};
    ff_msg_subtask t0 = {.fid = 1, .name = "a", .name_len = 1, .args = "x", .nargs = 1};
    ff_msg_subtask t1 = t0;
    t1.ndeps = 1;
    for (int k = 0; k < 2; k++) {
        tasks.n = 0;
        b.n = 0;
        t1.ndeps = k ? 2 : 1;
        ASSERT_EQ(ff_msg_subtask_write(&tasks, &t0, NULL, NULL), 0);
        ASSERT_EQ(ff_msg_subtask_write(&tasks, &t1, k ? two : self, NULL), 0);
        ff_msg_submit two_tasks = {1, 0, 0, 2, 0, 2};
        ASSERT_EQ(ff_msg_submit_write(&b, &two_tasks, tasks.p, tasks.n), 0);
        ASSERT_EQ(ff_msg_submit_read(b.p + FF_FRAME_HDR, b.n - FF_FRAME_HDR, &m, &it), 0);
        ASSERT_EQ(ff_msg_submit_next(&it, &t, &deps, &res), 0);
        ASSERT_EQ(ff_msg_submit_next(&it, &t, &deps, &res), FFLUA_EPROTO);
    }
    ff_buf_free(&tasks);
    ff_buf_free(&b);
}

/* --- head -> worker ------------------------------------------------------ */

static const ff_msg_dep task_deps[] = {{4, 1, "\x01\x82", 2}, {9, 0, NULL, 0}, {11, 1, "", 0}};

static int rd_task(const char *p, size_t n) {
    ff_msg_task m;
    ff_msg_list deps;
    int rc = ff_msg_task_read(p, n, &m, &deps);
    if (rc != 0)
        return rc;
    ASSERT(m.run == 2 && m.index == 12 && m.fid == 3 && str_is(m.name, m.name_len, "g_0012"));
    ASSERT(str_is(m.args, m.nargs, "args") && str_is(m.pre, m.npre, "pre") && m.cpus == 5000);
    ASSERT_EQ(m.ndeps, 3);
    ASSERT_EQ(deps.n, 3);
    for (int k = 0; k < 3; k++) {
        ff_msg_dep d;
        ff_msg_next_dep(&deps, &d);
        ASSERT_EQ(d.index, task_deps[k].index);
        ASSERT_EQ(d.has, task_deps[k].has);
        if (d.has)
            ASSERT(d.len == task_deps[k].len && memcmp(d.result, task_deps[k].result, d.len) == 0);
    }
    return 0;
}

static ff_msg_task the_task = {.run = 2,
                               .index = 12,
                               .fid = 3,
                               .name = "g_0012",
                               .name_len = 6,
                               .ndeps = 3,
                               .args = "args",
                               .nargs = 4,
                               .pre = "pre",
                               .npre = 3,
                               .cpus = 5000,
                               .timeout_ms = 90000};

static int rd_free(const char *p, size_t n) {
    uint64_t run;
    ff_msg_list tasks;
    int rc = ff_msg_free_read(p, n, &run, &tasks);
    if (rc == 0) {
        ASSERT(run == 5 && tasks.n == 3);
        ASSERT(ff_msg_next_index(&tasks) == 1 && ff_msg_next_index(&tasks) == 200);
        ASSERT(ff_msg_next_index(&tasks) == 70000 && tasks.n == 0);
    }
    return rc;
}

static void test_head_to_worker(void) {
    CHECK_MSG(FF_M_TASK, ff_msg_task_write(b, &the_task, task_deps), rd_task);
    uint32_t freed[] = {1, 200, 70000};
    CHECK_MSG(FF_M_FREE, ff_msg_free_write(b, 5, freed, 3), rd_free);
    /* The size a TASK will take is the size it takes. */
    ff_buf b = {0};
    ASSERT_EQ(ff_msg_task_write(&b, &the_task, task_deps), 0);
    ASSERT_EQ(ff_msg_task_size(&the_task, task_deps), b.n - 4);
    /* A dependency that says it has a result with has = 2. */
    for (size_t i = FF_FRAME_HDR; i + 1 < b.n; i++)
        if (b.p[i] == 9 && b.p[i + 1] == 0) { /* dep 9, has 0 */
            b.p[i + 1] = 2;
            break;
        }
    ff_msg_task m;
    ff_msg_list deps;
    ASSERT_EQ(ff_msg_task_read(b.p + FF_FRAME_HDR, b.n - FF_FRAME_HDR, &m, &deps), FFLUA_EPROTO);
    /* A result larger than a frame: the size says so before anything is
     * written (the bytes are never read). */
    ff_msg_dep huge = {1, 1, "", FF_FRAME_MAX};
    ff_msg_task one = the_task;
    one.ndeps = 1;
    ASSERT(ff_msg_task_size(&one, &huge) > FF_FRAME_MAX);
    ff_buf_free(&b);
}

/* --- head -> driver ------------------------------------------------------ */

static int rd_done(const char *p, size_t n) {
    ff_msg_done m;
    int rc = ff_msg_done_read(p, n, &m);
    if (rc == 0)
        ASSERT(m.run == 4 && m.index == 17 && m.status == FF_DONE_FAILED &&
               str_is(m.bytes, m.len, "boom") && str_is(m.worker, m.worker_len, "build7:1") &&
               m.attempts == 3);
    return rc;
}

/* RUN_END's placements carry no count of their own: the reader's caller
 * checks it (3 here). */
static int rd_placement(const char *p, size_t n) {
    uint64_t run;
    ff_msg_list names, places;
    int rc = ff_msg_placement_read(p, n, &run, &names, &places);
    if (rc != 0)
        return rc;
    if (places.n != 3)
        return FFLUA_EPROTO;
    ASSERT(run == 9 && names.n == 2);
    ff_msg_str s;
    ff_msg_next_str(&names, &s);
    ASSERT(str_is(s.p, s.len, "build7:1"));
    ff_msg_next_str(&names, &s);
    ASSERT(str_is(s.p, s.len, "(gone)"));
    ASSERT(ff_msg_next_index(&places) == 1 && ff_msg_next_index(&places) == 0 &&
           ff_msg_next_index(&places) == 2);
    return 0;
}

static int write_placement(ff_buf *b) {
    size_t at;
    ff_msg_placement_begin(b, 9, 2, &at);
    ff_msg_placement_name(b, "build7:1", 8);
    ff_msg_placement_name(b, "(gone)", 6);
    ff_msg_placement_place(b, 1);
    ff_msg_placement_place(b, 0);
    ff_msg_placement_place(b, 2);
    return ff_msg_placement_end(b, at);
}

static void test_head_to_driver(void) {
    ff_msg_done d = {4, 17, FF_DONE_FAILED, "boom", 4, "build7:1", 8, 3};
    CHECK_MSG(FF_M_DONE, ff_msg_done_write(b, &d), rd_done);
    CHECK_MSG(FF_M_RUN_END, write_placement(b), rd_placement);
    ff_buf b = {0};
    d.status = FF_DONE_LAST;
    ASSERT_EQ(ff_msg_done_write(&b, &d), 0);
    ASSERT_EQ(ff_msg_done_read(b.p + FF_FRAME_HDR, b.n - FF_FRAME_HDR, &d), FFLUA_EPROTO);
    ff_buf_free(&b);
}

/* --- the status reply ---------------------------------------------------- */

static int rd_status_reply(const char *p, size_t n) {
    ff_msg_status_reply m;
    ff_msg_list places, res;
    int rc = ff_msg_status_reply_read(p, n, &m, &places);
    if (rc != 0)
        return rc;
    ASSERT(m.queued == 1 && m.running == 2 && m.finished == 3 && places.n == 2);
    ff_msg_place pl;
    ff_msg_res_state rs;
    ff_msg_next_place(&places, &pl, &res);
    ASSERT(str_is(pl.name, pl.len, "a:1") && pl.running == 2 && res.n == 2);
    ASSERT(memcmp(pl.machine, machine_a, FF_MACHINE_LEN) == 0);
    ff_msg_next_res_state(&res, &rs);
    ASSERT(str_is(rs.name, rs.len, "CPU") && rs.total == 40000 && rs.free == 20000);
    ff_msg_next_res_state(&res, &rs);
    ASSERT(str_is(rs.name, rs.len, "gpu") && rs.total == 10000 && rs.free == 0);
    ff_msg_next_place(&places, &pl, &res);
    ASSERT(str_is(pl.name, pl.len, "b:2") && pl.running == 0 && res.n == 1);
    ASSERT(memcmp(pl.machine, machine_b, FF_MACHINE_LEN) == 0);
    ff_msg_next_res_state(&res, &rs);
    ASSERT(str_is(rs.name, rs.len, "CPU") && rs.total == 10000 && rs.free == 10000);
    return 0;
}

static int write_status_reply(ff_buf *b) {
    size_t at;
    ff_msg_status_reply_begin(b, 2, &at);
    ff_msg_status_place(b, &(ff_msg_place){"a:1", 3, machine_a, 2}, 2);
    ff_msg_status_res(b, &(ff_msg_res_state){"CPU", 3, 40000, 20000});
    ff_msg_status_res(b, &(ff_msg_res_state){"gpu", 3, 10000, 0});
    ff_msg_status_place(b, &(ff_msg_place){"b:2", 3, machine_b, 0}, 1);
    ff_msg_status_res(b, &(ff_msg_res_state){"CPU", 3, 10000, 10000});
    return ff_msg_status_reply_end(b, at, &(ff_msg_status_reply){1, 2, 3});
}

static void test_status_reply(void) {
    CHECK_MSG(FF_M_STATUS_REPLY, write_status_reply(b), rd_status_reply);
    ff_buf b = {0};
    ASSERT_EQ(ff_msg_bye_write(&b), 0);
    ASSERT_EQ(b.n, FF_FRAME_HDR);
    ASSERT(memcmp(b.p, "\x01\x00\x00\x00\x0e", 5) == 0); /* protocol.md's example */
    ASSERT_EQ(ff_msg_bye_read(b.p, 0), 0);
    ASSERT_EQ(ff_msg_bye_read("x", 1), FFLUA_EPROTO);
    ff_buf_free(&b);
}

/* A writer whose buffer could not grow leaves nothing of its frame, and
 * says so; the frames before it stay. */
/* --- storage -------------------------------------------------------------- */

static const unsigned char a_machine[FF_MACHINE_LEN] = "machine:01234567";
static const ff_msg_str store_args[3] = {{"storage", 7}, {"w", 1}, {"task", 4}};
static const ff_msg_res disk_res[1] = {{"_disk", 5, 10}};

static void check_args(ff_msg_list *l) {
    ASSERT_EQ(l->n, 3);
    for (int i = 0; i < 3; i++) {
        ff_msg_str s;
        ff_msg_next_str(l, &s);
        ASSERT_EQ(s.len, store_args[i].len);
        ASSERT(memcmp(s.p, store_args[i].p, s.len) == 0);
    }
}

static int rd_store(const char *p, size_t n) {
    ff_msg_store m;
    ff_msg_list res, args;
    int rc = ff_msg_store_read(p, n, &m, &res, &args);
    if (rc == 0) {
        ASSERT_EQ(m.req, 9);
        ASSERT_EQ(m.op, FF_STORE_GET);
        ASSERT(m.machine != NULL && memcmp(m.machine, a_machine, FF_MACHINE_LEN) == 0);
        ff_msg_res r;
        ASSERT_EQ(res.n, 1);
        ff_msg_next_res(&res, &r);
        ASSERT(str_is(r.name, r.len, "_disk"));
        ASSERT_EQ(r.amount, 10);
        check_args(&args);
    }
    return rc;
}

static int rd_store_call(const char *p, size_t n) {
    uint64_t req, op;
    ff_msg_list args;
    int rc = ff_msg_store_call_read(p, n, &req, &op, &args);
    if (rc == 0) {
        ASSERT_EQ(req, FF_STORE_REQ_QUIET + 5);
        ASSERT_EQ(op, FF_STORE_GET);
        check_args(&args);
    }
    return rc;
}

static int rd_store_reply(const char *p, size_t n) {
    ff_msg_store_reply m;
    ff_msg_list out;
    int rc = ff_msg_store_reply_read(p, n, &m, &out);
    if (rc == 0) {
        ASSERT_EQ(m.req, 44);
        ASSERT_EQ(m.ok, 1);
        check_args(&out);
    }
    return rc;
}

static int rd_run_store(const char *p, size_t n) {
    ff_msg_run_store m;
    ff_msg_list res;
    int rc = ff_msg_run_store_read(p, n, &m, &res);
    if (rc == 0) {
        ASSERT_EQ(m.run, 3);
        ASSERT(m.machine == NULL);
        ASSERT_EQ(res.n, 1);
        ASSERT(str_is(m.path, m.path_len, "storage"));
        ASSERT(str_is(m.wf, m.wf_len, "w"));
    }
    return rc;
}

static void test_storage_messages(void) {
    ff_msg_store st = {.req = 9, .op = FF_STORE_GET, .nres = 1, .machine = a_machine};
    CHECK_MSG(FF_M_STORE, ff_msg_store_write(b, &st, disk_res, store_args, 3), rd_store);
    CHECK_MSG(FF_M_STORE_CALL,
              ff_msg_store_call_write(b, FF_STORE_REQ_QUIET + 5, FF_STORE_GET, store_args, 3),
              rd_store_call);
    CHECK_MSG(FF_M_STORE_REPLY, ff_msg_store_reply_write(b, 44, 1, store_args, 3), rd_store_reply);
    ff_msg_run_store rs = {
        .run = 3, .nres = 1, .path = "storage", .path_len = 7, .wf = "w", .wf_len = 1};
    CHECK_MSG(FF_M_RUN_STORE, ff_msg_run_store_write(b, &rs, disk_res), rd_run_store);
    /* A STORE forwarded as a STORE_CALL and a reply with another req carry
     * the same arguments. */
    ff_buf b = {0}, c = {0};
    ASSERT_EQ(ff_msg_store_write(&b, &st, disk_res, store_args, 3), 0);
    ff_msg_store m;
    ff_msg_list res, args;
    ASSERT_EQ(ff_msg_store_read(b.p + FF_FRAME_HDR, b.n - FF_FRAME_HDR, &m, &res, &args), 0);
    ASSERT_EQ(ff_msg_store_call_forward(&c, FF_STORE_REQ_QUIET + 5, &m), 0);
    ASSERT_EQ(rd_store_call(c.p + FF_FRAME_HDR, c.n - FF_FRAME_HDR), 0);
    b.n = c.n = 0;
    ASSERT_EQ(ff_msg_store_reply_write(&b, 7, 1, store_args, 3), 0);
    ff_msg_store_reply rep;
    ASSERT_EQ(ff_msg_store_reply_read(b.p + FF_FRAME_HDR, b.n - FF_FRAME_HDR, &rep, &args), 0);
    ASSERT_EQ(ff_msg_store_reply_forward(&c, 44, &rep), 0);
    ASSERT_EQ(rd_store_reply(c.p + FF_FRAME_HDR, c.n - FF_FRAME_HDR), 0);
    /* An unknown op, a machine of another length, an empty path. */
    b.n = 0;
    ff_msg_store bad = {.req = 1, .op = FF_STORE_OP_LAST};
    ASSERT_EQ(ff_msg_store_write(&b, &bad, NULL, store_args, 3), 0);
    ASSERT_EQ(ff_msg_store_read(b.p + FF_FRAME_HDR, b.n - FF_FRAME_HDR, &m, &res, &args),
              FFLUA_EPROTO);
    b.n = 0;
    ff_msg_run_store empty = {.run = 3, .path = "", .wf = "w", .wf_len = 1};
    ASSERT_EQ(ff_msg_run_store_write(&b, &empty, NULL), 0);
    ASSERT_EQ(ff_msg_run_store_read(b.p + FF_FRAME_HDR, b.n - FF_FRAME_HDR, &rs, &res),
              FFLUA_EPROTO);
    /* SUBMIT flags: saved carries a fingerprint; loaded carries the one
     * its stored result must have, or none (any); loaded has no
     * dependencies and is not saved; unknown bits are malformed. */
    ff_buf tasks = {0};
    const unsigned char fp[FF_MSG_FP_LEN] = "0123456789abcdef";
    const unsigned char fp2[FF_MSG_FP_LEN] = "fedcba9876543210";
    ff_msg_subtask t0 = {
        .fid = 1, .name = "a", .name_len = 1, .save = 1, .fp = fp, .args = "", .pre = ""};
    ff_msg_subtask t1 = {.name = "b", .name_len = 1, .leaf = 1, .load = 1, .args = "", .pre = ""};
    ff_msg_subtask t2 = {.name = "c", .name_len = 1, .load = 1, .fp = fp2, .args = "", .pre = ""};
    ASSERT_EQ(ff_msg_subtask_write(&tasks, &t0, NULL, NULL), 0);
    ASSERT_EQ(ff_msg_subtask_write(&tasks, &t1, NULL, NULL), 0);
    ASSERT_EQ(ff_msg_subtask_write(&tasks, &t2, NULL, NULL), 0);
    ff_msg_submit sm = {1, 0, 0, 3, 0, 3};
    b.n = 0;
    ASSERT_EQ(ff_msg_submit_write(&b, &sm, tasks.p, tasks.n), 0);
    ff_msg_tasks it;
    ff_msg_subtask t;
    ff_msg_list deps;
    ASSERT_EQ(ff_msg_submit_read(b.p + FF_FRAME_HDR, b.n - FF_FRAME_HDR, &sm, &it), 0);
    ASSERT_EQ(ff_msg_submit_next(&it, &t, &deps, &res), 0);
    ASSERT(t.save && !t.load && !t.leaf && memcmp(t.fp, fp, FF_MSG_FP_LEN) == 0);
    ASSERT_EQ(ff_msg_submit_next(&it, &t, &deps, &res), 0);
    ASSERT(t.load && t.leaf && !t.save && t.fp == NULL);
    ASSERT_EQ(ff_msg_submit_next(&it, &t, &deps, &res), 0);
    ASSERT(t.load && !t.leaf && !t.save && t.fp != NULL && memcmp(t.fp, fp2, FF_MSG_FP_LEN) == 0);
    ASSERT_EQ(ff_msg_submit_next(&it, &t, &deps, &res), 1);
    /* A loaded task's fingerprint is 16 bytes or none: 15 is malformed. */
    tasks.n = 0;
    ASSERT_EQ(ff_msg_subtask_write(&tasks, &t0, NULL, NULL), 0);
    ASSERT_EQ(ff_msg_subtask_write(&tasks, &t1, NULL, NULL), 0);
    ff_wr_varint(&tasks, 0);
    ff_wr_str(&tasks, "c", 1);
    ff_wr_varint(&tasks, FF_TASK_LOAD);
    ff_wr_str(&tasks, (const char *)fp2, FF_MSG_FP_LEN - 1);
    ff_wr_varint(&tasks, 0);
    ff_wr_str(&tasks, "", 0);
    ff_wr_str(&tasks, "", 0);
    ff_wr_varint(&tasks, 0);
    b.n = 0;
    ASSERT_EQ(ff_msg_submit_write(&b, &sm, tasks.p, tasks.n), 0);
    ASSERT_EQ(ff_msg_submit_read(b.p + FF_FRAME_HDR, b.n - FF_FRAME_HDR, &sm, &it), 0);
    ASSERT_EQ(ff_msg_submit_next(&it, &t, &deps, &res), 0);
    ASSERT_EQ(ff_msg_submit_next(&it, &t, &deps, &res), 0);
    ASSERT_EQ(ff_msg_submit_next(&it, &t, &deps, &res), FFLUA_EPROTO);
    sm = (ff_msg_submit){1, 0, 0, 2, 0, 2};
    /* The second task loaded and saved at once: malformed. */
    tasks.n = 0;
    t1.save = 1;
    t1.fp = fp;
    ASSERT_EQ(ff_msg_subtask_write(&tasks, &t0, NULL, NULL), 0);
    ASSERT_EQ(ff_msg_subtask_write(&tasks, &t1, NULL, NULL), 0);
    b.n = 0;
    ASSERT_EQ(ff_msg_submit_write(&b, &sm, tasks.p, tasks.n), 0);
    ASSERT_EQ(ff_msg_submit_read(b.p + FF_FRAME_HDR, b.n - FF_FRAME_HDR, &sm, &it), 0);
    ASSERT_EQ(ff_msg_submit_next(&it, &t, &deps, &res), 0);
    ASSERT_EQ(ff_msg_submit_next(&it, &t, &deps, &res), FFLUA_EPROTO);
    ff_buf_free(&tasks);
    ff_buf_free(&b);
    ff_buf_free(&c);
}

static void test_writers_fail_whole(void) {
    ff_buf b = {0};
    ASSERT_EQ(ff_msg_bye_write(&b), 0);
    size_t kept = b.n;
    b.err = -ENOMEM; /* as a failed reservation leaves it */
    ASSERT_EQ(ff_msg_task_write(&b, &the_task, task_deps), -ENOMEM);
    ASSERT_EQ(b.n, kept);
    ASSERT_EQ(b.err, 0);
    b.err = -ENOMEM;
    ASSERT_EQ(write_status_reply(&b), -ENOMEM);
    ASSERT_EQ(b.n, kept);
    b.err = -ENOMEM;
    ff_msg_subtask t = {.name = "", .args = "", .pre = ""};
    ASSERT_EQ(ff_msg_subtask_write(&b, &t, NULL, NULL), -ENOMEM);
    ff_buf_free(&b);
}

/* Actors: a constructor and a method call of it in a SUBMIT, and in a
 * TASK; a method's constructor must come before it, and a task cannot be
 * both. */
static void test_actor_flags(void) {
    ff_buf b = {0}, tasks = {0};
    ff_msg_subtask ctor = {.fid = 1, .name = "C", .name_len = 1, .actor = FF_ACTOR_CTOR};
    ff_msg_subtask call = {.fid = 2,
                           .name = "C.m",
                           .name_len = 3,
                           .leaf = 1,
                           .actor = FF_ACTOR_METHOD,
                           .ctor = 0,
                           .ndeps = 1};
    uint32_t dep0[] = {0};
    ASSERT_EQ(ff_msg_subtask_write(&tasks, &ctor, NULL, NULL), 0);
    ASSERT_EQ(ff_msg_subtask_write(&tasks, &call, dep0, NULL), 0);
    ff_msg_submit m = {1, 0, 0, 2, 0, 2};
    ASSERT_EQ(ff_msg_submit_write(&b, &m, tasks.p, tasks.n), 0);
    ff_msg_submit rm;
    ff_msg_tasks it;
    ff_msg_subtask t;
    ff_msg_list deps, res;
    ASSERT_EQ(ff_msg_submit_read(b.p + FF_FRAME_HDR, b.n - FF_FRAME_HDR, &rm, &it), 0);
    ASSERT_EQ(ff_msg_submit_next(&it, &t, &deps, &res), 0);
    ASSERT(t.actor == FF_ACTOR_CTOR && t.leaf == 0);
    ASSERT_EQ(ff_msg_submit_next(&it, &t, &deps, &res), 0);
    ASSERT(t.actor == FF_ACTOR_METHOD && t.ctor == 0 && t.leaf == 1 && t.ndeps == 1);
    ASSERT_EQ(ff_msg_submit_next(&it, &t, &deps, &res), 1);
    /* A method of itself (its constructor not before it). */
    tasks.n = b.n = 0;
    call.ctor = 1;
    ASSERT_EQ(ff_msg_subtask_write(&tasks, &ctor, NULL, NULL), 0);
    ASSERT_EQ(ff_msg_subtask_write(&tasks, &call, dep0, NULL), 0);
    ASSERT_EQ(ff_msg_submit_write(&b, &m, tasks.p, tasks.n), 0);
    ASSERT_EQ(ff_msg_submit_read(b.p + FF_FRAME_HDR, b.n - FF_FRAME_HDR, &rm, &it), 0);
    ASSERT_EQ(ff_msg_submit_next(&it, &t, &deps, &res), 0);
    ASSERT_EQ(ff_msg_submit_next(&it, &t, &deps, &res), FFLUA_EPROTO);
    /* Both a constructor and a method: the flags byte of task 0 (after
     * fid 1 and the name "C") says 8 | 16. */
    tasks.n = b.n = 0;
    ASSERT_EQ(ff_msg_subtask_write(&tasks, &ctor, NULL, NULL), 0);
    ASSERT_EQ((unsigned char)tasks.p[3], FF_TASK_CTOR);
    tasks.p[3] = (char)(FF_TASK_CTOR | FF_TASK_METHOD);
    ff_msg_submit one = {1, 0, 0, 1, 0, 1};
    ASSERT_EQ(ff_msg_submit_write(&b, &one, tasks.p, tasks.n), 0);
    ASSERT_EQ(ff_msg_submit_read(b.p + FF_FRAME_HDR, b.n - FF_FRAME_HDR, &rm, &it), 0);
    ASSERT_EQ(ff_msg_submit_next(&it, &t, &deps, &res), FFLUA_EPROTO);
    /* A TASK of a method call says its constructor; its size is its size. */
    ff_msg_task task = the_task;
    task.actor = FF_ACTOR_METHOD;
    task.ctor = 300;
    b.n = 0;
    ASSERT_EQ(ff_msg_task_write(&b, &task, task_deps), 0);
    ASSERT_EQ(ff_msg_task_size(&task, task_deps), b.n - 4);
    ff_msg_task rt;
    ASSERT_EQ(ff_msg_task_read(b.p + FF_FRAME_HDR, b.n - FF_FRAME_HDR, &rt, &deps), 0);
    ASSERT(rt.actor == FF_ACTOR_METHOD && rt.ctor == 300 && rt.cpus == 5000);
    task.actor = FF_ACTOR_CTOR;
    b.n = 0;
    ASSERT_EQ(ff_msg_task_write(&b, &task, task_deps), 0);
    ASSERT_EQ(ff_msg_task_read(b.p + FF_FRAME_HDR, b.n - FF_FRAME_HDR, &rt, &deps), 0);
    ASSERT(rt.actor == FF_ACTOR_CTOR && rt.ctor == 0);
    ff_buf_free(&b);
    ff_buf_free(&tasks);
}

/* --- faults --------------------------------------------------------------- */

static int rd_ping(const char *p, size_t n) {
    uint64_t ms;
    int rc = ff_msg_ping_read(p, n, &ms);
    if (rc == 0)
        ASSERT_EQ(ms, 5000);
    return rc;
}

static int rd_started(const char *p, size_t n) {
    uint64_t run;
    ff_msg_list tasks;
    int rc = ff_msg_started_read(p, n, &run, &tasks);
    if (rc == 0) {
        ASSERT(run == 8 && tasks.n == 2);
        ASSERT(ff_msg_next_index(&tasks) == 4 && ff_msg_next_index(&tasks) == 1u << 20);
    }
    return rc;
}

static int rd_handback(const char *p, size_t n) {
    uint64_t run;
    ff_msg_list tasks;
    int rc = ff_msg_handback_read(p, n, &run, &tasks);
    if (rc == 0)
        ASSERT(run == 8 && tasks.n == 2 && ff_msg_next_index(&tasks) == 4);
    return rc;
}

static int rd_stopping(const char *p, size_t n) {
    const char *why;
    size_t len;
    int rc = ff_msg_stopping_read(p, n, &why, &len);
    if (rc == 0)
        ASSERT(str_is(why, len, "terminated"));
    return rc;
}

/* A task's timeout goes to the worker; retries and restarts are checked
 * against what a task may have. */
static void test_fault_messages(void) {
    CHECK_MSG(FF_M_PING, ff_msg_ping_write(b, 5000), rd_ping);
    uint64_t ids[] = {4, 1u << 20};
    CHECK_MSG(FF_M_STARTED, ff_msg_started_write(b, 8, ids, 2), rd_started);
    CHECK_MSG(FF_M_HANDBACK, ff_msg_handback_write(b, 8, ids, 2), rd_handback);
    CHECK_MSG(FF_M_STOPPING, ff_msg_stopping_write(b, "terminated", 10), rd_stopping);
    ff_buf b = {0}, tasks = {0};
    ff_msg_task rt;
    ff_msg_list deps, res;
    ASSERT_EQ(ff_msg_task_write(&b, &the_task, task_deps), 0);
    ASSERT_EQ(ff_msg_task_read(b.p + FF_FRAME_HDR, b.n - FF_FRAME_HDR, &rt, &deps), 0);
    ASSERT_EQ(rt.timeout_ms, 90000);
    /* Bad counts: too many retries, restarts of a plain task, a loaded
     * task with a timeout; a run flag not known. */
    ff_msg_subtask bad[] = {
        {.name = "a", .name_len = 1, .max_retries = FF_MSG_RETRIES_MAX + 1},
        {.name = "a", .name_len = 1, .max_restarts = 1},
        {.name = "a", .name_len = 1, .load = 1, .timeout_ms = 10},
        {.name = "a", .name_len = 1, .load = 1, .retry_exceptions = 1},
    };
    ff_msg_submit one = {1, 0, 0, 1, 0, 1};
    ff_msg_submit rm;
    ff_msg_tasks it;
    ff_msg_subtask t;
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        tasks.n = b.n = 0;
        ASSERT_EQ(ff_msg_subtask_write(&tasks, &bad[k], NULL, NULL), 0);
        ASSERT_EQ(ff_msg_submit_write(&b, &one, tasks.p, tasks.n), 0);
        ASSERT_EQ(ff_msg_submit_read(b.p + FF_FRAME_HDR, b.n - FF_FRAME_HDR, &rm, &it), 0);
        ASSERT_EQ(ff_msg_submit_next(&it, &t, &deps, &res), FFLUA_EPROTO);
    }
    ff_msg_subtask ok = {.name = "a", .name_len = 1, .actor = FF_ACTOR_CTOR, .max_restarts = 2};
    tasks.n = b.n = 0;
    ASSERT_EQ(ff_msg_subtask_write(&tasks, &ok, NULL, NULL), 0);
    one.flags = 2;
    ASSERT_EQ(ff_msg_submit_write(&b, &one, tasks.p, tasks.n), 0);
    ASSERT_EQ(ff_msg_submit_read(b.p + FF_FRAME_HDR, b.n - FF_FRAME_HDR, &rm, &it), FFLUA_EPROTO);
    b.n = 0;
    one.flags = FF_RUN_KEEP_GOING;
    ASSERT_EQ(ff_msg_submit_write(&b, &one, tasks.p, tasks.n), 0);
    ASSERT_EQ(ff_msg_submit_read(b.p + FF_FRAME_HDR, b.n - FF_FRAME_HDR, &rm, &it), 0);
    ASSERT_EQ(ff_msg_submit_next(&it, &t, &deps, &res), 0);
    ASSERT(t.max_restarts == 2 && rm.flags == FF_RUN_KEEP_GOING);
    ff_buf_free(&b);
    ff_buf_free(&tasks);
}

int main(void) {
    RUN(test_handshake);
    RUN(test_fault_messages);
    RUN(test_worker_messages);
    RUN(test_driver_messages);
    RUN(test_submit_claims);
    RUN(test_head_to_worker);
    RUN(test_actor_flags);
    RUN(test_head_to_driver);
    RUN(test_status_reply);
    RUN(test_storage_messages);
    RUN(test_writers_fail_whole);
    return 0;
}
