/*
 * head.c: `fflua head`, the cluster's coordinator. No Lua here.
 *
 * One libuv loop. Peers authenticate (conn.c), then say what they are:
 * workers REGISTER their capacities and become places of the scheduler
 * (sched.c); drivers SUBMIT the tasks of a run; status clients ask. A run
 * is an array of tasks in dependency order. A task is handed to the
 * scheduler when its parents are done, with the place of its first parent
 * as affinity; ff_sched_next then says what starts where. A TASK message
 * carries a parent's result only when the chosen worker does not hold it
 * already. Results of leaves go to the driver; intermediate results stay
 * with the workers (the head keeps a copy until every consumer finished,
 * so that a task that runs again never needs a lost worker's results).
 * A run with a storage (RUN_STORE) has it on one worker: the head sends it
 * the results of saved tasks (PUT) and asks it for those of loaded tasks
 * (GET), which never go through the scheduler; drivers' storage calls
 * (STORE) are forwarded to it.
 * A run's working directory (a blob by hash, as its driver sent it once)
 * goes to each worker once, before the run's first task there.
 * Unless told --num-cpus 0, the head starts local worker processes (one by
 * default) for its own CPUs and resources, as a Ray head node runs tasks
 * too, and starts another when one ends, backing off when they end soon
 * after starting and giving up after FF_LOCAL_GIVE_UP such ends in a row.
 * While local workers are kept, a task that they could hold waits for one
 * rather than failing because no worker is there at the moment.
 *
 * Actors: a class's constructor task is scheduled like any task; its
 * instance stays on the worker that ran it. Its method calls take no
 * scheduler slot: once ready (their parents, the previous call among
 * them, are done) they go straight to that worker, so they run there in
 * program order, and only that worker's RESULT for them counts. A worker
 * lost while an actor on it has calls left has it rebuilt elsewhere while
 * it has max_restarts left (its constructor again, then its finished
 * calls replayed in order), else its next call fails (actors_lost).
 *
 * Faults (docs/protocol.md, "Faults"). The head pings every peer each
 * fifth of the heartbeat timeout and drops a worker silent for the
 * timeout. A task counts an attempt when its worker says it STARTED; one
 * lost with its worker, timed out, or failed with retry_exceptions runs
 * again while it has attempts left (task_again), else fails for good
 * (task_fail): the run fails, or, keeping going, only what depends on it
 * (skipped, never started). HANDBACK queues tasks again without counting;
 * a worker's STOPPING closes its place in the scheduler.
 *
 * Nothing a peer does takes the head down: a failed write ends that
 * connection only (SIGPIPE is made harmless by the program), every frame
 * is checked against FF_FRAME_MAX and for memory before it is queued, and
 * what peers say reaches the log escaped (text.c's ff_text_escape).
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>
#include <uv.h>

#include "blobmap.h"
#include "cluster.h"
#include "conn.h"
#include "fflua.h"
#include "msg.h"
#include "net.h"
#include "sched.h"
#include "text.h"
#include "workdir.h"

static const char *WHO = "head";

/* Pipelining: a worker is given up to FF_PIPELINE times its CPUs in tasks,
 * so that it starts the next task without waiting for a round trip to the
 * head; it runs them in order within its real CPUs (worker.c). Custom
 * resources are never overcommitted: their limits hold for tasks sent, so
 * also for tasks running. */
#define FF_PIPELINE 4

/* Local workers: one that ends within FF_LOCAL_QUICK_MS of starting ended
 * "quickly"; the next starts after FF_LOCAL_BACKOFF_MS doubled for each
 * quick end in a row, and after FF_LOCAL_GIVE_UP of them none starts. */
#define FF_LOCAL_QUICK_MS 10000
#define FF_LOCAL_BACKOFF_MS 100
#define FF_LOCAL_GIVE_UP 5
/* How long the failure of tasks lost with a local worker waits for that
 * worker's exit status (its connection closes just before it exits). */
#define FF_GRAVE_MS 1000
/* A task lost with its worker before that worker said it started (so
 * without an attempt counted) runs again, but at most FF_LOST_GRACE times
 * more than it may start: a task that ends its worker at once could
 * otherwise take down workers for ever. */
#define FF_LOST_GRACE 2

/* T_REPLAY: a finished method call sent again to its rebuilt actor (its
 * result is dropped). T_SKIPPED: with keep going, a task never started
 * because a task it depends on failed. */
enum { T_PENDING, T_QUEUED, T_RUNNING, T_DONE, T_FAILED, T_REPLAY, T_SKIPPED };

typedef struct htask {
    uint64_t fid;
    char *name;
    uint32_t *deps, ndeps;
    uint32_t *cons, ncons, cons_cap; /* consumers (later tasks using this one) */
    uint32_t waiting;                /* parents not done */
    uint32_t unfinished;             /* consumers not yet finished */
    int leaf, state, place;
    int actor;             /* FF_ACTOR_*: class nodes (actors, see method_ready) */
    uint32_t ctor;         /* a method call: its constructor's task */
    uint32_t methods_left; /* a constructor: its method calls not yet done */
    char *args, *pre;
    size_t nargs, npre;
    ff_res *req; /* as the scheduler counts (sched_cpus) */
    size_t nreq;
    int64_t cpus;   /* the CPUs asked for, real */
    int save, load; /* FF_TASK_SAVE, FF_TASK_LOAD: see msg.h */
    int has_fp;     /* fp is set: saved, or loaded with a fingerprint to match */
    uint8_t fp[FF_MSG_FP_LEN];
    ff_buf result;
    uint64_t holders; /* places < 64 that hold the result */
    /* Faults. attempts: times it started (STARTED, or its RESULT); started:
     * the attempt under way has; deaths: the places of the workers lost
     * while it ran there (a poison task's victims), ndeaths of them. */
    uint32_t max_retries, max_restarts, restarts, attempts, ndeaths;
    uint64_t timeout_ms;
    int retry_exc, started;
    int pinned;      /* a parent of a restartable actor's task: kept until the run ends */
    int rebuilding;  /* a constructor being run again on another worker (then replays) */
    int out;         /* counted in its run's pending (queued, or sent) */
    uint32_t replay; /* a rebuilt constructor: the next method call to replay */
    uint64_t seq;    /* when it was last sent to a worker (h->sent, in order) */
    int *deaths;
    /* For the driver's record (RUN_TIMES): uv_hrtime() when it was first
     * queued, when its last attempt started (sent, then STARTED), when it
     * finished; 0: never. */
    uint64_t t_queued, t_started, t_ended;
} htask;

typedef struct hconn hconn;

/* A working directory (runtime_env.working_dir) a driver sent: kept while
 * a driver connection holds it or a run uses it (refs). */
typedef struct hwd {
    struct hwd *next;
    uint64_t id;
    unsigned char hash[FF_WD_HASH_LEN];
    char hex[9]; /* the hash's first bytes, for logs */
    char *blob;
    size_t n;
    int refs;
} hwd;

typedef struct hrun {
    struct hrun *next;
    uint64_t id, driver_run;
    hconn *driver;
    htask *tasks;
    uint32_t ntasks, finished; /* ntasks: the run's total, as announced */
    uint32_t received;         /* tasks received so far (SUBMITs come in order) */
    uint32_t tasks_cap;        /* tasks allocated (grows with what came) */
    blobmap funcs;
    hwd *wd; /* its working directory, or NULL (holds a reference) */
    int failed;
    uint32_t graves; /* failures waiting in graves (the run ends after them) */
    int keep_going;  /* FF_RUN_KEEP_GOING: a failure fails only what depends on it */
    /* max_pending_tasks: at most this many tasks queued or running (0: no
     * limit); ready tasks beyond it wait in `held`, oldest first. */
    uint32_t max_pending, pending;
    uint32_t *held;
    size_t held_head, held_n, held_cap;
    /* RUN_STORE: the worker holding the run's storage (-1: none), its path
     * and the workflow's name there (malloc'd). */
    int store_place;
    char *store_path, *store_wf;
    size_t store_path_len, store_wf_len;
    /* Progress: uv_hrtime() at the first SUBMIT, uv_now() when the last
     * PROGRESS went, tasks failed or skipped, starts beyond a task's first. */
    uint64_t t0, progress_ms;
    uint32_t nfailed, retried;
} hrun;

/* A driver's STORE on its way to a worker: the reply goes back with the
 * driver's req (driver NULL once it left: the reply is dropped). */
typedef struct hfwd {
    struct hfwd *next;
    uint64_t req, driver_req;
    struct hconn *driver;
    int place;
} hfwd;

struct hconn {
    ff_conn c;
    struct head *h;
    int place;      /* workers: their place, or -1 */
    int64_t cpus;   /* workers: their real CPUs (the place has FF_PIPELINE times) */
    uint64_t pid;   /* workers: the process id they gave */
    char name[96];  /* workers: "host:pid", the host escaped */
    char lost[128]; /* workers: why the head closed the connection, or "" */
    unsigned char machine[FF_MACHINE_LEN]; /* workers: their machine's identity */
    int64_t machine_key;                   /* workers: its key in the scheduler */
    struct hconn *next;
    blobmap funcs_sent; /* (run << 32 | fid) -> "" : functions this worker has */
    /* Drivers: the last run refused at submission, whose parts still on
     * the way (FUNC, SUBMIT, RUN_STORE, RUN_WORKDIR) are dropped until its
     * RUN_END. */
    uint64_t refused_run;
    int refused;
    /* c.nreads and the socket's write queue when seen_ms was last set:
     * bytes of a frame that takes a while to arrive (a large result) are
     * signs of life too, and so are bytes it takes of one the head sends
     * (a large TASK, behind which its PINGs wait). */
    uint64_t seen_reads;
    size_t seen_wq;
    blobmap wd_has;   /* hwd id -> "": drivers: the working dirs they hold; workers: have */
    blobmap wd_runs;  /* workers: run id -> "": runs whose RUN_WORKDIR they have */
    uint64_t seen_ms; /* when it last sent a frame (heartbeats) */
    int stopping;     /* workers: it sent STOPPING (its place takes no new tasks) */
    int returning;    /* workers: ... because it replaces its process: it comes back */
};

/* What the head remembers of every place ever given, for the messages of
 * tasks that ran there after its worker left. */
typedef struct hplace {
    char name[96];  /* "host:pid" */
    char lost[128]; /* why the head dropped it, or "" */
    char ended[64]; /* a local worker's process: how it ended, once it did */
    int local_pid;  /* a local worker's process id, else 0 */
} hplace;

/* A local worker process, and the slot it keeps across restarts. */
typedef struct hchild {
    uv_process_t proc;
    uv_timer_t restart; /* the back-off before the next process */
    struct head *h;
    int running;    /* proc is a live process (its exit not seen yet) */
    int proc_open;  /* proc is a handle not yet closed */
    int pid;        /* the last process's */
    char ended[64]; /* how the last process ended, once it did */
    uint64_t started_ms;
    unsigned quick; /* quick ends in a row */
    int given_up;
} hchild;

/* Failures of tasks that ran on a local worker whose connection closed
 * before its process was seen to end: they wait (at most FF_GRAVE_MS) so
 * that the driver learns how the process ended. */
struct grave_done {
    hconn *driver;
    uint64_t run; /* the driver's run id */
    uint32_t index;
    uint64_t run_id; /* the head's */
    uint32_t attempts;
    char *prefix; /* a task lost several times: its message up to this worker, or NULL */
};

typedef struct hgrave {
    struct hgrave *next;
    int pid;
    char name[96];
    uint64_t deadline_ms;
    size_t n, cap;
    struct grave_done *done;
} hgrave;

typedef struct head {
    uv_loop_t loop;
    uv_tcp_t server;
    uv_signal_t sigterm, sigint;
    /* Local workers: their slots, how to start them, what each can hold. */
    hchild *children;
    int nchildren, nchildren_live; /* live: slots not given up */
    char local_addr[300], local_cpus[32];
    const char *local_resources;
    ff_res local_cap[257];
    size_t nlocal_cap;
    int64_t local_cpus_units;
    hgrave *graves;
    uv_timer_t grave_timer;
    uv_tcp_t reject; /* takes a connection there is no memory for, to close it */
    int rejecting;   /* reject is closing (2: it had taken a connection) */
    ff_noise noise;
    char exe[4096];
    char hostname[64]; /* as workers on this machine give it, escaped */
    unsigned char key[FF_KEY_LEN];
    char token[512];
    ff_sched *sched;
    hconn *conns;
    hconn **places; /* place index -> worker connection */
    hplace *pinfo;  /* place index -> what is known of it (nplaces_cap of them) */
    int nplaces_cap;
    uint64_t *lost_ids; /* scratch: tasks lost with a worker, to queue again */
    size_t nlost, lost_cap;
    uint64_t sent; /* TASKs sent so far (htask.seq) */
    /* A worker left: until then, tasks no worker can hold wait for one
     * to join (may_wait); the timer fails those still waiting. */
    uint64_t rejoin_until;
    uv_timer_t rejoin;
    unsigned heartbeat_ms;
    uv_timer_t heartbeat;
    int64_t machines; /* machine keys given so far */
    hrun *runs;
    hfwd *fwds;        /* STOREs waiting for their worker's reply */
    uint64_t next_fwd; /* the last req given to one */
    hwd *wds;
    uint64_t next_wd;
    ff_msg_dep *deps; /* scratch: a TASK's dependencies */
    size_t deps_cap;
    uint64_t next_run;
    uint64_t finished_total;
    int stopping, quiet, verbose;
    unsigned handshake_ms;
    uv_timer_t parent_watch;
    uv_check_t flusher;
    pid_t parent;
} head;

#define TASK_ID(run, i) (((run) << 32) | (uint64_t)(i))
/* The req of a STORE_CALL the head makes for a task: a loaded task's GET,
 * or a saved task's PUT (which answers only when it fails). Forwarded
 * STOREs take reqs below both. */
#define REQ_LOAD ((uint64_t)1 << 63)
#define REQ_SAVE FF_STORE_REQ_QUIET

/* --- runs ---------------------------------------------------------------- */

static void task_free_fields(htask *t) {
    free(t->name);
    free(t->deps);
    free(t->cons);
    free(t->args);
    free(t->pre);
    free(t->req);
    free(t->deaths);
    ff_buf_free(&t->result);
}

static void wd_unref(head *h, hwd *w);

static void run_free(head *h, hrun *r) {
    if (r->wd != NULL)
        wd_unref(h, r->wd);
    for (hrun **pp = &h->runs; *pp; pp = &(*pp)->next)
        if (*pp == r) {
            *pp = r->next;
            break;
        }
    for (uint32_t i = 0; i < r->received; i++) {
        htask *t = &r->tasks[i];
        /* Queued tasks are cancelled; running ones keep their resources
         * until their worker reports (on_result releases them). */
        if (t->state == T_QUEUED)
            ff_sched_release(h->sched, TASK_ID(r->id, i));
        task_free_fields(t);
    }
    free(r->tasks);
    free(r->held);
    free(r->store_path);
    free(r->store_wf);
    bm_free(&r->funcs);
    free(r);
}

static hrun *run_find(head *h, uint64_t id) {
    for (hrun *r = h->runs; r; r = r->next)
        if (r->id == id)
            return r;
    return NULL;
}

/* Ends the connection of a peer the head cannot serve (it broke the
 * protocol, or a reply to it cannot be written); why is kept for the
 * failures of the tasks it ran. */
static void disconnect(hconn *c, const char *why) {
    if (c->c.state == FF_CONN_CLOSING)
        return;
    snprintf(c->lost, sizeof c->lost, "%s", why);
    ff_log(WHO, "%s: %s: disconnected", c->place >= 0 ? c->name : c->c.peer, why);
    ff_conn_close(&c->c);
}

/* Checks rc, a writer's result (msg.h) for a frame to c. A frame that
 * cannot be written (out of memory, for the small frames whose failure has
 * no better answer) ends the connection instead, so that the peer does not
 * wait for what never comes. Returns rc. */
static int sent_or_close(hconn *c, int rc, const char *what) {
    if (rc != 0) {
        char why[128];
        snprintf(why, sizeof why, "the head could not send it %s: %s", what, fflua_strerror(rc));
        disconnect(c, why);
    }
    return rc;
}

/* Tells every worker to drop what it holds of run id. */
static void broadcast_run_end(head *h, uint64_t id) {
    for (hconn *c = h->conns; c; c = c->next) {
        if (c->place < 0 || c->c.state != FF_CONN_READY)
            continue;
        bm_del(&c->wd_runs, id);
        sent_or_close(c, ff_msg_run_end_write(&c->c.out, id), "a RUN_END");
    }
}

