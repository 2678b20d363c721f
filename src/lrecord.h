/*
 * lrecord.h: the record of a run, per node (wf.last_run.nodes). Internal
 * to the bindings.
 *
 * An executor makes one record per run (ffl_record_push), fills it while
 * the run goes (the inline setters below: no Lua, no allocation), and
 * leaves it in the run's options table, from which the backend's Lua side
 * sets wf.last_run.nodes. The record is a userdata of type
 * functionfuse.RunRecord: one malloc'd block of columns, 24 bytes per
 * planned node (32 on a cluster, which also keeps when each node was
 * queued), made once per run; Lua values for a node are made only when
 * it is asked for (rec[i], rec[name], rec:export()). Its user values keep
 * the LeafSet (whose graph names the nodes and their parents) and the
 * table of workers.
 *
 * Times are nanoseconds of CLOCK_MONOTONIC since the run began (t0);
 * started_at is the wall clock at the same moment.
 */
#ifndef FFLUA_LRECORD_H
#define FFLUA_LRECORD_H

#include <stdint.h>
#include <time.h>

#include <lauxlib.h>
#include <lua.h>

#include "graph.h"
#include "lgraph.h"

/* What became of a planned node. */
enum {
    FFL_REC_NOTRUN,   /* not run: not needed, or the run ended before it */
    FFL_REC_COMPUTED, /* its function ran to the end */
    FFL_REC_LOADED,   /* its result was read from the storage */
    FFL_REC_FAILED,   /* it raised (or was lost or timed out as often as allowed) */
    FFL_REC_SKIPPED,  /* not run because a parent failed (keep_going) */
    FFL_REC_STORED,   /* in the storage and not needed by this run */
    FFL_REC_LAST
};

#define FFL_REC_NOTIME UINT64_MAX

typedef struct ffl_record {
    uint32_t n;    /* planned nodes */
    uint32_t *ids; /* node id per position */
    /* Per position: ns since t0 it started and finished, meaningful only
     * in the states COMPUTED and FAILED (unset memory otherwise, where the
     * record is local), and there FFL_REC_NOTIME when it never started. */
    uint64_t *start;
    uint64_t *end;
    uint64_t *queued;    /* ns since t0 it was ready to run (cluster), or NULL: from parents */
    uint16_t *worker;    /* 1 + index of its worker in the workers table, 0: none */
    uint8_t *state;      /* FFL_REC_* */
    uint8_t *attempts;   /* how often it was started (saturating), cluster */
    uint64_t t0;         /* CLOCK_MONOTONIC ns when the run began */
    uint64_t loop0;      /* ns since t0 when nodes began to run (after storage lookups) */
    uint64_t elapsed;    /* ns the run took (0 while it runs) */
    double started_at;   /* Unix time when the run began */
    uint32_t retried;    /* starts beyond the first, over all nodes */
    const char *backend; /* "local" or "cluster" (static) */
    void *byid;          /* positions by id, made when needed (lrecord.c) */
    uint32_t byid_dense; /* byid is an array of this many positions; 0: sorted pairs */
} ffl_record;

/* Monotonic nanoseconds. */
static inline uint64_t ffl_mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ns since the record's run began. */
static inline uint64_t ffl_record_now(const ffl_record *rec) {
    return ffl_mono_ns() - rec->t0;
}

/* Pushes a new, empty record of a run of the LeafSet at lsidx (which it
 * keeps). with_queued: also keep queue times and attempts (a cluster).
 * Raises on memory exhaustion: call it before planning the run. Stack
 * effect: +1. */
ffl_record *ffl_record_push(lua_State *L, int lsidx, const char *backend, int with_queued);

/* Sizes the record for the nodes of plan p (ids in run order), every node
 * NOTRUN (with queue times: every time FFL_REC_NOTIME), and starts its
 * clock. Returns 0 or -ENOMEM; raises nothing. */
int ffl_record_alloc(ffl_record *rec, const ff_plan *p);

/* Sets the record's table of workers (the table at the top, popped): an
 * array of { name = "host:pid", machine = "host" }. Stack effect: -1. */
void ffl_record_set_workers(lua_State *L, int recidx);

/* Ends the record's run: elapsed from now. */
static inline void ffl_record_finish(ffl_record *rec) {
    rec->elapsed = ffl_record_now(rec);
}

/* Counts of the record's nodes in state s. */
size_t ffl_record_count(const ffl_record *rec, int s);

/* The name of state s ("computed", ...). */
const char *ffl_record_state_name(int s);

/* core.decode_run */
extern const luaL_Reg ffl_record_funcs[];

/* Registers the RunRecord type (called once by luaopen_functionfuse_core). */
void ffl_record_open(lua_State *L);

#endif

/* --- progress (lrecord.c) --------------------------------------------------
 * A run's progress display (progress.h), for the outermost run of a state
 * only: opts.progress at optsidx is nil (on when stderr is a terminal, or
 * $FFLUA_PROGRESS is 1; off when it is 0), false (off), true (on: redrawn
 * on a terminal, else a line every 10 s) or a number of seconds between
 * lines. While a terminal line shows, print and io.write erase it before
 * they write. Returns the display or NULL; raises nothing. Stack effect:
 * 0. */
struct ff_progress;
struct ff_progress *ffl_progress_begin(lua_State *L, ffl_ctx *ctx, int optsidx, const char *title);

/* Stops the display (NULL is fine) and puts print and io.write back.
 * Neither raises. Stack effect: 0. */
void ffl_progress_end(lua_State *L, ffl_ctx *ctx, struct ff_progress *p);
