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
 * with the workers (the head keeps a copy until every consumer was sent).
 * Unless told --num-cpus 0, the head starts one local worker process for
 * its own CPUs and resources, as a Ray head node runs tasks too.
 */
#include <errno.h>
#include <fcntl.h>
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
#include "net.h"
#include "sched.h"

static const char *WHO = "head";

/* Pipelining: a worker is given up to FF_PIPELINE times its CPUs in tasks,
 * so that it starts the next task without waiting for a round trip to the
 * head; it runs them in order within its real CPUs (worker.c). Custom
 * resources are never overcommitted: their limits hold for tasks sent, so
 * also for tasks running. */
#define FF_PIPELINE 4

enum { T_PENDING, T_QUEUED, T_RUNNING, T_DONE, T_FAILED };

typedef struct htask {
    uint64_t fid;
    char *name;
    uint32_t *deps, ndeps;
    uint32_t *cons, ncons, cons_cap; /* consumers (later tasks using this one) */
    uint32_t waiting;      /* parents not done */
    uint32_t unsent;       /* consumers not yet dispatched */
    uint32_t unfinished;   /* consumers not yet finished */
    int leaf, state, place;
    char *args, *pre;
    size_t nargs, npre;
    ff_res *req; /* as the scheduler counts (sched_cpus) */
    size_t nreq;
    int64_t cpus; /* the CPUs asked for, real */
    ff_buf result;
    uint64_t holders; /* places < 64 that hold the result */
} htask;

typedef struct hconn hconn;

typedef struct hrun {
    struct hrun *next;
    uint64_t id, driver_run;
    hconn *driver;
    htask *tasks;
    uint32_t ntasks, finished; /* ntasks: the run's total, as announced */
    uint32_t received;         /* tasks received so far (SUBMITs come in order) */
    uint32_t tasks_cap;        /* tasks allocated (grows with what came) */
    blobmap funcs;
    int failed;
    /* max_pending_tasks: at most this many tasks queued or running (0: no
     * limit); ready tasks beyond it wait in `held`, oldest first. */
    uint32_t max_pending, pending;
    uint32_t *held;
    size_t held_head, held_n, held_cap;
} hrun;

struct hconn {
    ff_conn c;
    struct head *h;
    int place; /* workers: their place, or -1 */
    int64_t cpus; /* workers: their real CPUs (the place has FF_PIPELINE times) */
    char name[96];
    struct hconn *next;
    blobmap funcs_sent; /* (run << 32 | fid) -> "" : functions this worker has */
};

typedef struct head {
    uv_loop_t loop;
    uv_tcp_t server;
    uv_signal_t sigterm, sigint;
    uv_process_t child;
    int child_running;
    unsigned char key[FF_KEY_LEN];
    char token[512];
    ff_sched *sched;
    hconn *conns;
    hconn **places; /* place index -> worker connection */
    int nplaces_cap;
    hrun *runs;
    uint64_t next_run;
    uint64_t finished_total;
    int stopping, quiet;
    unsigned handshake_ms;
    uv_timer_t parent_watch;
    uv_check_t flusher;
    pid_t parent;
} head;

#define TASK_ID(run, i) (((run) << 32) | (uint64_t)(i))

/* --- runs ---------------------------------------------------------------- */

static void task_free_fields(htask *t) {
    free(t->name);
    free(t->deps);
    free(t->cons);
    free(t->args);
    free(t->pre);
    free(t->req);
    ff_buf_free(&t->result);
}

static void run_free(head *h, hrun *r) {
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
    bm_free(&r->funcs);
    free(r);
}

static hrun *run_find(head *h, uint64_t id) {
    for (hrun *r = h->runs; r; r = r->next)
        if (r->id == id)
            return r;
    return NULL;
}

/* Tells every worker to drop what it holds of run id. */
static void broadcast_run_end(head *h, uint64_t id) {
    for (hconn *c = h->conns; c; c = c->next) {
        if (c->place < 0 || c->c.state != FF_CONN_READY)
            continue;
        size_t at;
        ff_conn_begin(&c->c, FF_M_RUN_END, &at);
        ff_wr_varint(&c->c.out, id);
        ff_conn_end(&c->c, at);
    }
}

static void send_done(hrun *r, uint32_t i, int status, const char *p, size_t n) {
    if (r->driver == NULL || r->driver->c.state != FF_CONN_READY)
        return;
    ff_conn *c = &r->driver->c;
    size_t at;
    ff_conn_begin(c, FF_M_DONE, &at);
    ff_wr_varint(&c->out, r->driver_run);
    ff_wr_varint(&c->out, i);
    ff_wr_varint(&c->out, (uint64_t)status);
    ff_wr_str(&c->out, p, n);
    ff_conn_end(c, at);
}