/* --- working directories --------------------------------------------------- */

static hwd *wd_find(head *h, const unsigned char *hash) {
    for (hwd *w = h->wds; w; w = w->next)
        if (memcmp(w->hash, hash, FF_WD_HASH_LEN) == 0)
            return w;
    return NULL;
}

/* Drops a reference on w; the last one frees it and tells the workers
 * that have it to forget it. */
static void wd_unref(head *h, hwd *w) {
    if (--w->refs > 0)
        return;
    for (hconn *c = h->conns; c; c = c->next) {
        if (c->place < 0 || bm_find(&c->wd_has, w->id) == NULL)
            continue;
        bm_del(&c->wd_has, w->id);
        if (c->c.state == FF_CONN_READY)
            sent_or_close(c, ff_msg_workdir_write(&c->c.out, w->hash, "", 0), "a WORKDIR");
    }
    if (h->verbose)
        ff_log(WHO, "working directory %s forgotten", w->hex);
    for (hwd **pp = &h->wds; *pp; pp = &(*pp)->next)
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    free(w->blob);
    free(w);
}

static double mib(size_t n) {
    return (double)n / (1 << 20);
}

/* Sends DONE(run, i, status, bytes) to r's driver. When that cannot be
 * written (a leaf's result too large for a message with its header, or
 * no memory), the driver is told that instead, as a failure of task i.
 * Returns 0, or nonzero when the DONE meant could not be sent: a failure
 * went instead, and the run must end. */
static int send_done(hrun *r, uint32_t i, int status, const char *p, size_t n) {
    if (r->driver == NULL || r->driver->c.state != FF_CONN_READY)
        return 0;
    ff_buf *b = &r->driver->c.out;
    ff_msg_done m = {.run = r->driver_run, .index = i, .status = status, .bytes = p, .len = n};
    head *h = r->driver->h;
    if (status != FF_DONE_OK && status != FF_DONE_REFUSED && i < r->received) {
        const htask *t = &r->tasks[i];
        if (t->place >= 0 && t->place < h->nplaces_cap && t->attempts > 0) {
            m.worker = h->pinfo[t->place].name;
            m.worker_len = strlen(m.worker);
        }
        m.attempts = t->attempts;
    }
    int rc = ff_msg_done_write(b, &m);
    if (rc == 0)
        return 0;
    char msg[200];
    const char *what = status == 0 ? "result" : "message";
    if (rc == -EMSGSIZE)
        snprintf(msg, sizeof msg, "its %s (%.1f MiB) does not fit in a message to the driver", what,
                 mib(n));
    else
        snprintf(msg, sizeof msg,
                 "the head has not enough memory to send its %s (%.1f MiB) "
                 "to the driver",
                 what, mib(n));
    ff_msg_done fail = {.run = r->driver_run,
                        .index = i,
                        .status = status == FF_DONE_REFUSED ? FF_DONE_REFUSED : FF_DONE_FAILED,
                        .bytes = msg,
                        .len = strlen(msg)};
    sent_or_close(r->driver, ff_msg_done_write(b, &fail), "a DONE");
    return 1;
}

/* The -v line of a run that ends. */
static void log_run_end(head *h, hrun *r, const char *how) {
    if (h->verbose)
        ff_log(WHO, "driver %s: run %llu %s: %u of %u tasks finished",
               r->driver ? r->driver->c.peer : "(gone)", (unsigned long long)r->driver_run, how,
               r->finished, r->ntasks);
}

/* The run failed or was abandoned: cancel what is queued; the run ends. */
static void run_abort(head *h, hrun *r) {
    log_run_end(h, r, r->failed ? "failed" : "cancelled");
    broadcast_run_end(h, r->id);
    run_free(h, r);
}

/* Writes r's RUN_END with the placements (with none when they do not fit
 * in a message: the driver's results count more than where they came
 * from). */
static int write_run_end(head *h, hrun *r, int placement) {
    ff_buf *b = &r->driver->c.out;
    size_t at;
    int np = placement ? ff_sched_nplaces(h->sched) : 0;
    ff_msg_placement_begin(b, r->driver_run, (uint64_t)np, &at);
    for (int p = 0; p < np; p++) {
        const char *nm = p < h->nplaces_cap && h->places[p] ? h->places[p]->name : "(gone)";
        ff_msg_placement_name(b, nm, strlen(nm));
    }
    for (uint32_t i = 0; i < r->ntasks; i++)
        ff_msg_placement_place(b, placement ? (uint64_t)(r->tasks[i].place + 1) : 0);
    return ff_msg_placement_end(b, at);
}

/* Microseconds from the run's start to t, plus 1; 0 for never. */
static uint64_t run_us(const hrun *r, uint64_t t) {
    return t == 0 ? 0 : (t > r->t0 ? (t - r->t0) / 1000 : 0) + 1;
}

/* Writes r's RUN_TIMES (docs/protocol.md). */
static int write_run_times(hrun *r) {
    ff_buf *b = &r->driver->c.out;
    size_t at;
    ff_msg_times_begin(b, r->driver_run, r->ntasks, &at);
    for (uint32_t i = 0; i < r->ntasks; i++) {
        if (i >= r->received) { /* a run that failed before all its tasks came */
            static const uint64_t none[5] = {FF_TIMES_NOTRUN, 0, 0, 0, 0};
            ff_msg_times_task(b, none);
            continue;
        }
        const htask *t = &r->tasks[i];
        int st = t->state == T_DONE      ? (t->load ? FF_TIMES_LOADED : FF_TIMES_DONE)
                 : t->state == T_FAILED  ? FF_TIMES_FAILED
                 : t->state == T_SKIPPED ? FF_TIMES_SKIPPED
                                         : FF_TIMES_NOTRUN;
        uint64_t v[5] = {(uint64_t)st, run_us(r, t->t_queued), run_us(r, t->t_started),
                         run_us(r, t->t_ended), t->attempts};
        ff_msg_times_task(b, v);
    }
    return ff_msg_times_end(b, at);
}

/* Sends r's RUN_TIMES to its driver, if connected (logged when too big). */
static void send_times(hrun *r) {
    if (r->driver != NULL && r->driver->c.state == FF_CONN_READY && write_run_times(r) != 0)
        ff_log(WHO, "%s: the times of a run of %u tasks do not fit in a message: not sent",
               r->driver->c.peer, r->ntasks);
}

/* Tells r's driver how far the run is: now (force), or when the last
 * PROGRESS is at least 200 ms old. */
static void send_progress(head *h, hrun *r, int force) {
    uint64_t now = uv_now(&h->loop);
    if (r->driver == NULL || r->driver->c.state != FF_CONN_READY ||
        (!force && now < r->progress_ms + 200))
        return;
    r->progress_ms = now;
    ff_sched_stats st;
    ff_sched_get_stats(h->sched, &st);
    ff_msg_progress m = {r->driver_run, r->finished - r->nfailed, st.running, r->nfailed,
                         r->retried};
    ff_msg_progress_write(&r->driver->c.out, &m); /* without memory: the next one */
}

/* Every task finished: tell the driver what became of each and where it
 * ran, then forget it. */
static void run_finish(head *h, hrun *r) {
    send_times(r);
    if (r->driver != NULL && r->driver->c.state == FF_CONN_READY && write_run_end(h, r, 1) != 0) {
        ff_log(WHO,
               "%s: the placements of a run of %u tasks do not fit in a message: sent "
               "without them",
               r->driver->c.peer, r->ntasks);
        if (write_run_end(h, r, 0) != 0)
            disconnect(r->driver, "the head could not send it a RUN_END");
    }
    log_run_end(h, r, "done");
    broadcast_run_end(h, r->id);
    run_free(h, r);
}

/* --- dispatch ------------------------------------------------------------ */

/* Fails run r because of task i, whose DONE carries msg. The run ends
 * when the caller is done with r: it calls run_abort (r->failed says so). */
static void run_fail(hrun *r, uint32_t i, const char *msg) {
    if (r->failed)
        return;
    r->failed = 1;
    send_times(r);
    send_done(r, i, 1, msg, strlen(msg));
}

/* Ends run r if it failed (run_abort) or every task is settled
 * (run_finish). Returns 1 when r was freed. */
static int run_settle(head *h, hrun *r) {
    if (r->failed) {
        run_abort(h, r);
        return 1;
    }
    if (r->received == r->ntasks && r->finished == r->ntasks && r->graves == 0) {
        run_finish(h, r);
        return 1;
    }
    return 0;
}

/* Makes room for n dependencies in h->deps: 0, or -ENOMEM. */
static int task_deps(head *h, size_t n) {
    if (n <= h->deps_cap)
        return 0;
    size_t cap = h->deps_cap ? h->deps_cap : 16;
    while (cap < n)
        cap *= 2;
    ff_msg_dep *d = realloc(h->deps, cap * sizeof *d);
    if (d == NULL)
        return -ENOMEM;
    h->deps = d;
    h->deps_cap = cap;
    return 0;
}

/* Sends task i of run r to the worker at place, its function first when
 * that worker does not have it. Sizes are checked before anything is
 * written: either all of it is queued, or nothing and -1 with why in err. */
static int send_task(head *h, hrun *r, uint32_t i, int place, char *err, size_t errlen) {
    hconn *w = place < h->nplaces_cap ? h->places[place] : NULL;
    htask *t = &r->tasks[i];
    if (w == NULL || w->c.state != FF_CONN_READY) {
        snprintf(err, errlen, "the worker chosen for it is gone");
        return -1;
    }
    ff_conn *c = &w->c;
    uint64_t fkey = (r->id << 32) | t->fid;
    blob *f = NULL;
    if (bm_find(&w->funcs_sent, fkey) == NULL && (f = bm_find(&r->funcs, t->fid)) == NULL) {
        snprintf(err, errlen, "its function never arrived at the head");
        return -1;
    }
    if (task_deps(h, t->ndeps) != 0) {
        snprintf(err, errlen, "the head has not enough memory to send it to a worker");
        return -1;
    }
    size_t deps = 0; /* bytes of the parents' results the TASK carries */
    for (uint32_t d = 0; d < t->ndeps; d++) {
        htask *p = &r->tasks[t->deps[d]];
        int held = place < 64 && (p->holders >> place & 1);
        h->deps[d] = (ff_msg_dep){t->deps[d], !held, p->result.p, p->result.n};
        if (!held)
            deps += ff_str_size(p->result.n);
    }
    ff_msg_task m = {.run = r->id,
                     .index = i,
                     .fid = t->fid,
                     .name = t->name,
                     .name_len = strlen(t->name),
                     .ndeps = t->ndeps,
                     .args = t->args,
                     .pre = t->pre,
                     .nargs = t->nargs,
                     .npre = t->npre,
                     .cpus = (uint64_t)t->cpus,
                     .actor = t->actor,
                     .ctor = t->ctor,
                     .timeout_ms = t->timeout_ms};
    size_t size = ff_msg_task_size(&m, h->deps);
    if (size > FF_FRAME_MAX) {
        snprintf(err, errlen,
                 "it cannot be sent to a worker: its parents' results (%.1f MiB) and "
                 "its arguments (%.1f MiB) take more than the %d MiB one message "
                 "may carry",
                 mib(deps), mib(t->nargs + t->npre), (int)(FF_FRAME_MAX >> 20));
        return -1;
    }
    size_t start = c->out.n;
    hwd *wd = r->wd;
    int wd_blob = wd != NULL && bm_find(&w->wd_has, wd->id) == NULL;
    int wd_run = wd != NULL && bm_find(&w->wd_runs, r->id) == NULL;
    if ((wd_blob && ff_msg_workdir_write(&c->out, wd->hash, wd->blob, wd->n) != 0) ||
        (wd_run && ff_msg_run_workdir_write(&c->out, r->id, wd->hash) != 0)) {
        c->out.n = start;
        snprintf(err, errlen,
                 "the head has not enough memory to send its working directory "
                 "(%.1f MiB) to a worker",
                 mib(wd->n));
        return -1;
    }
    if (f != NULL && ff_msg_func_write(&c->out, &(ff_msg_func){r->id, t->fid, f->p, f->n}) != 0) {
        /* its driver sent it in one message: memory */
        c->out.n = start;
        snprintf(err, errlen,
                 "the head has not enough memory to send its function "
                 "(%.1f MiB) to a worker",
                 mib(f->n));
        return -1;
    }
    if (ff_msg_task_write(&c->out, &m, h->deps) != 0) {
        c->out.n = start; /* the FUNC and working directory too: nothing was sent */
        snprintf(err, errlen, "the head has not enough memory to send it to a worker (%.1f MiB)",
                 mib(size));
        return -1;
    }
    /* Sent: what the worker now holds, what the head no longer needs. */
    if (wd_blob && bm_put(&w->wd_has, wd->id, "", 0) == 0 && h->verbose)
        ff_log(WHO, "working directory %s sent to worker %s (%.1f KiB)", wd->hex, w->name,
               (double)wd->n / 1024);
    if (wd_run)
        bm_put(&w->wd_runs, r->id, "", 0); /* if this fails, the RUN_WORKDIR goes again */
    if (f != NULL)
        bm_put(&w->funcs_sent, fkey, "", 0); /* if this fails, the FUNC goes again */
    /* The head keeps its copy of the parents' results until their
     * consumers finished (settle_parents): this task may run again. */
    for (uint32_t d = 0; d < t->ndeps; d++)
        if (place < 64)
            r->tasks[t->deps[d]].holders |= (uint64_t)1 << place;
    t->state = T_RUNNING;
    t->started = 0;
    t->place = place;
    t->seq = ++h->sent;
    t->t_started = uv_hrtime(); /* until its STARTED says when */
    if (t->t_queued == 0)
        t->t_queued = t->t_started;
    return 0;
}

static void dispatch(head *h) {
    uint64_t id;
    int place;
    while (ff_sched_next(h->sched, &id, &place) == 0) {
        hrun *r = run_find(h, id >> 32);
        uint32_t i = (uint32_t)id;
        char err[300];
        if (r == NULL || i >= r->received || send_task(h, r, i, place, err, sizeof err) != 0) {
            ff_sched_release(h->sched, id);
            if (r != NULL && i < r->received) {
                r->tasks[i].state = T_FAILED;
                run_fail(r, i, err);
                run_abort(h, r);
            }
        }
    }
}

/* A request's CPUs as the scheduler counts them. Places hold FF_PIPELINE
 * times their CPUs; a task of at most one CPU takes what it asks (so up to
 * FF_PIPELINE of them go to each CPU), a bigger one FF_PIPELINE times it,
 * so that it only fits on a worker with the real CPUs it asks for, and
 * never shares them. */
static int64_t sched_cpus(int64_t asked) {
    return asked <= FF_RES_SCALE ? asked : asked * FF_PIPELINE;
}

/* Whether a local worker, when one is (re)started, can hold task t: such a
 * task waits for it rather than failing while no worker is there. */
static int fits_local(const head *h, const htask *t) {
    if (h->nchildren_live == 0 || h->stopping || t->cpus > h->local_cpus_units)
        return 0;
    for (size_t k = 0; k < t->nreq; k++) {
        int64_t cap = 0;
        for (size_t j = 0; j < h->nlocal_cap; j++)
            if (h->local_cap[j].id == t->req[k].id)
                cap = h->local_cap[j].amount;
        if (t->req[k].amount > cap)
            return 0;
    }
    return 1;
}

/* Whether task t, which no worker now present can hold, waits for one:
 * a local worker will hold it, or a worker left within the last
 * heartbeat timeout (one replacing its process connects again, and so
 * does one whose link came back). */
static int may_wait(const head *h, const htask *t) {
    return fits_local(h, t) || (!h->stopping && uv_now(&h->loop) < h->rejoin_until);
}

static hconn *store_worker(head *h, hrun *r) {
    int p = r->store_place;
    hconn *w = p >= 0 && p < h->nplaces_cap ? h->places[p] : NULL;
    return w != NULL && w->c.state == FF_CONN_READY ? w : NULL;
}

/* Task i is loaded from the run's storage: its worker is asked for it
 * (REQ_LOAD), with the fingerprint the driver found stored when it planned
 * the run, so that a result another run wrote since is not taken for it;
 * the reply is the task's result (on_store_reply). */
