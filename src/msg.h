/*
 * msg.h: the cluster's messages, one codec each, without I/O.
 *
 * This header is the authoritative declaration of every message's payload
 * (docs/protocol.md is the prose): for each, the layout, a struct with its
 * fields, a writer and a reader. The head, the worker and the driver build
 * and read payloads only through these functions; what frames, fields and
 * the handshake's cryptography are is in net.h.
 *
 * Writers append one whole frame to a buffer and return ff_frame_end's
 * result: 0; -ENOMEM when a write failed (the buffer remembers it); or
 * -EMSGSIZE when the frame is over FF_FRAME_MAX. On failure the frame is
 * removed, so that nothing cut short or oversized is ever sent. The
 * exceptions say so (the tasks of a SUBMIT are written apart, then framed;
 * the two long replies are written piece by piece).
 *
 * Readers take a frame's payload. They are strict: every length and count
 * is checked against what is left, every field must be there and nothing
 * may be left over; they return 0 or FFLUA_EPROTO. What they yield points
 * into the payload (valid as long as it is). Lists are not copied: a
 * reader checks a whole list, then hands out an ff_msg_list that the
 * caller walks with the ff_msg_next_* function of its kind, so reading
 * allocates nothing. Checks that need the reader's state (a run, a
 * scheduler) are the reader's caller's.
 *
 * "varint", "str", "amount": see net.h. Everything here may be called
 * from any thread on its own buffers.
 */
#ifndef FFLUA_MSG_H
#define FFLUA_MSG_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "net.h"

/* The most resources in a REGISTER or a task. */
#define FF_MSG_RES_MAX 256
/* A SUBMIT's frame header and its counts take at most this many bytes
 * besides its tasks. */
#define FF_MSG_SUBMIT_OVERHEAD 64

/* A list checked by its reader: n entries left, read from r by the
 * ff_msg_next_* function of the list's kind, at most n times. */
typedef struct ff_msg_list {
    ff_rd r;
    uint64_t n;
} ff_msg_list;

/* A resource: its name and an amount in fixed point (FF_RES_SCALE units
 * per 1.0, sched.h). */
typedef struct ff_msg_res {
    const char *name;
    size_t len;
    uint64_t amount;
} ff_msg_res;

/* A string: bytes and their count. */
typedef struct ff_msg_str {
    const char *p;
    size_t len;
} ff_msg_str;

/* Entries of the lists below. */
uint64_t ff_msg_next_index(ff_msg_list *l); /* varints: task indices, places */
void ff_msg_next_str(ff_msg_list *l, ff_msg_str *s);
void ff_msg_next_res(ff_msg_list *l, ff_msg_res *res);

/* --- the handshake ----------------------------------------------------------
 *
 * HELLO (server -> client): str magic "fflua-cluster", versions, nonce Ns.
 * AUTH (client -> server): versions, varint role (1 to 3), nonce Nc, mac.
 * WELCOME (server -> client): mac.
 * REFUSE (either way): str reason; then the sender closes.
 * versions: varint protocol, str fflua, str lua (net.h, ff_versions).
 */

typedef struct ff_msg_hello {
    ff_versions v;
    unsigned char nonce[FF_NONCE_LEN];
} ff_msg_hello;

typedef struct ff_msg_auth {
    ff_versions v;
    int role;
    unsigned char nonce[FF_NONCE_LEN];
    unsigned char mac[FF_MAC_LEN];
} ff_msg_auth;

/* HELLO with this build's versions. */
int ff_msg_hello_write(ff_buf *b, const unsigned char nonce[FF_NONCE_LEN]);
/* Also FFLUA_EPROTO for a wrong magic; versions are checked by the caller
 * (ff_versions_check). */
int ff_msg_hello_read(const char *p, size_t n, ff_msg_hello *m);
/* AUTH with this build's versions. */
int ff_msg_auth_write(ff_buf *b, int role, const unsigned char nonce[FF_NONCE_LEN],
                      const unsigned char mac[FF_MAC_LEN]);
int ff_msg_auth_read(const char *p, size_t n, ff_msg_auth *m);
int ff_msg_welcome_write(ff_buf *b, const unsigned char mac[FF_MAC_LEN]);
int ff_msg_welcome_read(const char *p, size_t n, unsigned char mac[FF_MAC_LEN]);
int ff_msg_refuse_write(ff_buf *b, const char *reason);
/* A malformed REFUSE still refuses: the result is then FFLUA_EPROTO and
 * *reason what could be read ("" when nothing could). The reason is the
 * peer's: escape it before printing. */
