/*
 * fuzz_net.c: libFuzzer target for what a hostile peer can send: each
 * input goes to every message reader (msg.h) as a payload, to both sides
 * of the handshake (net.h) and to a head without sockets as frames from a
 * worker and a driver (ff_head_fuzz).
 * Must never crash, leak or read out of bounds.
 */
#include <stddef.h>
#include <stdint.h>

#include "cluster.h"
#include "msg.h"
#include "net.h"
#include "text.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Walks a list that its reader accepted, to its end. */
static void walk_indices(ff_msg_list *l) {
    while (l->n > 0)
        ff_msg_next_index(l);
}

static void walk_res(ff_msg_list *l) {
    ff_msg_res r;
    while (l->n > 0)
        ff_msg_next_res(l, &r);
}

/* Every reader of msg.h over the same bytes, as a payload; what a reader
 * accepts is walked whole. Nothing may be read outside p[0..n). */
static void read_all(const char *p, size_t n) {
    ff_msg_hello h;
    ff_msg_auth a;
    unsigned char mac[FF_MAC_LEN];
    const char *s;
    size_t len;
    uint64_t run;
    ff_msg_list l1, l2;
    ff_msg_hello_read(p, n, &h);
    ff_msg_auth_read(p, n, &a);
    ff_msg_welcome_read(p, n, mac);
    ff_msg_refuse_read(p, n, &s, &len);
    ff_msg_register reg;
    if (ff_msg_register_read(p, n, &reg, &l1) == 0)
        walk_res(&l1);
    ff_msg_result res;
    ff_msg_result_read(p, n, &res);
    ff_msg_func fn;
    ff_msg_func_read(p, n, &fn);
    ff_msg_submit sub;
    ff_msg_tasks tasks;
    if (ff_msg_submit_read(p, n, &sub, &tasks) == 0) {
        ff_msg_subtask t;
        while (ff_msg_submit_next(&tasks, &t, &l1, &l2) == 0) {
            walk_indices(&l1);
            walk_res(&l2);
        }
    }
    ff_msg_run_end_read(p, n, &run);
    ff_msg_status_read(p, n);
    ff_msg_task task;
    if (ff_msg_task_read(p, n, &task, &l1) == 0) {
        ff_msg_dep d;
        while (l1.n > 0)
            ff_msg_next_dep(&l1, &d);
    }
    if (ff_msg_free_read(p, n, &run, &l1) == 0)
        walk_indices(&l1);
    ff_msg_done done;
    ff_msg_done_read(p, n, &done);
    if (ff_msg_placement_read(p, n, &run, &l1, &l2) == 0) {
        ff_msg_str str;
        while (l1.n > 0)
            ff_msg_next_str(&l1, &str);
        walk_indices(&l2);
    }
    ff_msg_status_reply st;
    if (ff_msg_status_reply_read(p, n, &st, &l1) == 0) {
        ff_msg_place place;
        ff_msg_res_state rs;
        while (l1.n > 0) {
            ff_msg_next_place(&l1, &place, &l2);
            while (l2.n > 0)
                ff_msg_next_res_state(&l2, &rs);
        }
    }
    ff_msg_store sto;
    ff_msg_str str;
    if (ff_msg_store_read(p, n, &sto, &l1, &l2) == 0) {
        walk_res(&l1);
        while (l2.n > 0)
            ff_msg_next_str(&l2, &str);
    }
    uint64_t req, op;
    if (ff_msg_store_call_read(p, n, &req, &op, &l1) == 0)
        while (l1.n > 0)
            ff_msg_next_str(&l1, &str);
    ff_msg_store_reply rep;
    if (ff_msg_store_reply_read(p, n, &rep, &l1) == 0)
        while (l1.n > 0)
            ff_msg_next_str(&l1, &str);
    ff_msg_run_store rs;
    if (ff_msg_run_store_read(p, n, &rs, &l1) == 0)
        walk_res(&l1);
    uint64_t ms;
    ff_msg_ping_read(p, n, &ms);
    if (ff_msg_started_read(p, n, &run, &l1) == 0)
        walk_indices(&l1);
    if (ff_msg_handback_read(p, n, &run, &l1) == 0)
        walk_indices(&l1);
    ff_msg_stopping_read(p, n, &s, &len);
    ff_msg_bye_read(p, n);
}

/* Calls fn for each frame of p[0..n), each after a sender byte as
 * ff_head_fuzz reads them (even: a worker, odd: a driver). */
static void each_frame(const char *p, size_t n,
                       void (*fn)(void *ud, int who, int type, const char *p, size_t n), void *ud) {
    for (size_t off = 0; off + 1 < n;) {
        int type;
        const char *payload;
        size_t plen, total;
        if (ff_frame_parse(p + off + 1, n - off - 1, FF_FRAME_MAX, &type, &payload, &plen,
                           &total) != 0)
            break;
        fn(ud, p[off] & 1, type, payload, plen);
        off += 1 + total;
    }
}

static void read_frame(void *ud, int who, int type, const char *p, size_t n) {
    (void)ud, (void)who, (void)type;
    read_all(p, n);
}

/* Both sides of a handshake: frames of a worker go to the server, of a
 * driver to the client. */
struct sides {
    ff_hs srv, cli;
    ff_buf out;
};

static void handshake_frame(void *ud, int who, int type, const char *p, size_t n) {
    struct sides *s = ud;
    s->out.n = 0;
    ff_hs_step(who ? &s->cli : &s->srv, type, p, n, &s->out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *p = (const char *)data;
    read_all(p, size);
    /* The corpus's conversations reach every reader too. */
    each_frame(p, size, read_frame, NULL);
    static const unsigned char key[FF_KEY_LEN];
    struct sides sides = {.out = {0}};
    ff_hs_server(&sides.srv, key, &sides.out);
    ff_hs_client(&sides.cli, FF_ROLE_DRIVER, key, "fuzz");
    each_frame(p, size, handshake_frame, &sides);
    ff_buf_free(&sides.out);
    int type;
    const char *payload;
    size_t plen, total;
    if (ff_frame_parse(p, size, FF_FRAME_MAX, &type, &payload, &plen, &total) == 0)
        read_all(payload, plen);
    ff_head_fuzz(p, size);
    /* What a peer says reaches logs escaped: printable, never a line end. */
    char esc[80];
    ff_text_escape(esc, sizeof esc, p, size);
    for (const char *q = esc; *q != '\0'; q++)
        if ((unsigned char)*q < 0x20 || *q == 0x7f)
            __builtin_trap();
    if (ff_text_escape_check(p, size) > size)
        __builtin_trap();
    return 0;
}