static void store_load(head *h, hrun *r, uint32_t i) {
    htask *t = &r->tasks[i];
    hconn *w = store_worker(h, r);
    if (w == NULL) {
        run_fail(r, i, "the worker holding the run's storage left the cluster");
        return;
    }
    ff_msg_str args[4] = {{r->store_path, r->store_path_len},
                          {r->store_wf, r->store_wf_len},
                          {t->name, strlen(t->name)},
                          {(const char *)t->fp, t->has_fp ? FF_MSG_FP_LEN : 0}};
    if (ff_msg_store_call_write(&w->c.out, REQ_LOAD | TASK_ID(r->id, i), FF_STORE_GET, args, 4) !=
        0) {
        run_fail(r, i, "the head has not enough memory to ask for its stored result");
        return;
    }
    t->state = T_RUNNING;
    t->place = r->store_place;
    t->out = 1;
    t->t_queued = t->t_queued ? t->t_queued : uv_hrtime();
    t->t_started = uv_hrtime();
    r->pending++;
}

/* A method call i whose parents are done goes to its actor's worker at
 * once, without the scheduler: the previous call on that actor is among
 * its parents, so calls run one after the other in program order, in
 * parallel with the rest of the run. */
static void method_ready(head *h, hrun *r, uint32_t i) {
    htask *t = &r->tasks[i];
    char err[300];
    if (r->tasks[t->ctor].rebuilding) {
        t->state = T_PENDING; /* sent once its actor is rebuilt (replay_next) */
        return;
    }
    if (send_task(h, r, i, r->tasks[t->ctor].place, err, sizeof err) != 0) {
        char msg[400];
        snprintf(msg, sizeof msg, "its actor '%s' cannot take it: %s", r->tasks[t->ctor].name, err);
        t->state = T_FAILED;
        run_fail(r, i, msg);
        return;
    }
    t->out = 1;
    r->pending++;
}

/* Queues task i (its parents are done), or holds it while the run has
 * max_pending tasks out. When it cannot be queued, the run fails (see
 * run_fail). */
static void make_ready(head *h, hrun *r, uint32_t i) {
    htask *t = &r->tasks[i];
    if (r->failed)
        return;
    if (r->max_pending > 0 && r->pending >= r->max_pending) {
        if (r->held_n == r->held_cap) {
            size_t cap = r->held_cap ? r->held_cap * 2 : 64;
            uint32_t *nh = malloc(cap * sizeof *nh);
            if (nh == NULL) {
                run_fail(r, i,
                         "the head has not enough memory to hold it back "
                         "(max_pending_tasks)");
                return;
            }
            for (size_t k = 0; k < r->held_n; k++)
                nh[k] = r->held[(r->held_head + k) % r->held_cap];
            free(r->held);
            r->held = nh;
            r->held_cap = cap;
            r->held_head = 0;
        }
        r->held[(r->held_head + r->held_n++) % r->held_cap] = i;
        return;
    }
    if (t->load) {
        store_load(h, r, i);
        return;
    }
    if (t->actor == FF_ACTOR_METHOD) {
        method_ready(h, r, i);
        return;
    }
    int affinity = t->ndeps > 0 ? r->tasks[t->deps[0]].place : -1;
    int bad;
    int rc = ff_sched_submit(h->sched, TASK_ID(r->id, i), t->req, t->nreq, affinity,
                             may_wait(h, t) ? FF_SCHED_WAIT : 0, &bad);
    if (rc == FFLUA_ERESOURCE) {
        /* The workers able to hold it left while its parents ran. */
        run_fail(r, i, "no worker left in the cluster can hold what it asks for");
        return;
    }
    if (rc != 0 && rc != FF_SCHED_WAITING) {
        run_fail(r, i, "the head has not enough memory to queue it");
        return;
    }
    t->state = T_QUEUED;
    t->out = 1;
    if (t->t_queued == 0)
        t->t_queued = uv_hrtime();
    r->pending++;
}

/* Task i of run r is no longer out (queued or sent): release what was
 * held back for it. */
static void task_out(head *h, hrun *r, uint32_t i) {
    if (!r->tasks[i].out)
        return;
    r->tasks[i].out = 0;
    r->pending--;
    while (r->held_n > 0 && (r->max_pending == 0 || r->pending < r->max_pending) && !r->failed) {
        uint32_t k = r->held[r->held_head];
        r->held_head = (r->held_head + 1) % r->held_cap;
        r->held_n--;
        make_ready(h, r, k);
    }
}

/* Task i's result is needed no more (its consumers all finished; a leaf
 * went to the driver): the workers holding it drop it. An actor's worker
 * is told also past the first 64 places, so that it drops the instance. */
static void free_result(head *h, hrun *r, uint32_t i) {
    uint64_t holders = r->tasks[i].holders;
    int at = r->tasks[i].place;
    if (r->tasks[i].actor == FF_ACTOR_CTOR && at >= 64 && at < h->nplaces_cap &&
        h->places[at] != NULL && h->places[at]->c.state == FF_CONN_READY)
        sent_or_close(h->places[at], ff_msg_free_write(&h->places[at]->c.out, r->id, &i, 1),
                      "a FREE");
    for (int p = 0; holders != 0 && p < 64; p++, holders >>= 1) {
        if (!(holders & 1) || p >= h->nplaces_cap || h->places[p] == NULL ||
            h->places[p]->c.state != FF_CONN_READY)
            continue;
        ff_buf *b = &h->places[p]->c.out;
        sent_or_close(h->places[p], ff_msg_free_write(b, r->id, &i, 1), "a FREE");
    }
    r->tasks[i].holders = 0;
}

/* --- settling tasks -------------------------------------------------------- */

/* Task i settled (finished, failed or skipped): each parent whose
 * consumers all settled is needed no more. The workers drop it (FREE);
 * the head drops its copy too, unless a restartable actor may need it
 * again (pinned). */
static void settle_parents(head *h, hrun *r, uint32_t i) {
    htask *t = &r->tasks[i];
    int complete = r->received == r->ntasks;
    for (uint32_t d = 0; d < t->ndeps; d++) {
        htask *p = &r->tasks[t->deps[d]];
        if (--p->unfinished == 0 && complete) {
            free_result(h, r, t->deps[d]);
            if (!p->pinned)
                ff_buf_free(&p->result);
        }
    }
    if (t->actor == FF_ACTOR_METHOD && r->tasks[t->ctor].methods_left > 0)
        r->tasks[t->ctor].methods_left--;
}

/* Task i runs again (its worker was lost, it timed out, it failed with
 * retry_exceptions, or it was handed back): queued as if new. */
static void task_again(head *h, hrun *r, uint32_t i) {
    htask *t = &r->tasks[i];
    t->state = T_PENDING;
    t->started = 0;
    task_out(h, r, i);
    make_ready(h, r, i);
}

/* With keep going: the tasks that depend on failed task i are skipped,
 * never started, and settle (no DONE for them). */
static void skip_consumers(head *h, hrun *r, uint32_t i) {
    uint32_t *stack = NULL;
    size_t n = 0, cap = 0;
    uint32_t cur = i;
    for (;;) {
        htask *t = &r->tasks[cur];
        for (uint32_t k = 0; k < t->ncons; k++) {
            uint32_t c = t->cons[k];
            htask *ct = &r->tasks[c];
            if (ct->state == T_SKIPPED || ct->state == T_FAILED || ct->state == T_DONE)
                continue;
            if (n == cap) {
                size_t nc = cap ? cap * 2 : 16;
                uint32_t *ns = realloc(stack, nc * sizeof *ns);
                if (ns == NULL) {
                    free(stack);
                    run_fail(r, i, "the head has not enough memory to skip what depends on it");
                    return;
                }
                stack = ns;
                cap = nc;
            }
            if (ct->state == T_QUEUED)
                ff_sched_release(h->sched, TASK_ID(r->id, c));
            task_out(h, r, c);
            ct->state = T_SKIPPED;
            r->finished++;
            r->nfailed++;
            settle_parents(h, r, c);
            stack[n++] = c;
        }
        if (n == 0)
            break;
        cur = stack[--n];
    }
    free(stack);
}

/* Task i failed for good (status FF_DONE_*): its driver is told (msg,
 * unless NULL: a grave tells it later). Without keep going the run fails
 * (r->failed; the caller ends it, run_settle); with it, the tasks that
 * depend on i are skipped and the rest goes on. */
static void task_fail(head *h, hrun *r, uint32_t i, int status, const char *msg, size_t len) {
    htask *t = &r->tasks[i];
    if (r->failed)
        return;
    if (t->state == T_QUEUED)
        ff_sched_release(h->sched, TASK_ID(r->id, i));
    t->state = T_FAILED;
    t->t_ended = uv_hrtime();
    if (msg != NULL && !r->keep_going)
        send_times(r); /* the failure ends the run: the driver stops reading at it */
    if (msg != NULL && send_done(r, i, status, msg, len) != 0)
        r->failed = 1;
    if (!r->keep_going) {
        r->failed = 1;
        return;
    }
    task_out(h, r, i);
    if (t->rebuilding) { /* an actor's constructor: settled once already */
        t->rebuilding = 0;
    } else {
        r->finished++;
        r->nfailed++;
        settle_parents(h, r, i);
    }
    skip_consumers(h, r, i);
    send_progress(h, r, 0);
}

/* --- messages from workers ----------------------------------------------- */

/* A peer the head drops (it broke the protocol, or what it sent cannot be
 * kept): log why, and keep it for the failures of the tasks it ran.
 * Returns 1: the caller (on_frame) closes the connection. */
static int protocol_error(hconn *c, const char *why) {
    snprintf(c->lost, sizeof c->lost, "%s", why);
    ff_log(WHO, "%s: %s: disconnected", c->place >= 0 ? c->name : c->c.peer, why);
    return 1;
}

static void store_save(head *h, hrun *r, uint32_t i, const char *bytes, size_t len, uint64_t ns);
static void task_done(head *h, hrun *r, int place, uint32_t i, const char *bytes, size_t len);
static void replay_next(head *h, hrun *r, uint32_t c);
static void rejoin_wait(head *h);

/* A RESULT. A malformed one closes the connection (the tasks running
 * there then fail, and say why): ignoring it would leave its task running
 * for ever. Returns nonzero to close. */
static int on_result(head *h, hconn *w, const char *p, size_t n) {
    ff_msg_result m; /* m.ns, the compute time: kept for run metadata later */
    if (ff_msg_result_read(p, n, &m) != 0)
        return protocol_error(w, "it sent a malformed RESULT");
    uint64_t run = m.run, i = m.index;
    const char *bytes = m.bytes;
    size_t len = m.len;
    /* Only a task this worker is running counts: a result for another's
     * task, or a made-up one, is ignored. Method calls are not the
     * scheduler's: their task says where they run. */
    hrun *r = run <= UINT32_MAX && i <= UINT32_MAX ? run_find(h, run) : NULL;
    int method = r != NULL && i < r->received && r->tasks[i].actor == FF_ACTOR_METHOD;
    if (method && r->tasks[i].state == T_REPLAY && r->tasks[i].place == w->place) {
        /* A finished call replayed on its rebuilt actor: its result was
         * used already; the next call follows. */
        htask *t = &r->tasks[i];
        t->state = T_DONE;
        if (m.status != FF_RESULT_OK) {
            char msg[600], esc[400];
            snprintf(msg, sizeof msg,
                     "its actor '%s' could not be rebuilt: replaying '%s' on %s failed: %s",
                     r->tasks[t->ctor].name, t->name, w->name,
                     ff_text_escape(esc, sizeof esc, bytes, len));
            r->tasks[t->ctor].rebuilding = 0;
            for (uint32_t k = (uint32_t)i + 1; k < r->received; k++)
                if (r->tasks[k].actor == FF_ACTOR_METHOD && r->tasks[k].ctor == t->ctor &&
                    r->tasks[k].state == T_PENDING) {
                    task_fail(h, r, k, FF_DONE_FAILED, msg, strlen(msg));
                    break;
                }
            run_settle(h, r);
        } else {
            replay_next(h, r, t->ctor);
        }
        dispatch(h);
        return 0;
    }
    int at = -1;
    if (method ? r->tasks[i].state != T_RUNNING || r->tasks[i].place != w->place
               : run > UINT32_MAX || i > UINT32_MAX ||
                     ff_sched_task_state(h->sched, TASK_ID(run, i), &at) != FF_SCHED_RUNNING ||
                     at != w->place) {
        /* A method call of a run that ended meanwhile is not the
         * scheduler's either: quietly dropped. */
        if (method || r != NULL || run == 0 || run > h->next_run)
            ff_log(WHO, "%s: a result for a task it does not run: ignored", w->name);
        return 0;
    }
    if (!method)
        ff_sched_release(h->sched, TASK_ID(run, i));
    h->finished_total++;
    if (r == NULL || i >= r->received || r->tasks[i].state != T_RUNNING) {
        dispatch(h); /* a cancelled run: resources are free again */
        return 0;
    }
    htask *t = &r->tasks[i];
    if (!t->started) { /* its STARTED did not come first: it ran all the same */
        t->started = 1;
        t->attempts++;
    }
    if (m.status != FF_RESULT_OK) {
        int timeout = m.status == FF_RESULT_TIMEOUT;
        if ((timeout || t->retry_exc) && t->attempts < 1 + t->max_retries && !r->failed) {
            if (!h->quiet)
                ff_log(WHO, "node '%s' %s on %s: it runs again (attempt %u of %u)", t->name,
                       timeout ? "timed out" : "failed", w->name, t->attempts + 1,
                       1 + t->max_retries);
            task_again(h, r, (uint32_t)i);
        } else {
            task_fail(h, r, (uint32_t)i, timeout ? FF_DONE_TIMEOUT : FF_DONE_FAILED, bytes, len);
            run_settle(h, r);
        }
        dispatch(h);
        return 0;
    }
    if (t->save)
        store_save(h, r, (uint32_t)i, bytes, len, m.ns);
    task_done(h, r, w->place, (uint32_t)i, bytes, len);
    return 0;
}

/* STARTED: tasks that began to run on worker w count an attempt. */
static int on_started(head *h, hconn *w, const char *p, size_t n) {
    uint64_t run;
    ff_msg_list l;
    if (ff_msg_started_read(p, n, &run, &l) != 0)
        return protocol_error(w, "it sent a malformed STARTED");
    hrun *r = run_find(h, run);
    while (l.n > 0) {
        uint64_t i = ff_msg_next_index(&l);
        if (r == NULL || i >= r->received)
            continue;
        htask *t = &r->tasks[i];
        if (t->state == T_RUNNING && t->place == w->place && !t->started) {
            t->started = 1;
            t->attempts++;
            t->t_started = uv_hrtime();
            r->retried += t->attempts > 1;
        }
    }
    if (r != NULL)
        send_progress(h, r, 0);
    return 0;
}

/* HANDBACK: tasks worker w will not run or finish run again elsewhere,
 * without counting an attempt; those of a run that ended only give back
 * their resources. */
static int on_handback(head *h, hconn *w, const char *p, size_t n) {
    uint64_t run;
    ff_msg_list l;
    if (ff_msg_handback_read(p, n, &run, &l) != 0)
        return protocol_error(w, "it sent a malformed HANDBACK");
    hrun *r = run <= UINT32_MAX ? run_find(h, run) : NULL;
    while (l.n > 0) {
        uint64_t i = ff_msg_next_index(&l);
        if (run > UINT32_MAX || i > UINT32_MAX)
            continue;
        htask *t = r != NULL && i < r->received ? &r->tasks[i] : NULL;
        int method = t != NULL && t->actor == FF_ACTOR_METHOD;
        int at = -1;
        if (!method && ff_sched_task_state(h->sched, TASK_ID(run, i), &at) == FF_SCHED_RUNNING &&
            at == w->place)
            ff_sched_release(h->sched, TASK_ID(run, i));
        else if (!method || t->place != w->place)
            continue; /* not this worker's */
        if (t == NULL || r->failed || (t->state != T_RUNNING && t->state != T_REPLAY))
            continue;
        if (t->state == T_REPLAY) { /* its actor is lost with the worker: replayed again */
            t->state = T_DONE;
            continue;
        }
        if (t->started)
            t->attempts--;
        if (method) { /* it waits for its actor's worker to leave (actors_lost) */
            t->state = T_PENDING;
            t->started = 0;
            task_out(h, r, (uint32_t)i);
            continue;
        }
        task_again(h, r, (uint32_t)i);
    }
    if (r != NULL)
        run_settle(h, r);
    dispatch(h);
    return 0;
}

/* STOPPING from worker w: it takes no new tasks; it leaves with BYE once
 * its running ones finished or were handed back. */