int ff_msg_refuse_read(const char *p, size_t n, const char **reason, size_t *len);

/* --- worker -> head ---------------------------------------------------------
 *
 * REGISTER, once, first:
 *   amount  cpus
 *   varint  nres                      at most FF_MSG_RES_MAX
 *   [ str name, amount capacity ] x nres
 *   str     host
 *   varint  pid
 *   str     machine                   FF_MACHINE_LEN bytes (ff_machine_id)
 * Names are checked by the head (ff_res_name_check), not here.
 */
typedef struct ff_msg_register {
    uint64_t cpus;
    const char *host;
    size_t host_len;
    uint64_t pid;
    const unsigned char *machine; /* FF_MACHINE_LEN bytes */
} ff_msg_register;

int ff_msg_register_write(ff_buf *b, const ff_msg_register *m, const ff_msg_res *res, size_t nres);
/* res: the resources (ff_msg_next_res). */
int ff_msg_register_read(const char *p, size_t n, ff_msg_register *m, ff_msg_list *res);

/* RESULT, a task's outcome:
 *   varint  run
 *   varint  index
 *   varint  status    FF_RESULT_*
 *   str     bytes     ok: FFC_CODE bytes of the result; otherwise the message
 *                     (a failed node's error with its traceback)
 *   varint  ns        time spent on the task
 */
enum {
    FF_RESULT_FAILED = 0,  /* the node raised an error (or the worker could not run it) */
    FF_RESULT_OK = 1,      /* bytes is the result */
    FF_RESULT_TIMEOUT = 2, /* stopped after its timeout_ms */
    FF_RESULT_LAST
};

typedef struct ff_msg_result {
    uint64_t run, index;
    int status; /* FF_RESULT_* */
    const char *bytes;
    size_t len;
    uint64_t ns;
} ff_msg_result;

int ff_msg_result_write(ff_buf *b, const ff_msg_result *m);
int ff_msg_result_read(const char *p, size_t n, ff_msg_result *m);

/* --- driver -> head ---------------------------------------------------------
 *
 * FUNC (also head -> worker), a function of a run:
 *   varint  run
 *   varint  fid
 *   str     code      FFC_CODE bytes
 */
typedef struct ff_msg_func {
    uint64_t run, fid;
    const char *code;
    size_t len;
} ff_msg_func;

int ff_msg_func_write(ff_buf *b, const ff_msg_func *m);
int ff_msg_func_read(const char *p, size_t n, ff_msg_func *m);

/* SUBMIT, a part of a run's tasks:
 *   varint  run
 *   varint  max_pending               0: no limit
 *   varint  flags                     FF_RUN_*: bit 0 keep going (as every part says)
 *   varint  total                     the run's tasks, at least 1
 *   varint  first                     the index of the first task here
 *   varint  count                     at least 1; first + count <= total
 *   task x count, task i (first <= i < first + count):
 *     varint  fid
 *     str     name
 *     varint  flags                   FF_TASK_*: bit 0 a leaf; bit 1 saved; bit 2 loaded;
 *                                     bit 3 an actor's constructor; bit 4 a method call
 *                                     of an actor (not with bit 3)
 *     fixed   fp                      bit 1 only: 16 bytes, its fingerprint
 *     str     fp                      bit 2 only: the fingerprint its stored result must
 *                                     have (16 bytes), or empty: any (cache mode "name")
 *     varint  ctor                    bit 4 only: the index of its constructor's task (< i)
 *     varint  ndeps                   at most i; 0 when loaded
 *     varint  dep x ndeps             each < i
 *     str     args                    FFC_CODE bytes of { n = N, ... }
 *     str     pre                     FFC_CODE bytes of the pre-run function, or empty
 *     varint  nres                    at most FF_MSG_RES_MAX
 *     [ str name, amount ] x nres
 *     varint  max_retries             times it may run again after its worker was
 *                                     lost, it timed out, or (bit 5) it failed;
 *                                     at most FF_MSG_RETRIES_MAX
 *     varint  timeout_ms              0: none
 *     varint  max_restarts            bit 3 only (0 otherwise): times its actor may be
 *                                     rebuilt after its worker was lost; at most
 *                                     FF_MSG_RETRIES_MAX
 *     flag bit 5 (FF_TASK_RETRY_EXC): an error of the node is retried too (not with
 *     bit 2, which also excludes the three counts above being nonzero)
 */
