/*
 * lrun.h: the state of a run and what both executors share. Internal to
 * the bindings: not installed, not public.
 *
 * Who owns what:
 *   lrun.c     struct ffl_run and everything declared here with ffl_run_:
 *              planning a run (the leaves' positions, one consumer per
 *              leaf), runs inside runs (the context's list of runs in
 *              progress and the failure of a nested run), the plugin pass,
 *              arguments and results (nodes replaced by their results),
 *              and the run's message handler;
 *   llocal.c   the local executor (ls:run_local), which runs the plan in
 *              the calling state;
 *   lcache.c   struct ffl_cache: a local run with storage (fingerprints,
 *              which nodes load and which run, results saved);
 *   ldriver.c  the cluster driver (ls:run_cluster), which sends the plan
 *              to a cluster's head and reads the leaves' results back.
 * An executor embeds a struct ffl_run first in its own state, which lives
 * on its C stack for the duration of the run; values the run makes live on
 * the Lua stack of the run's protected call (the stack indices below).
 * Everything here is called from the thread that runs the Lua state.
 */
#ifndef FFLUA_LRUN_H
#define FFLUA_LRUN_H

#include <stddef.h>
#include <stdint.h>

#include <lauxlib.h>
#include <lua.h>

#include "buf.h"
#include "graph.h"
#include "lgraph.h"
#include "store.h"

/* --- the run (lrun.c) ----------------------------------------------------- */

struct ffl_run {
    ffl_ctx *ctx;
    ff_plan *plan;      /* made by ffl_run_plan, released by ffl_run_release */
    uint32_t *leaf_pos; /* the leaves' positions in the plan, in order (malloc'd) */
    uint32_t nleaves;
    int results;           /* stack index of the results table (position + 1 -> value) */
    int pre;               /* stack index of the pre-run functions (position + 1 -> fn) */
    uint32_t current;      /* position of the node running, or UINT32_MAX */
    uint32_t plugin;       /* position of the node whose plugin runs, or UINT32_MAX */
    int argn;              /* the argument of it being prepared (1-based), for errors */
    int leaf;              /* the leaf being read (1-based), or 0 */
    struct ffl_run *outer; /* the run this one is nested in, or NULL */
    int core, levels;      /* a nested failure this run's error carries (ffl_run_end) */
};

/* A run of context ctx that has not started. */
#define FFL_RUN_INIT(c)                                                                            \
    { .ctx = (c), .current = UINT32_MAX, .plugin = UINT32_MAX, .core = LUA_NOREF }

/* The function node id runs: its replacement (replace_func), or its
 * factory's. A registry reference. */
static inline int32_t ffl_run_func(const ff_graph *g, uint32_t id) {
    int32_t fh = ff_graph_slot(g, id, FF_SLOT_FUNC);
    return fh != FF_NOHANDLE ? fh : ff_graph_func_handle(g, ff_graph_fid(g, id));
}

/* Plans the run of the LeafSet at lsidx into r (plan, leaf positions, one
 * consumer per leaf, so that the leaves' results are kept to the end),
 * and refuses a run that would run a node whose code is running. Raises
 * with nothing left to release. Stack effect: 0. */
void ffl_run_plan(lua_State *L, struct ffl_run *r, int lsidx);

/* Adds one consumer per leaf to the plan's counts. */
void ffl_run_count_leaves(struct ffl_run *r);

/* Releases what ffl_run_plan made (after the run; ctx->L set). */
void ffl_run_release(struct ffl_run *r);

/* Pushes the run's message handler: a closure over r and the LeafSet at
 * lsidx. An error while a node runs becomes a run error object
 * (ffl_run_push_error) whose message is "node 'x' (function 'f' defined
 * at ...) failed: <error>" with a traceback (or, for the failure of a run
 * nested in this one, the failure it carries, whose value it keeps), and
 * the hooks hear of the failure; an error reading a leaf names the leaf;
 * others pass as they are. Stack effect: +1. */