static int on_worker_stopping(head *h, hconn *w, const char *p, size_t n) {
    const char *why;
    size_t len;
    if (ff_msg_stopping_read(p, n, &why, &len) != 0)
        return protocol_error(w, "it sent a malformed STOPPING");
    char esc[200];
    if (!h->quiet)
        ff_log(WHO, "worker %s is stopping: %s", w->name,
               ff_text_escape(esc, sizeof esc, why, len));
    w->stopping = 1;
    w->returning = len == strlen(FF_MSG_STOPPING_REPLACING) &&
                   memcmp(why, FF_MSG_STOPPING_REPLACING, len) == 0;
    if (w->returning && !h->stopping)
        rejoin_wait(h);
    ff_sched_close_place(h->sched, w->place);
    return 0;
}

/* Sends the result of task i (saved) to the run's storage (REQ_SAVE), or
 * fails the run when it cannot. */
static void store_save(head *h, hrun *r, uint32_t i, const char *bytes, size_t len, uint64_t ns) {
    htask *t = &r->tasks[i];
    hconn *w = store_worker(h, r);
    if (r->failed)
        return;
    if (w == NULL) {
        run_fail(r, i, "the worker holding the run's storage left the cluster");
        return;
    }
    unsigned char nsb[8];
    for (int k = 0; k < 8; k++)
        nsb[k] = (unsigned char)(ns >> (8 * k));
    ff_msg_str args[6] = {{r->store_path, r->store_path_len},
                          {r->store_wf, r->store_wf_len},
                          {t->name, strlen(t->name)},
                          {(const char *)t->fp, FF_MSG_FP_LEN},
                          {(const char *)nsb, 8},
                          {bytes, len}};
    int rc =
        ff_msg_store_call_write(&w->c.out, REQ_SAVE | TASK_ID(r->id, i), FF_STORE_PUT, args, 6);
    if (rc != 0) {
        char msg[200];
        snprintf(msg, sizeof msg,
                 "the head could not send its result (%.1f MiB) to the storage: %s", mib(len),
                 fflua_strerror(rc));
        run_fail(r, i, msg);
    }
}

/* Replays on rebuilt actor c the next method call that had finished
 * before its worker was lost (its result is dropped: it was used); when
 * none is left, the actor is rebuilt and the call that waited is sent. */
static void replay_next(head *h, hrun *r, uint32_t c) {
    htask *ct = &r->tasks[c];
    char err[300];
    for (; ct->replay < r->received; ct->replay++) {
        uint32_t k = ct->replay;
        htask *m = &r->tasks[k];
        if (m->actor != FF_ACTOR_METHOD || m->ctor != c || m->state != T_DONE)
            continue;
        if (send_task(h, r, k, ct->place, err, sizeof err) != 0) {
            run_fail(r, k, err);
            run_abort(h, r);
            return;
        }
        m->state = T_REPLAY;
        ct->replay++;
        return;
    }
    ct->rebuilding = 0;
    if (!h->quiet)
        ff_log(WHO, "actor '%s' rebuilt on %s", ct->name, h->pinfo[ct->place].name);
    for (uint32_t k = c + 1; k < r->received && !r->failed; k++) {
        htask *m = &r->tasks[k];
        if (m->actor == FF_ACTOR_METHOD && m->ctor == c && m->state == T_PENDING && m->waiting == 0)
            method_ready(h, r, k);
    }
    run_settle(h, r);
}

/* Task i of run r finished at place: its consumers may start, results no
 * longer needed are freed, and the run ends when it was the last. */
static void task_done(head *h, hrun *r, int place, uint32_t i, const char *bytes, size_t len) {
    htask *t = &r->tasks[i];
    if (r->failed) {
        run_abort(h, r);
        dispatch(h);
        return;
    }
    t->state = T_DONE;
    t->t_ended = uv_hrtime();
    task_out(h, r, i);
    if (place < 64 && !t->load) /* a loaded result stays with the head */
        t->holders |= (uint64_t)1 << place;
    if (t->rebuilding) { /* an actor built again: its finished calls are replayed */
        t->place = place;
        t->replay = i + 1;
        replay_next(h, r, i);
        dispatch(h);
        return;
    }
    r->finished++;
    send_progress(h, r, 0);
    if (t->leaf && send_done(r, (uint32_t)i, 0, bytes, len) != 0)
        r->failed = 1; /* the driver was told why instead */
    if (!r->failed && (t->unfinished > 0 || r->received < r->ntasks || t->pinned)) {
        /* consumers may come, or run again */
        t->result.n = 0;
        if (len > 0 && ff_buf_reserve(&t->result, len) != 0) {
            char msg[200];
            snprintf(msg, sizeof msg,
                     "the head has not enough memory to keep its result "
                     "(%.1f MiB) for the nodes that use it",
                     mib(len));
            run_fail(r, (uint32_t)i, msg);
        } else if (len > 0) {
            memcpy(t->result.p, bytes, len);
            t->result.n = len;
        }
    }
    for (uint32_t k = 0; k < t->ncons && !r->failed; k++) {
        htask *c = &r->tasks[t->cons[k]];
        if (c->state == T_PENDING && --c->waiting == 0)
            make_ready(h, r, t->cons[k]);
    }
    if (r->failed) {
        run_abort(h, r);
        dispatch(h);
        return;
    }
    /* Workers keep results only while a consumer may still need them. */
    settle_parents(h, r, i);
    if (t->ncons == 0 && r->received == r->ntasks)
        free_result(h, r, (uint32_t)i);
    run_settle(h, r);
    dispatch(h);
}

/* The scheduler's key for a machine: the key of a live worker on it, or a
 * new one. */
static int64_t machine_key(head *h, const unsigned char *id) {
    for (int p = 0; p < ff_sched_nplaces(h->sched); p++) {
        hconn *c = p < h->nplaces_cap ? h->places[p] : NULL;
        if (c != NULL && ff_sched_place_live(h->sched, p) &&
            memcmp(c->machine, id, FF_MACHINE_LEN) == 0)
            return c->machine_key;
    }
    return h->machines++;
}

static hchild *local_child(head *h, const hconn *w);

/* 0; 1 for a malformed REGISTER; 2 for a worker refused (why in err). */
static int on_register(head *h, hconn *w, const char *p, size_t n, char *err, size_t errlen) {
    ff_msg_register m;
    ff_msg_list res;
    if (ff_msg_register_read(p, n, &m, &res) != 0)
        return 1;
    ff_res cap[FF_MSG_RES_MAX + 1];
    size_t nc = 0;
    uint64_t cpus = m.cpus;
    if (cpus > (uint64_t)FF_RES_MAX / FF_PIPELINE)
        return 1;
    cap[nc++] = (ff_res){FF_RES_CPU, (int64_t)cpus * FF_PIPELINE};
    w->cpus = (int64_t)cpus;
    while (res.n > 0) {
        ff_msg_res rs;
        ff_msg_next_res(&res, &rs);
        if (ff_res_name_check(rs.name, rs.len) != 0)
            return 1;
        int id = ff_sched_resource(h->sched, rs.name, rs.len);
        if (id <= FF_RES_CPU || rs.amount > (uint64_t)FF_RES_MAX)
            return 1;
        for (size_t j = 0; j < nc; j++)
            if (cap[j].id == id)
                return 1;
        cap[nc++] = (ff_res){id, (int64_t)rs.amount};
    }
    const char *host = m.host;
    size_t hl = m.host_len;
    uint64_t pid = m.pid;
    /* Room for the place first: a place the scheduler has must have its
     * connection. */
    int next = ff_sched_nplaces(h->sched);
    if (next >= h->nplaces_cap) {
        int ncap = h->nplaces_cap ? h->nplaces_cap * 2 : 16;
        while (ncap <= next)
            ncap *= 2;
        hconn **np = realloc(h->places, (size_t)ncap * sizeof *np);
        if (np == NULL)
            return 1;
        memset(np + h->nplaces_cap, 0, (size_t)(ncap - h->nplaces_cap) * sizeof *np);
        h->places = np;
        hplace *ni = realloc(h->pinfo, (size_t)ncap * sizeof *ni);
        if (ni == NULL)
            return 1;
        memset(ni + h->nplaces_cap, 0, (size_t)(ncap - h->nplaces_cap) * sizeof *ni);
        h->pinfo = ni;
        h->nplaces_cap = ncap;
    }
    char hostname[64];
    snprintf(w->name, sizeof w->name, "%s:%llu",
             ff_text_escape(hostname, sizeof hostname, host, hl), (unsigned long long)pid);
    int64_t key = machine_key(h, m.machine);
    int bad = -1;
    int place = ff_sched_add_place_on(h->sched, key, cap, nc, &bad);
    if (place == -EEXIST && bad > FF_RES_CPU) {
        int64_t have = 0, want = 0;
        for (int q = 0; q < ff_sched_nplaces(h->sched); q++)
            if (ff_sched_place_machine(h->sched, q) == key)
                ff_sched_place_get(h->sched, q, bad, &have, NULL);
        for (size_t j = 0; j < nc; j++)
            if (cap[j].id == bad)
                want = cap[j].amount;
        snprintf(err, errlen,
                 "worker %s declares %g of '%s', but the other workers of its machine "
                 "declared %g: a machine's resources are shared by its workers, so give "
                 "each of them the same amounts (or none)",
                 w->name, (double)want / FF_RES_SCALE, ff_sched_resource_name(h->sched, bad),
                 (double)have / FF_RES_SCALE);
        return 2;
    }
    if (place < 0 || place >= h->nplaces_cap)
        return 1;
    h->places[place] = w;
    w->place = place;
    w->pid = pid;
    snprintf(h->pinfo[place].name, sizeof h->pinfo[place].name, "%s", w->name);
    const hchild *ch = local_child(h, w);
    h->pinfo[place].local_pid = ch != NULL ? ch->pid : 0;
    memcpy(w->machine, m.machine, FF_MACHINE_LEN);
    w->machine_key = key;
    if (!h->quiet)
        ff_log(WHO, "worker %s joined with %g CPUs (place %d, machine %02x%02x%02x%02x)", w->name,
               (double)cpus / FF_RES_SCALE, place, m.machine[0], m.machine[1], m.machine[2],
               m.machine[3]);
    dispatch(h);
    return 0;
}

/* --- messages from drivers ----------------------------------------------- */

/* Reads the tasks of a SUBMIT (m, its tasks in tasks) into run r. SUBMITs
 * of a run come in order, so a task's dependencies have all arrived. 0; 1
 * for a malformed SUBMIT; 2 when the run is refused (too large, or no
 * memory for it). A message in err. *first_out and *count_out say which
 * tasks came. */
static int read_tasks(head *h, hrun *r, const ff_msg_submit *m, ff_msg_tasks *tasks,
                      uint32_t *first_out, uint32_t *count_out, char *err, size_t errlen) {
    if (m->total > UINT32_MAX / 2 || m->first != r->received ||
        (r->tasks != NULL && m->total != r->ntasks)) {
        snprintf(err, errlen, "malformed SUBMIT");
        return 1;
    }
    if (m->total > FF_RUN_MAX_TASKS) {
        snprintf(err, errlen, "the run has %llu nodes, more than the %lu a run may have",
                 (unsigned long long)m->total, (unsigned long)FF_RUN_MAX_TASKS);
        return 2;
    }
    int oom = 0, bad = 0, rc = 0;
    uint32_t first = (uint32_t)m->first, count = (uint32_t)m->count;
    /* The array grows with the tasks that came (a total alone is a claim,
     * and must not make the head allocate). */
    uint32_t need = first + count;
    if (need > r->tasks_cap) {
        uint64_t cap = r->tasks_cap ? r->tasks_cap : 64;
        while (cap < need)
            cap *= 2;
        if (cap > m->total)
            cap = m->total;
        htask *nt = realloc(r->tasks, (size_t)cap * sizeof *nt);
        if (nt == NULL) {
            snprintf(err, errlen, "the head has not enough memory for %u tasks", need);
            return 2;
        }
        memset(nt + r->tasks_cap, 0, (size_t)(cap - r->tasks_cap) * sizeof *nt);
        r->tasks = nt;
        r->tasks_cap = (uint32_t)cap;
    }
    r->ntasks = (uint32_t)m->total;
    *first_out = first;
    *count_out = count;
    ff_msg_subtask st;
    ff_msg_list deps, res;
    while (!bad && (rc = ff_msg_submit_next(tasks, &st, &deps, &res)) == 0) {
        htask *t = &r->tasks[st.index];
        t->place = -1;
        t->fid = st.fid;
        t->leaf = st.leaf;
        t->save = st.save;
        t->load = st.load;
        t->has_fp = st.fp != NULL;
        if (st.fp != NULL)
            memcpy(t->fp, st.fp, FF_MSG_FP_LEN);
        if ((st.save || st.load) && r->store_path == NULL)
            bad = 1; /* saved or loaded without a RUN_STORE */
        t->actor = st.actor;
        t->ctor = (uint32_t)st.ctor; /* < st.index */
        t->max_retries = st.max_retries;
        t->max_restarts = st.max_restarts;
        t->timeout_ms = st.timeout_ms;
        t->retry_exc = st.retry_exceptions;
        t->ndeps = st.ndeps;
        t->nargs = st.nargs;
        t->npre = st.npre;
        t->name = strndup(st.name, st.name_len);
        t->deps = malloc((st.ndeps ? st.ndeps : 1) * sizeof *t->deps);
        t->args = malloc(st.nargs ? st.nargs : 1);
        t->pre = malloc(st.npre ? st.npre : 1);
        t->req = malloc((st.nres ? st.nres : 1) * sizeof *t->req);
        if (!t->name || !t->deps || !t->args || !t->pre || !t->req) {
            oom = bad = 1;
            break;
        }
        for (uint32_t d = 0; d < t->ndeps; d++)
            t->deps[d] = (uint32_t)ff_msg_next_index(&deps); /* < st.index */
        memcpy(t->args, st.args, st.nargs);
        memcpy(t->pre, st.pre, st.npre);
        while (res.n > 0 && !bad) {
            ff_msg_res rs;
            ff_msg_next_res(&res, &rs);
            int id = ff_res_name_check(rs.name, rs.len) != 0
                         ? -1
                         : ff_sched_resource(h->sched, rs.name, rs.len);
            if (id < 0 || rs.amount > (uint64_t)FF_RES_MAX)
                bad = 1;
            else
                t->req[t->nreq++] = (ff_res){id, (int64_t)rs.amount};
        }
        t->cpus = FF_RES_SCALE;
        for (size_t k = 0; k < t->nreq && !bad; k++)
            if (t->req[k].id == FF_RES_CPU) {
                if (t->req[k].amount > FF_RES_MAX / FF_PIPELINE) {
                    bad = 1;
                    break;
                }
                t->cpus = t->req[k].amount;
                t->req[k].amount = sched_cpus(t->cpus);
            }
        if (t->actor == FF_ACTOR_METHOD && !bad) {
            /* Its constructor is a constructor, and one of its parents. */
            int dep = 0;
            for (uint32_t d = 0; d < t->ndeps; d++)
                dep |= t->deps[d] == t->ctor;
            bad = !dep || r->tasks[t->ctor].actor != FF_ACTOR_CTOR;
            t->nreq = 0; /* it runs where its actor is, on no CPU of its own */
            t->cpus = 0;
        }
    }
    if (bad || rc != 1) {
        /* What was read of this part is not part of the run. */
        for (uint32_t i = first; i < first + count; i++) {
            task_free_fields(&r->tasks[i]);
            memset(&r->tasks[i], 0, sizeof r->tasks[i]);
        }
        if (oom) {
            snprintf(err, errlen, "the head has not enough memory for the run's tasks");
            return 2;
        }
        snprintf(err, errlen, "malformed SUBMIT");
        return 1;
    }
    r->received = first + count; /* from here on, run_free frees them */
    /* Consumers, and what waits for what. */
    for (uint32_t i = first; i < first + count; i++) {
        htask *t = &r->tasks[i];
        for (uint32_t d = 0; d < t->ndeps; d++) {
            htask *p = &r->tasks[t->deps[d]];
            if (p->ncons == p->cons_cap) {
                uint32_t cap = p->cons_cap ? p->cons_cap * 2 : 4;
                uint32_t *nc = realloc(p->cons, cap * sizeof *nc);
                if (nc == NULL)
                    return snprintf(err, errlen,
                                    "the head has not enough memory for the run's "
                                    "tasks"),
                           2;
                p->cons = nc;
                p->cons_cap = cap;
            }
            p->cons[p->ncons++] = i;
            p->unfinished++;
            if (p->state != T_DONE)
                t->waiting++;
        }
        if (t->actor == FF_ACTOR_METHOD)
            r->tasks[t->ctor].methods_left++;
        /* An actor that may be rebuilt needs what its constructor and its
         * calls took, until the run ends. */
        const htask *ct = t->actor == FF_ACTOR_CTOR     ? t
                          : t->actor == FF_ACTOR_METHOD ? &r->tasks[t->ctor]
                                                        : NULL;
        if (ct != NULL && ct->max_restarts > 0)
            for (uint32_t d = 0; d < t->ndeps; d++)
                r->tasks[t->deps[d]].pinned = 1;
    }
    return 0;
}

