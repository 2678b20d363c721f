/*
 * worker.c: `fflua worker`, a cluster process that runs tasks. No Lua
 * here: tasks run in executors (exec.h, lexec.c), each a Lua state.
 *
 * One libuv loop thread owns the connection to the head; N executor
 * threads (N = the worker's CPUs, at least 1) each own an executor and
 * take tasks from one queue. A task's function, pre-run function and
 * arguments arrive as codec bytes (FFC_CODE: only from the authenticated
 * head); its parents' results are either in the message or already here
 * (this worker ran that parent or received its result before). Results go
 * back as bytes and stay here for later tasks until the head frees them
 * or ends the run.
 *
 * The storages of kind "cluster" the head routes to this worker
 * (STORE_CALL) are served on the loop thread (storeserve.c), their
 * relative paths taken from the directory the worker started in.
 *
 * A run with a working directory (WORKDIR, RUN_WORKDIR; workdir.h) gets a
 * copy of it of its own in the worker's cache directory, unpacked on the
 * loop thread before its first task and removed at RUN_END; its tasks run
 * there. Executor threads unshare their current directory (CLONE_FS) so
 * that each can be in another run's; nothing the worker itself opens is
 * relative to a current directory (its startup one is kept in `home`).
 *
 * The loop thread runs no task, so that it always answers the head (even
 * on a worker of one CPU). The head sends a worker more tasks than it has
 * CPUs (pipelining); they start in order, each when its CPUs are free.
 * An executor wakes the loop thread as each task starts (the same wake-up
 * says the previous one ended): results are not held back behind a task
 * that may kill its process, where the head would count them lost too.
 *
 * Actors: the executor that runs a constructor task keeps the instance
 * (exec.h) and records itself in the run's `actors`; a method call of
 * that actor goes to that executor's own queue, which it serves before
 * the shared one, and takes no CPU of its own. When the head frees the
 * constructor's result, or the run ends, the executors drop the instance
 * (ff_exec_sweep, on actors_gen).
 *
 * Threads meet in two mutex-guarded places: the task queue (loop thread ->
 * executors) and the done queue (executors -> loop thread, woken through a
 * uv_async_t). Functions and results of a run live in `struct wrun`, guarded
 * by the worker's store mutex; executors get copies of what they need
 * (copy_blob, through the executor's store).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "blobmap.h"
#include "cluster.h"
#include "conn.h"
#include "exec.h"
#include "fflua.h"
#include "msg.h"
#include "sched.h"
#include "storeserve.h"
#include "text.h"
#include "workdir.h"

/* --- the worker ---------------------------------------------------------- */

typedef struct wrun {
    struct wrun *next;
    uint64_t id;
    blobmap funcs;   /* fid -> code */
    blobmap results; /* task index -> result bytes */
    blobmap actors;  /* constructor's task index -> the executor holding it (an int) */
    char *dir;       /* its working directory (removed with the run), or NULL */
    char *dir_err;   /* why its working directory could not be made, or NULL */
} wrun;

/* A working directory the head sent: its blob, kept in the worker's cache
 * directory until the head says to forget it, or why it is unusable. */
typedef struct wwd {
    struct wwd *next;
    unsigned char hash[FF_WD_HASH_LEN];
    char hex[33];
    char *err; /* NULL: the blob is in the cache as HEX.ffwd, or in mem */
    /* A blob this worker could not write to its cache yet (its own disk
     * failed, not the blob): kept here, written when a run needs it. */
    char *mem;
    size_t memlen;
} wwd;

typedef struct wtask {
    struct wtask *next;
    uint64_t run, index, fid;
    char *name;
    uint64_t *deps; /* task indices, in slot order */
    size_t ndeps;
    char *args, *pre;
    size_t nargs, npre;
    int64_t cpus;        /* fixed point */
    int actor;           /* FF_ACTOR_* */
    uint64_t ctor;       /* a method call: its constructor's task index */
    int exec;            /* a method call: the executor holding its actor */
    char *dir;           /* the run's working directory, or NULL */
    uint64_t timeout_ms; /* 0: none */
    uint64_t serial;     /* distinct per task: what an interrupt names */
    uint64_t epoch;      /* the connection it came on (w->epoch) */
    int stop;            /* the loop thread stopped it: FF_EXEC_CANCEL or _TIMEOUT */
    /* The outcome, filled by an executor: FF_RESULT_OK, _FAILED, _TIMEOUT,
     * or WT_CANCELLED (interrupted by a cancel: handed back). */
    int status;
    ff_buf out;
    uint64_t ns;
} wtask;

#define WT_CANCELLED (-1)

/* A task that began to run, for STARTED (w->started). */
typedef struct wstart {
    uint64_t epoch, run, index;
} wstart;

typedef struct worker {
    uv_loop_t loop;
    ff_conn conn;
    uv_async_t wake;
    uv_signal_t sigterm, sigint;
    uv_check_t flusher;
    uv_timer_t watch;    /* timeouts, interrupts, the heartbeat, the grace period */
    uv_timer_t retry;    /* the next attempt to reach a lost head */
    ff_exec_store store; /* what executors get functions and results from */
    unsigned char key[FF_KEY_LEN];
    struct sockaddr_storage addr;
    char *const *argv; /* the program's, for replacing the process */
    int64_t cpus;      /* fixed point */
    const char *resources;
    int nthreads;
    pthread_t *threads;
    pthread_mutex_t mu; /* queue, done, started, runs, stop, the executors' cur */
    pthread_cond_t cv;
    pthread_cond_t ended; /* an executor thread ended (nalive) */
    int nalive;           /* executor threads running */
    wtask *queue, *queue_tail, *done;
    unsigned posted; /* tasks queued so far (atomic: idle executors spin on it) */
    wstart *started; /* tasks that began, for STARTED */
    size_t nstarted, capstarted;
    uint64_t serial;       /* the last task's serial */
    uint64_t epoch;        /* connections to a head so far: older tasks are dropped */
    wtask **mq, **mq_tail; /* per executor thread: method calls of its actors */
    struct wexec *execs;   /* the executor threads' arguments */
    wrun *runs;
    uint64_t dropped_gen; /* bumped when runs are dropped */
    uint64_t actors_gen;  /* bumped when actors are dropped */
    int64_t cpus_free;    /* executors: CPUs not taken by running tasks */
    int stop, exit_code, registered;
    int own_machine; /* --own-machine */
    int quiet;       /* --quiet: only errors */
    int verbose;     /* --verbose: working directories and runs too */
    char *home;      /* the directory it started in (absolute) */
    char name[300];  /* "host:pid", for messages */
    char *cache;     /* its own cache directory, once made; NULL before */
    wwd *wds;
    const char *address; /* the head's, as given */
    const char *leaving; /* why the worker leaves, once it knows */
    /* Faults (docs/protocol.md): the head's heartbeat timeout (0 before
     * its first PING), when it last showed life and the connection's
     * read count then. */
    uint64_t hb_ms, alive_ms, alive_reads;
    int stopping;           /* SIGTERM: takes no tasks, finishes (1) or not (2) */
    int exiting;            /* leaves for good when the connection closes */
    int replacing;          /* replaces its process when the connection closed */
    uint64_t grace_ms;      /* --grace */
    uint64_t grace_end;     /* stopping: when the running tasks are handed back */
    uint64_t reconnect_ms;  /* --reconnect */
    uint64_t reconnect_end; /* lost its head: tries to reach it until then; 0: not */
    unsigned backoff_ms;    /* the wait before the next attempt */
    uint64_t replace_at;    /* replacing: exec by then even if the close hangs */
    /* The storages this worker holds (STORE_CALL), relative paths taken
     * from its startup directory; on the loop thread. */
    ff_storeserve *stores;
} worker;

static const char *WHO = "worker";

/* An executor thread: its worker, its number, its executor and the task
 * it runs (cur, under w->mu; NULL between tasks) with when it began and
 * when the loop thread asked it to stop (stop_ms, 0: not). */
struct wexec {
    struct worker *w;
    int k;
    ff_exec *x;
    wtask *cur;
    uint64_t t0_ms, stop_ms;
};

#define STOP_GRACE_MS 500 /* an interrupted task still running then is stuck */
/* An idle executor watches for a next task so long before it sleeps. */
#define EXEC_SPIN_US 100

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static wrun *run_get(worker *w, uint64_t id, int create) {
    for (wrun *r = w->runs; r; r = r->next)
        if (r->id == id)
            return r;
    if (!create)
        return NULL;
    wrun *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    r->id = id;
    r->next = w->runs;
    w->runs = r;
    return r;
}

static void run_drop(worker *w, uint64_t id) {
    for (wrun **pp = &w->runs; *pp; pp = &(*pp)->next) {
        if ((*pp)->id == id) {
            wrun *r = *pp;
            *pp = r->next;
            bm_free(&r->funcs);
            bm_free(&r->results);
            if (r->actors.len > 0)
                w->actors_gen++;
            bm_free(&r->actors);
            if (r->dir != NULL)
                ff_wd_remove(r->dir);
            free(r->dir);
            free(r->dir_err);
            free(r);
            w->dropped_gen++;
            return;
        }
    }
}

static void task_free(wtask *t) {
    free(t->dir);
    free(t->name);
    free(t->deps);
    free(t->args);
    free(t->pre);
    ff_buf_free(&t->out);
    free(t);
}