typedef struct ff_msg_submit {
    uint64_t run, max_pending, flags, total, first, count;
} ff_msg_submit;

/* Run flags of SUBMIT. Keep going: a failed task fails only the tasks
 * that depend on it; the others run, then the run ends with every
 * failure said. */
#define FF_RUN_KEEP_GOING 1u
#define FF_RUN_FLAGS 1u
/* max_retries and max_restarts, at most. */
#define FF_MSG_RETRIES_MAX 1000

/* Task flags of SUBMIT and TASK (TASK has bits 3 and 4 only). Saved: its
 * result goes to the run's storage, with its fingerprint. Loaded: it does
 * not run, the run's storage serves its result, which must still have the
 * fingerprint the driver saw when it planned the run (unless it sent
 * none); loaded excludes saved, the actor bits and dependencies. Other
 * bits are malformed. */
#define FF_TASK_LEAF 1u
#define FF_TASK_SAVE (1u << 1)
#define FF_TASK_LOAD (1u << 2)
#define FF_TASK_CTOR (1u << 3)      /* its result is an actor, which stays where it ran */
#define FF_TASK_METHOD (1u << 4)    /* runs where its actor (task ctor) is */
#define FF_TASK_RETRY_EXC (1u << 5) /* SUBMIT only: its errors are retried too */
#define FF_TASK_FLAGS 63u
#define FF_MSG_FP_LEN 16

/* What a task is to actors: FF_ACTOR_NONE, FF_ACTOR_CTOR or FF_ACTOR_METHOD. */
enum { FF_ACTOR_NONE = 0, FF_ACTOR_CTOR = 1, FF_ACTOR_METHOD = 2 };

/* A task of a SUBMIT. The writer takes its lists as arrays of ndeps and
 * nres entries; the reader hands them out as lists. */
typedef struct ff_msg_subtask {
    uint64_t index; /* reader: the task's index in the run (not on the wire) */
    uint64_t fid;
    const char *name;
    size_t name_len;
    int leaf, save, load;
    /* FF_MSG_FP_LEN bytes when save; when load, FF_MSG_FP_LEN bytes or
     * NULL (any stored result will do) */
    const unsigned char *fp;
    int actor;     /* FF_ACTOR_* */
    uint64_t ctor; /* FF_ACTOR_METHOD: its constructor's task index */
    uint32_t ndeps;
    const char *args, *pre;
    size_t nargs, npre;
    uint32_t nres;
    /* Faults: see SUBMIT above. */
    uint32_t max_retries, max_restarts;
    uint64_t timeout_ms;
    int retry_exceptions;
} ff_msg_subtask;

/* The tasks of a SUBMIT being read: ff_msg_submit_next gives each. */
typedef struct ff_msg_tasks {
    ff_rd r;
    uint64_t next, end; /* the index of the next task, and past the last */
} ff_msg_tasks;

/* Appends a task to b (not a frame: the tasks of a part are written, then
 * framed by ff_msg_submit_write). 0, or -ENOMEM (b->err is set). */
int ff_msg_subtask_write(ff_buf *b, const ff_msg_subtask *t, const uint32_t *deps,
                         const ff_msg_res *res);
/* Frames a SUBMIT whose tasks are the len bytes at tasks (ff_msg_subtask_write). */
int ff_msg_submit_write(ff_buf *b, const ff_msg_submit *m, const char *tasks, size_t len);
/* Reads a SUBMIT's counts and sets up *tasks for its tasks. */
int ff_msg_submit_read(const char *p, size_t n, ff_msg_submit *m, ff_msg_tasks *tasks);
/* The next task: 0 and its fields, dependencies (ff_msg_next_index) and
 * resources (ff_msg_next_res); once every task was read, 1 when nothing
 * is left over; FFLUA_EPROTO for a malformed task or bytes left over. */
int ff_msg_submit_next(ff_msg_tasks *tasks, ff_msg_subtask *t, ff_msg_list *deps, ff_msg_list *res);