/* Fails the run at submission when a task asks for what no worker has. */
static int check_feasible(head *h, hrun *r, uint32_t first, uint32_t count, char *err,
                          size_t errlen) {
    int64_t max_cpus = 0;
    int live = 0;
    for (hconn *c = h->conns; c; c = c->next)
        if (c->place >= 0) {
            live++;
            if (c->cpus > max_cpus)
                max_cpus = c->cpus;
        }
    for (uint32_t i = first; i < first + count; i++) {
        htask *t = &r->tasks[i];
        int64_t want = t->cpus;
        if (t->load)
            continue; /* served by the run's storage */
        if (t->actor == FF_ACTOR_METHOD)
            continue; /* it runs where its constructor ran */
        if (fits_local(h, t))
            continue; /* a local worker will hold it, when not now then once restarted */
        if (live == 0) {
            snprintf(err, errlen, "node '%s' cannot run: the cluster has no workers", t->name);
            return 1;
        }
        if (want > max_cpus) {
            snprintf(err, errlen,
                     "node '%s' asks for %g of 'CPU', but no node of the cluster "
                     "has more than %g",
                     t->name, (double)want / FF_RES_SCALE, (double)max_cpus / FF_RES_SCALE);
            return 1;
        }
        int bad = -1;
        uint64_t probe = TASK_ID(r->id, i);
        int rc = ff_sched_submit(h->sched, probe, t->req, t->nreq, -1, 0, &bad);
        if (rc == 0 || rc == FF_SCHED_WAITING) {
            ff_sched_release(h->sched, probe);
            continue;
        }
        if (bad >= 0) {
            int64_t amount = bad == FF_RES_CPU ? FF_RES_SCALE : 0;
            for (size_t k = 0; k < t->nreq; k++)
                if (t->req[k].id == bad)
                    amount = t->req[k].amount;
            snprintf(err, errlen,
                     "node '%s' asks for %g of '%s', but no node of the cluster has more "
                     "than %g",
                     t->name, (double)amount / FF_RES_SCALE, ff_sched_resource_name(h->sched, bad),
                     (double)ff_sched_max_capacity(h->sched, bad) / FF_RES_SCALE);
        } else {
            snprintf(err, errlen,
                     "node '%s' asks for resources no single node of the cluster "
                     "has together",
                     t->name);
        }
        return 1;
    }
    return 0;
}

static int on_submit(head *h, hconn *d, const char *p, size_t n) {
    ff_msg_submit m;
    ff_msg_tasks tasks;
    if (ff_msg_submit_read(p, n, &m, &tasks) != 0) {
        ff_log(WHO, "%s: malformed SUBMIT", d->c.peer);
        return 1;
    }
    if (d->refused && m.run == d->refused_run)
        return 0; /* the rest of a refused run */
    hrun *r = NULL;
    for (hrun *x = h->runs; x; x = x->next)
        if (x->driver == d && x->driver_run == m.run &&
            (x->tasks == NULL || x->received < x->ntasks))
            r = x;
    char err[512];
    if (r == NULL) {
        ff_log(WHO, "%s: SUBMIT for a run without functions", d->c.peer);
        return 1;
    }
    r->max_pending = m.max_pending > UINT32_MAX ? UINT32_MAX : (uint32_t)m.max_pending;
    r->keep_going = (m.flags & FF_RUN_KEEP_GOING) != 0;
    uint32_t first = 0, count = 0;
    int rc = read_tasks(h, r, &m, &tasks, &first, &count, err, sizeof err);
    if (rc == 1) {
        ff_log(WHO, "%s: %s", d->c.peer, err);
        return 1;
    }
    if (rc != 0 || check_feasible(h, r, first, count, err, sizeof err) != 0) {
        d->refused = 1;
        d->refused_run = m.run;
        send_done(r, 0, FF_DONE_REFUSED, err, strlen(err));
        run_abort(h, r);
        dispatch(h);
        return 0;
    }
    if (r->received == r->ntasks && h->verbose)
        ff_log(WHO, "driver %s: run %llu submitted: %u tasks%s%s", d->c.peer,
               (unsigned long long)r->driver_run, r->ntasks, r->wd ? ", working directory " : "",
               r->wd ? r->wd->hex : "");
    /* Nothing runs before the whole run is here and checked: a node that
     * cannot run (or cannot be encoded, on the driver's side) fails the
     * run before anything ran. */
    if (r->received == r->ntasks)
        for (uint32_t i = 0; i < r->ntasks && !r->failed; i++)
            if (r->tasks[i].waiting == 0)
                make_ready(h, r, i);
    if (r->failed)
        run_abort(h, r);
    dispatch(h);
    return 0;
}

/* --- storage ------------------------------------------------------------- */

/* The place of the storage asked for: the first live worker that has
 * every resource in res (totals) and is on machine (unless NULL); -1 when
 * none, with why in err. */
static int store_pick(head *h, ff_msg_list *res, const unsigned char *machine, char *err,
                      size_t errlen) {
    ff_res want[FF_MSG_RES_MAX];
    size_t nw = 0;
    while (res->n > 0) {
        ff_msg_res rs;
        ff_msg_next_res(res, &rs);
        int id = ff_res_name_check(rs.name, rs.len) != 0
                     ? -1
                     : ff_sched_resource_find(h->sched, rs.name, rs.len);
        if (id < 0 || rs.amount > (uint64_t)FF_RES_MAX) {
            char esc[200];
            snprintf(err, errlen, "no worker of the cluster has the resource '%s'",
                     ff_text_escape(esc, sizeof esc, rs.name, rs.len));
            return -1;
        }
        want[nw++] = (ff_res){id, (int64_t)rs.amount};
    }
    for (int p = 0; p < ff_sched_nplaces(h->sched); p++) {
        hconn *c = p < h->nplaces_cap ? h->places[p] : NULL;
        if (c == NULL || !ff_sched_place_live(h->sched, p) || c->c.state != FF_CONN_READY)
            continue;
        if (machine != NULL && memcmp(c->machine, machine, FF_MACHINE_LEN) != 0)
            continue;
        size_t k = 0;
        for (; k < nw; k++) {
            int64_t total = 0;
            ff_sched_place_get(h->sched, p, want[k].id, &total, NULL);
            if (total < want[k].amount)
                break;
        }
        if (k == nw)
            return p;
    }
    if (machine != NULL)
        snprintf(err, errlen, "no worker of the cluster runs on the driver's machine");
    else
        snprintf(err, errlen, "no worker of the cluster has the resources the storage asks for");
    return -1;
}

static void store_refuse(hconn *d, uint64_t req, const char *why) {
    ff_msg_str m = {why, strlen(why)};
    sent_or_close(d, ff_msg_store_reply_write(&d->c.out, req, 0, &m, 1), "a STORE_REPLY");
}

/* A driver's STORE: forwarded to the storage's worker, whose reply goes
 * back (on_store_reply). */
static int on_store(head *h, hconn *d, const char *p, size_t n) {
    ff_msg_store m;
    ff_msg_list res, args;
    if (ff_msg_store_read(p, n, &m, &res, &args) != 0)
        return protocol_error(d, "it sent a malformed STORE");
    char err[300];
    int place = store_pick(h, &res, m.machine, err, sizeof err);
    if (place < 0) {
        store_refuse(d, m.req, err);
        return 0;
    }
    hfwd *f = malloc(sizeof *f);
    if (f == NULL) {
        store_refuse(d, m.req, "the head has not enough memory for it");
        return 0;
    }
    /* Below REQ_SAVE: 2^62 calls are more than a head ever forwards. */
    *f = (hfwd){h->fwds, ++h->next_fwd, m.req, d, place};
    int rc = ff_msg_store_call_forward(&h->places[place]->c.out, f->req, &m);
    if (rc != 0) {
        free(f);
        snprintf(err, sizeof err, "the head could not send it to the storage's worker: %s",
                 fflua_strerror(rc));
        store_refuse(d, m.req, err);
        return 0;
    }
    h->fwds = f;
    return 0;
}

/* A worker's STORE_REPLY: a loaded task's result, a save that failed, or
 * the answer to a driver's STORE. Replies to nothing the head asked that
 * worker are ignored. */
static int on_store_reply(head *h, hconn *w, const char *p, size_t n) {
    ff_msg_store_reply m;
    ff_msg_list out;
    if (ff_msg_store_reply_read(p, n, &m, &out) != 0)
        return protocol_error(w, "it sent a malformed STORE_REPLY");
    if (m.req & (REQ_LOAD | REQ_SAVE)) {
        uint64_t id = m.req & ~(REQ_LOAD | REQ_SAVE);
        hrun *r = run_find(h, id >> 32);
        uint32_t i = (uint32_t)id;
        if (r == NULL || i >= r->received || r->store_place != w->place)
            return 0; /* a run that ended */
        htask *t = &r->tasks[i];
        ff_msg_str s = {"", 0};
        if (out.n > 0)
            ff_msg_next_str(&out, &s);
        char msg[600], esc[400];
        if (m.req & REQ_SAVE) {
            snprintf(msg, sizeof msg, "saving its result failed: %s",
                     ff_text_escape(esc, sizeof esc, s.p, s.len));
            run_fail(r, i, msg);
            run_abort(h, r);
            dispatch(h);
            return 0;
        }
        if (!t->load || t->state != T_RUNNING)
            return 0;
        if (!m.ok || s.len == 0 || s.p[0] != FF_STORED_SAME) {
            if (m.ok && s.len > 0 && s.p[0] == FF_STORED_OTHER)
                snprintf(msg, sizeof msg,
                         "its stored result changed during the run (another run of the same "
                         "workflow wrote it): run again");
            else
                snprintf(msg, sizeof msg, "its stored result cannot be read on %s: %s", w->name,
                         !m.ok ? ff_text_escape(esc, sizeof esc, s.p, s.len)
                         : s.len > 0 && s.p[0] == FF_STORED_DAMAGED ? "it is damaged"
                                                                    : "it is gone");
            t->state = T_FAILED;
            run_fail(r, i, msg);
            run_abort(h, r);
            dispatch(h);
            return 0;
        }
        task_done(h, r, w->place, i, s.p + 1, s.len - 1);
        return 0;
    }
    for (hfwd **pp = &h->fwds; *pp; pp = &(*pp)->next) {
        hfwd *f = *pp;
        if (f->req != m.req || f->place != w->place)
            continue;
        *pp = f->next;
        if (f->driver != NULL && f->driver->c.state == FF_CONN_READY &&
            ff_msg_store_reply_forward(&f->driver->c.out, f->driver_req, &m) != 0)
            store_refuse(f->driver, f->driver_req,
                         "the head could not send the storage's answer: too large or no memory");
        free(f);
        return 0;
    }
    return 0;
}

static hrun *run_open(head *h, hconn *d, uint64_t drun);

/* RUN_STORE: the storage of a run (made here when its first FUNC has not
 * come: a run may load every task it has). A storage no worker can hold
 * refuses the run. */
static int on_run_store(head *h, hconn *d, const char *p, size_t n) {
    ff_msg_run_store m;
    ff_msg_list res;
    if (ff_msg_run_store_read(p, n, &m, &res) != 0)
        return protocol_error(d, "it sent a malformed RUN_STORE");
    if (d->refused && m.run == d->refused_run)
        return 0; /* the rest of a refused run */
    hrun *r = run_open(h, d, m.run);
    if (r == NULL)
        return protocol_error(d, "not enough memory for a new run");
    if (r->store_path != NULL || r->tasks != NULL)
        return protocol_error(d, "it sent a RUN_STORE again, or after the run's first SUBMIT");
    /* Neither a path nor a workflow's name holds a zero byte (store.h). */
    if (memchr(m.path, 0, m.path_len) != NULL || memchr(m.wf, 0, m.wf_len) != NULL)
        return protocol_error(d, "it sent a RUN_STORE whose path or workflow holds a zero byte");
    r->store_path = strndup(m.path, m.path_len);
    r->store_wf = strndup(m.wf, m.wf_len);
    r->store_path_len = m.path_len;
    r->store_wf_len = m.wf_len;
    if (r->store_path == NULL || r->store_wf == NULL)
        return protocol_error(d, "not enough memory for a new run");
    char err[300];
    r->store_place = store_pick(h, &res, m.machine, err, sizeof err);
    if (r->store_place < 0) {
        char msg[400];
        snprintf(msg, sizeof msg, "the storage cannot be placed: %s", err);
        send_done(r, 0, FF_DONE_REFUSED, msg, strlen(msg));
        r->failed = 1; /* the driver cancels it (RUN_END) */
    }
    return 0;
}

/* Has the storage of run r commit now what the run saved (its driver
 * left, so it will not ask). The answer, to a req nobody waits for, is
 * ignored. */
static void store_commit(head *h, hrun *r) {
    hconn *w = r->store_path != NULL ? store_worker(h, r) : NULL;
    if (w == NULL)
        return;
    ff_msg_str path = {r->store_path, r->store_path_len};
    sent_or_close(w, ff_msg_store_call_write(&w->c.out, 0, FF_STORE_FLUSH, &path, 1), "a FLUSH");
}

/* Worker c left: the STOREs it had fail, and runs whose storage it held. */
static void store_lost(head *h, hconn *c) {
    for (hfwd **pp = &h->fwds; *pp;) {
        hfwd *f = *pp;
        if (f->place != c->place) {
            pp = &f->next;
            continue;
        }
        *pp = f->next;
        if (f->driver != NULL && f->driver->c.state == FF_CONN_READY) {
            char msg[200];
            snprintf(msg, sizeof msg, "the worker holding the storage (%s) left the cluster",
                     c->name);
            store_refuse(f->driver, f->driver_req, msg);
        }
        free(f);
    }
    for (hrun *r = h->runs; r; r = r->next)
        if (r->store_path != NULL && r->store_place == c->place && !r->failed) {
            char msg[200];
            snprintf(msg, sizeof msg, "the worker holding the run's storage (%s) left the cluster",
                     c->name);
            run_fail(r, 0, msg);
        }
}

/* Driver d's run drun that is still being sent, made when it is new;
 * NULL without memory. */
static hrun *run_open(head *h, hconn *d, uint64_t drun) {
    hrun *r = NULL;
    for (hrun *x = h->runs; x; x = x->next)
        if (x->driver == d && x->driver_run == drun &&
            (x->tasks == NULL || x->received < x->ntasks))
            r = x;
    if (r == NULL) {
        r = calloc(1, sizeof *r);
        if (r == NULL)
            return NULL;
        r->id = ++h->next_run;
        r->t0 = uv_hrtime();
        r->progress_ms = uv_now(&h->loop);
        r->driver_run = drun;
        r->driver = d;
        r->store_place = -1;
        r->next = h->runs;
        h->runs = r;
    }
    return r;
}

/* WORKDIR from a driver: a working directory it will name in runs, held
 * until it says to forget it (an empty blob) or leaves. */
static int on_workdir(head *h, hconn *d, const char *p, size_t n) {
    const unsigned char *hash;
    const char *bytes;
    size_t len;
    if (ff_msg_workdir_read(p, n, &hash, &bytes, &len) != 0)
        return protocol_error(d, "it sent a malformed WORKDIR");
    hwd *w = wd_find(h, hash);
    if (len == 0) { /* forget */
        if (w != NULL && bm_find(&d->wd_has, w->id) != NULL) {
            bm_del(&d->wd_has, w->id);
            wd_unref(h, w);
        }
        return 0;
    }
    unsigned char mine[FF_WD_HASH_LEN];
    ff_wd_hash(bytes, len, mine);
    if (memcmp(mine, hash, FF_WD_HASH_LEN) != 0)
        return protocol_error(d, "it sent a WORKDIR whose bytes do not match its hash");
    if (w != NULL && bm_find(&d->wd_has, w->id) != NULL)
        return 0;
    if (w == NULL) {
        w = calloc(1, sizeof *w);
        char *copy = w != NULL ? malloc(len) : NULL;
        if (copy == NULL) {
            free(w);
            return protocol_error(d, "not enough memory for a working directory");
        }
        memcpy(copy, bytes, len);
        w->blob = copy;
        w->n = len;
        w->id = ++h->next_wd;
        memcpy(w->hash, hash, FF_WD_HASH_LEN);
        snprintf(w->hex, sizeof w->hex, "%02x%02x%02x%02x", hash[0], hash[1], hash[2], hash[3]);
        w->next = h->wds;
        h->wds = w;
    }
    if (bm_put(&d->wd_has, w->id, "", 0) != 0) {
        if (w->refs == 0) {
            w->refs = 1;
            wd_unref(h, w);
        }
        return protocol_error(d, "not enough memory for a working directory");
    }
    w->refs++;
    if (h->verbose)
        ff_log(WHO, "driver %s: working directory %s received (%.1f KiB)", d->c.peer, w->hex,
               (double)len / 1024);
    return 0;
}