void ffl_run_push_msgh(lua_State *L, struct ffl_run *r, int lsidx);

/* Pushes the error object of a run whose node id failed (a table with
 * the metatable "functionfuse.RunError"): message = "<ffl_run_push_desc>
 * failed: <the string at text>", which is also what tostring and .. give;
 * value = the value at index value (the original error value; 0: none);
 * cause = the value at index cause (a nested run's error; 0: none);
 * traceback = the text from its "stack traceback:" line on, when it has
 * one; node, func (full names) and where ("src:line" where the function is
 * defined; none for a C function). Stack effect: +1. */
void ffl_run_push_error(lua_State *L, ffl_ctx *ctx, uint32_t id, int value, int text, int cause);

/* With keep_going, after a run with failures: raises the first failure's
 * error object (ffl_run_push_error), its message replaced by one listing
 * every failure (without their tracebacks) and the count of nodes not run
 * because they depend on one, with failures (the table at index fails of
 * every error object, in the order they came, at least one) and skipped
 * (that count). Does not return. */
void ffl_run_raise_failures(lua_State *L, int fails, size_t skipped);

/* Calls the failure hook (when one is installed) with the node and the
 * message of the run error object at the top. Stack effect: 0. */
void ffl_run_hook_failure(lua_State *L, ffl_ctx *ctx);

/* Whether the value at idx is a run error object. */
int ffl_is_run_error(lua_State *L, int idx);

/* Makes r the innermost run in progress, right before its protected call
 * (nothing may raise between this and ffl_run_end). */
void ffl_run_begin(struct ffl_run *r);

/* Ends run r, with its error at the top when failed. A failure of a run
 * that was inside another is remembered for the message handler of the
 * run outside; once no run is left, nothing is. Stack effect: 0. */
void ffl_run_end(lua_State *L, struct ffl_run *r, int failed);

/* Pushes the results table and the pre-run functions table (r->results,
 * r->pre), then runs every planned node's plugins (local_initialize, then
 * remote_initialize, whose result is the node's pre-run function), in
 * plan order, on a copy of the plugins made for this run (tables copied,
 * metatables shared), so every run starts them from the same state.
 * Stack effect: +2. */
void ffl_run_plugins(lua_State *L, struct ffl_run *r);

/* Pushes argument a of the node running, with node references replaced
 * by the parents' results (tables holding nodes are copied; indexing an
 * item may run metamethods). Stack effect: +1. */
void ffl_run_push_arg(lua_State *L, struct ffl_run *r, const ff_arg *a);

/* Pushes the results of the leaves of the LeafSet at lsidx, in order;
 * returns how many. Stack effect: +N. */
int ffl_run_push_leaves(lua_State *L, struct ffl_run *r, int lsidx);

/* Pushes "node 'x' (function 'f' defined at src:line)", long names
 * shortened, and returns it. Stack effect: +1. */
const char *ffl_run_push_desc(lua_State *L, ffl_ctx *ctx, uint32_t id);

/* After a run whose error (status not LUA_OK) or results are at the top:
 * calls opts.on_end(ok, err) when the options table at optsidx has one.
 * After a failure the call is protected and what it raises is dropped, so
 * the run's own error goes on unchanged (an interrupt that stays armed
 * fires in it again); after a success what it raises is the run's error.
 * Stack effect: 0. */
void ffl_run_on_end(lua_State *L, int optsidx, int status);

/* --- a local run with storage (lcache.c) ---------------------------------- */

enum { FFL_CACHE_NONE, FFL_CACHE_NAME, FFL_CACHE_FINGERPRINT };
/* What a planned node does in a run with storage: while deciding, SKIP
 * (not needed yet), NEED (its value is needed) or WANT (computed or
 * stored, in a whole workflow); then SKIP, RUN, LOAD (read from the
 * storage), STORED (in the storage, not read) or LOG (a node of
 * log_nodes: runs, never read or saved). */