/* RUN_END (driver -> head: cancel the run; head -> worker: drop the run's
 * functions and results):
 *   varint  run
 */
int ff_msg_run_end_write(ff_buf *b, uint64_t run);
int ff_msg_run_end_read(const char *p, size_t n, uint64_t *run);

/* WORKDIR (driver -> head, head -> worker), a working directory
 * (workdir.h), sent once per hash to each peer that needs it:
 *   fixed   hash      FF_WD_HASH_LEN (16) bytes: XXH3-128 of the blob
 *   str     blob      the packed directory; empty: forget this hash
 * RUN_WORKDIR (driver -> head before the run's first FUNC; head -> worker
 * before the run's first TASK there): the run's nodes run in that
 * directory:
 *   varint  run
 *   fixed   hash
 */
#define FF_MSG_HASH_LEN 16
int ff_msg_workdir_write(ff_buf *b, const unsigned char hash[FF_MSG_HASH_LEN], const char *blob,
                         size_t n);
int ff_msg_workdir_read(const char *p, size_t n, const unsigned char **hash, const char **blob,
                        size_t *len);
int ff_msg_run_workdir_write(ff_buf *b, uint64_t run, const unsigned char hash[FF_MSG_HASH_LEN]);
int ff_msg_run_workdir_read(const char *p, size_t n, uint64_t *run, const unsigned char **hash);

/* STATUS (driver or status client -> head): empty. */
int ff_msg_status_write(ff_buf *b);
int ff_msg_status_read(const char *p, size_t n);

/* --- head -> worker ---------------------------------------------------------
 *
 * TASK, a task to run:
 *   varint  run
 *   varint  index
 *   varint  fid
 *   str     name
 *   varint  ndeps
 *   [ varint dep, varint has (0 or 1), str result if has ] x ndeps
 *   str     args
 *   str     pre
 *   amount  cpus
 *   varint  flags     bit 3: an actor's constructor; bit 4: a method call (as SUBMIT's)
 *   varint  ctor      bit 4 only: its constructor's task index, a dependency
 *   varint  timeout_ms  0: none; past it the worker stops the task (RESULT's
 *                     FF_RESULT_TIMEOUT)
 */
typedef struct ff_msg_task {
    uint64_t run, index, fid;
    const char *name;
    size_t name_len;
    uint32_t ndeps;
    const char *args, *pre;
    size_t nargs, npre;
    uint64_t cpus;
    int actor;     /* FF_ACTOR_* */
    uint64_t ctor; /* FF_ACTOR_METHOD: its constructor's task index */
    uint64_t timeout_ms;
} ff_msg_task;

/* A dependency of a TASK: its index and, when has is 1, its result (has
 * 0: the worker holds it already). */
typedef struct ff_msg_dep {
    uint64_t index;
    int has;
    const char *result;
    size_t len;
} ff_msg_dep;

/* The frame's length with these ndeps dependencies (its type byte and
 * payload, what the frame header counts): for checking it against
 * FF_FRAME_MAX before writing anything. */
size_t ff_msg_task_size(const ff_msg_task *m, const ff_msg_dep *deps);
int ff_msg_task_write(ff_buf *b, const ff_msg_task *m, const ff_msg_dep *deps);
/* deps: the dependencies (ff_msg_next_dep). */
int ff_msg_task_read(const char *p, size_t n, ff_msg_task *m, ff_msg_list *deps);
void ff_msg_next_dep(ff_msg_list *l, ff_msg_dep *d);

/* FREE, results no task will need again:
 *   varint  run
 *   varint  n
 *   varint  index x n
 */
int ff_msg_free_write(ff_buf *b, uint64_t run, const uint32_t *tasks, size_t n);
/* tasks: the indices (ff_msg_next_index). */
int ff_msg_free_read(const char *p, size_t n, uint64_t *run, ff_msg_list *tasks);

/* --- head -> driver ---------------------------------------------------------
 *
 * DONE, a leaf's result or a failure:
 *   varint  run
 *   varint  index
 *   varint  status    FF_DONE_*
 *   str     bytes     ok: FFC_CODE bytes of the result; otherwise a message
 *   str     worker    failures: the worker ("host:pid") where it last ran, or empty
 *   varint  attempts  failures: how many times it was started (0: never)
 * With keep going, a run may have several failed DONEs, then its RUN_END.
 */