/* RUN_WORKDIR from a driver: the run's nodes run in that directory. */
static int on_run_workdir(head *h, hconn *d, const char *p, size_t n) {
    uint64_t drun;
    const unsigned char *hash;
    if (ff_msg_run_workdir_read(p, n, &drun, &hash) != 0)
        return protocol_error(d, "it sent a malformed RUN_WORKDIR");
    if (d->refused && drun == d->refused_run)
        return 0; /* the rest of a refused run */
    hwd *w = wd_find(h, hash);
    if (w == NULL || bm_find(&d->wd_has, w->id) == NULL)
        return protocol_error(d, "it named a working directory it did not send");
    hrun *r = run_open(h, d, drun);
    if (r == NULL)
        return protocol_error(d, "not enough memory for a new run");
    if (r->wd != NULL || r->funcs.len > 0)
        return protocol_error(d, "it sent a RUN_WORKDIR after the run had begun");
    r->wd = w;
    w->refs++;
    return 0;
}

static int on_func(head *h, hconn *d, const char *p, size_t n) {
    ff_msg_func m;
    if (ff_msg_func_read(p, n, &m) != 0 || m.fid > UINT32_MAX)
        return 1;
    uint64_t fid = m.fid;
    const char *code = m.code;
    size_t len = m.len;
    if (d->refused && m.run == d->refused_run)
        return 0; /* the rest of a refused run */
    hrun *r = run_open(h, d, m.run);
    if (r == NULL)
        return protocol_error(d, "not enough memory for a new run");
    if (bm_put(&r->funcs, fid, code, len) != 0) {
        char why[100];
        snprintf(why, sizeof why, "not enough memory for a function (%.1f MiB)", mib(len));
        return protocol_error(d, why);
    }
    return 0;
}

static void send_status(head *h, hconn *c) {
    ff_buf *b = &c->c.out;
    size_t at;
    int np = ff_sched_nplaces(h->sched), live = 0;
    for (int p = 0; p < np; p++)
        live += ff_sched_place_live(h->sched, p);
    ff_msg_status_reply_begin(b, (uint64_t)live, &at);
    int nr = ff_sched_nresources(h->sched);
    for (int p = 0; p < np; p++) {
        if (!ff_sched_place_live(h->sched, p))
            continue;
        const char *nm = p < h->nplaces_cap && h->places[p] ? h->places[p]->name : "?";
        /* CPU, then the resources this place has: every name the head
         * ever saw would make the reply grow with what drivers asked. */
        int has = 0;
        for (int res = 0; res < nr; res++) {
            int64_t total = 0;
            ff_sched_place_get(h->sched, p, res, &total, NULL);
            has += res == FF_RES_CPU || total > 0;
        }
        static const unsigned char nomachine[FF_MACHINE_LEN];
        const unsigned char *mc =
            p < h->nplaces_cap && h->places[p] ? h->places[p]->machine : nomachine;
        ff_msg_place place = {nm, strlen(nm), mc, (uint64_t)ff_sched_place_running(h->sched, p)};
        ff_msg_status_place(b, &place, (uint64_t)has);
        for (int res = 0; res < nr; res++) {
            int64_t total = 0, free_ = 0;
            ff_sched_place_get(h->sched, p, res, &total, &free_);
            if (res != FF_RES_CPU && total == 0)
                continue;
            if (res == FF_RES_CPU && p < h->nplaces_cap && h->places[p] != NULL) {
                /* Shown as the real CPUs, busy as far as tasks were sent. */
                int64_t used = total - free_, real = h->places[p]->cpus;
                total = real;
                free_ = used >= real ? 0 : real - used;
            }
            const char *rn = ff_sched_resource_name(h->sched, res);
            ff_msg_status_res(
                b, &(ff_msg_res_state){rn, strlen(rn), (uint64_t)total, (uint64_t)free_});
        }
    }
    ff_sched_stats st;
    ff_sched_get_stats(h->sched, &st);
    ff_msg_status_reply m = {st.queued + st.parked, st.running, h->finished_total};
    sent_or_close(c, ff_msg_status_reply_end(b, at, &m), "a STATUS_REPLY");
}

static int on_status(head *h, hconn *c, const char *p, size_t n) {
    if (ff_msg_status_read(p, n) != 0)
        return protocol_error(c, "it sent a malformed STATUS");
    send_status(h, c);
    return 0;
}

static int on_frame(ff_conn *fc, int type, const char *p, size_t n) {
    hconn *c = fc->data;
    head *h = c->h;
    int role = fc->role;
    c->seen_ms = uv_now(&h->loop); /* any frame is a sign of life */
    if (type == FF_M_BYE)
        return 1;
    if (role == FF_ROLE_WORKER) {
        if (type == FF_M_REGISTER && c->place < 0) {
            char err[400];
            int rc = on_register(h, c, p, n, err, sizeof err);
            if (rc == 0)
                return 0;
            if (rc == 2) {
                ff_log(WHO, "%s: refused: %s", fc->peer, err);
                ff_msg_refuse_write(&fc->out, err);
                return 1;
            }
            ff_log(WHO, "%s: a malformed REGISTER (bad resources?): disconnected", fc->peer);
            ff_msg_refuse_write(&fc->out, "the head cannot use this worker's REGISTER (bad or "
                                          "repeated resource names or amounts)");
            return 1;
        }
        if (type == FF_M_RESULT && c->place >= 0)
            return on_result(h, c, p, n);
        if (type == FF_M_STARTED && c->place >= 0)
            return on_started(h, c, p, n);
        if (type == FF_M_HANDBACK && c->place >= 0)
            return on_handback(h, c, p, n);
        if (type == FF_M_STOPPING && c->place >= 0)
            return on_worker_stopping(h, c, p, n);
        if (type == FF_M_PING) {
            uint64_t ms;
            if (ff_msg_ping_read(p, n, &ms) != 0)
                return protocol_error(c, "it sent a malformed PING");
            return 0;
        }
        if (type == FF_M_STORE_REPLY && c->place >= 0)
            return on_store_reply(h, c, p, n);
    } else if (role == FF_ROLE_DRIVER) {
        if (type == FF_M_FUNC)
            return on_func(h, c, p, n);
        if (type == FF_M_WORKDIR)
            return on_workdir(h, c, p, n);
        if (type == FF_M_RUN_WORKDIR)
            return on_run_workdir(h, c, p, n);
        if (type == FF_M_SUBMIT)
            return on_submit(h, c, p, n);
        if (type == FF_M_RUN_END) {
            uint64_t drun;
            if (ff_msg_run_end_read(p, n, &drun) != 0)
                return protocol_error(c, "it sent a malformed RUN_END");
            if (c->refused && drun == c->refused_run)
                c->refused = 0;
            for (hrun *r = h->runs; r; r = r->next)
                if (r->driver == c && r->driver_run == drun) {
                    run_abort(h, r);
                    break;
                }
            dispatch(h);
            return 0;
        }
        if (type == FF_M_STATUS)
            return on_status(h, c, p, n);
        if (type == FF_M_STORE)
            return on_store(h, c, p, n);
        if (type == FF_M_RUN_STORE)
            return on_run_store(h, c, p, n);
    } else if (type == FF_M_STATUS) {
        return on_status(h, c, p, n);
    }
    ff_log(WHO, "%s: unexpected message %d: disconnected", fc->peer, type);
    return 1;
}

/* --- workers that leave ---------------------------------------------------- */

/* The local worker slot whose last process is worker w, or NULL. */
static hchild *local_child(head *h, const hconn *w) {
    for (int k = 0; k < h->nchildren; k++) {
        hchild *ch = &h->children[k];
        char name[sizeof w->name];
        if (ch->pid <= 0 || (uint64_t)ch->pid != w->pid)
            continue;
        snprintf(name, sizeof name, "%s:%d", h->hostname, ch->pid);
        if (strcmp(name, w->name) == 0)
            return ch;
    }
    return NULL;
}

/* What became of the worker of place p, into buf ("NAME ended: killed by
 * signal 9", "NAME was disconnected: WHY", "NAME left the cluster").
 * Returns 1 when it is a local worker whose process has not been seen to
 * end yet (buf then says it left). */
static int death_text(head *h, int p, char *buf, size_t cap) {
    const hplace *pi = &h->pinfo[p];
    if (pi->lost[0] != '\0') {
        snprintf(buf, cap, "%s was disconnected: %s", pi->name, pi->lost);
        return 0;
    }
    if (pi->ended[0] != '\0') {
        snprintf(buf, cap, "%s %s", pi->name, pi->ended);
        return 0;
    }
    snprintf(buf, cap, "%s left the cluster", pi->name);
    for (int k = 0; k < h->nchildren && pi->local_pid > 0; k++)
        if (h->children[k].pid == pi->local_pid && h->children[k].running)
            return 1;
    return 0;
}

/* Whether the failure of task t lists every worker it was lost with
 * (it started more than once; the driver says how often) rather than the
 * last one alone. */
static int lost_list(const htask *t) {
    return t->ndeaths > 1 && t->attempts > 1;
}

/* Task t's failure, lost with several workers: the list before the last
 * worker's part ("A ended ...; B left the cluster;"). */
static size_t lost_prefix(head *h, const htask *t, char *msg, size_t cap) {
    size_t n = 0;
    msg[0] = '\0';
    for (uint32_t k = 0; k + 1 < t->ndeaths && n < cap; k++) {
        char one[300];
        death_text(h, t->deaths[k], one, sizeof one);
        n += (size_t)snprintf(msg + n, cap - n, "%s%s;", k > 0 ? " " : "", one);
    }
    return n < cap ? n : cap - 1;
}

/* The failure of task t, lost with its workers (t->deaths, the last one
 * at place last), into msg: one worker is said as before retries
 * existed; several are listed with how each ended. */
static void lost_message(head *h, const htask *t, int last, char *msg, size_t cap) {
    const hplace *pi = &h->pinfo[last];
    if (!lost_list(t)) {
        if (pi->lost[0] != '\0')
            snprintf(msg, cap, "the worker running it (%s) was disconnected: %s", pi->name,
                     pi->lost);
        else if (pi->ended[0] != '\0')
            snprintf(msg, cap, "the worker process running it (%s) %s", pi->name, pi->ended);
        else
            snprintf(msg, cap, "the worker running it (%s) left the cluster", pi->name);
        return;
    }
    size_t n = lost_prefix(h, t, msg, cap);
    char one[300];
    death_text(h, last, one, sizeof one);
    snprintf(msg + n, cap - n, " %s", one);
}

/* Sends the DONEs waiting in grave g, with how its process ended (NULL:
 * not known), and forgets g. */
static void grave_flush(head *h, hgrave *g, const char *ended) {
    for (size_t k = 0; k < g->n; k++) {
        struct grave_done *gd = &g->done[k];
        hrun *r = run_find(h, gd->run_id);
        if (r != NULL && r->graves > 0)
            r->graves--;
        hconn *d = gd->driver; /* NULL once that driver left */
        if (d != NULL && d->c.state == FF_CONN_READY) {
            char msg[2048];
            if (gd->prefix == NULL && ended != NULL)
                snprintf(msg, sizeof msg, "the worker process running it (%s) %s", g->name, ended);
            else if (gd->prefix == NULL)
                snprintf(msg, sizeof msg, "the worker running it (%s) left the cluster", g->name);
            else
                snprintf(msg, sizeof msg, "%s %s %s", gd->prefix, g->name,
                         ended != NULL ? ended : "left the cluster");
            ff_msg_done m = {.run = gd->run,
                             .index = gd->index,
                             .status = FF_DONE_LOST,
                             .bytes = msg,
                             .len = strlen(msg),
                             .worker = g->name,
                             .worker_len = strlen(g->name),
                             .attempts = gd->attempts};
            sent_or_close(d, ff_msg_done_write(&d->c.out, &m), "a DONE");
        }
        free(gd->prefix);
        if (r != NULL)
            run_settle(h, r);
    }
    for (hgrave **pp = &h->graves; *pp; pp = &(*pp)->next)
        if (*pp == g) {
            *pp = g->next;
            break;
        }
    free(g->done);
    free(g);
}

/* Graves whose process was not seen to end in time: their failures go
 * without how it ended. */
static void on_grave_timer(uv_timer_t *t) {
    head *h = t->data;
    uint64_t now = uv_now(&h->loop);
    for (hgrave *g = h->graves, *next; g; g = next) {
        next = g->next;
        if (now >= g->deadline_ms)
            grave_flush(h, g, NULL);
    }
    if (h->graves == NULL)
        uv_timer_stop(t);
}

/* Puts the failure of task i of run r, lost with local worker w, in w's
 * grave; prefix (malloc'd, or NULL for a task lost once) is the message
 * before w's part. Returns nonzero when there is no memory for it (prefix
 * is freed). */
static int grave_add(head *h, const hconn *w, hrun *r, uint32_t i, char *prefix) {
    hgrave *g = h->graves;
    while (g != NULL && (uint64_t)g->pid != w->pid)
        g = g->next;
    if (g == NULL) {
        if ((g = calloc(1, sizeof *g)) == NULL) {
            free(prefix);
            return -1;
        }
        g->pid = (int)w->pid;
        snprintf(g->name, sizeof g->name, "%s", w->name);
        g->deadline_ms = uv_now(&h->loop) + FF_GRAVE_MS;
        g->next = h->graves;
        h->graves = g;
        if (!uv_is_active((uv_handle_t *)&h->grave_timer))
            uv_timer_start(&h->grave_timer, on_grave_timer, 50, 50);
    }
    if (g->n == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 4;
        struct grave_done *nd = realloc(g->done, cap * sizeof *nd);
        if (nd == NULL) {
            free(prefix);
            return -1;
        }
        g->done = nd;
        g->cap = cap;
    }
    g->done[g->n++] =
        (struct grave_done){r->driver, r->driver_run, i, r->id, r->tasks[i].attempts, prefix};
    r->graves++;
    return 0;
}

/* Task i of run r, which ran on worker w, was lost with it. Not started:
 * it runs again, as if new. Started: that was an attempt; it runs again
 * while it has attempts left, else it fails (FF_DONE_LOST) naming the
 * workers it took down (when the last is a local worker whose end is not
 * known yet, a grave sends the failure once it is). */
static void task_lost(head *h, hrun *r, uint32_t i, const hconn *w) {
    htask *t = &r->tasks[i];
    int *nd = realloc(t->deaths, (t->ndeaths + 1) * sizeof *nd);
    if (nd != NULL) {
        t->deaths = nd;
        t->deaths[t->ndeaths++] = w->place;
    }
    /* Lost before its STARTED came: no attempt, but a task that ends its
     * worker at once may do so before the worker could say it started,
     * so such losses too are bounded (FF_LOST_GRACE more). */
    if (nd != NULL && t->attempts < 1 + t->max_retries &&
        t->ndeaths < 1 + t->max_retries + FF_LOST_GRACE) {
        if (!h->quiet && t->started)
            ff_log(WHO, "node '%s' was lost with worker %s: it runs again (attempt %u of %u)",
                   t->name, w->name, t->attempts + 1, 1 + t->max_retries);
        task_again(h, r, i);
        return;
    }
    char how[300];
    if (nd != NULL && death_text(h, w->place, how, sizeof how) != 0 && r->driver != NULL) {
        char *prefix = NULL;
        if (lost_list(t)) { /* everything but the last worker's part, which the grave adds */
            char full[2048];
            prefix = strndup(full, lost_prefix(h, t, full, sizeof full));
        }
        if ((!lost_list(t) || prefix != NULL) && grave_add(h, w, r, i, prefix) == 0) {
            task_fail(h, r, i, FF_DONE_LOST, NULL, 0);
            return;
        }
    }
    char msg[2048];
    lost_message(h, t, w->place, msg, sizeof msg);
    task_fail(h, r, i, FF_DONE_LOST, msg, strlen(msg));
}