/* --- executors ----------------------------------------------------------- */

/* Copies the blob under (run, key) out of the store, or NULL. */
static char *copy_blob(worker *w, uint64_t run, int results, uint64_t key, size_t *n) {
    pthread_mutex_lock(&w->mu);
    wrun *r = run_get(w, run, 0);
    blob *b = r ? bm_find(results ? &r->results : &r->funcs, key) : NULL;
    char *p = NULL;
    if (b != NULL && (p = malloc(b->n ? b->n : 1)) != NULL) {
        memcpy(p, b->p, b->n);
        *n = b->n;
    }
    pthread_mutex_unlock(&w->mu);
    return p;
}

/* The executors' store (exec.h): from an executor's thread. */
static char *store_func(void *ud, uint64_t run, uint64_t fid, size_t *n) {
    return copy_blob(ud, run, 0, fid, n);
}

static char *store_result(void *ud, uint64_t run, uint64_t index, size_t *n) {
    return copy_blob(ud, run, 1, index, n);
}

static int store_actor_live(void *ud, uint64_t run, uint64_t index) {
    worker *w = ud;
    pthread_mutex_lock(&w->mu);
    wrun *r = run_get(w, run, 0);
    int live = r != NULL && bm_find(&r->actors, index) != NULL;
    pthread_mutex_unlock(&w->mu);
    return live;
}

/* Makes t's outcome the message m (n bytes), or one saying that m did not
 * fit in memory. */
static void set_message(wtask *t, const char *m, size_t n) {
    char alt[160];
    t->out.n = 0;
    if (ff_buf_reserve(&t->out, n) != 0) {
        snprintf(alt, sizeof alt,
                 "the worker has not enough memory for its error message "
                 "(%.1f MiB)",
                 (double)n / (1 << 20));
        m = alt;
        n = strlen(alt);
        if (ff_buf_reserve(&t->out, n) != 0)
            return; /* an empty message: the head still learns that it failed */
    }
    memcpy(t->out.p, m, n);
    t->out.n = n;
}

/* Runs task t on executor x; the outcome goes into t (ok, out, ns). */
static void run_one(ff_exec *x, wtask *t, uint64_t gen, uint64_t *seen_gen) {
    if (gen != *seen_gen) { /* runs were dropped: forget their functions */
        *seen_gen = gen;
        ff_exec_forget(x);
    }
    ff_exec_task et = {.run = t->run,
                       .fid = t->fid,
                       .name = t->name,
                       .deps = t->deps,
                       .ndeps = t->ndeps,
                       .args = t->args,
                       .nargs = t->nargs,
                       .pre = t->pre,
                       .npre = t->npre,
                       .actor = t->actor,
                       .ctor = t->ctor,
                       .index = t->index,
                       .dir = t->dir,
                       .serial = t->serial,
                       .timeout_ms = t->timeout_ms};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int rc = ff_exec_run(x, &et, &t->out);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    t->ns = (uint64_t)(t1.tv_sec - t0.tv_sec) * 1000000000u + (uint64_t)t1.tv_nsec -
            (uint64_t)t0.tv_nsec;
    t->status = rc == 0            ? FF_RESULT_OK
                : rc == -ETIMEDOUT ? FF_RESULT_TIMEOUT
                : rc == -ECANCELED ? WT_CANCELLED
                                   : FF_RESULT_FAILED;
    if (rc != 0) {
        size_t n;
        const char *m = ff_exec_error(x, &n);
        set_message(t, m, n);
    }
}

/* Records that executor k holds the actor task t made, once it ran, so
 * that its method calls go there. Without memory for that, t fails. Under
 * w->mu. */
static void keep_actor(worker *w, wtask *t, int k) {
    if (t->status != FF_RESULT_OK || t->actor != FF_ACTOR_CTOR)
        return;
    wrun *r = run_get(w, t->run, 0);
    if (r == NULL) {
        w->actors_gen++; /* its run ended meanwhile: the executor drops it */
    } else if (bm_put(&r->actors, t->index, (const char *)&k, sizeof k) != 0) {
        const char *msg = "the worker has not enough memory to keep its actor";
        t->status = FF_RESULT_FAILED;
        set_message(t, msg, strlen(msg));
        w->actors_gen++;
    }
}

/* Notes under w->mu that t began to run, for STARTED. Without memory
 * for the note, the head learns it from the result only. */
static void note_started(worker *w, wtask *t) {
    if (w->nstarted == w->capstarted) {
        size_t cap = w->capstarted ? 2 * w->capstarted : 64;
        wstart *p = realloc(w->started, cap * sizeof *p);
        if (p == NULL)
            return;
        w->started = p;
        w->capstarted = cap;
    }
    w->started[w->nstarted++] = (wstart){t->epoch, t->run, t->index};
}

static void *executor(void *arg) {
    struct wexec *self = arg;
    worker *w = self->w;
    int k = self->k;
    ff_exec *x;
    /* A current directory of this thread's own, for runs with a working
     * directory (chdir then moves this thread only). */
    int own_fs = unshare(CLONE_FS) == 0;
    if (ff_exec_create(&x, &w->store) != 0) {
        ff_log(WHO, "cannot create a Lua state");
        pthread_mutex_lock(&w->mu);
        w->nalive--;
        pthread_cond_broadcast(&w->ended);
        pthread_mutex_unlock(&w->mu);
        return NULL;
    }
    ff_exec_set_home(x, w->home, own_fs);
    uint64_t seen_gen = 0, seen_actors = 0;
    wtask *t = NULL; /* the task that just ran */
    int wake = 0;    /* the loop thread has news: done or started tasks */
    int spun = 0;    /* it watched for a next task since the last one */
    pthread_mutex_lock(&w->mu);
    self->x = x;
    for (;;) {
        if (t != NULL) { /* hand it in */
            keep_actor(w, t, k);
            w->cpus_free += t->cpus;
            if (w->queue != NULL)
                pthread_cond_broadcast(&w->cv);
            t->next = w->done;
            w->done = t;
            self->cur = NULL;
            self->stop_ms = 0;
            t = NULL;
            wake = 1;
        }
        /* The head sends more tasks than CPUs (pipelining); they start in
         * order, each when its CPUs are free. Method calls of this
         * executor's actors come first, and need no free CPU. */
        if (!w->stop && w->mq[k] == NULL && w->actors_gen == seen_actors &&
            (w->queue == NULL || w->queue->cpus > w->cpus_free)) {
            if (wake) { /* nothing to start: tell the loop thread first */
                pthread_mutex_unlock(&w->mu);
                uv_async_send(&w->wake);
                wake = 0;
                pthread_mutex_lock(&w->mu);
                continue;
            }
            if (!spun) {
                /* The next task often follows within microseconds (a
                 * chain: its parent's result went out just now): watch
                 * for it a little before sleeping, which would cost a
                 * wake-up of tens of microseconds. */
                unsigned seen = __atomic_load_n(&w->posted, __ATOMIC_ACQUIRE);
                pthread_mutex_unlock(&w->mu);
                uint64_t end = uv_hrtime() + (uint64_t)EXEC_SPIN_US * 1000u;
                while (__atomic_load_n(&w->posted, __ATOMIC_ACQUIRE) == seen && uv_hrtime() < end)
                    sched_yield();
                spun = 1;
                pthread_mutex_lock(&w->mu);
                continue;
            }
            pthread_cond_wait(&w->cv, &w->mu);
            continue;
        }
        if (w->stop)
            break;
        if (w->actors_gen != seen_actors) { /* some actors are gone: drop them here */
            seen_actors = w->actors_gen;
            pthread_mutex_unlock(&w->mu);
            ff_exec_sweep(x);
            pthread_mutex_lock(&w->mu);
            continue;
        }
        if (w->mq[k] != NULL) {
            t = w->mq[k];
            w->mq[k] = t->next;
            if (w->mq[k] == NULL)
                w->mq_tail[k] = NULL;
        } else {
            t = w->queue;
            w->queue = t->next;
            if (w->queue == NULL)
                w->queue_tail = NULL;
        }
        w->cpus_free -= t->cpus;
        spun = 0;
        self->cur = t;
        self->t0_ms = now_ms();
        note_started(w, t);
        uint64_t gen = w->dropped_gen;
        pthread_mutex_unlock(&w->mu);
        /* One wake-up says both that the last task ended and that this
         * one began; a task that began after a wait wakes it alone. */
        uv_async_send(&w->wake);
        wake = 0;
        run_one(x, t, gen, &seen_gen);
        pthread_mutex_lock(&w->mu);
    }
    self->x = NULL;
    w->nalive--;
    pthread_cond_broadcast(&w->ended);
    pthread_mutex_unlock(&w->mu);
    if (wake)
        uv_async_send(&w->wake);
    ff_exec_destroy(x);
    return NULL;
}

/* --- the loop thread ----------------------------------------------------- */

static double mib(size_t n) {
    return (double)n / (1 << 20);
}

/* Queues RESULT(run, index, status, bytes, ns): 0, or the writer's error. */
static int write_result(worker *w, uint64_t run, uint64_t index, int status, const char *p,
                        size_t n, uint64_t ns) {
    return ff_msg_result_write(&w->conn.out, &(ff_msg_result){run, index, status, p, n, ns});
}

/* Tells the head that task (run, index) failed with msg; when not even
 * that can be written, leaves the cluster, so that the head fails the task
 * rather than wait for it. */