enum {
    FF_DONE_OK = 0,
    FF_DONE_FAILED = 1,  /* the node raised an error; bytes: the error and traceback */
    FF_DONE_REFUSED = 2, /* the head could not run it; bytes: why */
    FF_DONE_TIMEOUT = 3, /* stopped after its timeout, as often as it may be retried */
    FF_DONE_LOST = 4,    /* its worker was lost, as often as it may be retried */
    FF_DONE_LAST
};

typedef struct ff_msg_done {
    uint64_t run, index;
    int status;
    const char *bytes;
    size_t len;
    const char *worker;
    size_t worker_len;
    uint64_t attempts;
} ff_msg_done;

int ff_msg_done_write(ff_buf *b, const ff_msg_done *m);
int ff_msg_done_read(const char *p, size_t n, ff_msg_done *m);

/* RUN_END (head -> driver), every task finished, and where each ran:
 *   varint  run
 *   varint  nplaces
 *   str     name x nplaces           "host:pid", or "(gone)"
 *   varint  place x ntasks           per task in order: 1 + its place, 0: did not run
 * ntasks is the run's, not repeated. Written piece by piece: begin, then
 * exactly nplaces names and ntasks places, then end (which frames it:
 * 0, -ENOMEM or -EMSGSIZE as above). */
void ff_msg_placement_begin(ff_buf *b, uint64_t run, uint64_t nplaces, size_t *at);
void ff_msg_placement_name(ff_buf *b, const char *name, size_t len);
void ff_msg_placement_place(ff_buf *b, uint64_t place);
int ff_msg_placement_end(ff_buf *b, size_t at);
/* names: ff_msg_next_str; places: ff_msg_next_index, as many as are left
 * (the caller checks that count against the run's). */
int ff_msg_placement_read(const char *p, size_t n, uint64_t *run, ff_msg_list *names,
                          ff_msg_list *places);

/* PROGRESS (head -> driver), at most five times a second while a run goes:
 *   varint  run
 *   varint  done      tasks finished (computed or loaded)
 *   varint  running   tasks started and not finished
 *   varint  failed    tasks failed, or not run because one did
 *   varint  retried   starts beyond each task's first
 */
typedef struct ff_msg_progress {
    uint64_t run, done, running, failed, retried;
} ff_msg_progress;
int ff_msg_progress_write(ff_buf *b, const ff_msg_progress *m);
int ff_msg_progress_read(const char *p, size_t n, ff_msg_progress *m);

/* RUN_TIMES (head -> driver), right before a run's RUN_END:
 *   varint  run
 *   varint  ntasks
 *   per task, 5 varints: state (FF_TIMES_*); when it was queued, started
 *     and finished, each in microseconds since the head had the run's first
 *     SUBMIT, plus 1 (0: never); attempts (times it started)
 * Written piece by piece: begin, exactly ntasks tasks, end (0, -ENOMEM or
 * -EMSGSIZE as for every frame). */
enum { FF_TIMES_NOTRUN, FF_TIMES_DONE, FF_TIMES_LOADED, FF_TIMES_FAILED, FF_TIMES_SKIPPED };
void ff_msg_times_begin(ff_buf *b, uint64_t run, uint64_t ntasks, size_t *at);
void ff_msg_times_task(ff_buf *b, const uint64_t v[5]);
int ff_msg_times_end(ff_buf *b, size_t at);
/* tasks: 5 varints per task (ff_msg_next_index), *ntasks of them. */
int ff_msg_times_read(const char *p, size_t n, uint64_t *run, uint64_t *ntasks, ff_msg_list *tasks);

/* --- head -> asker ----------------------------------------------------------
 *
 * STATUS_REPLY, the cluster's state:
 *   varint  nplaces                   live places
 *   per place:
 *     str     name
 *     str     machine                 FF_MACHINE_LEN bytes
 *     varint  running
 *     varint  nres                    CPU, then each resource this place has
 *     [ str name, amount total, amount free ] x nres
 *   varint  queued
 *   varint  running
 *   varint  finished
 * Written piece by piece: begin, then per place ff_msg_status_place and
 * exactly its nres ff_msg_status_res, then end (which frames it). */
typedef struct ff_msg_status_reply {
    uint64_t queued, running, finished;
} ff_msg_status_reply;