/* A task dropped by the scheduler: it ran on a worker that left (why
 * FF_SCHED_LOST), or no worker left can hold it. Noted, for process_lost
 * to handle once the scheduler returned. */
static void on_lost(void *ud, uint64_t id, int why, int bad) {
    head *h = ud;
    (void)bad;
    if (h->nlost + 2 <= h->lost_cap) {
        h->lost_ids[h->nlost++] = id;
        h->lost_ids[h->nlost++] = (uint64_t)why;
        return;
    }
    hrun *r = run_find(h, id >> 32); /* no room to note it (memory): its run fails */
    if (r != NULL && (uint32_t)id < r->received) {
        r->tasks[(uint32_t)id].state = T_PENDING;
        run_fail(r, (uint32_t)id, "the head has not enough memory to run it again");
    }
}

/* Makes room in h->lost_ids for what the scheduler may drop now. */
static void lost_reserve(head *h) {
    ff_sched_stats st;
    ff_sched_get_stats(h->sched, &st);
    size_t need = 2 * (st.queued + st.parked + st.running) + 2;
    if (need <= h->lost_cap)
        return;
    uint64_t *n = realloc(h->lost_ids, need * sizeof *n);
    if (n != NULL) {
        h->lost_ids = n;
        h->lost_cap = need;
    }
}

/* The tasks on_lost noted: lost with worker w (NULL: none was) they run
 * again or fail (task_lost); those no worker left can hold fail. */
static void process_lost(head *h, const hconn *w) {
    /* A worker starts tasks in the order they came, at most one per CPU
     * at once. Of the tasks lost with it that it had not said it started,
     * the oldest, up to its CPUs, may have been running: a task can end
     * its worker before the STARTED is out. They count an attempt, so that
     * such a task cannot take down workers for ever. */
    int64_t slots = w == NULL                ? 0
                    : w->cpus > FF_RES_SCALE ? (w->cpus + FF_RES_SCALE - 1) / FF_RES_SCALE
                                             : 1;
    for (size_t k = 0; w != NULL && k < h->nlost; k += 2) {
        hrun *r = run_find(h, h->lost_ids[k] >> 32);
        htask *t = r != NULL && (uint32_t)h->lost_ids[k] < r->received
                       ? &r->tasks[(uint32_t)h->lost_ids[k]]
                       : NULL;
        if (t != NULL && t->started && h->lost_ids[k + 1] == FF_SCHED_LOST)
            slots--;
    }
    for (; slots > 0; slots--) {
        htask *oldest = NULL;
        for (size_t k = 0; k < h->nlost; k += 2) {
            hrun *r = run_find(h, h->lost_ids[k] >> 32);
            htask *t = r != NULL && (uint32_t)h->lost_ids[k] < r->received
                           ? &r->tasks[(uint32_t)h->lost_ids[k]]
                           : NULL;
            if (t != NULL && !t->started && t->state == T_RUNNING &&
                h->lost_ids[k + 1] == FF_SCHED_LOST && (oldest == NULL || t->seq < oldest->seq))
                oldest = t;
        }
        if (oldest == NULL)
            break;
        oldest->started = 1;
        oldest->attempts++;
    }
    for (size_t k = 0; k < h->nlost; k += 2) {
        uint64_t id = h->lost_ids[k];
        int why = (int)h->lost_ids[k + 1];
        hrun *r = run_find(h, id >> 32);
        uint32_t i = (uint32_t)id;
        if (r == NULL || i >= r->received || r->failed)
            continue;
        htask *t = &r->tasks[i];
        if (why == FF_SCHED_LOST && w != NULL && t->state == T_RUNNING) {
            task_lost(h, r, i, w);
        } else if (may_wait(h, t)) {
            task_again(h, r, i); /* parked until a worker that can hold it joins */
        } else {
            const char *msg = "no worker left in the cluster can hold what it asks for";
            t->state = T_PENDING;
            task_fail(h, r, i, FF_DONE_FAILED, msg, strlen(msg));
        }
    }
    h->nlost = 0;
}

/* Worker w left. An actor there whose method calls are not all done is
 * rebuilt elsewhere while it has max_restarts left: its constructor runs
 * again, then its finished calls are replayed in order (replay_next),
 * then the others. Otherwise its next call fails (FF_DONE_LOST), and with
 * it, under keep going, the calls after it. */
static void actors_lost(head *h, const hconn *w) {
    for (hrun *r = h->runs; r; r = r->next) {
        for (uint32_t c = 0; c < r->received && !r->failed; c++) {
            htask *ct = &r->tasks[c];
            if (ct->actor != FF_ACTOR_CTOR || ct->place != w->place || ct->state != T_DONE ||
                ct->methods_left == 0)
                continue;
            uint32_t blame = UINT32_MAX;
            for (uint32_t k = c + 1; k < r->received; k++) {
                htask *m = &r->tasks[k];
                if (m->actor != FF_ACTOR_METHOD || m->ctor != c)
                    continue;
                if (m->state == T_REPLAY)
                    m->state = T_DONE; /* replayed again, from the start */
                if (m->state == T_RUNNING && m->place == w->place) {
                    m->state = T_PENDING; /* sent again once the actor is back */
                    m->started = 0;
                    task_out(h, r, k);
                }
                if (m->state == T_PENDING && blame == UINT32_MAX)
                    blame = k;
            }
            if (blame == UINT32_MAX)
                continue;
            if (ct->restarts < ct->max_restarts) {
                ct->restarts++;
                ct->rebuilding = 1;
                ct->holders = 0;
                if (!h->quiet)
                    ff_log(WHO,
                           "actor '%s' was lost with worker %s: it is rebuilt (restart %u of %u)",
                           ct->name, w->name, ct->restarts, ct->max_restarts);
                ct->state = T_PENDING;
                make_ready(h, r, c);
                continue;
            }
            char msg[400];
            if (w->lost[0] != '\0')
                snprintf(msg, sizeof msg,
                         "its actor '%s' was lost: the worker holding it (%s) was "
                         "disconnected: %s",
                         ct->name, w->name, w->lost);
            else
                snprintf(msg, sizeof msg,
                         "its actor '%s' was lost: the worker holding it (%s) left the cluster",
                         ct->name, w->name);
            task_fail(h, r, blame, FF_DONE_LOST, msg, strlen(msg));
        }
    }
}

static void settle_all(head *h);

/* The wait after a worker left is over: the tasks no worker joined for
 * fail, but those a local worker will hold. */
static void on_rejoin_end(uv_timer_t *tm) {
    head *h = tm->data;
    lost_reserve(h);
    ff_sched_drop_waiting(h->sched, on_lost, h);
    process_lost(h, NULL);
    settle_all(h);
    dispatch(h);
}

/* A worker was lost or is replacing its process: it may come back (a new
 * process, a link up again), so until a heartbeat timeout from now the
 * tasks no worker left can hold wait for one to join (may_wait). */
static void rejoin_wait(head *h) {
    h->rejoin_until = uv_now(&h->loop) + h->heartbeat_ms;
    uv_timer_start(&h->rejoin, on_rejoin_end, h->heartbeat_ms, 0);
}

/* Ends the runs that failed or that have nothing left to run. */
static void settle_all(head *h) {
    for (hrun *r = h->runs, *next; r; r = next) {
        next = r->next;
        run_settle(h, r);
    }
}

static void on_closed(ff_conn *fc) {
    hconn *c = fc->data;
    head *h = c->h;
    for (hconn **pp = &h->conns; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            break;
        }
    if (c->place >= 0) {
        if (!h->quiet && !h->stopping)
            ff_log(WHO, "worker %s left", c->name);
        snprintf(h->pinfo[c->place].lost, sizeof h->pinfo[c->place].lost, "%s", c->lost);
        store_lost(h, c);
        h->places[c->place] = NULL;
        if (!h->stopping && (!c->stopping || c->returning))
            rejoin_wait(h); /* lost or replacing its process, not stopped */
        lost_reserve(h);
        ff_sched_remove_place(h->sched, c->place, on_lost, h);
        process_lost(h, c);
        actors_lost(h, c);
        settle_all(h);
    }
    for (hrun *r = h->runs, *next; r; r = next) { /* a driver's runs end with it */
        next = r->next;
        if (r->driver == c) {
            store_commit(h, r);
            r->driver = NULL;
            run_abort(h, r);
        }
    }
    for (hfwd *f = h->fwds; f; f = f->next)
        if (f->driver == c)
            f->driver = NULL;
    for (hgrave *g = h->graves; g; g = g->next) /* nor does it wait for failures */
        for (size_t k = 0; k < g->n; k++)
            if (g->done[k].driver == c)
                g->done[k].driver = NULL;
    if (c->place < 0) /* a driver's working directories */
        for (hwd *w = h->wds, *next; w; w = next) {
            next = w->next;
            if (bm_find(&c->wd_has, w->id) != NULL)
                wd_unref(h, w);
        }
    bm_free(&c->wd_has);
    bm_free(&c->wd_runs);
    bm_free(&c->funcs_sent);
    ff_conn_free(&c->c);
    free(c);
    dispatch(h);
}

static void reject_pending(head *h);
static void on_ready(ff_conn *fc, int role);

static void on_rejected(uv_handle_t *hd) {
    head *h = hd->data;
    int again = h->rejecting == 2; /* one was accepted: another may be pending */
    h->rejecting = 0;
    if (again && !h->stopping)
        reject_pending(h);
}

/* Accepts the pending connection into h->reject and closes it at once.
 * For when there is no memory for a connection: libuv stops accepting
 * until the pending one is taken. */
static void reject_pending(head *h) {
    if (h->rejecting || uv_tcp_init(&h->loop, &h->reject) != 0)
        return;
    h->reject.data = h;
    h->rejecting = uv_accept((uv_stream_t *)&h->server, (uv_stream_t *)&h->reject) == 0 ? 2 : 1;
    uv_close((uv_handle_t *)&h->reject, on_rejected);
}

static void on_connection(uv_stream_t *server, int status) {
    head *h = server->data;
    if (status < 0) { /* as too many open files: libuv closes that connection */
        ff_noise_log(&h->noise, "cannot accept a connection: %s", uv_strerror(status));
        return;
    }
    hconn *c = calloc(1, sizeof *c);
    if (c == NULL) {
        ff_noise_log(&h->noise, "cannot accept a connection: not enough memory");
        reject_pending(h);
        return;
    }
    c->h = h;
    c->place = -1;
    c->c.data = c;
    c->c.on_frame = on_frame;
    c->c.on_close = on_closed;
    c->c.on_ready = on_ready;
    c->c.handshake_ms = h->handshake_ms;
    c->c.noise = &h->noise;
    if (ff_conn_accept(&c->c, server, h->key) != 0) {
        if (c->c.tcp.type != UV_TCP) { /* no handle: nothing to close */
            free(c);
            reject_pending(h);
        } else {
            ff_conn_close(&c->c); /* on_closed frees it */
        }
        return;
    }
    c->next = h->conns;
    h->conns = c;
}

/* Once per loop iteration: what every connection was given goes out. */
static void flush_all(uv_check_t *chk) {
    head *h = chk->data;
    for (hconn *c = h->conns; c; c = c->next)
        ff_conn_flush(&c->c);
}

/* Drops worker c at once, without waiting for what it was sent to go out
 * (it may never read it: stopped, or cut off). Pending writes are
 * cancelled by the close. */
static void drop_now(hconn *c, const char *why) {
    if (c->c.state == FF_CONN_CLOSING)
        return;
    snprintf(c->lost, sizeof c->lost, "%s", why);
    ff_log(WHO, "%s: %s: disconnected", c->place >= 0 ? c->name : c->c.peer, why);
    c->c.out.n = 0;
    c->c.writing = 0;
    ff_conn_close(&c->c);
}

/* Heartbeats: a PING to every peer each heartbeat_ms / FF_HEARTBEAT_PER;
 * a worker that sent nothing for heartbeat_ms is lost. */
static void on_heartbeat(uv_timer_t *t) {
    head *h = t->data;
    uint64_t now = uv_now(&h->loop);
    for (hconn *c = h->conns, *next; c; c = next) {
        next = c->next;
        if (c->c.state != FF_CONN_READY)
            continue;
        size_t wq = uv_stream_get_write_queue_size((uv_stream_t *)&c->c.tcp);
        if (c->c.nreads != c->seen_reads || wq != c->seen_wq) {
            c->seen_reads = c->c.nreads;
            c->seen_wq = wq;
            c->seen_ms = now;
        }
        if (c->c.role == FF_ROLE_WORKER && now - c->seen_ms >= h->heartbeat_ms) {
            char why[100];
            snprintf(why, sizeof why, "it sent nothing for %.1f s",
                     (double)(now - c->seen_ms) / 1000);
            drop_now(c, why);
            continue;
        }
        sent_or_close(c, ff_msg_ping_write(&c->c.out, h->heartbeat_ms), "a PING");
    }
}

/* A peer authenticated: its first PING tells it the heartbeat timeout. */
static void on_ready(ff_conn *fc, int role) {
    hconn *c = fc->data;
    (void)role;
    c->seen_ms = uv_now(&c->h->loop);
    sent_or_close(c, ff_msg_ping_write(&fc->out, c->h->heartbeat_ms), "a PING");
}

/* --- local workers ---------------------------------------------------------- */

static void child_start(hchild *ch);

static void on_child_closed(uv_handle_t *p) {
    hchild *ch = p->data;
    ch->proc_open = 0;
}

static void on_restart(uv_timer_t *t) {
    hchild *ch = t->data;
    if (ch->h->stopping)
        return;
    if (ch->proc_open) /* the last process's handle is still closing */
        uv_timer_start(t, on_restart, 10, 0);
    else
        child_start(ch);
}

/* The process of slot ch ended (how: "ended: ..."), or could not start:
 * start another after a back-off, or give up after FF_LOCAL_GIVE_UP quick
 * ends in a row; then tasks waiting for a local worker fail. */
static void child_ended(hchild *ch, const char *how) {
    head *h = ch->h;
    if (h->stopping)
        return;
    int quick = uv_now(&h->loop) - ch->started_ms < FF_LOCAL_QUICK_MS;
    ch->quick = quick ? ch->quick + 1 : 0;
    char who[32] = "a local worker";
    if (ch->pid > 0)
        snprintf(who, sizeof who, "local worker %d", ch->pid);
    if (ch->quick >= FF_LOCAL_GIVE_UP) {
        ff_log(WHO, "%s %s, %u times in a row within %d s of starting: no other starts", who, how,
               ch->quick, FF_LOCAL_QUICK_MS / 1000);
        ch->given_up = 1;
        if (--h->nchildren_live == 0) { /* what waited for one fails now */
            lost_reserve(h);
            ff_sched_drop_waiting(h->sched, on_lost, h);
            process_lost(h, NULL);
            settle_all(h);
            dispatch(h);
        }
        return;
    }
    uint64_t delay = (uint64_t)FF_LOCAL_BACKOFF_MS << (ch->quick > 0 ? ch->quick - 1 : 0);
    ff_log(WHO, "%s %s; another starts in %.1f s", who, how, (double)delay / 1000);
    uv_timer_start(&ch->restart, on_restart, delay, 0);
}

static void on_child_exit(uv_process_t *p, int64_t status, int sig) {
    hchild *ch = p->data;
    head *h = ch->h;
    ch->running = 0;
    if (sig != 0)
        snprintf(ch->ended, sizeof ch->ended, "ended: killed by signal %d", sig);
    else
        snprintf(ch->ended, sizeof ch->ended, "ended with exit status %d", (int)status);
    uv_close((uv_handle_t *)p, on_child_closed);
    for (int q = 0; q < h->nplaces_cap; q++)
        if (h->pinfo[q].local_pid == ch->pid && h->pinfo[q].ended[0] == '\0')
            snprintf(h->pinfo[q].ended, sizeof h->pinfo[q].ended, "%s", ch->ended);
    for (hgrave *g = h->graves, *next; g; g = next) { /* failures waiting for this */
        next = g->next;
        if (g->pid == ch->pid)
            grave_flush(h, g, ch->ended);
    }
    child_ended(ch, ch->ended);
}

/* Starts the process of local worker slot ch. The token goes through the
 * environment, never argv. */