static void report_failure(worker *w, uint64_t run, uint64_t index, const char *name, size_t nl,
                           const char *msg) {
    if (write_result(w, run, index, FF_RESULT_FAILED, msg, strlen(msg), 0) != 0) {
        char nm[64];
        ff_log(WHO, "cannot tell the head that node '%s' failed (%s): leaving",
               ff_text_escape(nm, sizeof nm, name, nl), msg);
        ff_conn_close(&w->conn);
    }
}

/* Sends a finished task's outcome to the head. One that cannot be written
 * (no memory for the frame, or over the frame limit) becomes a failure
 * saying so: the head must never get a cut frame, nor wait. */
static void report(worker *w, wtask *t) {
    if (w->conn.state != FF_CONN_READY)
        return;
    int rc = write_result(w, t->run, t->index, t->status, t->out.p, t->out.n, t->ns);
    if (rc == 0)
        return;
    char msg[200];
    const char *what = t->status == FF_RESULT_OK ? "result" : "error message";
    if (rc == -EMSGSIZE)
        snprintf(msg, sizeof msg,
                 "its %s (%.1f MiB) takes more than the %d MiB one message may "
                 "carry",
                 what, mib(t->out.n), (int)(FF_FRAME_MAX >> 20));
    else
        snprintf(msg, sizeof msg, "the worker has not enough memory to send its %s (%.1f MiB)",
                 what, mib(t->out.n));
    report_failure(w, t->run, t->index, t->name, strlen(t->name), msg);
}

/* Keeps a finished task's result here for the tasks that will use it (the
 * head counts on it); without memory for it, the task fails. Under w->mu. */
static void keep_result(worker *w, wtask *t) {
    wrun *r = t->status == FF_RESULT_OK ? run_get(w, t->run, 0) : NULL;
    if (r != NULL && bm_put(&r->results, t->index, t->out.p, t->out.n) != 0) {
        char msg[160];
        snprintf(msg, sizeof msg,
                 "the worker has not enough memory to keep its result "
                 "(%.1f MiB)",
                 mib(t->out.n));
        t->status = FF_RESULT_FAILED;
        set_message(t, msg, strlen(msg));
    }
}

/* Writes a HANDBACK (or STARTED, when started) per run for the n tasks
 * (run, index) at ts, grouping neighbours of one run. Without memory for
 * a frame, the worker leaves, so that the head does not wait for those
 * tasks. */
static void write_tasks(worker *w, const wstart *ts, size_t n, int started) {
    uint64_t idx[256];
    for (size_t i = 0; i < n;) {
        size_t k = 0;
        uint64_t run = ts[i].run;
        for (; i < n && k < sizeof idx / sizeof idx[0] && ts[i].run == run; i++)
            if (ts[i].epoch == w->epoch)
                idx[k++] = ts[i].index;
        if (k == 0 || w->conn.state != FF_CONN_READY)
            continue;
        int rc = started ? ff_msg_started_write(&w->conn.out, run, idx, k)
                         : ff_msg_handback_write(&w->conn.out, run, idx, k);
        if (rc != 0) {
            ff_log(WHO, "not enough memory to tell the head about its tasks: leaving");
            ff_conn_close(&w->conn);
            return;
        }
    }
}

/* Hands the tasks of list (linked by next) back to the head, and frees
 * them. */
static void hand_back(worker *w, wtask *list) {
    wstart buf[64];
    size_t n = 0;
    while (list != NULL) {
        wtask *t = list;
        list = t->next;
        buf[n++] = (wstart){t->epoch, t->run, t->index};
        task_free(t);
        if (n == sizeof buf / sizeof buf[0] || list == NULL) {
            write_tasks(w, buf, n, 0);
            n = 0;
        }
    }
}

/* Takes the queued tasks (of run, or all when all) out of the queues,
 * as a list. Under w->mu. */
static wtask *take_queued(worker *w, int all, uint64_t run) {
    wtask *out = NULL, **tail = &out;
    for (int k = -1; k < w->nthreads; k++) {
        wtask **pp = k < 0 ? &w->queue : &w->mq[k], *last = NULL;
        while (*pp != NULL) {
            wtask *t = *pp;
            if (all || t->run == run) {
                *pp = t->next;
                t->next = NULL;
                *tail = t;
                tail = &t->next;
            } else {
                last = t;
                pp = &t->next;
            }
        }
        if (k < 0)
            w->queue_tail = last;
        else
            w->mq_tail[k] = last;
    }
    return out;
}

/* Asks the tasks running (of run, or all) to stop, with why (FF_EXEC_*).
 * Under w->mu. Returns how many run. */
static int stop_running(worker *w, int all, uint64_t run, int why) {
    int n = 0;
    uint64_t now = now_ms();
    for (int k = 0; k < w->nthreads; k++) {
        struct wexec *e = &w->execs[k];
        wtask *t = e->cur;
        if (t == NULL || !(all || t->run == run))
            continue;
        n++;
        if (t->stop != 0)
            continue;
        t->stop = why;
        e->stop_ms = now;
        ff_exec_interrupt(e->x, t->serial, why);
    }
    return n;
}

/* Tasks running now (of any connection). Under w->mu. */
static int running(worker *w) {
    int n = 0;
    for (int k = 0; k < w->nthreads; k++)
        n += w->execs[k].cur != NULL;
    return n;
}

static void watch_arm(worker *w);
static void leave(worker *w);

static void send_results(uv_async_t *a) {
    worker *w = a->data;
    pthread_mutex_lock(&w->mu);
    wstart *started = w->started;
    size_t nstarted = w->nstarted;
    int timed = 0;
    w->started = NULL;
    w->nstarted = w->capstarted = 0;
    wtask *done = w->done;
    w->done = NULL;
    for (wtask *t = done; t; t = t->next)
        if (t->epoch == w->epoch && t->stop != FF_EXEC_CANCEL)
            keep_result(w, t);
    for (int k = 0; k < w->nthreads && !timed; k++)
        timed = w->execs[k].cur != NULL && w->execs[k].cur->timeout_ms > 0;
    int idle = w->stopping == 1 && running(w) == 0 && w->queue == NULL;
    pthread_mutex_unlock(&w->mu);
    write_tasks(w, started, nstarted, 1); /* before their results */
    free(started);
    wtask *back = NULL;
    while (done != NULL) {
        wtask *t = done;
        done = t->next;
        if (t->epoch != w->epoch) { /* of a head that is gone */
            task_free(t);
        } else if (t->stop == FF_EXEC_CANCEL) { /* its run ended: the head frees its slot */
            t->next = back;
            back = t;
        } else {
            if (t->stop == FF_EXEC_TIMEOUT && t->status != FF_RESULT_OK)
                t->status = FF_RESULT_TIMEOUT;
            report(w, t);
            task_free(t);
        }
    }
    hand_back(w, back);
    if (idle && w->conn.state == FF_CONN_READY) {
        ff_log(WHO, "every task it ran has finished: leaving");
        leave(w);
    } else if (timed) {
        watch_arm(w);
    }
}

/* A TASK: queued for the executors. Returns nonzero for a malformed one
 * (the connection closes). Without memory for its inputs, the task fails
 * and the head is told so. A worker that is stopping hands it back. */
static int on_task(worker *w, const char *p, size_t n) {
    ff_msg_task m;
    ff_msg_list deps;
    if (ff_msg_task_read(p, n, &m, &deps) != 0)
        return 1;
    if (w->stopping || w->replacing) {
        write_tasks(w, &(wstart){w->epoch, m.run, m.index}, 1, 0);
        return 0;
    }
    wtask *t = calloc(1, sizeof *t);
    int oom = t == NULL, lost = 0;
    if (t != NULL) {
        t->run = m.run;
        t->index = m.index;
        t->fid = m.fid;
        t->actor = m.actor;
        t->ctor = m.ctor;
        t->timeout_ms = m.timeout_ms;
        t->serial = ++w->serial;
        t->epoch = w->epoch;
        t->ndeps = m.ndeps;
        t->nargs = m.nargs;
        t->npre = m.npre;
        t->name = strndup(m.name, m.name_len);
        t->deps = calloc(t->ndeps ? t->ndeps : 1, sizeof *t->deps);
        t->args = malloc(m.nargs ? m.nargs : 1);
        t->pre = malloc(m.npre ? m.npre : 1);
        oom = t->name == NULL || t->deps == NULL || t->args == NULL || t->pre == NULL;
    }
    char *dir_err = NULL;
    if (!oom) { /* the dependencies, and the results that came with them */
        pthread_mutex_lock(&w->mu);
        wrun *run = run_get(w, m.run, 1);
        oom = run == NULL;
        if (run != NULL && run->dir != NULL && (t->dir = strdup(run->dir)) == NULL)
            oom = 1;
        if (run != NULL && run->dir_err != NULL)
            dir_err = strdup(run->dir_err);
        for (uint32_t i = 0; i < m.ndeps && !oom; i++) {
            ff_msg_dep d;
            ff_msg_next_dep(&deps, &d);
            t->deps[i] = d.index;
            if (d.has && bm_put(&run->results, d.index, d.result, d.len) != 0)
                oom = 1;
        }
        blob *a = !oom && t->actor == FF_ACTOR_METHOD ? bm_find(&run->actors, t->ctor) : NULL;
        if (a != NULL)
            memcpy(&t->exec, a->p, sizeof t->exec);
        else if (!oom && t->actor == FF_ACTOR_METHOD)
            lost = 1;
        pthread_mutex_unlock(&w->mu);
    }
    if (lost) { /* the head sends a method call where its actor is */
        report_failure(w, m.run, m.index, m.name, m.name_len,
                       "its actor is not on the worker it was sent to");
        free(dir_err);
        task_free(t);
        return 0;
    }
    if (oom || dir_err != NULL) {
        char msg[1200];
        if (dir_err != NULL)
            snprintf(msg, sizeof msg, "its working directory cannot be made on worker %s: %s",
                     w->name, dir_err);
        else
            snprintf(msg, sizeof msg, "the worker has not enough memory for its inputs (%.1f MiB)",
                     mib(n));
        free(dir_err);
        report_failure(w, m.run, m.index, m.name, m.name_len, msg);
        if (t != NULL)
            task_free(t);
        return 0;
    }
    memcpy(t->args, m.args, m.nargs);
    memcpy(t->pre, m.pre, m.npre);
    /* never more than all of them */
    t->cpus = m.cpus > (uint64_t)w->cpus ? w->cpus : (int64_t)m.cpus;
    if (t->actor == FF_ACTOR_METHOD)
        t->cpus = 0; /* it runs in its actor's executor, on no CPU of its own */
    pthread_mutex_lock(&w->mu);
    if (t->actor == FF_ACTOR_METHOD) {
        int k = t->exec;
        if (w->mq_tail[k])
            w->mq_tail[k]->next = t;
        else
            w->mq[k] = t;
        w->mq_tail[k] = t;
        pthread_cond_broadcast(&w->cv); /* that executor, not any */
    } else {
        if (w->queue_tail)
            w->queue_tail->next = t;
        else
            w->queue = t;
        w->queue_tail = t;
        pthread_cond_signal(&w->cv);
    }
    __atomic_fetch_add(&w->posted, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&w->mu);
    return 0;
}