enum {
    FFL_ACT_SKIP,
    FFL_ACT_NEED,
    FFL_ACT_WANT,
    FFL_ACT_RUN,
    FFL_ACT_LOAD,
    FFL_ACT_STORED,
    FFL_ACT_LOG
};
#define FFL_ACT_RUNS(a) ((a) == FFL_ACT_RUN || (a) == FFL_ACT_LOG)

struct ffl_cache {
    struct ffl_run *run;
    ff_store *st;     /* the caller's options table keeps the Store; NULL on a cluster */
    const char *path; /* the storage's path, for messages (kept likewise) */
    /* On a cluster: per position, what the storage's worker said of it
     * (FF_STORED_*, msg.h), set before ffl_cache_plan; else NULL. */
    const uint8_t *remote;
    const char *wf; /* the workflow's name in the storage (kept likewise) */
    size_t wflen;
    int mode; /* FFL_CACHE_* */
    int always_read, verbose;
    uint8_t *fp;          /* FF_FP_LEN bytes per position (malloc'd) */
    uint8_t *act;         /* FFL_ACT_* per position (malloc'd) */
    ff_buf buf;           /* scratch for encodings */
    ff_buf vbuf;          /* a stored value, copied out of the storage to decode */
    ff_buf names;         /* every node's name, back to back */
    size_t *name_off;     /* n + 1 offsets into names (malloc'd) */
    int fn_cache, modmap; /* stack indices: function -> digest; module names */
    uint32_t fp_pos;      /* the position being fingerprinted */
    size_t loaded, skipped, damaged;
};

/* Reads a run's storage options from the table at idx: storage (a Store)
 * or, on a cluster, storage_path (the path on the storage's worker),
 * workflow (its name there), cache, always_read, verbose. Returns 0, c
 * untouched, when there is no storage. Raises on a bad option. */
int ffl_cache_options(lua_State *L, struct ffl_cache *c, int idx);

/* Allocates what run r (planned) needs with storage c. Returns 0 or
 * -ENOMEM (nothing left allocated). */
int ffl_cache_begin(struct ffl_cache *c, struct ffl_run *r);

/* After the plugin pass: fingerprints every planned node, then decides
 * from the newest node down which nodes load (their results stored in the
 * results table), which are stored and not needed, and which run (c->act),
 * and recounts the consumers over the nodes that run. Stack effect: 0. */
void ffl_cache_decide(lua_State *L, struct ffl_cache *c);

/* The two halves of ffl_cache_decide, for the cluster driver, which asks
 * the storage's worker in between (c->remote): fingerprints (and node
 * names, refusing duplicates), then the decision. Stack effect: 0. */
void ffl_cache_fingerprint(lua_State *L, struct ffl_cache *c);
void ffl_cache_plan(lua_State *L, struct ffl_cache *c);

/* The name of the node at pos (after ffl_cache_fingerprint). */
const char *ffl_cache_name(const struct ffl_cache *c, uint32_t pos, size_t *len);

/* Stores the result at the top for the node at pos, computed in
 * compute_ns (replacing it by the value read back with always_read).
 * Stack effect: 0. */
void ffl_cache_save(lua_State *L, struct ffl_cache *c, uint32_t pos, uint64_t compute_ns);

/* Frees what the run used and commits what it computed, also when it
 * failed. Returns status, or LUA_ERRRUN with the message pushed when the
 * commit fails after a run that did not. */
int ffl_cache_end(lua_State *L, struct ffl_cache *c, int status);

/* --- LeafSet methods, registered by luaopen_functionfuse_core ------------- */

extern const luaL_Reg ffl_local_methods[];  /* llocal.c: run_local */
extern const luaL_Reg ffl_run_funcs[];      /* lrun.c: core.plugin_node */
extern const luaL_Reg ffl_driver_methods[]; /* ldriver.c: run_cluster */

#endif