typedef struct ff_msg_place {
    const char *name;
    size_t len;
    const unsigned char *machine; /* FF_MACHINE_LEN bytes */
    uint64_t running;
} ff_msg_place;

typedef struct ff_msg_res_state {
    const char *name;
    size_t len;
    uint64_t total, free;
} ff_msg_res_state;

void ff_msg_status_reply_begin(ff_buf *b, uint64_t nplaces, size_t *at);
void ff_msg_status_place(ff_buf *b, const ff_msg_place *place, uint64_t nres);
void ff_msg_status_res(ff_buf *b, const ff_msg_res_state *res);
int ff_msg_status_reply_end(ff_buf *b, size_t at, const ff_msg_status_reply *m);
/* places: ff_msg_next_place, whose res lists go to ff_msg_next_res_state. */
int ff_msg_status_reply_read(const char *p, size_t n, ff_msg_status_reply *m, ff_msg_list *places);
void ff_msg_next_place(ff_msg_list *l, ff_msg_place *place, ff_msg_list *res);
void ff_msg_next_res_state(ff_msg_list *l, ff_msg_res_state *res);

/* --- storage ----------------------------------------------------------------
 *
 * A storage of a cluster lives on one worker: the first live one (lowest
 * place) that has every resource asked for (its machine's totals, not what
 * is free) and, when a machine is given, is on that machine. Paths are
 * relative to that worker's startup directory.
 *
 * STORE (driver -> head), a call on a storage:
 *   varint  req                       the driver's, echoed by the reply
 *   varint  nres                      at most FF_MSG_RES_MAX
 *   [ str name, amount ] x nres       what the storage's worker must have
 *   str     machine                   empty, or FF_MACHINE_LEN bytes
 *   varint  op                        FF_STORE_* (1 .. FF_STORE_OP_LAST - 1)
 *   varint  nargs
 *   str     arg x nargs               arg 1 is the storage's path; see below
 * STORE_CALL (head -> worker), the call on its way:
 *   varint  req                       the head's (FF_STORE_REQ_QUIET: see there)
 *   varint  op
 *   varint  nargs
 *   str     arg x nargs
 * STORE_REPLY (worker -> head, head -> driver):
 *   varint  req
 *   varint  ok                        1 or 0
 *   varint  nout
 *   str     out x nout                failed: one str, the message
 * RUN_STORE (driver -> head, before the run's first SUBMIT), the storage a
 * run loads from and saves to:
 *   varint  run
 *   varint  nres  [ str name, amount ] x nres
 *   str     machine                   as in STORE
 *   str     path                      not empty
 *   str     wf                        the workflow's name there, not empty
 * The ops' arguments (after path) and replies are docs/protocol.md's; the
 * worker checks their counts (worker.c).
 */
enum {
    FF_STORE_LOOKUP = 1, /* wf, then name, fp pairs -> one status byte per pair */
    FF_STORE_GET,        /* wf, then name, fp (empty: any) pairs -> per pair: status byte + value */
    FF_STORE_PUT,        /* wf, name, fp, ns (8 bytes LE), value -> nothing */
    FF_STORE_FLUSH,      /* -> nothing, once committed */
    FF_STORE_LIST,       /* wf [, pattern] -> names */
    FF_STORE_DEL,        /* wf, name -> "1" or "0" (absent) */
    FF_STORE_DEL_MANY,   /* wf, names -> nothing */
    FF_STORE_DROP,       /* wf -> nothing */
    FF_STORE_WORKFLOWS,  /* -> names */
    FF_STORE_RUNS,       /* wf -> the keys of its run records, oldest first */
    FF_STORE_OP_LAST
};
/* A PUT whose req is at least this answers only when it fails (the head's
 * saves of a run's results); other calls always answer. */
#define FF_STORE_REQ_QUIET ((uint64_t)1 << 62)
/* Status bytes of LOOKUP and GET. */
enum { FF_STORED_NONE = 0, FF_STORED_SAME, FF_STORED_OTHER, FF_STORED_DAMAGED };

typedef struct ff_msg_store {
    uint64_t req, op;
    uint32_t nres;
    const unsigned char *machine; /* NULL: any machine */
    const char *args;             /* reader: nargs and the args, as on the wire */
    size_t args_len;
} ff_msg_store;