/* Wakes the executor threads to drop actors when some went since gen.
 * Under w->mu. */
static void actors_dropped(worker *w, uint64_t gen) {
    if (gen != w->actors_gen)
        pthread_cond_broadcast(&w->cv);
}

/* --- working directories --------------------------------------------------- */

/* Makes the worker's cache directory, once: $XDG_CACHE_HOME/fflua (when
 * absolute) or /tmp/fflua-UID, which must be this user's directory, then
 * worker-HOST-PID in it, removed when the worker ends. Directories of
 * workers of this host that are gone are removed on the way. 0, or
 * nonzero with why in err. */
static int cache_make(worker *w, char *err, size_t errlen) {
    if (w->cache != NULL)
        return 0;
    char root[4096], host[256] = "localhost";
    const char *xdg = getenv("XDG_CACHE_HOME");
    if (xdg != NULL && xdg[0] == '/') {
        mkdir(xdg, 0700); /* as the XDG spec says, made when missing */
        snprintf(root, sizeof root, "%s/fflua", xdg);
    } else
        snprintf(root, sizeof root, "/tmp/fflua-%u", (unsigned)getuid());
    gethostname(host, sizeof host - 1);
    for (char *q = host; *q; q++)
        if (*q == '/')
            *q = '_';
    struct stat st;
    if (mkdir(root, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot make the cache directory %.400s: %s", root, strerror(errno));
        return 1;
    }
    if (lstat(root, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != getuid()) {
        snprintf(err, errlen, "the cache directory %.400s is not a directory of this user", root);
        return 1;
    }
    if (strpbrk(root, ";?") != NULL) {
        snprintf(err, errlen,
                 "the cache directory %.400s has ';' or '?', which package.path cannot hold", root);
        return 1;
    }
    DIR *d = opendir(root);
    size_t lh = strlen(host);
    struct dirent *de;
    while (d != NULL && (de = readdir(d)) != NULL) { /* workers of this host that are gone */
        const char *nm = de->d_name;
        if (strncmp(nm, "worker-", 7) != 0 || strncmp(nm + 7, host, lh) != 0 || nm[7 + lh] != '-')
            continue;
        char *end;
        long pid = strtol(nm + 8 + lh, &end, 10);
        if (*end != '\0' || pid <= 0)
            continue;
        if (pid == (long)getpid() || (kill((pid_t)pid, 0) != 0 && errno == ESRCH)) {
            char path[4400];
            snprintf(path, sizeof path, "%s/%s", root, nm);
            ff_wd_remove(path);
        }
    }
    if (d != NULL)
        closedir(d);
    char path[4400];
    snprintf(path, sizeof path, "%s/worker-%s-%d", root, host, (int)getpid());
    if (mkdir(path, 0700) != 0 || (w->cache = strdup(path)) == NULL) {
        snprintf(err, errlen, "cannot make the cache directory %.400s: %s", path, strerror(errno));
        return 1;
    }
    return 0;
}

static wwd *wd_find(worker *w, const unsigned char *hash) {
    for (wwd *d = w->wds; d; d = d->next)
        if (memcmp(d->hash, hash, FF_WD_HASH_LEN) == 0)
            return d;
    return NULL;
}

/* The path of a working directory's blob in the cache (malloc'd). */
static char *wd_blob_path(worker *w, const wwd *d) {
    size_t n = strlen(w->cache) + 48;
    char *p = malloc(n);
    if (p != NULL)
        snprintf(p, n, "%s/%s.ffwd", w->cache, d->hex);
    return p;
}

static void wd_forget(worker *w, wwd *d) {
    for (wwd **pp = &w->wds; *pp; pp = &(*pp)->next)
        if (*pp == d) {
            *pp = d->next;
            break;
        }
    if (d->err == NULL && w->cache != NULL) {
        char *p = wd_blob_path(w, d);
        if (p != NULL)
            unlink(p);
        free(p);
    }
    if (w->verbose)
        ff_log(WHO, "working directory %.8s forgotten", d->hex);
    free(d->err);
    free(d->mem);
    free(d);
}

/* Writes n bytes at p to a new file path: 0 or -errno. */
static int write_file(const char *path, const char *p, size_t n) {
    FILE *f = fopen(path, "wbx");
    if (f == NULL)
        return -errno;
    size_t k = fwrite(p, 1, n, f);
    int rc = k == n ? 0 : -EIO;
    if (fclose(f) != 0 && rc == 0)
        rc = -errno;
    if (rc != 0)
        unlink(path); /* nothing cut short stays */
    return rc;
}

/* Puts a blob into the cache as HEX.ffwd: 0, or nonzero with why. */
static int wd_store(worker *w, wwd *d, const char *bytes, size_t len, char *why, size_t cap) {
    if (cache_make(w, why, cap) != 0)
        return 1;
    char *path = wd_blob_path(w, d);
    int wr = path != NULL ? write_file(path, bytes, len) : -ENOMEM;
    if (wr != 0)
        snprintf(why, cap, "cannot write %s: %s", path ? path : "its blob", strerror(-wr));
    free(path);
    return wr != 0;
}

/* WORKDIR: a working directory to keep (checked first), or one to
 * forget. Nonzero for a malformed message or no memory (the worker
 * leaves); a blob that cannot be used is remembered with why, and the
 * tasks of runs that name it fail with that. */
static int on_workdir(worker *w, const char *p, size_t n) {
    const unsigned char *hash;
    const char *bytes;
    size_t len;
    if (ff_msg_workdir_read(p, n, &hash, &bytes, &len) != 0)
        return 1;
    wwd *d = wd_find(w, hash);
    if (len == 0) {
        if (d != NULL)
            wd_forget(w, d);
        return 0;
    }
    if (d != NULL)
        return 0; /* sent again: the head could not note that it was sent */
    if ((d = calloc(1, sizeof *d)) == NULL)
        return 1;
    memcpy(d->hash, hash, FF_WD_HASH_LEN);
    for (int i = 0; i < FF_WD_HASH_LEN; i++)
        snprintf(d->hex + 2 * i, 3, "%02x", hash[i]);
    d->next = w->wds;
    w->wds = d;
    char why[700], msg[1000];
    unsigned char mine[FF_WD_HASH_LEN];
    ff_wd_hash(bytes, len, mine);
    int rc = 0;
    if (memcmp(mine, hash, FF_WD_HASH_LEN) != 0) {
        snprintf(why, sizeof why, "its bytes do not match its hash");
        rc = 1;
    } else if (ff_wd_check(bytes, len, why, sizeof why) != 0) {
        rc = 1;
    } else if (wd_store(w, d, bytes, len, why, sizeof why) != 0) {
        /* This worker's disk, not the blob: kept, and tried again when a
         * run needs it (the head sends a hash once). */
        if ((d->mem = malloc(len)) != NULL) {
            memcpy(d->mem, bytes, len);
            d->memlen = len;
            ff_log(WHO, "the working directory %.8s is kept in memory for now: %s", d->hex, why);
            return 0;
        }
        rc = 1;
    }
    if (rc != 0) {
        snprintf(msg, sizeof msg, "the working directory %.8s from the head is refused: %s", d->hex,
                 why);
        ff_log(WHO, "%s", msg);
        if ((d->err = strdup(msg)) == NULL)
            return 1;
    } else if (w->verbose) {
        ff_log(WHO, "working directory %.8s received (%.1f KiB)", d->hex, (double)len / 1024);
    }
    return 0;
}

/* Reads a whole file into a malloc'd buffer: 0 or -errno. */
static int read_file(const char *path, char **out, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return -errno;
    ff_buf b = {0};
    int rc = 0;
    for (;;) {
        if (ff_buf_reserve(&b, 1 << 16) != 0) {
            rc = -ENOMEM;
            break;
        }
        size_t k = fread(b.p + b.n, 1, b.cap - b.n, f);
        b.n += k;
        if (k == 0) {
            rc = ferror(f) ? -EIO : 0;
            break;
        }
    }
    fclose(f);
    if (rc != 0) {
        ff_buf_free(&b);
        return rc;
    }
    *out = b.p;
    *n = b.n;
    return 0;
}

/* RUN_WORKDIR: the run's own copy of its working directory, unpacked in
 * the cache as run-ID; or why it could not be, for its tasks' failures. */
static int on_run_workdir(worker *w, const char *p, size_t n) {
    uint64_t run;
    const unsigned char *hash;
    if (ff_msg_run_workdir_read(p, n, &run, &hash) != 0)
        return 1;
    pthread_mutex_lock(&w->mu);
    wrun *r = run_get(w, run, 1);
    pthread_mutex_unlock(&w->mu);
    if (r == NULL)
        return 1;
    if (r->dir != NULL || r->dir_err != NULL)
        return 0;
    wwd *d = wd_find(w, hash);
    char why[1000];
    char *dir = NULL, *packed = NULL;
    size_t len = 0;
    int rc = 1;
    if (d == NULL) {
        snprintf(why, sizeof why, "the head named a working directory it did not send");
    } else if (d->err != NULL) {
        snprintf(why, sizeof why, "%s", d->err);
    } else if (d->mem != NULL && wd_store(w, d, d->mem, d->memlen, why, sizeof why) != 0) {
        /* still not: this run fails, a later one tries again */
    } else {
        if (d->mem != NULL) {
            free(d->mem);
            d->mem = NULL;
        }
        char *path = wd_blob_path(w, d);
        size_t dn = strlen(w->cache) + 40;
        dir = malloc(dn);
        int e = path == NULL || dir == NULL ? -ENOMEM : read_file(path, &packed, &len);
        if (e != 0) {
            snprintf(why, sizeof why, "cannot read %s: %s", path ? path : "its blob", strerror(-e));
        } else {
            snprintf(dir, dn, "%s/run-%llu", w->cache, (unsigned long long)run);
            ff_wd_remove(dir);
            rc = ff_wd_unpack(packed, len, dir, why, sizeof why);
            if (rc != 0)
                ff_wd_remove(dir);
        }
        free(path);
        free(packed);
    }
    pthread_mutex_lock(&w->mu);
    if (rc == 0) {
        r->dir = dir;
        dir = NULL;
    } else {
        r->dir_err = strdup(why);
    }
    pthread_mutex_unlock(&w->mu);
    if (rc == 0 && w->verbose)
        ff_log(WHO, "run %llu: working directory %.8s unpacked in %s", (unsigned long long)run,
               d->hex, r->dir);
    else if (rc != 0)
        ff_log(WHO, "run %llu: %s", (unsigned long long)run, why);
    free(dir);
    return rc != 0 && r->dir_err == NULL; /* no memory even for why */
}

static int on_frame(ff_conn *c, int type, const char *p, size_t n) {
    worker *w = c->data;
    switch (type) {
    case FF_M_TASK:
        if (on_task(w, p, n) != 0) {
            ff_log(WHO, "malformed TASK from the head");
            return 1;
        }
        return 0;
    case FF_M_FUNC: {
        ff_msg_func m;
        if (ff_msg_func_read(p, n, &m) != 0)
            return 1;
        pthread_mutex_lock(&w->mu);
        wrun *wr = run_get(w, m.run, 1);
        int rc = wr ? bm_put(&wr->funcs, m.fid, m.code, m.len) : -ENOMEM;
        pthread_mutex_unlock(&w->mu);
        if (rc != 0) /* the head fails the tasks running here, as it learns we left */
            ff_log(WHO, "not enough memory for a function (%.1f MiB): leaving", mib(m.len));
        return rc != 0;
    }
    case FF_M_FREE: {
        uint64_t run;
        ff_msg_list tasks;
        if (ff_msg_free_read(p, n, &run, &tasks) != 0)
            return 1;
        pthread_mutex_lock(&w->mu);
        wrun *wr = run_get(w, run, 0);
        uint64_t gen = w->actors_gen;
        while (tasks.n > 0) {
            uint64_t idx = ff_msg_next_index(&tasks);
            if (wr != NULL)
                bm_del(&wr->results, idx);
            if (wr != NULL && bm_find(&wr->actors, idx) != NULL) { /* its calls are over */
                bm_del(&wr->actors, idx);
                w->actors_gen++;
            }
        }
        actors_dropped(w, gen);
        pthread_mutex_unlock(&w->mu);
        return 0;
    }
    case FF_M_RUN_END: { /* its queued tasks go back, its running ones stop */
        uint64_t run;
        if (ff_msg_run_end_read(p, n, &run) != 0)
            return 1;
        pthread_mutex_lock(&w->mu);
        wtask *back = take_queued(w, 0, run);
        int stopped = stop_running(w, 0, run, FF_EXEC_CANCEL);
        uint64_t gen = w->actors_gen;
        char *dir = NULL; /* removed after, not while executors wait for the lock */
        wrun *r = run_get(w, run, 0);
        if (r != NULL) {
            dir = r->dir;
            r->dir = NULL;
        }
        run_drop(w, run);
        actors_dropped(w, gen);
        pthread_mutex_unlock(&w->mu);
        hand_back(w, back);
        if (stopped > 0)
            watch_arm(w);
        if (dir != NULL) {
            ff_wd_remove(dir);
            free(dir);
            if (w->verbose)
                ff_log(WHO, "run %llu ended: its working directory removed",
                       (unsigned long long)run);
        }
        return 0;
    }
    case FF_M_STORE_CALL: {
        uint64_t req, op;
        ff_msg_list args;
        if (ff_msg_store_call_read(p, n, &req, &op, &args) != 0)
            return 1;
        if (ff_storeserve_call(w->stores, req, op, &args, &c->out) != 0) {
            ff_log(WHO, "not enough memory to answer a storage call: leaving");
            return 1;
        }
        return 0;
    }
    case FF_M_WORKDIR:
        if (on_workdir(w, p, n) != 0) {
            ff_log(WHO, "a malformed WORKDIR from the head, or no memory for it: leaving");
            return 1;
        }
        return 0;
    case FF_M_RUN_WORKDIR:
        if (on_run_workdir(w, p, n) != 0) {
            ff_log(WHO, "a malformed RUN_WORKDIR from the head, or no memory for it: leaving");
            return 1;
        }
        return 0;
    case FF_M_PING: { /* answered at once; its number is the heartbeat timeout */
        uint64_t ms;
        if (ff_msg_ping_read(p, n, &ms) != 0 || ff_msg_ping_write(&c->out, ms) != 0)
            return 1;
        if (ms != w->hb_ms) {
            w->hb_ms = ms;
            w->alive_ms = now_ms();
            w->alive_reads = c->nreads;
            watch_arm(w);
        }
        return 0;
    }
    case FF_M_STOPPING: {
        const char *why;
        size_t len;
        if (ff_msg_stopping_read(p, n, &why, &len) != 0)
            return 1;
        char esc[256];
        if (!w->quiet) /* not an error: the worker leaves as asked */
            ff_log(WHO, "the head is stopping: %s", ff_text_escape(esc, sizeof esc, why, len));
        w->leaving = "the head stopped";
        return 1;
    }
    case FF_M_BYE:
        w->leaving = "the head said goodbye";
        return 1;
    case FF_M_REFUSE: {
        size_t len;
        const char *why;
        ff_msg_refuse_read(p, n, &why, &len);
        char esc[512];
        ff_log(WHO, "the head refused this worker: %s", ff_text_escape(esc, sizeof esc, why, len));
        w->exit_code = 1;
        w->exiting = 1;
        return 1;
    }
    default:
        ff_log(WHO, "unexpected message %d from the head", type);
        return 1;
    }
}

/* The resources of the REGISTER (checked when the worker started). */
struct reg_ud {
    ff_msg_res res[FF_MSG_RES_MAX];
    size_t n;
    int gpu; /* GPU is among them */
};

static int add_res(void *ud, const char *name, size_t len, double v) {
    struct reg_ud *u = ud;
    int64_t amount;
    if (u->n == FF_MSG_RES_MAX || ff_sched_amount(v, &amount) != 0)
        return 1;
    u->res[u->n++] = (ff_msg_res){name, len, (uint64_t)amount};
    u->gpu |= len == 3 && memcmp(name, "GPU", 3) == 0;
    return 0;
}

static void on_ready(ff_conn *c, int role) {
    worker *w = c->data;
    (void)role;
    struct reg_ud u;
    u.n = 0;
    u.gpu = 0;
    char err[256];
    if (w->resources)
        ff_parse_resources(w->resources, add_res, &u, err, sizeof err);
    /* GPUs: what --resources says, else what the machine shows. */
    int gpus = u.gpu ? 0 : ff_detect_gpus();
    if (gpus > 0 && u.n < FF_MSG_RES_MAX)
        add_res(&u, "GPU", 3, (double)gpus);
    char host[256] = "localhost";
    gethostname(host, sizeof host - 1);
    unsigned char machine[FF_MACHINE_LEN];
    if (w->own_machine)
        ff_machine_id_own(machine);
    else
        ff_machine_id(machine);
    ff_msg_register m = {(uint64_t)w->cpus, host, strlen(host), (uint64_t)getpid(), machine};
    if (ff_msg_register_write(&c->out, &m, u.res, u.n) != 0) {
        ff_log(WHO, "not enough memory to register with the head");
        w->exit_code = 1;
        w->exiting = 1;
        ff_conn_close(c);
        return;
    }
    w->registered = 1;
    w->reconnect_end = 0;
    w->backoff_ms = 0;
    w->hb_ms = 0; /* until its first PING */
    w->leaving = NULL;
    if (!w->quiet) {
        char esc[128];
        ff_log(WHO, "joining the head at %s as %s:%d with %g CPUs (machine %02x%02x%02x%02x)",
               w->address, ff_text_escape(esc, sizeof esc, host, strlen(host)), (int)getpid(),
               (double)w->cpus / FF_RES_SCALE, machine[0], machine[1], machine[2], machine[3]);
    }
}

static void flush_conn(uv_check_t *chk) {
    worker *w = chk->data;
    ff_conn_flush(&w->conn);
}

/* --- faults ---------------------------------------------------------------- */

/* Ends the loop: the executor threads stop (their tasks interrupted) and
 * every handle closes. */
static void stop_all(worker *w) {
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    stop_running(w, 1, 0, FF_EXEC_CANCEL);
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    uv_close((uv_handle_t *)&w->flusher, NULL);
    uv_close((uv_handle_t *)&w->wake, NULL);
    uv_close((uv_handle_t *)&w->sigterm, NULL);
    uv_close((uv_handle_t *)&w->sigint, NULL);
    uv_close((uv_handle_t *)&w->watch, NULL);
    uv_close((uv_handle_t *)&w->retry, NULL);
}

/* Leaves for good: BYE, then the connection closes and on_closed ends
 * the loop. */
static void leave(worker *w) {
    w->exiting = 1;
    if (w->conn.state == FF_CONN_READY)
        ff_msg_bye_write(&w->conn.out);
    if (w->conn.state == FF_CONN_CLOSING && !w->replacing && w->conn.on_close == NULL)
        stop_all(w); /* no connection: between attempts to reach a lost head */
    else
        ff_conn_close(&w->conn);
}

/* The processes the worker's tasks started (os.execute, io.popen) and
 * theirs: killed when the worker gives up its process, since the tasks
 * they served are gone; its own children are reaped. */
static void kill_children(void) {
    pid_t tree[1024];
    size_t n = 1;
    tree[0] = getpid();
    for (int pass = 0; pass < 16; pass++) { /* until no new descendant shows */
        size_t before = n;
        DIR *d = opendir("/proc");
        struct dirent *de;
        while (d != NULL && (de = readdir(d)) != NULL && n < sizeof tree / sizeof tree[0]) {
            char *end, path[64], buf[512];
            long pid = strtol(de->d_name, &end, 10);
            if (*end != '\0' || pid <= 0)
                continue;
            snprintf(path, sizeof path, "/proc/%ld/stat", pid);
            FILE *f = fopen(path, "re");
            size_t k = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
            if (f)
                fclose(f);
            buf[k] = '\0';
            char *rp = strrchr(buf, ')'); /* "pid (comm) S ppid ..." */
            long ppid = 0;
            if (rp == NULL || sscanf(rp + 1, " %*c %ld", &ppid) != 1)
                continue;
            int in = 0, parent = 0;
            for (size_t i = 0; i < n; i++) {
                in |= tree[i] == (pid_t)pid;
                parent |= tree[i] == (pid_t)ppid;
            }
            if (parent && !in)
                tree[n++] = (pid_t)pid;
        }
        if (d != NULL)
            closedir(d);
        if (n == before)
            break;
    }
    for (size_t i = 1; i < n; i++)
        kill(tree[i], SIGKILL);
    for (int i = 0; i < 40 && n > 1; i++) { /* up to 200 ms for them to end */
        while (waitpid(-1, NULL, WNOHANG) > 0)
            ;
        if (waitpid(-1, NULL, WNOHANG) < 0 && errno == ECHILD)
            break;
        usleep(5000);
    }
}

/* Replaces the process with a fresh copy of itself (the same pid and
 * arguments), which connects to the head again: what is left when a task
 * is stuck in a C call. The storages it serves commit first; no
 * descriptor of this image survives, nor a process its tasks started.
 * Never returns. */
static void replace_now(worker *w) {
    uv_os_fd_t sock;
    if (w->conn.state == FF_CONN_READY && uv_fileno((uv_handle_t *)&w->conn.tcp, &sock) == 0) {
        /* The frames written so far, then an end: the head reads them
         * all (a close with unread bytes here would reset the connection
         * and could lose them), then closes its side. */
        shutdown(sock, SHUT_WR);
        uint64_t end = now_ms() + 200;
        char sink[4096];
        for (uint64_t t = now_ms(); t < end; t = now_ms()) {
            struct pollfd pfd = {.fd = sock, .events = POLLIN};
            if (poll(&pfd, 1, (int)(end - t)) <= 0)
                break;
            ssize_t k = read(sock, sink, sizeof sink);
            if (k == 0 || (k < 0 && errno != EAGAIN && errno != EINTR))
                break;
        }
    }
    ff_storeserve_destroy(w->stores);
    w->stores = NULL;
    if (w->cache != NULL)
        ff_wd_remove(w->cache);
    kill_children();
    DIR *d = opendir("/proc/self/fd");
    struct dirent *de;
    while (d != NULL && (de = readdir(d)) != NULL) {
        int fd = atoi(de->d_name);
        if (fd > 2 && fd != dirfd(d))
            fcntl(fd, F_SETFD, fcntl(fd, F_GETFD) | FD_CLOEXEC);
    }
    if (d != NULL)
        closedir(d);
    /* The new image tries to reach the head until then (once, when the
     * head is there and --reconnect is 0). */
    uint64_t until = w->reconnect_end ? w->reconnect_end : now_ms() + w->reconnect_ms;
    char env[32];
    snprintf(env, sizeof env, "%llu", (unsigned long long)until);
    setenv("FFLUA_WORKER_RECONNECT_UNTIL", env, 1);
    sigset_t none;
    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, NULL);
    fflush(stderr);
    execv("/proc/self/exe", w->argv);
    ff_log(WHO, "cannot replace its process: %s: exiting", strerror(errno));
    _exit(1);
}

/* Gives up the process because a task does not stop (why): everything it
 * holds goes back to the head (a task stopped after its timeout is
 * reported as such), then the connection closes and replace_now runs. */
static void replace(worker *w, const char *why) {
    ff_log(WHO, "%s: replacing its process (the same pid), which joins the head again", why);
    if (w->conn.state != FF_CONN_READY) {
        if (w->conn.state == FF_CONN_CLOSING && w->conn.on_close == NULL)
            replace_now(w); /* no connection: between attempts */
        w->replacing = 1;
        w->replace_at = now_ms() + 1000;
        ff_conn_close(&w->conn);
        watch_arm(w);
        return;
    }
    send_results(&w->wake); /* what finished goes out first */
    /* No new tasks meanwhile: a TASK still on its way is handed back. */
    w->replacing = 1;
    ff_msg_stopping_write(&w->conn.out, FF_MSG_STOPPING_REPLACING,
                          strlen(FF_MSG_STOPPING_REPLACING));
    pthread_mutex_lock(&w->mu);
    wtask *back = take_queued(w, 1, 0);
    wstart held[256];
    size_t n = 0;
    for (int k = 0; k < w->nthreads; k++) {
        wtask *t = w->execs[k].cur;
        if (t == NULL || t->epoch != w->epoch)
            continue;
        if (t->stop == FF_EXEC_TIMEOUT) {
            char msg[640];
            snprintf(msg, sizeof msg,
                     "node '%.200s' ran longer than its timeout of %g s: stopped (it was stuck "
                     "in a C call: its worker %.300s replaced its process)",
                     t->name, (double)t->timeout_ms / 1000, w->name);
            write_result(w, t->run, t->index, FF_RESULT_TIMEOUT, msg, strlen(msg), 0);
        } else if (n < sizeof held / sizeof held[0]) {
            held[n++] = (wstart){t->epoch, t->run, t->index};
        }
    }
    pthread_mutex_unlock(&w->mu);
    hand_back(w, back);
    write_tasks(w, held, n, 0);
    w->replace_at = now_ms() + 1000;
    ff_conn_flush(&w->conn);
    watch_arm(w); /* replace_now once the frames are written */
}

/* The head is gone (why): every task of its runs stops (queued ones are
 * dropped: nobody waits for them), the runs are forgotten and the
 * storages commit what they hold. */
static void forget_head(worker *w) {
    pthread_mutex_lock(&w->mu);
    w->epoch++;
    wtask *queued = take_queued(w, 1, 0);
    stop_running(w, 1, 0, FF_EXEC_CANCEL);
    uint64_t gen = w->actors_gen;
    while (w->runs)
        run_drop(w, w->runs->id);
    actors_dropped(w, gen);
    pthread_mutex_unlock(&w->mu);
    while (queued != NULL) {
        wtask *t = queued;
        queued = t->next;
        task_free(t);
    }
    while (w->wds)
        wd_forget(w, w->wds);
    ff_storeserve_destroy(w->stores); /* commits */
    char who[600];
    snprintf(who, sizeof who, "%s in %s", w->name, w->home);
    if (ff_storeserve_create(&w->stores, w->home, who) != 0)
        w->stores = NULL;
    w->hb_ms = 0;
}

static void on_closed(ff_conn *c);

/* The next attempt to reach the head, once the tasks of the last
 * connection stopped (a stuck one makes the worker replace its process,
 * which then tries again). */
static void on_retry(uv_timer_t *h) {
    worker *w = h->data;
    uint64_t now = now_ms();
    pthread_mutex_lock(&w->mu);
    int busy = running(w), stuck = 0;
    for (int k = 0; k < w->nthreads; k++)
        stuck |= w->execs[k].cur != NULL && w->execs[k].stop_ms != 0 &&
                 now >= w->execs[k].stop_ms + STOP_GRACE_MS;
    pthread_mutex_unlock(&w->mu);
    if (stuck)
        replace_now(w);
    if (busy) {
        uv_timer_start(&w->retry, on_retry, 50, 0);
        return;
    }
    if (w->stores == NULL) {
        ff_log(WHO, "not enough memory");
        w->exit_code = 1;
        stop_all(w);
        return;
    }
    ff_conn_free(&w->conn);
    memset(&w->conn, 0, sizeof w->conn);
    w->conn.data = w;
    w->conn.on_frame = on_frame;
    w->conn.on_close = on_closed;
    w->conn.on_ready = on_ready;
    int rc =
        ff_conn_connect(&w->conn, &w->loop, (struct sockaddr *)&w->addr, FF_ROLE_WORKER, w->key);
    if (rc != 0)
        ff_conn_close(&w->conn); /* its on_close tries again */
}

/* Whether a connection that never got in may be tried again: it could
 * not connect or the handshake timed out (not: the head refused it). */
static int may_retry(const ff_conn *c) {
    return c->refused[0] == '\0' || strncmp(c->refused, "cannot connect", 14) == 0 ||
           strncmp(c->refused, "the handshake did not end", 25) == 0;
}

static void on_closed(ff_conn *c) {
    worker *w = c->data;
    int was = w->registered;
    w->registered = 0;
    c->on_close = NULL; /* the connection is gone (leave, replace) */
    if (w->replacing)
        replace_now(w);
    if (w->exiting || w->stopping) {
        if (was && !w->quiet && w->exit_code == 0)
            ff_log(WHO, "left the head at %s: %s", w->address,
                   w->leaving ? w->leaving : "the connection closed");
        stop_all(w);
        return;
    }
    if (!was) { /* an attempt that did not get in */
        if (w->reconnect_end != 0 && may_retry(c) && now_ms() < w->reconnect_end) {
            w->backoff_ms = w->backoff_ms ? w->backoff_ms * 2 : 100;
            if (w->backoff_ms > 2000)
                w->backoff_ms = 2000;
            uv_timer_start(&w->retry, on_retry, w->backoff_ms, 0);
            return;
        }
        if (w->reconnect_end != 0 && may_retry(c))
            ff_log(WHO, "could not reach the head at %s again: exiting", w->address);
        if (w->exit_code == 0)
            w->exit_code = 1; /* refused or unreachable */
        stop_all(w);
        return;
    }
    const char *why = w->leaving ? w->leaving : "the connection closed";
    forget_head(w);
    if (w->reconnect_ms == 0) {
        if (!w->quiet)
            ff_log(WHO, "left the head at %s: %s", w->address, why);
        stop_all(w);
        return;
    }
    ff_log(WHO,
           "lost the head at %s (%s): its tasks stopped; trying to reach it again for up "
           "to %g s",
           w->address, why, (double)w->reconnect_ms / 1000);
    w->reconnect_end = now_ms() + w->reconnect_ms;
    w->backoff_ms = 100;
    w->leaving = NULL;
    uv_timer_start(&w->retry, on_retry, w->backoff_ms, 0);
}

/* The timer of faults: the heartbeat, tasks' timeouts, interrupted tasks
 * that do not stop, the grace period of SIGTERM. */
static void on_watch(uv_timer_t *h) {
    worker *w = h->data;
    uint64_t now = now_ms();
    if (w->replacing) {
        if ((w->conn.writing == 0 && w->conn.out.n == 0) || now >= w->replace_at)
            replace_now(w); /* after 1 s, the head reads nothing: do without */
        watch_arm(w);
        return;
    }
    if (w->hb_ms > 0 && w->conn.state == FF_CONN_READY) {
        if (w->conn.nreads != w->alive_reads) {
            w->alive_reads = w->conn.nreads;
            w->alive_ms = now;
        } else if (now >= w->alive_ms + w->hb_ms) {
            ff_log(WHO, "the head at %s sent nothing for %g s: taking it for lost", w->address,
                   (double)(now - w->alive_ms) / 1000);
            w->leaving = "no heartbeat";
            /* Closed now, without waiting for a write the silent head
             * may never read (libuv cancels it). */
            w->conn.out.n = 0;
            w->conn.writing = 0;
            ff_conn_close(&w->conn);
            return;
        }
    }
    char stuck[300] = "";
    pthread_mutex_lock(&w->mu);
    for (int k = 0; k < w->nthreads; k++) {
        struct wexec *e = &w->execs[k];
        wtask *t = e->cur;
        if (t == NULL)
            continue;
        if (t->timeout_ms > 0 && t->stop == 0 && now >= e->t0_ms + t->timeout_ms) {
            t->stop = FF_EXEC_TIMEOUT;
            e->stop_ms = now;
            ff_exec_interrupt(e->x, t->serial, FF_EXEC_TIMEOUT);
        } else if (t->stop != 0 && e->stop_ms != 0 && now >= e->stop_ms + STOP_GRACE_MS &&
                   stuck[0] == '\0') {
            snprintf(stuck, sizeof stuck, "node '%.200s' did not stop %d ms after its %s", t->name,
                     STOP_GRACE_MS, t->stop == FF_EXEC_TIMEOUT ? "timeout" : "run ended");
        }
    }
    int busy = running(w);
    pthread_mutex_unlock(&w->mu);
    if (stuck[0] != '\0' && !w->exiting && !w->stopping) {
        replace(w, stuck);
        return;
    }
    /* Stopping, a stuck task ends the grace period: the worker leaves
     * rather than come back as a new process. */
    if (w->stopping == 1 && busy > 0 && (now >= w->grace_end || stuck[0] != '\0')) {
        if (stuck[0] != '\0')
            ff_log(WHO, "%s: handing back the %d tasks still running", stuck, busy);
        else
            ff_log(WHO, "its grace period is over: handing back the %d tasks still running", busy);
        w->stopping = 2;
        pthread_mutex_lock(&w->mu);
        wstart held[256];
        size_t n = 0;
        for (int k = 0; k < w->nthreads; k++) {
            wtask *t = w->execs[k].cur;
            if (t != NULL && n < sizeof held / sizeof held[0])
                held[n++] = (wstart){t->epoch, t->run, t->index};
        }
        pthread_mutex_unlock(&w->mu);
        write_tasks(w, held, n, 0);
        leave(w);
        return;
    }
    watch_arm(w);
}

/* Sets the watch timer for the next thing it must look at. */
static void watch_arm(worker *w) {
    if (uv_is_closing((uv_handle_t *)&w->watch))
        return;
    uint64_t now = now_ms(), next = UINT64_MAX;
    if (w->replacing) /* looked at often: libuv may defer the close's last steps */
        next = now + 10 < w->replace_at ? now + 10 : w->replace_at;
    if (w->hb_ms > 0 && w->conn.state == FF_CONN_READY) {
        uint64_t step = w->hb_ms / FF_HEARTBEAT_PER;
        if (now + step < next)
            next = now + step;
    }
    if (w->stopping == 1 && w->grace_end < next)
        next = w->grace_end;
    pthread_mutex_lock(&w->mu);
    for (int k = 0; k < w->nthreads && !w->replacing; k++) {
        struct wexec *e = &w->execs[k];
        wtask *t = e->cur;
        uint64_t at = UINT64_MAX;
        if (t != NULL && t->stop != 0 && e->stop_ms != 0)
            at = e->stop_ms + STOP_GRACE_MS;
        else if (t != NULL && t->timeout_ms > 0)
            at = e->t0_ms + t->timeout_ms;
        if (at < next)
            next = at;
    }
    pthread_mutex_unlock(&w->mu);
    if (next == UINT64_MAX)
        uv_timer_stop(&w->watch);
    else
        uv_timer_start(&w->watch, on_watch, next > now ? next - now : 1, 0);
}

/* SIGTERM or SIGINT: the worker takes no more tasks (STOPPING), hands
 * back its queued ones and lets the running ones finish for the grace
 * period; a second signal hands back everything and leaves at once. */
static void on_signal(uv_signal_t *h, int sig) {
    worker *w = h->data;
    const char *what = sig == SIGINT ? "interrupted" : "terminated";
    w->exit_code = 0;
    if (w->stopping || w->conn.state != FF_CONN_READY) {
        if (w->stopping)
            ff_log(WHO, "%s again: handing back every task and leaving at once", what);
        else if (!w->quiet)
            ff_log(WHO, "%s: leaving", what);
        w->stopping = 2;
        w->leaving = what;
        pthread_mutex_lock(&w->mu);
        wtask *back = take_queued(w, 1, 0);
        wstart held[256];
        size_t n = 0;
        for (int k = 0; k < w->nthreads; k++) {
            wtask *t = w->execs[k].cur;
            if (t != NULL && n < sizeof held / sizeof held[0])
                held[n++] = (wstart){t->epoch, t->run, t->index};
        }
        pthread_mutex_unlock(&w->mu);
        hand_back(w, back);
        write_tasks(w, held, n, 0);
        leave(w);
        return;
    }
    w->stopping = 1;
    w->leaving = what;
    if (ff_msg_stopping_write(&w->conn.out, what, strlen(what)) != 0) {
        leave(w);
        return;
    }
    pthread_mutex_lock(&w->mu);
    wtask *back = take_queued(w, 1, 0);
    int busy = running(w);
    pthread_mutex_unlock(&w->mu);
    int nback = 0;
    for (wtask *t = back; t; t = t->next)
        nback++;
    hand_back(w, back);
    if (busy == 0) {
        if (!w->quiet && nback > 0)
            ff_log(WHO, "%s: handed back %d queued tasks", what, nback);
        leave(w);
        return;
    }
    ff_log(WHO,
           "%s: handed back %d queued tasks; letting %d running ones finish for up to %g s "
           "(a second signal stops them at once)",
           what, nback, busy, (double)w->grace_ms / 1000);
    w->grace_end = now_ms() + w->grace_ms;
    watch_arm(w);
}

static uint64_t activity(void *ud) {
    worker *w = ud;
    return w->conn.nreads;
}

int ff_worker_main(const ff_worker_opts *o) {
    worker *w = calloc(1, sizeof *w);
    if (w == NULL)
        return 1;
    char err[512], token[512];
    size_t tl;
    struct sockaddr_storage *addr = &w->addr;
    int rc = ff_cluster_token(o->token_file, token, sizeof token, &tl, err, sizeof err);
    if (rc == 0 && tl == 0) {
        snprintf(err, sizeof err, "no token: give --token-file (or FFLUA_TOKEN)");
        rc = FFLUA_EAUTH;
    }
    if (rc == 0)
        rc = ff_parse_address(o->address, addr, err, sizeof err);
    double cpus = o->num_cpus >= 0 ? o->num_cpus : (double)uv_available_parallelism();
    if (rc == 0 && ff_sched_amount(cpus, &w->cpus) != 0) {
        snprintf(err, sizeof err, "bad --num-cpus %g", cpus);
        rc = -EINVAL;
    }
    if (rc == 0 && o->resources != NULL)
        rc = ff_check_resources(o->resources, err, sizeof err);
    if (rc != 0) {
        ff_log(WHO, "%s", err);
        free(w);
        return 2;
    }
    ff_auth_key(token, tl, w->key);
    w->resources = o->resources;
    w->own_machine = o->own_machine;
    w->quiet = o->quiet;
    w->verbose = o->verbose && !o->quiet;
    w->address = o->address;
    w->argv = o->argv;
    w->grace_ms = (uint64_t)(o->grace * 1000);
    w->reconnect_ms = (uint64_t)(o->reconnect * 1000);
    {
        /* A process that replaced itself (replace_now) tries to reach its
         * head until the time it was given. */
        const char *until = getenv("FFLUA_WORKER_RECONNECT_UNTIL");
        if (until != NULL) {
            w->reconnect_end = strtoull(until, NULL, 10);
            if (w->reconnect_end == 0)
                w->reconnect_end = 1; /* one attempt */
            unsetenv("FFLUA_WORKER_RECONNECT_UNTIL");
        }
    }
    /* Nodes of runs without a working directory run here; storage paths
     * are resolved against it, whatever a node's thread's directory is. */
    w->home = getcwd(NULL, 0);
    if (w->home == NULL) {
        ff_log(WHO, "cannot tell the directory it was started in: %s", strerror(errno));
        free(w);
        return 2;
    }
    {
        char host[256] = "localhost";
        gethostname(host, sizeof host - 1);
        char esc[200];
        snprintf(w->name, sizeof w->name, "%s:%d",
                 ff_text_escape(esc, sizeof esc, host, strlen(host)), (int)getpid());
    }
    w->store = (ff_exec_store){store_func, store_result, store_actor_live, w};
    {
        char who[600];
        snprintf(who, sizeof who, "%s in %s", w->name, w->home);
        if (ff_storeserve_create(&w->stores, w->home, who) != 0) {
            ff_log(WHO, "not enough memory");
            free(w->home);
            free(w);
            return 1;
        }
    }
    w->cpus_free = w->cpus;
    w->nthreads = (int)((w->cpus + FF_RES_SCALE - 1) / FF_RES_SCALE);
    if (w->nthreads < 1)
        w->nthreads = 1;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    uv_loop_init(&w->loop);
    uv_async_init(&w->loop, &w->wake, send_results);
    w->wake.data = w;
    uv_signal_init(&w->loop, &w->sigterm);
    uv_signal_init(&w->loop, &w->sigint);
    w->sigterm.data = w->sigint.data = w;
    uv_signal_start(&w->sigterm, on_signal, SIGTERM);
    uv_signal_start(&w->sigint, on_signal, SIGINT);
    uv_check_init(&w->loop, &w->flusher);
    w->flusher.data = w;
    uv_check_start(&w->flusher, flush_conn);
    uv_timer_init(&w->loop, &w->watch);
    uv_timer_init(&w->loop, &w->retry);
    w->watch.data = w->retry.data = w;
    /* One executor thread per CPU, at least one: the loop thread runs no
     * task, so that it always answers the head. */
    int started = 0;
    pthread_cond_init(&w->ended, NULL);
    w->threads = calloc((size_t)w->nthreads, sizeof *w->threads);
    w->execs = calloc((size_t)w->nthreads, sizeof *w->execs);
    w->mq = calloc((size_t)w->nthreads, sizeof *w->mq);
    w->mq_tail = calloc((size_t)w->nthreads, sizeof *w->mq_tail);
    int ok = w->threads && w->execs && w->mq && w->mq_tail;
    if (!ok) {
        ff_log(WHO, "not enough memory");
        w->exit_code = 1;
        w->nthreads = 0;
    }
    for (int k = 0; ok && k < w->nthreads; k++)
        w->execs[k] = (struct wexec){.w = w, .k = k};
    for (; ok && started < w->nthreads; started++) {
        pthread_mutex_lock(&w->mu);
        w->nalive++;
        pthread_mutex_unlock(&w->mu);
        if (pthread_create(&w->threads[started], NULL, executor, &w->execs[started]) != 0) {
            pthread_mutex_lock(&w->mu);
            w->nalive--;
            pthread_mutex_unlock(&w->mu);
            break;
        }
    }
    w->conn.data = w;
    w->conn.on_frame = on_frame;
    w->conn.on_close = on_closed;
    w->conn.on_ready = on_ready;
    rc = ff_conn_connect(&w->conn, &w->loop, (struct sockaddr *)addr, FF_ROLE_WORKER, w->key);
    if (rc != 0) {
        ff_log(WHO, "cannot connect to %s: %s", o->address, uv_strerror(rc));
        w->exit_code = 1;
        ff_conn_close(&w->conn); /* its on_close stops the rest */
    }
    ff_loop_run(&w->loop, 200, activity, w);
    int code = w->exit_code;
    if (w->conn.refused[0] != '\0' && !w->exiting && !w->stopping)
        code = 1;
    /* The executor threads end once their tasks stop (stop_all interrupted
     * them); one stuck in a C call is not waited for: the process ends
     * without it, after its storages committed. */
    pthread_mutex_lock(&w->mu);
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_nsec += STOP_GRACE_MS * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    while (w->nalive > 0)
        if (pthread_cond_timedwait(&w->ended, &w->mu, &dl) == ETIMEDOUT)
            break;
    int stuck = w->nalive > 0;
    pthread_mutex_unlock(&w->mu);
    if (stuck) {
        ff_log(WHO, "a task is stuck in a C call: exiting without waiting for it");
        ff_storeserve_destroy(w->stores);
        if (w->cache != NULL)
            ff_wd_remove(w->cache);
        kill_children();
        fflush(stderr);
        _exit(code);
    }
    for (int i = 0; i < started; i++)
        pthread_join(w->threads[i], NULL);
    /* Tasks never run or never sent. */
    for (wtask *t = w->queue; t;) {
        wtask *n = t->next;
        task_free(t);
        t = n;
    }
    for (wtask *t = w->done; t;) {
        wtask *n = t->next;
        task_free(t);
        t = n;
    }
    for (int k = 0; w->mq != NULL && k < w->nthreads; k++)
        for (wtask *t = w->mq[k]; t;) {
            wtask *n = t->next;
            task_free(t);
            t = n;
        }
    while (w->runs)
        run_drop(w, w->runs->id);
    ff_storeserve_destroy(w->stores);
    while (w->wds)
        wd_forget(w, w->wds);
    if (w->cache != NULL)
        ff_wd_remove(w->cache);
    free(w->cache);
    free(w->home);
    ff_conn_free(&w->conn);
    uv_loop_close(&w->loop);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    pthread_cond_destroy(&w->ended);
    free(w->started);
    free(w->threads);
    free(w->execs);
    free(w->mq);
    free(w->mq_tail);
    free(w);
    return code;
}