static void child_start(hchild *ch) {
    head *h = ch->h;
    /* --reconnect 0: a local worker goes with its head, within the
     * heartbeat timeout. */
    char *args[12] = {h->exe,       "worker",      "--address",   h->local_addr,
                      "--num-cpus", h->local_cpus, "--reconnect", "0"};
    int na = 8;
    if (h->quiet)
        args[na++] = "--quiet";
    else if (h->verbose)
        args[na++] = "--verbose";
    if (h->local_resources) {
        args[na++] = "--resources";
        args[na++] = (char *)h->local_resources;
    }
    args[na] = NULL;
    extern char **environ;
    size_t ne = 0;
    while (environ[ne])
        ne++;
    char **env = calloc(ne + 2, sizeof *env);
    char *tok = malloc(strlen(h->token) + 13);
    int rc = UV_ENOMEM, spawned = 0;
    if (env != NULL && tok != NULL) {
        size_t j = 0;
        for (size_t i = 0; i < ne; i++)
            if (strncmp(environ[i], "FFLUA_TOKEN=", 12) != 0)
                env[j++] = environ[i];
        sprintf(tok, "FFLUA_TOKEN=%s", h->token);
        env[j++] = tok;
        env[j] = NULL;
        uv_stdio_container_t stdio[3] = {{.flags = UV_IGNORE},
                                         {.flags = UV_INHERIT_FD, .data.fd = 1},
                                         {.flags = UV_INHERIT_FD, .data.fd = 2}};
        uv_process_options_t po = {.exit_cb = on_child_exit,
                                   .file = h->exe,
                                   .args = args,
                                   .env = env,
                                   .stdio_count = 3,
                                   .stdio = stdio};
        ch->proc.data = ch;
        spawned = 1;
        rc = uv_spawn(&h->loop, &ch->proc, &po);
    }
    free(tok);
    free(env);
    ch->started_ms = uv_now(&h->loop);
    if (rc != 0) {
        if (spawned) { /* a handle uv_spawn initialized must be closed */
            ch->proc_open = 1;
            uv_close((uv_handle_t *)&ch->proc, on_child_closed);
        }
        char how[96];
        snprintf(how, sizeof how, "could not start: %s", uv_strerror(rc));
        ch->pid = 0;
        child_ended(ch, how);
        return;
    }
    ch->running = ch->proc_open = 1;
    ch->pid = ch->proc.pid;
    ch->ended[0] = '\0';
}

/* The local workers' settings, and what each can hold (for fits_local). */
struct local_ud {
    head *h;
};

static int add_local_res(void *ud, const char *name, size_t len, double v) {
    head *h = ud;
    int64_t amount;
    int id = ff_sched_resource(h->sched, name, len);
    if (id < 0 || ff_sched_amount(v, &amount) != 0 || h->nlocal_cap >= 257)
        return 1;
    h->local_cap[h->nlocal_cap++] = (ff_res){id, amount};
    return 0;
}

static int start_local_workers(head *h, int n, const char *addr, double cpus, int64_t units,
                               const char *resources) {
    size_t len = sizeof h->exe;
    if (uv_exepath(h->exe, &len) != 0) {
        ff_log(WHO, "cannot start local workers: the program's path is unknown");
        return -1;
    }
    snprintf(h->local_addr, sizeof h->local_addr, "%s", addr);
    snprintf(h->local_cpus, sizeof h->local_cpus, "%.4f", cpus);
    h->local_resources = resources;
    h->local_cpus_units = units;
    h->local_cap[h->nlocal_cap++] = (ff_res){FF_RES_CPU, units * FF_PIPELINE};
    char err[256];
    if (resources != NULL && ff_parse_resources(resources, add_local_res, h, err, sizeof err))
        return -1; /* checked before: cannot happen */
    h->children = calloc((size_t)n, sizeof *h->children);
    if (h->children == NULL)
        return -1;
    h->nchildren = h->nchildren_live = n;
    for (int k = 0; k < n; k++) {
        hchild *ch = &h->children[k];
        ch->h = h;
        uv_timer_init(&h->loop, &ch->restart);
        ch->restart.data = ch;
        child_start(ch);
    }
    return 0;
}

/* --- the program ------------------------------------------------------------ */

static void on_signal(uv_signal_t *sig, int signum);

/* A local cluster's head goes when the process that started it is gone. */
static void on_parent_watch(uv_timer_t *t) {
    head *h = t->data;
    if (kill(h->parent, 0) != 0 && errno == ESRCH)
        on_signal(&h->sigterm, SIGTERM);
}

static void on_signal(uv_signal_t *sig, int signum) {
    head *h = sig->data;
    (void)signum;
    if (h->stopping)
        return;
    h->stopping = 1;
    if (!h->quiet)
        ff_log(WHO, "stopping");
    for (int k = 0; k < h->nchildren; k++) {
        hchild *ch = &h->children[k];
        if (ch->running)
            uv_process_kill(&ch->proc, SIGTERM);
        uv_close((uv_handle_t *)&ch->restart, NULL);
    }
    for (hconn *c = h->conns; c; c = c->next) {
        if (c->c.state == FF_CONN_READY) /* without memory for it, the close says as much */
            ff_msg_stopping_write(&c->c.out, "the head was terminated", 23);
        ff_conn_close(&c->c);
    }
    while (h->graves) /* their drivers get BYE */
        grave_flush(h, h->graves, NULL);
    /* The head's own handles; each connection closes its own. Running
     * local workers keep the loop until they exited. */
    uv_close((uv_handle_t *)&h->server, NULL);
    uv_close((uv_handle_t *)&h->sigterm, NULL);
    uv_close((uv_handle_t *)&h->sigint, NULL);
    uv_close((uv_handle_t *)&h->flusher, NULL);
    uv_close((uv_handle_t *)&h->grave_timer, NULL);
    uv_close((uv_handle_t *)&h->heartbeat, NULL);
    uv_close((uv_handle_t *)&h->rejoin, NULL);
    ff_noise_close(&h->noise);
    if (h->parent > 0)
        uv_close((uv_handle_t *)&h->parent_watch, NULL);
}

static uint64_t activity(void *ud) {
    head *h = ud;
    uint64_t n = 0;
    for (hconn *c = h->conns; c; c = c->next)
        n += c->c.nreads;
    return n;
}

/* Whether addr is a loopback address (127.0.0.0/8, ::1, or an IPv4 one
 * mapped into IPv6). */
static int loopback(const struct sockaddr_storage *addr) {
    if (addr->ss_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)addr)->sin_addr.s_addr) >> 24) == 127;
    if (addr->ss_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)addr)->sin6_addr;
        if (IN6_IS_ADDR_LOOPBACK(a))
            return 1;
        return IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127;
    }
    return 0;
}

/* FFLUA_PARENT_PID: 0 when unset, else a process id, or -1 when bad. */
static pid_t parent_pid(void) {
    const char *pp = getenv("FFLUA_PARENT_PID");
    if (pp == NULL || pp[0] == '\0')
        return 0;
    char *end;
    errno = 0;
    long v = strtol(pp, &end, 10);
    if (*end != '\0' || errno != 0 || v <= 0 || v > INT32_MAX || !(pp[0] >= '0' && pp[0] <= '9'))
        return -1;
    return (pid_t)v;
}

int ff_head_main(const ff_head_opts *o) {
    head *h = calloc(1, sizeof *h);
    if (h == NULL)
        return 1;
    char err[512];
    size_t tl = 0;
    int rc = ff_cluster_token(o->token_file, h->token, sizeof h->token, &tl, err, sizeof err);
    int made_token = rc == 0 && tl == 0;
    if (made_token) {
        ff_token_new(h->token);
        tl = strlen(h->token);
    }
    if (rc == 0 && o->resources != NULL)
        rc = ff_check_resources(o->resources, err, sizeof err);
    double cpus = o->num_cpus >= 0 ? o->num_cpus : (double)uv_available_parallelism();
    int64_t units = 0;
    if (rc == 0 && (ff_sched_amount(cpus, &units) != 0 || cpus > FF_MAX_CPUS)) {
        snprintf(err, sizeof err, "bad --num-cpus %g", cpus);
        rc = -EINVAL;
    }
    int nlocal = o->workers >= 0 ? o->workers : units > 0;
    if (rc == 0 && nlocal > FF_MAX_LOCAL_WORKERS) {
        snprintf(err, sizeof err, "bad --workers %d", nlocal);
        rc = -EINVAL;
    }
    if (rc == 0 && (h->parent = parent_pid()) < 0) {
        snprintf(err, sizeof err, "bad FFLUA_PARENT_PID '%s': a process id expected",
                 getenv("FFLUA_PARENT_PID"));
        rc = -EINVAL;
    }
    if (rc == 0 && ff_sched_create(&h->sched) != 0) {
        snprintf(err, sizeof err, "not enough memory");
        rc = -ENOMEM;
    }
    if (rc != 0) {
        ff_log(WHO, "%s", err);
        ff_sched_destroy(h->sched);
        free(h);
        return 2;
    }
    ff_auth_key(h->token, tl, h->key);
    h->quiet = o->quiet;
    h->verbose = o->verbose && !o->quiet;
    h->handshake_ms = o->handshake_timeout > 0 ? (unsigned)(o->handshake_timeout * 1000 + 0.5) : 0;
    h->heartbeat_ms =
        o->heartbeat_timeout > 0 ? (unsigned)(o->heartbeat_timeout * 1000 + 0.5) : FF_HEARTBEAT_MS;
    if (gethostname(h->hostname, sizeof h->hostname - 1) != 0)
        snprintf(h->hostname, sizeof h->hostname, "localhost");
    char escaped[sizeof h->hostname];
    snprintf(h->hostname, sizeof h->hostname, "%s",
             ff_text_escape(escaped, 64, h->hostname, strlen(h->hostname)));
    uv_loop_init(&h->loop);
    uv_check_init(&h->loop, &h->flusher);
    h->flusher.data = h;
    uv_check_start(&h->flusher, flush_all);
    uv_timer_init(&h->loop, &h->grave_timer);
    h->grave_timer.data = h;
    uv_timer_init(&h->loop, &h->heartbeat);
    h->heartbeat.data = h;
    uv_timer_init(&h->loop, &h->rejoin);
    h->rejoin.data = h;
    unsigned every = h->heartbeat_ms / FF_HEARTBEAT_PER;
    uv_timer_start(&h->heartbeat, on_heartbeat, every, every);
    ff_noise_init(&h->noise, &h->loop);
    uv_tcp_init(&h->loop, &h->server);
    h->server.data = h;
    char addrbuf[300];
    snprintf(addrbuf, sizeof addrbuf, "%s:%d", o->host ? o->host : "127.0.0.1", o->port);
    struct sockaddr_storage addr;
    rc = ff_parse_address(addrbuf, &addr, err, sizeof err);
    int bad_address = rc != 0; /* why is in err; libuv's errors have their text */
    if (rc == 0 && made_token && !loopback(&addr)) {
        /* A token only its own workers know would keep others out, and a
         * cluster reachable from other machines is meant for them. */
        snprintf(err, sizeof err,
                 "%s is not a loopback address: give --token-file FILE (the cluster's token, "
                 "mode 600), which the workers and drivers of other machines use too",
                 o->host);
        rc = -EINVAL;
        bad_address = 1;
    }
    if (rc == 0)
        rc = uv_tcp_bind(&h->server, (struct sockaddr *)&addr, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&h->server, 511, on_connection);
    int code = 0;
    if (rc != 0) {
        ff_log(WHO, "cannot listen on %s: %s", addrbuf, bad_address ? err : uv_strerror(rc));
        code = 1;
        uv_close((uv_handle_t *)&h->server, NULL);
        uv_close((uv_handle_t *)&h->flusher, NULL);
        uv_close((uv_handle_t *)&h->grave_timer, NULL);
        uv_close((uv_handle_t *)&h->heartbeat, NULL);
        uv_close((uv_handle_t *)&h->rejoin, NULL);
        ff_noise_close(&h->noise);
    } else {
        struct sockaddr_storage bound;
        int blen = sizeof bound;
        uv_tcp_getsockname(&h->server, (struct sockaddr *)&bound, &blen);
        int port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                     : ((struct sockaddr_in *)&bound)->sin_port);
        snprintf(addrbuf, sizeof addrbuf, "%s:%d", o->host ? o->host : "127.0.0.1", port);
        if (!h->quiet) {
            printf("fflua head listening on %s\n", addrbuf);
            fflush(stdout);
        }
        if (o->ready_file != NULL) {
            char tmp[4096];
            snprintf(tmp, sizeof tmp, "%s.tmp", o->ready_file);
            FILE *f = fopen(tmp, "w");
            if (f != NULL) {
                fprintf(f, "%s\n", addrbuf);
                fclose(f);
                rename(tmp, o->ready_file);
            }
        }
        uv_signal_init(&h->loop, &h->sigterm);
        uv_signal_init(&h->loop, &h->sigint);
        h->sigterm.data = h->sigint.data = h;
        uv_signal_start(&h->sigterm, on_signal, SIGTERM);
        uv_signal_start(&h->sigint, on_signal, SIGINT);
        if (h->parent > 0) {
            uv_timer_init(&h->loop, &h->parent_watch);
            h->parent_watch.data = h;
            uv_timer_start(&h->parent_watch, on_parent_watch, 300, 300);
        }
        if (nlocal > 0 && start_local_workers(h, nlocal, addrbuf, cpus, units, o->resources) != 0)
            ff_log(WHO, "cannot start local workers: not enough memory");
    }
    ff_loop_run(&h->loop, 200, activity, h);
    while (h->runs)
        run_free(h, h->runs);
    while (h->fwds) {
        hfwd *f = h->fwds;
        h->fwds = f->next;
        free(f);
    }
    while (h->graves)
        grave_flush(h, h->graves, NULL);
    while (h->wds) { /* held by drivers whose connections were not closed */
        hwd *w = h->wds;
        h->wds = w->next;
        free(w->blob);
        free(w);
    }
    free(h->deps);
    free(h->children);
    free(h->places);
    free(h->pinfo);
    free(h->lost_ids);
    ff_sched_destroy(h->sched);
    uv_loop_close(&h->loop);
    sodium_memzero(h->token, sizeof h->token);
    free(h);
    return code;
}

/* --- fuzzing ------------------------------------------------------------- */

/* Feeds the frames in data to a head with one worker and one driver whose
 * connections have no socket (what they would be sent is dropped): the
 * head's handling of its peers' messages, without the network. Each frame
 * is preceded by a byte choosing the sender (even: the worker, odd: the
 * driver); a sender that would be disconnected sends nothing more. */
int ff_head_fuzz(const char *data, size_t n) {
    head h;
    memset(&h, 0, sizeof h);
    if (ff_sched_create(&h.sched) != 0)
        return 0;
    h.quiet = 1;
    hconn peers[2];
    memset(peers, 0, sizeof peers);
    int gone[2] = {0, 0};
    for (int i = 0; i < 2; i++) {
        peers[i].h = &h;
        peers[i].place = -1;
        peers[i].c.data = &peers[i];
        peers[i].c.state = FF_CONN_READY;
        peers[i].c.role = i == 0 ? FF_ROLE_WORKER : FF_ROLE_DRIVER;
        snprintf(peers[i].c.peer, sizeof peers[i].c.peer, "fuzz%d", i);
        peers[i].next = h.conns;
        h.conns = &peers[i];
    }
    while (n > 1) {
        int who = (unsigned char)data[0] & 1;
        int type;
        const char *payload;
        size_t plen, total;
        if (ff_frame_parse(data + 1, n - 1, (size_t)1 << 20, &type, &payload, &plen, &total) != 0)
            break;
        if (!gone[who] && on_frame(&peers[who].c, type, payload, plen) != 0)
            gone[who] = 1;
        data += 1 + total;
        n -= 1 + total;
    }
    while (h.runs)
        run_free(&h, h.runs);
    while (h.fwds) {
        hfwd *f = h.fwds;
        h.fwds = f->next;
        free(f);
    }
    while (h.wds) {
        hwd *w = h.wds;
        h.wds = w->next;
        free(w->blob);
        free(w);
    }
    for (int i = 0; i < 2; i++) {
        bm_free(&peers[i].wd_has);
        bm_free(&peers[i].wd_runs);
        bm_free(&peers[i].funcs_sent);
        ff_conn_free(&peers[i].c);
    }
    free(h.places);
    free(h.pinfo);
    free(h.lost_ids);
    free(h.deps);
    ff_sched_destroy(h.sched);
    return 0;
}