/* The run failed or was abandoned: cancel what is queued; the run ends. */
static void run_abort(head *h, hrun *r) {
    broadcast_run_end(h, r->id);
    run_free(h, r);
}

/* Every task finished: tell the driver where each ran, then forget it. */
static void run_finish(head *h, hrun *r) {
    if (r->driver != NULL && r->driver->c.state == FF_CONN_READY) {
        ff_conn *c = &r->driver->c;
        size_t at;
        ff_conn_begin(c, FF_M_RUN_END, &at);
        ff_wr_varint(&c->out, r->driver_run);
        int np = ff_sched_nplaces(h->sched);
        ff_wr_varint(&c->out, (uint64_t)np);
        for (int p = 0; p < np; p++) {
            const char *nm = p < h->nplaces_cap && h->places[p] ? h->places[p]->name : "(gone)";
            ff_wr_str(&c->out, nm, strlen(nm));
        }
        for (uint32_t i = 0; i < r->ntasks; i++)
            ff_wr_varint(&c->out, (uint64_t)(r->tasks[i].place + 1));
        ff_conn_end(c, at);
    }
    broadcast_run_end(h, r->id);
    run_free(h, r);
}

/* --- dispatch ------------------------------------------------------------ */

static int send_task(head *h, hrun *r, uint32_t i, int place) {
    hconn *w = place < h->nplaces_cap ? h->places[place] : NULL;
    htask *t = &r->tasks[i];
    if (w == NULL || w->c.state != FF_CONN_READY)
        return -1;
    ff_conn *c = &w->c;
    uint64_t fkey = (r->id << 32) | t->fid;
    if (bm_find(&w->funcs_sent, fkey) == NULL) {
        blob *f = bm_find(&r->funcs, t->fid);
        if (f == NULL)
            return -1;
        size_t at;
        ff_conn_begin(c, FF_M_FUNC, &at);
        ff_wr_varint(&c->out, r->id);
        ff_wr_varint(&c->out, t->fid);
        ff_wr_str(&c->out, f->p, f->n);
        ff_conn_end(c, at);
        bm_put(&w->funcs_sent, fkey, "", 0);
    }
    size_t at;
    ff_buf *b = &c->out;
    ff_conn_begin(c, FF_M_TASK, &at);
    ff_wr_varint(b, r->id);
    ff_wr_varint(b, i);
    ff_wr_varint(b, t->fid);
    ff_wr_str(b, t->name, strlen(t->name));
    ff_wr_varint(b, t->ndeps);
    for (uint32_t d = 0; d < t->ndeps; d++) {
        htask *p = &r->tasks[t->deps[d]];
        ff_wr_varint(b, t->deps[d]);
        int held = place < 64 && (p->holders >> place & 1);
        ff_wr_varint(b, (uint64_t)!held);
        if (!held) {
            ff_wr_str(b, p->result.p, p->result.n);
            if (place < 64)
                p->holders |= (uint64_t)1 << place;
        }
        if (--p->unsent == 0 && !p->leaf && r->received == r->ntasks)
            ff_buf_free(&p->result); /* every consumer has it now */
    }
    ff_wr_str(b, t->args, t->nargs);
    ff_wr_str(b, t->pre, t->npre);
    ff_wr_varint(b, (uint64_t)t->cpus);
    ff_conn_end(c, at);
    t->state = T_RUNNING;
    t->place = place;
    return 0;
}