typedef struct ff_msg_store_reply {
    uint64_t req;
    int ok;
    const char *out; /* reader: nout and the outs, as on the wire */
    size_t out_len;
} ff_msg_store_reply;

typedef struct ff_msg_run_store {
    uint64_t run;
    uint32_t nres;
    const unsigned char *machine;
    const char *path, *wf;
    size_t path_len, wf_len;
} ff_msg_run_store;

int ff_msg_store_write(ff_buf *b, const ff_msg_store *m, const ff_msg_res *res,
                       const ff_msg_str *args, size_t nargs);
/* res: ff_msg_next_res; args: ff_msg_next_str. */
int ff_msg_store_read(const char *p, size_t n, ff_msg_store *m, ff_msg_list *res,
                      ff_msg_list *args);
int ff_msg_store_call_write(ff_buf *b, uint64_t req, uint64_t op, const ff_msg_str *args,
                            size_t nargs);
/* The STORE_CALL of a STORE read into m (its args as they came). */
int ff_msg_store_call_forward(ff_buf *b, uint64_t req, const ff_msg_store *m);
int ff_msg_store_call_read(const char *p, size_t n, uint64_t *req, uint64_t *op, ff_msg_list *args);
int ff_msg_store_reply_write(ff_buf *b, uint64_t req, int ok, const ff_msg_str *out, size_t n);
int ff_msg_store_reply_read(const char *p, size_t n, ff_msg_store_reply *m, ff_msg_list *out);
/* The reply m (read) again, with another req. */
int ff_msg_store_reply_forward(ff_buf *b, uint64_t req, const ff_msg_store_reply *m);
int ff_msg_run_store_write(ff_buf *b, const ff_msg_run_store *m, const ff_msg_res *res);
int ff_msg_run_store_read(const char *p, size_t n, ff_msg_run_store *m, ff_msg_list *res);

/* --- faults -----------------------------------------------------------------
 *
 * PING (either way), a heartbeat:
 *   varint  timeout_ms
 * The head sends one to each peer every timeout_ms / FF_HEARTBEAT_PER
 * (a worker on this machine has at least that often, too) with the
 * cluster's heartbeat timeout; a worker answers every PING it gets with
 * one of its own carrying the same number. Any frame counts as a sign of
 * life: a peer that sent nothing for timeout_ms is taken for lost.
 *
 * STARTED (worker -> head), tasks of one run that began to run (sent in
 * the loop turn that learned it, so before their RESULT):
 *   varint  run
 *   varint  n
 *   varint  index x n
 * HANDBACK (worker -> head), tasks of one run it was sent and will not
 * run or not finish (it is stopping, it is being replaced, or the run
 * ended): the head runs them elsewhere, not counting an attempt; tasks of
 * an ended run are just released. Same layout as STARTED.
 *
 * STOPPING (either way), the sender stops: from the head, it is shutting
 * down (the peer's runs fail, a worker leaves); from a worker, it takes no
 * new tasks (it hands back what it will not run, finishes the rest, then
 * says BYE):
 *   str     why
 */
#define FF_HEARTBEAT_MS 5000 /* the default heartbeat timeout */
#define FF_HEARTBEAT_PER 5   /* pings per timeout */

int ff_msg_ping_write(ff_buf *b, uint64_t timeout_ms);
int ff_msg_ping_read(const char *p, size_t n, uint64_t *timeout_ms);
int ff_msg_started_write(ff_buf *b, uint64_t run, const uint64_t *tasks, size_t n);
int ff_msg_started_read(const char *p, size_t n, uint64_t *run, ff_msg_list *tasks);
int ff_msg_handback_write(ff_buf *b, uint64_t run, const uint64_t *tasks, size_t n);
int ff_msg_handback_read(const char *p, size_t n, uint64_t *run, ff_msg_list *tasks);
int ff_msg_stopping_write(ff_buf *b, const char *why, size_t len);
/* The reason is the peer's: escape it before printing. A worker that
 * stops with exactly this reason comes back as a new connection (it
 * replaces its process). */
#define FF_MSG_STOPPING_REPLACING "replacing its process"
int ff_msg_stopping_read(const char *p, size_t n, const char **why, size_t *len);

/* --- either way -------------------------------------------------------------
 *
 * BYE, closing cleanly: empty.
 */
int ff_msg_bye_write(ff_buf *b);
int ff_msg_bye_read(const char *p, size_t n);

#endif
