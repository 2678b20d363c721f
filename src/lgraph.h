/*
 * lgraph.h: the Lua binding of the workflow graph (lgraph.c).
 *
 * lgraph.c owns a state's engine context (the graph and what Lua keeps of
 * it), the Node and NodeItem handles, the node factories and the LeafSet
 * (the leaves of a workflow). This header is what the other binding files
 * that work on the graph use: queries (lquery.c) and the executors (lrun.h).
 * Not installed; every function here is called from the thread that runs
 * the state.
 */
#ifndef FFLUA_LGRAPH_H
#define FFLUA_LGRAPH_H

#include <stdint.h>

#include <lauxlib.h>
#include <lua.h>

#include "fflua.h"
#include "graph.h"

/* Node names up to this many bytes are read into a buffer on the C stack. */
#define FFL_NAME_STACK 256

struct ffl_run;
struct ffl_ctx;

/* A Node or NodeItem handle: one reference on node id (UINT32_MAX while
 * it holds none). A NodeItem's user value 1 is its sequence of keys. A
 * handle with ctx NULL is weak: it holds no reference (lgraph.c keeps
 * those in the arguments the graph owns). */
typedef struct ffl_node {
    struct ffl_ctx *ctx;
    uint32_t id;
} ffl_node;

/* Address space reserved for weak node references (256 MiB): nodes with
 * ids below it get one; others, and every node when nothing could be
 * reserved, get a weak full userdata instead. */
#define FFL_WEAK_RANGE ((uintptr_t)1 << 28)

/* The engine context of a state: one userdata in the registry under
 * "functionfuse.ctx", made by ffl_ctx_get and freed with the state. Its
 * fields belong to lgraph.c but for the runs in progress, which lrun.c
 * keeps (ffl_run_begin, ffl_run_end). */
typedef struct ffl_ctx {
    ff_graph *graph;
    lua_State *L;      /* the thread in the current call, for releasing handles */
    uint32_t *pending; /* node decrements queued by __gc */
    size_t npending, pending_cap;
    uint32_t *pending_funcs; /* function decrements queued by factories' __gc */
    size_t npending_funcs, pending_funcs_cap;
    uint32_t *deps; /* scratch: nodes found inside table arguments */
    size_t ndeps, deps_cap;
    fflua_hooks hooks;
    void *hooks_ud;
    const void *node_mt, *item_mt; /* identities of the two metatables */
    int node_mt_ref;               /* registry reference to the Node metatable */
    /* Weak node references: the light userdata weak_base + id stands for
     * node id inside the arguments the graph owns (lgraph.c, push_weak).
     * weak_base is FFL_WEAK_RANGE bytes of address space reserved and
     * never accessible, so no other light userdata can equal one; NULL
     * when it could not be reserved (then full userdata stand in).
     * weak_scratch is what ffl_test_handle returns for one. */
    char *weak_base;
    ffl_node weak_scratch;
    /* Registry reference to a table with weak keys: function -> { name ->
     * its function id in the graph (>= 0) while it has one, or -1 - the
     * counter it reached when it was freed }, so that one function wrapped
     * twice shares its counter and numbering goes on after a release. */
    int funcs_ref;
    /* Runs in progress in this state, innermost first (a node may run
     * another workflow), and the failure of the last one that ended inside
     * another: registry references (LUA_NOREF when none) to the error it
     * raised and to the innermost node failure that error carries, and
     * how many runs that failure went through. See ffl_run_end. */
    struct ffl_run *running;
    int nested_err, nested_core, nested_levels;
    /* The progress display of the run in progress, or NULL, and whether
     * a wrapped print holds it (lrecord.c). */
    struct ff_progress *progress;
    int progress_held;
} ffl_ctx;

/* The state's engine context, made on first use. Applies queued node
 * releases. Raises if the engine is closed. */
ffl_ctx *ffl_ctx_get(lua_State *L);

/* The Node or NodeItem at idx, or NULL; *is_item says which. A weak node
 * reference (a light userdata, see weak_base) gives ctx->weak_scratch,
 * valid until the next call. Compares metatable identities kept in the
 * context instead of looking names up in the registry: this is on the
 * path of every node argument. Stack effect: 0. */
static inline ffl_node *ffl_test_handle(lua_State *L, ffl_ctx *ctx, int idx, int *is_item) {
    *is_item = 0;
    int t = lua_type(L, idx);
    if (t == LUA_TLIGHTUSERDATA && ctx->weak_base != NULL) {
        uintptr_t d = (uintptr_t)(char *)lua_touserdata(L, idx) - (uintptr_t)ctx->weak_base;
        if (d >= FFL_WEAK_RANGE)
            return NULL;
        ctx->weak_scratch.id = (uint32_t)d;
        return &ctx->weak_scratch;
    }
    if (t != LUA_TUSERDATA || !lua_getmetatable(L, idx))
        return NULL;
    const void *mt = lua_topointer(L, -1);
    lua_pop(L, 1);
    if (mt != ctx->node_mt && mt != ctx->item_mt)
        return NULL;
    *is_item = mt == ctx->item_mt;
    return lua_touserdata(L, idx);
}

/* Pushes a new Node handle for live node id (one more reference). Stack
 * effect: +1. */
void ffl_push_node(lua_State *L, ffl_ctx *ctx, uint32_t id);

/* Pushes node id's name and returns it. Stack effect: +1. */
const char *ffl_push_name(lua_State *L, ffl_ctx *ctx, uint32_t id);

/* The same, as error messages show it (ffl_push_short). Stack effect: +1. */
const char *ffl_push_short_name(lua_State *L, ffl_ctx *ctx, uint32_t id);

/* A step of a walk down an argument's tables: the stack index of the key
 * that led here and the step before (NULL at the argument), so that an
 * error can name the path without the walk keeping one. */
struct ffl_walk {
    int key;
    const struct ffl_walk *up;
};

/* Raises "argument #argn of 'f': tables nested more than 1000 levels deep
 * (at <path>)" for the table reached through w; fname may be NULL. */
int ffl_arg_depth_error(lua_State *L, const char *fname, int argn, const struct ffl_walk *w);

/* Raises unless the value at idx is a LeafSet. A LeafSet's user value 1 is
 * the sequence of its leaves (Node or NodeItem handles), never changed. */
void ffl_check_leaves(lua_State *L, int idx);

/* Plans the workflow of the LeafSet at idx (the leaves' roots and every
 * node below them, or the leaves' ancestors when the LeafSet was made
 * with only_needed: see ff_graph_plan); the caller
 * releases the plan (ff_plan_release). When leaf_pos is not NULL,
 * *leaf_pos gets the leaves' positions in the plan, in order (malloc'd,
 * the caller frees it), and *nleaves their number. Raises on failure,
 * with nothing left to free. Stack effect: 0. */
ff_plan *ffl_leaves_plan(lua_State *L, ffl_ctx *ctx, int idx, uint32_t **leaf_pos,
                         uint32_t *nleaves);

/* Adds methods to the LeafSet's method table (the other files' methods:
 * queries, the executors); called by luaopen_functionfuse_core after
 * ffl_graph_open. Stack effect: 0. */
void ffl_leaves_add_methods(lua_State *L, const luaL_Reg *methods);

/* Registers the Node, NodeItem and LeafSet metatables and makes the
 * context; called by luaopen_functionfuse_core. */
void ffl_graph_open(lua_State *L);

/* The graph functions of functionfuse.core. */
extern const luaL_Reg ffl_graph_funcs[];

#endif