static void dispatch(head *h) {
    uint64_t id;
    int place;
    while (ff_sched_next(h->sched, &id, &place) == 0) {
        hrun *r = run_find(h, id >> 32);
        uint32_t i = (uint32_t)id;
        if (r == NULL || i >= r->received || send_task(h, r, i, place) != 0) {
            ff_sched_release(h->sched, id);
            if (r != NULL && i < r->received) {
                static const char msg[] = "it could not be sent to a worker (its worker is "
                                          "gone, or its function never arrived)";
                send_done(r, i, 1, msg, sizeof msg - 1);
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

/* Queues task i (its parents are done), or holds it while the run has
 * max_pending tasks out. */
static int make_ready(head *h, hrun *r, uint32_t i) {
    htask *t = &r->tasks[i];
    if (r->max_pending > 0 && r->pending >= r->max_pending) {
        if (r->held_n == r->held_cap) {
            size_t cap = r->held_cap ? r->held_cap * 2 : 64;
            uint32_t *nh = malloc(cap * sizeof *nh);
            if (nh == NULL)
                return -ENOMEM;
            for (size_t k = 0; k < r->held_n; k++)
                nh[k] = r->held[(r->held_head + k) % r->held_cap];
            free(r->held);
            r->held = nh;
            r->held_cap = cap;
            r->held_head = 0;
        }
        r->held[(r->held_head + r->held_n++) % r->held_cap] = i;
        return 0;
    }
    int affinity = t->ndeps > 0 ? r->tasks[t->deps[0]].place : -1;
    int bad;
    int rc = ff_sched_submit(h->sched, TASK_ID(r->id, i), t->req, t->nreq, affinity, 0, &bad);
    if (rc != 0)
        return rc;
    t->state = T_QUEUED;
    r->pending++;
    return 0;
}

/* A task of run r is no longer out: release what was held for it. */
static void task_out(head *h, hrun *r) {
    r->pending--;
    while (r->held_n > 0 && (r->max_pending == 0 || r->pending < r->max_pending)) {
        uint32_t i = r->held[r->held_head];
        r->held_head = (r->held_head + 1) % r->held_cap;
        r->held_n--;
        make_ready(h, r, i);
    }
}

/* Task i's result is needed no more (its consumers all finished; a leaf
 * went to the driver): the workers holding it drop it. */
static void free_result(head *h, hrun *r, uint32_t i) {
    uint64_t holders = r->tasks[i].holders;
    for (int p = 0; holders != 0 && p < 64; p++, holders >>= 1) {
        if (!(holders & 1) || p >= h->nplaces_cap || h->places[p] == NULL)
            continue;
        ff_conn *c = &h->places[p]->c;
        size_t at;
        ff_conn_begin(c, FF_M_FREE, &at);
        ff_wr_varint(&c->out, r->id);
        ff_wr_varint(&c->out, 1);
        ff_wr_varint(&c->out, i);
        ff_conn_end(c, at);
    }
    r->tasks[i].holders = 0;
}

/* --- messages from workers ----------------------------------------------- */

static void on_result(head *h, hconn *w, const char *p, size_t n) {
    ff_rd rd;
    ff_rd_init(&rd, p, n);
    uint64_t run = ff_rd_varint(&rd), i = ff_rd_varint(&rd), ok = ff_rd_varint(&rd);
    size_t len;
    const char *bytes = ff_rd_str(&rd, &len);
    ff_rd_varint(&rd); /* compute ns: kept for run metadata later */
    if (ff_rd_done(&rd) != 0) {
        ff_log(WHO, "%s: malformed RESULT", w->name);
        return;
    }
    /* Only a task this worker is running counts: a result for another's
     * task, or a made-up one, is ignored. */
    int at = -1;
    if (run > UINT32_MAX || i > UINT32_MAX ||
        ff_sched_task_state(h->sched, TASK_ID(run, i), &at) != FF_SCHED_RUNNING ||
        at != w->place) {
        ff_log(WHO, "%s: a result for a task it does not run: ignored", w->name);
        return;
    }
    if (run_find(h, run) == NULL) { /* a cancelled run's task: just free */
        ff_sched_release(h->sched, TASK_ID(run, i));
        h->finished_total++;
        dispatch(h);
        return;
    }
    ff_sched_release(h->sched, TASK_ID(run, i));
    h->finished_total++;
    hrun *r = run_find(h, run);
    if (r == NULL || i >= r->received || r->tasks[i].state != T_RUNNING) {
        dispatch(h); /* a cancelled run: resources are free again */
        return;
    }
    htask *t = &r->tasks[i];
    if (!ok) {
        t->state = T_FAILED;
        send_done(r, (uint32_t)i, 1, bytes, len);
        run_abort(h, r);
        dispatch(h);
        return;
    }
    t->state = T_DONE;
    r->finished++;
    task_out(h, r);
    if (w->place < 64)
        t->holders |= (uint64_t)1 << w->place;
    if (t->leaf)
        send_done(r, (uint32_t)i, 0, bytes, len);
    if (t->unsent > 0 || r->received < r->ntasks) { /* consumers may still come */
        t->result.n = 0;
        if (len > 0 && ff_buf_reserve(&t->result, len) == 0) {
            memcpy(t->result.p, bytes, len);
            t->result.n = len;
        }
    }
    for (uint32_t k = 0; k < t->ncons; k++) {
        htask *c = &r->tasks[t->cons[k]];
        if (--c->waiting == 0)
            make_ready(h, r, t->cons[k]);
    }
    /* Workers keep results only while a consumer may still need them. */
    int complete = r->received == r->ntasks;
    for (uint32_t d = 0; d < t->ndeps; d++)
        if (--r->tasks[t->deps[d]].unfinished == 0 && complete)
            free_result(h, r, t->deps[d]);
    if (t->ncons == 0 && complete)
        free_result(h, r, (uint32_t)i);
    if (complete && r->finished == r->ntasks)
        run_finish(h, r);
    dispatch(h);
}

static int on_register(head *h, hconn *w, const char *p, size_t n) {
    ff_rd rd;
    ff_rd_init(&rd, p, n);
    uint64_t cpus = ff_rd_varint(&rd), nres = ff_rd_varint(&rd);
    if (rd.err || nres > 256)
        return 1;
    ff_res cap[257];
    size_t nc = 0;
    if (cpus > (uint64_t)FF_RES_MAX / FF_PIPELINE)
        return 1;
    cap[nc++] = (ff_res){FF_RES_CPU, (int64_t)cpus * FF_PIPELINE};
    w->cpus = (int64_t)cpus;
    for (uint64_t k = 0; k < nres; k++) {
        size_t len;
        const char *nm = ff_rd_str(&rd, &len);
        uint64_t amount = ff_rd_varint(&rd);
        int id = rd.err ? -1 : ff_sched_resource(h->sched, nm, len);
        if (id <= FF_RES_CPU || amount > (uint64_t)FF_RES_MAX)
            return 1;
        for (size_t j = 0; j < nc; j++)
            if (cap[j].id == id)
                return 1;
        cap[nc++] = (ff_res){id, (int64_t)amount};
    }
    size_t hl;
    const char *host = ff_rd_str(&rd, &hl);
    uint64_t pid = ff_rd_varint(&rd);
    if (ff_rd_done(&rd) != 0 || cpus > (uint64_t)FF_RES_MAX)
        return 1;
    int place = ff_sched_add_place(h->sched, cap, nc);
    if (place < 0)
        return 1;
    if (place >= h->nplaces_cap) {
        int ncap = h->nplaces_cap ? h->nplaces_cap * 2 : 16;
        while (ncap <= place)
            ncap *= 2;
        hconn **np = realloc(h->places, (size_t)ncap * sizeof *np);
        if (np == NULL)
            return 1;
        memset(np + h->nplaces_cap, 0, (size_t)(ncap - h->nplaces_cap) * sizeof *np);
        h->places = np;
        h->nplaces_cap = ncap;
    }
    h->places[place] = w;
    w->place = place;
    snprintf(w->name, sizeof w->name, "%.*s:%llu", (int)(hl > 60 ? 60 : hl), host,
             (unsigned long long)pid);
    if (!h->quiet)
        ff_log(WHO, "worker %s joined with %g CPUs (place %d)", w->name,
               (double)cpus / FF_RES_SCALE, place);
    dispatch(h);
    return 0;
}

/* --- messages from drivers ----------------------------------------------- */

/* Reads a SUBMIT's tasks into run r: the run's total, the index of the
 * first task here and their count, then the tasks. SUBMITs of a run come
 * in order, so a task's dependencies have all arrived. 0, or a message in
 * err. *first_out and *count_out say which tasks came. */
static int read_tasks(head *h, hrun *r, ff_rd *rd, uint32_t *first_out, uint32_t *count_out,
                      char *err, size_t errlen) {
    uint64_t total = ff_rd_varint(rd), first64 = ff_rd_varint(rd), count64 = ff_rd_varint(rd);
    if (rd->err || total == 0 || total > UINT32_MAX / 2 || count64 == 0 ||
        count64 > (uint64_t)(rd->end - rd->p) || first64 != r->received ||
        first64 + count64 > total || (r->tasks != NULL && total != r->ntasks)) {
        snprintf(err, errlen, "malformed SUBMIT");
        return 1;
    }
    uint32_t first = (uint32_t)first64, count = (uint32_t)count64;
    /* The array grows with the tasks that came (a total alone is a claim,
     * and must not make the head allocate). */
    uint32_t need = first + count;
    if (need > r->tasks_cap) {
        uint64_t cap = r->tasks_cap ? r->tasks_cap : 64;
        while (cap < need)
            cap *= 2;
        if (cap > total)
            cap = total;
        htask *nt = realloc(r->tasks, (size_t)cap * sizeof *nt);
        if (nt == NULL) {
            snprintf(err, errlen, "not enough memory for %u tasks", need);
            return 1;
        }
        memset(nt + r->tasks_cap, 0, (size_t)(cap - r->tasks_cap) * sizeof *nt);
        r->tasks = nt;
        r->tasks_cap = (uint32_t)cap;
    }
    r->ntasks = (uint32_t)total;
    *first_out = first;
    *count_out = count;
    for (uint32_t i = first; i < first + count && !rd->err; i++) {
        htask *t = &r->tasks[i];
        t->place = -1;
        t->fid = ff_rd_varint(rd);
        size_t len;
        const char *s = ff_rd_str(rd, &len);
        t->name = strndup(s, len);
        t->leaf = (int)(ff_rd_varint(rd) & 1);
        uint64_t nd = ff_rd_varint(rd);
        if (rd->err || nd > i || t->name == NULL) {
            rd->err = FFLUA_EPROTO;
            break;
        }
        t->ndeps = (uint32_t)nd;
        t->deps = malloc((nd ? nd : 1) * sizeof *t->deps);
        if (t->deps == NULL) {
            rd->err = FFLUA_EPROTO;
            break;
        }
        for (uint32_t d = 0; d < t->ndeps; d++) {
            uint64_t dep = ff_rd_varint(rd);
            if (dep >= i) {
                rd->err = FFLUA_EPROTO;
                break;
            }
            t->deps[d] = (uint32_t)dep;
        }
        s = ff_rd_str(rd, &t->nargs);
        t->args = malloc(t->nargs ? t->nargs : 1);
        if (t->args)
            memcpy(t->args, s, t->nargs);
        s = ff_rd_str(rd, &t->npre);
        t->pre = malloc(t->npre ? t->npre : 1);
        if (t->pre)
            memcpy(t->pre, s, t->npre);
        uint64_t nr = ff_rd_varint(rd);
        if (rd->err || nr > 256 || !t->args || !t->pre) {
            rd->err = FFLUA_EPROTO;
            break;
        }
        t->req = malloc((nr ? nr : 1) * sizeof *t->req);
        if (t->req == NULL) {
            rd->err = FFLUA_EPROTO;
            break;
        }
        for (uint64_t k = 0; k < nr && !rd->err; k++) {
            s = ff_rd_str(rd, &len);
            uint64_t amount = ff_rd_varint(rd);
            int id = rd->err ? -1 : ff_sched_resource(h->sched, s, len);
            if (id < 0 || amount > (uint64_t)FF_RES_MAX) {
                rd->err = FFLUA_EPROTO;
                break;
            }
            t->req[t->nreq++] = (ff_res){id, (int64_t)amount};
        }
        t->cpus = FF_RES_SCALE;
        for (size_t k = 0; k < t->nreq; k++)
            if (t->req[k].id == FF_RES_CPU) {
                if (t->req[k].amount > FF_RES_MAX / FF_PIPELINE) {
                    rd->err = FFLUA_EPROTO;
                    break;
                }
                t->cpus = t->req[k].amount;
                t->req[k].amount = sched_cpus(t->cpus);
            }
    }
    if (ff_rd_done(rd) != 0) {
        /* What was read of this part is not part of the run. */
        for (uint32_t i = first; i < first + count; i++) {
            task_free_fields(&r->tasks[i]);
            memset(&r->tasks[i], 0, sizeof r->tasks[i]);
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
                    return snprintf(err, errlen, "not enough memory"), 1;
                p->cons = nc;
                p->cons_cap = cap;
            }
            p->cons[p->ncons++] = i;
            p->unsent++;
            p->unfinished++;
            if (p->state != T_DONE)
                t->waiting++;
        }
    }
    return 0;
}

/* Fails the run at submission when a task asks for what no worker has. */
static int check_feasible(head *h, hrun *r, uint32_t first, uint32_t count, char *err,
                          size_t errlen) {
    int64_t max_cpus = 0;
    for (hconn *c = h->conns; c; c = c->next)
        if (c->place >= 0 && c->cpus > max_cpus)
            max_cpus = c->cpus;
    for (uint32_t i = first; i < first + count; i++) {
        htask *t = &r->tasks[i];
        int64_t want = t->cpus;
        if (want > max_cpus && ff_sched_nplaces(h->sched) > 0) {
            snprintf(err, errlen, "node '%s' asks for %g of 'CPU', but no node of the cluster "
                                  "has more than %g", t->name, (double)want / FF_RES_SCALE,
                     (double)max_cpus / FF_RES_SCALE);
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
        } else if (ff_sched_nplaces(h->sched) == 0) {
            snprintf(err, errlen, "node '%s' cannot run: the cluster has no workers", t->name);
        } else {
            snprintf(err, errlen, "node '%s' asks for resources no single node of the cluster "
                                  "has together", t->name);
        }
        return 1;
    }
    return 0;
}

static int on_submit(head *h, hconn *d, const char *p, size_t n) {
    ff_rd rd;
    ff_rd_init(&rd, p, n);
    uint64_t drun = ff_rd_varint(&rd), max_pending = ff_rd_varint(&rd);
    hrun *r = NULL;
    for (hrun *x = h->runs; x; x = x->next)
        if (x->driver == d && x->driver_run == drun && (x->tasks == NULL || x->received < x->ntasks))
            r = x;
    char err[512];
    if (r == NULL) {
        ff_log(WHO, "%s: SUBMIT for a run without functions", d->c.peer);
        return 1;
    }
    r->max_pending = max_pending > UINT32_MAX ? UINT32_MAX : (uint32_t)max_pending;
    uint32_t first = 0, count = 0;
    if (read_tasks(h, r, &rd, &first, &count, err, sizeof err) != 0) {
        ff_log(WHO, "%s: %s", d->c.peer, err);
        return 1;
    }
    if (check_feasible(h, r, first, count, err, sizeof err) != 0) {
        send_done(r, 0, 2, err, strlen(err));
        run_abort(h, r);
        dispatch(h);
        return 0;
    }
    /* Nothing runs before the whole run is here and checked: a node that
     * cannot run (or cannot be encoded, on the driver's side) fails the
     * run before anything ran. */
    if (r->received == r->ntasks)
        for (uint32_t i = 0; i < r->ntasks; i++)
            if (r->tasks[i].waiting == 0)
                make_ready(h, r, i);
    dispatch(h);
    return 0;
}

static int on_func(head *h, hconn *d, const char *p, size_t n) {
    ff_rd rd;
    ff_rd_init(&rd, p, n);
    uint64_t drun = ff_rd_varint(&rd), fid = ff_rd_varint(&rd);
    size_t len;
    const char *code = ff_rd_str(&rd, &len);
    if (ff_rd_done(&rd) != 0 || fid > UINT32_MAX)
        return 1;
    hrun *r = NULL;
    for (hrun *x = h->runs; x; x = x->next)
        if (x->driver == d && x->driver_run == drun && (x->tasks == NULL || x->received < x->ntasks))
            r = x;
    if (r == NULL) {
        r = calloc(1, sizeof *r);
        if (r == NULL)
            return 1;
        r->id = ++h->next_run;
        r->driver_run = drun;
        r->driver = d;
        r->next = h->runs;
        h->runs = r;
    }
    return bm_put(&r->funcs, fid, code, len) != 0;
}

static void send_status(head *h, hconn *c) {
    ff_buf *b = &c->c.out;
    size_t at;
    ff_conn_begin(&c->c, FF_M_STATUS_REPLY, &at);
    int np = ff_sched_nplaces(h->sched), live = 0;
    for (int p = 0; p < np; p++)
        live += ff_sched_place_live(h->sched, p);
    ff_wr_varint(b, (uint64_t)live);
    int nr = ff_sched_nresources(h->sched);
    for (int p = 0; p < np; p++) {
        if (!ff_sched_place_live(h->sched, p))
            continue;
        const char *nm = p < h->nplaces_cap && h->places[p] ? h->places[p]->name : "?";
        ff_wr_str(b, nm, strlen(nm));
        ff_wr_varint(b, ff_sched_place_running(h->sched, p));
        ff_wr_varint(b, (uint64_t)nr);
        for (int res = 0; res < nr; res++) {
            int64_t total = 0, free_ = 0;
            ff_sched_place_get(h->sched, p, res, &total, &free_);
            if (res == FF_RES_CPU && p < h->nplaces_cap && h->places[p] != NULL) {
                /* Shown as the real CPUs, busy as far as tasks were sent. */
                int64_t used = total - free_, real = h->places[p]->cpus;
                total = real;
                free_ = used >= real ? 0 : real - used;
            }
            const char *rn = ff_sched_resource_name(h->sched, res);
            ff_wr_str(b, rn, strlen(rn));
            ff_wr_varint(b, (uint64_t)total);
            ff_wr_varint(b, (uint64_t)free_);
        }
    }
    ff_sched_stats st;
    ff_sched_get_stats(h->sched, &st);
    ff_wr_varint(b, st.queued + st.parked);
    ff_wr_varint(b, st.running);
    ff_wr_varint(b, h->finished_total);
    ff_conn_end(&c->c, at);
}

static int on_frame(ff_conn *fc, int type, const char *p, size_t n) {
    hconn *c = fc->data;
    head *h = c->h;
    int role = fc->role;
    if (type == FF_M_BYE)
        return 1;
    if (role == FF_ROLE_WORKER) {
        if (type == FF_M_REGISTER && c->place < 0) {
            if (on_register(h, c, p, n) == 0)
                return 0;
            ff_log(WHO, "%s: a malformed REGISTER (bad resources?): disconnected", fc->peer);
            ff_refuse_write(&fc->out, "the head cannot use this worker's REGISTER (bad or "
                                      "repeated resource names or amounts)");
            return 1;
        }
        if (type == FF_M_RESULT && c->place >= 0) {
            on_result(h, c, p, n);
            return 0;
        }
    } else if (role == FF_ROLE_DRIVER) {
        if (type == FF_M_FUNC)
            return on_func(h, c, p, n);
        if (type == FF_M_SUBMIT)
            return on_submit(h, c, p, n);
        if (type == FF_M_RUN_END) {
            ff_rd rd;
            ff_rd_init(&rd, p, n);
            uint64_t drun = ff_rd_varint(&rd);
            for (hrun *r = h->runs; r; r = r->next)
                if (r->driver == c && r->driver_run == drun) {
                    run_abort(h, r);
                    break;
                }
            dispatch(h);
            return 0;
        }
        if (type == FF_M_STATUS) {
            send_status(h, c);
            return 0;
        }
    } else if (type == FF_M_STATUS) {
        send_status(h, c);
        return 0;
    }
    ff_log(WHO, "%s: unexpected message %d: disconnected", fc->peer, type);
    return 1;
}

/* A worker that leaves fails the runs with tasks running there (fault
 * tolerance is the cluster's next part). */
static void on_lost(void *ud, uint64_t id, int why, int bad) {
    head *h = ud;
    (void)bad;
    hrun *r = run_find(h, id >> 32);
    if (r == NULL || (uint32_t)id >= r->received)
        return;
    uint32_t i = (uint32_t)id;
    r->tasks[i].state = T_PENDING;
    static const char lost[] = "the worker running it left the cluster";
    static const char gone[] = "no worker left in the cluster can hold what it asks for";
    if (why == FF_SCHED_LOST)
        send_done(r, i, 1, lost, sizeof lost - 1);
    else
        send_done(r, i, 1, gone, sizeof gone - 1);
    r->failed = 1;
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
        h->places[c->place] = NULL;
        ff_sched_remove_place(h->sched, c->place, on_lost, h);
        for (hrun *r = h->runs, *next; r; r = next) {
            next = r->next;
            if (r->failed)
                run_abort(h, r);
        }
    }
    for (hrun *r = h->runs, *next; r; r = next) { /* a driver's runs end with it */
        next = r->next;
        if (r->driver == c) {
            r->driver = NULL;
            run_abort(h, r);
        }
    }
    bm_free(&c->funcs_sent);
    ff_conn_free(&c->c);
    free(c);
    dispatch(h);
}

static void on_connection(uv_stream_t *server, int status) {
    head *h = server->data;
    if (status < 0)
        return;
    hconn *c = calloc(1, sizeof *c);
    if (c == NULL)
        return;
    c->h = h;
    c->place = -1;
    c->c.data = c;
    c->c.on_frame = on_frame;
    c->c.on_close = on_closed;
    c->c.handshake_ms = h->handshake_ms;
    if (ff_conn_accept(&c->c, server, h->key) != 0) {
        ff_conn_close(&c->c);
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

/* --- the local worker and the program ------------------------------------ */

static void on_child_exit(uv_process_t *p, int64_t status, int sig) {
    head *h = p->data;
    h->child_running = 0;
    if (!h->stopping)
        ff_log(WHO, "the local worker exited (status %d, signal %d)", (int)status, sig);
    uv_close((uv_handle_t *)p, NULL);
}

static int spawn_local_worker(head *h, const char *addr, double cpus, const char *resources) {
    char exe[4096];
    size_t len = sizeof exe;
    if (uv_exepath(exe, &len) != 0)
        return -1;
    char ncpus[32];
    snprintf(ncpus, sizeof ncpus, "%g", cpus);
    char *args[10];
    int k = 0;
    args[k++] = exe;
    args[k++] = "worker";
    args[k++] = "--address";
    args[k++] = (char *)addr;
    args[k++] = "--num-cpus";
    args[k++] = ncpus;
    if (resources != NULL) {
        args[k++] = "--resources";
        args[k++] = (char *)resources;
    }
    args[k] = NULL;
    /* The token goes through the environment, never argv. */
    extern char **environ;
    size_t ne = 0;
    while (environ[ne])
        ne++;
    char **env = calloc(ne + 2, sizeof *env);
    char *tok = malloc(strlen(h->token) + 13);
    if (env == NULL || tok == NULL) {
        free(env);
        free(tok);
        return -1;
    }
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
    uv_process_options_t po = {.exit_cb = on_child_exit, .file = exe, .args = args,
                               .env = env, .stdio_count = 3, .stdio = stdio};
    h->child.data = h;
    int rc = uv_spawn(&h->loop, &h->child, &po);
    free(tok);
    free(env);
    if (rc != 0) {
        ff_log(WHO, "cannot start the local worker: %s", uv_strerror(rc));
        return -1;
    }
    h->child_running = 1;
    return 0;
}

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
    if (h->child_running)
        uv_process_kill(&h->child, SIGTERM);
    for (hconn *c = h->conns; c; c = c->next) {
        if (c->c.state == FF_CONN_READY) {
            size_t at;
            ff_conn_begin(&c->c, FF_M_BYE, &at);
            ff_conn_end(&c->c, at);
        }
        ff_conn_close(&c->c);
    }
    /* The head's own handles; each connection closes its own. */
    uv_close((uv_handle_t *)&h->server, NULL);
    uv_close((uv_handle_t *)&h->sigterm, NULL);
    uv_close((uv_handle_t *)&h->sigint, NULL);
    uv_close((uv_handle_t *)&h->flusher, NULL);
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

int ff_head_main(const ff_head_opts *o) {
    head *h = calloc(1, sizeof *h);
    if (h == NULL)
        return 1;
    char err[512];
    size_t tl = 0;
    int rc = ff_cluster_token(o->token_file, h->token, sizeof h->token, &tl, err, sizeof err);
    if (rc == 0 && tl == 0) {
        ff_token_new(h->token);
        tl = strlen(h->token);
    }
    if (rc == 0 && o->resources != NULL)
        rc = ff_check_resources(o->resources, err, sizeof err);
    double cpus = o->num_cpus >= 0 ? o->num_cpus : (double)uv_available_parallelism();
    int64_t units;
    if (rc == 0 && ff_sched_amount(cpus, &units) != 0) {
        snprintf(err, sizeof err, "bad --num-cpus %g", cpus);
        rc = FFLUA_EPROTO;
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
    h->handshake_ms = (unsigned)(o->handshake_timeout * 1000);
    uv_loop_init(&h->loop);
    uv_check_init(&h->loop, &h->flusher);
    h->flusher.data = h;
    uv_check_start(&h->flusher, flush_all);
    uv_tcp_init(&h->loop, &h->server);
    h->server.data = h;
    char addrbuf[300];
    snprintf(addrbuf, sizeof addrbuf, "%s:%d", o->host ? o->host : "127.0.0.1", o->port);
    struct sockaddr_storage addr;
    rc = ff_parse_address(addrbuf, &addr, err, sizeof err);
    if (rc == 0)
        rc = uv_tcp_bind(&h->server, (struct sockaddr *)&addr, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&h->server, 511, on_connection);
    int code = 0;
    if (rc != 0) {
        ff_log(WHO, "cannot listen on %s: %s", addrbuf, rc < 0 && rc > -4096 ? uv_strerror(rc) : err);
        code = 1;
        uv_close((uv_handle_t *)&h->server, NULL);
        uv_close((uv_handle_t *)&h->flusher, NULL);
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
        const char *pp = getenv("FFLUA_PARENT_PID");
        if (pp != NULL && (h->parent = (pid_t)atol(pp)) > 0) {
            uv_timer_init(&h->loop, &h->parent_watch);
            h->parent_watch.data = h;
            uv_timer_start(&h->parent_watch, on_parent_watch, 300, 300);
        }
        if (units > 0)
            spawn_local_worker(h, addrbuf, cpus, o->resources);
    }
    ff_loop_run(&h->loop, 200, activity, h);
    while (h->runs)
        run_free(h, h->runs);
    free(h->places);
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
    for (int i = 0; i < 2; i++) {
        bm_free(&peers[i].funcs_sent);
        ff_conn_free(&peers[i].c);
    }
    free(h.places);
    ff_sched_destroy(h.sched);
    return 0;
}
