/*
 * lgraph.c: the Lua binding of the workflow graph.
 *
 * Lua sees three types, registered once in luaopen_functionfuse_core:
 *   functionfuse.Node      a handle on a graph node (returned by factories)
 *   functionfuse.NodeItem  a handle on a field of a node's result (node[k],
 *                          for every key k: a NodeItem of a method's name
 *                          called with its node runs the method)
 *   functionfuse.LeafSet   the leaves of a workflow, with what backends need
 * and node factories, C closures made by core.factory(fn, name [, kind]), each
 * holding a functionfuse.FactoryRef: its reference on the function. The
 * name comes from Lua (functionfuse._names). A LeafSet's queries are in
 * lquery.c, its runs in the executors (lrun.h).
 *
 * Per-state context: one ffl_ctx userdata in the registry under
 * "functionfuse.ctx" owns the graph. Lua values the graph keeps are registry
 * references (the graph's opaque handles), released through the graph's
 * release callbacks. Node handles keep their node alive, factories their
 * function (reference counts in the graph); their __gc only queues the
 * decrement, which is applied at the next graph operation, so the graph is
 * never changed from inside a collection step. A node lives as long as its
 * component (graph.h): the handles the graph itself keeps in arguments
 * (items, tables with nodes) are weak copies that hold no reference, else a
 * node's own arguments would keep its component alive for ever.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include <lauxlib.h>
#include <lua.h>

#include "codec.h"
#include "fflua.h"
#include "graph.h"
#include "lgraph.h"
#include "lutil.h"

#define CTX_KEY "functionfuse.ctx"
#define NODE_MT "functionfuse.Node"
#define ITEM_MT "functionfuse.NodeItem"
#define LEAVES_MT "functionfuse.LeafSet"
#define FREF_MT "functionfuse.FactoryRef"

/* --- context ------------------------------------------------------------- */

static void release_handle(void *ud, int32_t h) {
    ffl_ctx *ctx = ud;
    if (ctx->L != NULL)
        luaL_unref(ctx->L, LUA_REGISTRYINDEX, h);
}

/* A function freed by the graph: remember the counter it reached for the
 * name it had, then release it. Called from flush_pending, never in a
 * collection step; writes only existing keys, so it allocates nothing. */
static void release_func(void *ud, uint32_t fid, int32_t h, uint32_t counter) {
    ffl_ctx *ctx = ud;
    lua_State *L = ctx->L;
    if (L == NULL)
        return;
    if (ctx->funcs_ref != LUA_NOREF && ctx->funcs_ref != 0 && lua_checkstack(L, 5)) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, ctx->funcs_ref); /* [funcs] */
        lua_rawgeti(L, LUA_REGISTRYINDEX, h);              /* [funcs, fn] */
        if (lua_rawget(L, -2) == LUA_TTABLE) {             /* [funcs, names] */
            lua_pushnil(L);
            while (lua_next(L, -2)) { /* [funcs, names, name, v] */
                if (lua_isinteger(L, -1) && lua_tointeger(L, -1) == (lua_Integer)fid) {
                    lua_pop(L, 1);
                    lua_pushvalue(L, -1);
                    lua_pushinteger(L, -1 - (lua_Integer)counter);
                    lua_rawset(L, -4); /* [funcs, names, name] */
                    lua_pop(L, 1);
                    break;
                }
                lua_pop(L, 1);
            }
        }
        lua_pop(L, 2);
    }
    luaL_unref(L, LUA_REGISTRYINDEX, h);
}

static void flush_pending(ffl_ctx *ctx) {
    while (ctx->npending > 0)
        ff_graph_decref(ctx->graph, ctx->pending[--ctx->npending]);
    while (ctx->npending_funcs > 0)
        ff_graph_func_decref(ctx->graph, ctx->pending_funcs[--ctx->npending_funcs]);
}

static int ffl_ctx_gc(lua_State *L) {
    ffl_ctx *ctx = lua_touserdata(L, 1);
    if (ctx->graph != NULL) {
        ctx->L = L;
        ff_graph_destroy(ctx->graph);
        ctx->graph = NULL;
    }
    if (ctx->weak_base != NULL)
        munmap(ctx->weak_base, FFL_WEAK_RANGE);
    ctx->weak_base = NULL;
    free(ctx->pending);
    free(ctx->pending_funcs);
    free(ctx->deps);
    ctx->pending = ctx->pending_funcs = ctx->deps = NULL;
    ctx->npending = ctx->npending_funcs = ctx->ndeps = 0;
    return 0;
}

ffl_ctx *ffl_ctx_get(lua_State *L) {
    ffl_ctx *ctx;
    if (lua_getfield(L, LUA_REGISTRYINDEX, CTX_KEY) == LUA_TUSERDATA) {
        ctx = lua_touserdata(L, -1);
        lua_pop(L, 1);
    } else {
        lua_pop(L, 1);
        ctx = lua_newuserdatauv(L, sizeof *ctx, 0); /* [ctx] */
        memset(ctx, 0, sizeof *ctx);
        ctx->nested_err = ctx->nested_core = LUA_NOREF;
        lua_createtable(L, 0, 1);
        lua_pushcfunction(L, ffl_ctx_gc);
        lua_setfield(L, -2, "__gc");
        lua_setmetatable(L, -2);
        if (ff_graph_create(&ctx->graph, release_handle, ctx) != 0)
            luaL_error(L, "not enough memory");
        ff_graph_set_func_release(ctx->graph, release_func);
        /* Address space only: never mapped readable, so it costs no
         * memory; but it counts against a limit on address space, so with
         * one set (ulimit -v) nothing is reserved. */
        struct rlimit rl;
        void *w = MAP_FAILED;
        if (getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur == RLIM_INFINITY)
            w = mmap(NULL, FFL_WEAK_RANGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                     -1, 0);
        ctx->weak_base = w != MAP_FAILED ? w : NULL;
        lua_setfield(L, LUA_REGISTRYINDEX, CTX_KEY); /* [] */
    }
    if (ctx->graph == NULL)
        luaL_error(L, "the functionfuse engine of this state is closed");
    ctx->L = L;
    flush_pending(ctx);
    return ctx;
}

/* --- handles ------------------------------------------------------------- */

/* The Node or NodeItem at idx, or NULL, when the context is not at hand. */
static ffl_node *test_handle(lua_State *L, int idx, int *is_item) {
    *is_item = 0;
    if (lua_type(L, idx) != LUA_TUSERDATA)
        return NULL;
    lua_getfield(L, LUA_REGISTRYINDEX, CTX_KEY);
    ffl_ctx *ctx = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return ctx != NULL ? ffl_test_handle(L, ctx, idx, is_item) : NULL;
}

/* Raises for a handle that no longer holds its node: one collected and
 * brought back by a finalizer, or a weak one from inside the graph. */
static void check_live(lua_State *L, const ffl_node *n) {
    if (n->id == UINT32_MAX || n->ctx == NULL)
        luaL_error(L, "this node handle was collected (a finalizer kept it) or belongs to the "
                      "graph's own copy of an argument: it cannot be used");
}

static ffl_node *check_node(lua_State *L, int idx) {
    ffl_node *n = luaL_checkudata(L, idx, NODE_MT);
    check_live(L, n);
    return n;
}

/* Pushes a new Node handle for a live node (one more reference). */
void ffl_push_node(lua_State *L, ffl_ctx *ctx, uint32_t id) {
    ffl_node *n = lua_newuserdatauv(L, sizeof *n, 0);
    n->ctx = ctx;
    n->id = UINT32_MAX; /* not yet a reference, should setmetatable fail */
    luaL_setmetatable(L, NODE_MT);
    ff_graph_incref(ctx->graph, id);
    n->id = id;
}

/* Pushes a weak copy of the handle n at idx: a reference to the same node
 * (and path) that holds no reference on it. The graph keeps these in the
 * arguments it owns: a reference from there would keep the node's own
 * component alive for ever. A node is a light userdata in the context's
 * reserved range (no allocation: a reduce over many nodes copies a table
 * of them), an item (or a node when no range could be reserved) a handle
 * with ctx NULL. Stack effect: +1. */
static void push_weak(lua_State *L, ffl_ctx *ctx, int idx, const ffl_node *n, int is_item) {
    if (!is_item && ctx->weak_base != NULL && n->id < FFL_WEAK_RANGE) {
        lua_pushlightuserdata(L, ctx->weak_base + n->id);
        return;
    }
    ffl_node *w = lua_newuserdatauv(L, sizeof *w, is_item ? 1 : 0);
    w->ctx = NULL;
    w->id = n->id;
    if (is_item) {
        luaL_setmetatable(L, ITEM_MT);
        lua_getiuservalue(L, idx, 1); /* the path: never changed, so shared */
        lua_setiuservalue(L, -2, 1);
    } else {
        lua_rawgeti(L, LUA_REGISTRYINDEX, ctx->node_mt_ref);
        lua_setmetatable(L, -2);
    }
}

/* Pushes a copy of the value at idx, tables copied (memo: stack index of
 * a table original -> copy, for shared and cyclic tables) and handles made
 * weak. Its depth was checked by scan_table. Stack effect: +1. */
static void push_weak_copy(lua_State *L, ffl_ctx *ctx, int idx, int memo, int depth) {
    idx = lua_absindex(L, idx);
    int is_item;
    ffl_node *n = ffl_test_handle(L, ctx, idx, &is_item);
    if (n != NULL) {
        push_weak(L, ctx, idx, n, is_item);
        return;
    }
    if (lua_type(L, idx) != LUA_TTABLE) {
        lua_pushvalue(L, idx);
        return;
    }
    luaL_checkstack(L, 8, "argument tables nested too deep");
    lua_pushvalue(L, idx);
    if (lua_rawget(L, memo) != LUA_TNIL)
        return;
    lua_pop(L, 1);
    /* The scan saw each table once, by the first path to it; this walk
     * may reach one by a longer path, so it has its own bound. */
    if (depth >= FFC_MAX_DEPTH)
        luaL_error(L, "an argument's tables are nested more than %d levels deep", FFC_MAX_DEPTH);
    lua_newtable(L); /* [copy] */
    int copy = lua_gettop(L);
    lua_pushvalue(L, idx);
    lua_pushvalue(L, copy);
    lua_rawset(L, memo);
    lua_pushnil(L);
    while (lua_next(L, idx)) {                       /* [copy, k, v] */
        push_weak_copy(L, ctx, -2, memo, depth + 1); /* [copy, k, v, k'] */
        push_weak_copy(L, ctx, -2, memo, depth + 1); /* [copy, k, v, k', v'] */
        lua_rawset(L, copy);
        lua_pop(L, 1);
    }
    if (lua_getmetatable(L, idx))
        lua_setmetatable(L, copy);
}

/* Appends v to a queue of releases made in __gc (no Lua call: a
 * collection step is under way). Returns 0 or -1 when out of memory. */
static int queue_push(uint32_t **q, size_t *n, size_t *cap, uint32_t v) {
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 256;
        uint32_t *p = realloc(*q, c * sizeof *p);
        if (p == NULL)
            return -1;
        *q = p;
        *cap = c;
    }
    (*q)[(*n)++] = v;
    return 0;
}

static int ffl_handle_gc(lua_State *L) {
    ffl_node *n = lua_touserdata(L, 1);
    ffl_ctx *ctx = n->ctx;
    if (n->id == UINT32_MAX || ctx == NULL)
        return 0; /* closed, or weak */
    if (ctx->graph == NULL)
        return 0; /* the engine went first, at lua_close */
    if (queue_push(&ctx->pending, &ctx->npending, &ctx->pending_cap, n->id) != 0)
        return 0; /* the node stays: a leak, never a crash */
    n->id = UINT32_MAX;
    return 0;
}

/* Pushes the node's name; returns it. */
const char *ffl_push_name(lua_State *L, ffl_ctx *ctx, uint32_t id) {
    char buf[FFL_NAME_STACK];
    size_t len = ff_graph_name(ctx->graph, id, buf, sizeof buf);
    if (len < sizeof buf)
        return lua_pushlstring(L, buf, len);
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, len + 1);
    ff_graph_name(ctx->graph, id, p, len + 1);
    luaL_pushresultsize(&b, len);
    return lua_tostring(L, -1);
}

/* Pushes the node's name as error messages show it (ffl_push_short);
 * returns it. */
const char *ffl_push_short_name(lua_State *L, ffl_ctx *ctx, uint32_t id) {
    ffl_push_name(L, ctx, id);
    ffl_push_short_at(L, -1);
    lua_remove(L, -2);
    return lua_tostring(L, -1);
}

/* --- building nodes ------------------------------------------------------ */

static void add_dep(lua_State *L, ffl_ctx *ctx, uint32_t id) {
    if (ctx->ndeps == ctx->deps_cap) {
        size_t cap = ctx->deps_cap ? ctx->deps_cap * 2 : 64;
        uint32_t *d = realloc(ctx->deps, cap * sizeof *d);
        if (d == NULL)
            luaL_error(L, "not enough memory");
        ctx->deps = d;
        ctx->deps_cap = cap;
    }
    ctx->deps[ctx->ndeps++] = id;
}

/* Raises when n, a handle found in an argument, is one of the graph's own
 * weak handles (a light userdata, or a handle without a context): one of
 * those reaches user code only through a serializer's pack during a
 * fingerprint, and its node may be gone, its id another node's. */
static void refuse_internal(lua_State *L, const ffl_node *n, int argn) {
    if (n->ctx == NULL || n->id == UINT32_MAX)
        luaL_error(L,
                   "argument #%d holds a node reference taken from inside the graph (from a "
                   "serializer's pack) or a collected node: pass the node itself",
                   argn);
}

/* Raises "argument #argn of 'f': tables nested more than 1000 levels deep
 * (at <path>)" for the table reached through w (a struct ffl_walk, in
 * lgraph.h: the executors check again when they copy arguments). */
int ffl_arg_depth_error(lua_State *L, const char *fname, int argn, const struct ffl_walk *w) {
    int n = 0;
    for (const struct ffl_walk *s = w; s != NULL; s = s->up)
        n++;
    ffc_step *steps = lua_newuserdatauv(L, (size_t)n * sizeof *steps + 1, 0);
    int i = n;
    for (const struct ffl_walk *s = w; s != NULL; s = s->up)
        steps[--i] = (ffc_step){s->key, 0, NULL};
    const char *path = (ffc_push_path(L, steps, n), lua_tostring(L, -1));
    return luaL_error(L, "argument #%d of '%s': tables nested more than %d levels deep (at %s)",
                      argn, ffl_push_short(L, fname ? fname : "?", fname ? strlen(fname) : 1),
                      FFC_MAX_DEPTH, path);
}

/* What scanning one argument needs to know: the set of tables visited
 * (a stack index: cycles and shared subtables) and, for errors, which
 * argument of which function it is. */
struct scan {
    ffl_ctx *ctx;
    int seen;
    int argn;
    uint32_t fid;
};

/* Adds the node handles found in the table at t, at any depth, to the deps
 * scratch; depth is the number of tables around t. Returns the number
 * found. */
static size_t scan_table(lua_State *L, struct scan *sc, int t, int depth,
                         const struct ffl_walk *w) {
    if (depth >= FFC_MAX_DEPTH)
        ffl_arg_depth_error(L, ff_graph_func_name(sc->ctx->graph, sc->fid), sc->argn, w);
    luaL_checkstack(L, 6, "argument tables nested too deep");
    lua_pushvalue(L, t);
    lua_pushboolean(L, 1);
    lua_rawset(L, sc->seen);
    size_t found = 0;
    lua_pushnil(L);
    while (lua_next(L, t)) { /* [key, value] */
        for (int pos = -1; pos >= -2; pos--) {
            int type = lua_type(L, pos);
            if (type == LUA_TUSERDATA || type == LUA_TLIGHTUSERDATA) {
                int is_item;
                ffl_node *n = ffl_test_handle(L, sc->ctx, pos, &is_item);
                if (n != NULL) {
                    refuse_internal(L, n, sc->argn);
                    add_dep(L, sc->ctx, n->id);
                    found++;
                }
            } else if (type == LUA_TTABLE) {
                struct ffl_walk step = {lua_gettop(L) - 1, w};
                lua_pushvalue(L, pos); /* [key, value, sub] */
                lua_pushvalue(L, -1);
                if (lua_rawget(L, sc->seen) == LUA_TNIL) {
                    lua_pop(L, 1);
                    found += scan_table(L, sc, lua_gettop(L), depth + 1, &step);
                } else {
                    lua_pop(L, 1);
                }
                lua_pop(L, 1); /* [key, value] */
            }
        }
        lua_pop(L, 1); /* [key] */
    }
    return found;
}

/* Scans the table argument #argn at idx for nodes (may raise). Returns
 * FF_ARG_DEEP when it holds some, else FF_ARG_HANDLE. */
static uint8_t scan_arg(lua_State *L, ffl_ctx *ctx, uint32_t fid, int idx, int argn) {
    lua_newtable(L);
    struct scan sc = {ctx, lua_gettop(L), argn, fid};
    size_t found = scan_table(L, &sc, idx, 0, NULL);
    lua_pop(L, 1);
    return found ? FF_ARG_DEEP : FF_ARG_HANDLE;
}

/* Builds the ff_arg for the value at idx, taking a registry reference for a
 * value the graph cannot hold inline. A table's kind was set by scan_arg. */
static void make_arg(lua_State *L, ffl_ctx *ctx, int idx, ff_arg *a) {
    uint8_t table_kind = a->kind;
    memset(a, 0, sizeof *a);
    a->handle = FF_NOHANDLE;
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        a->kind = FF_ARG_NIL;
        return;
    case LUA_TBOOLEAN:
        a->kind = lua_toboolean(L, idx) ? FF_ARG_TRUE : FF_ARG_FALSE;
        return;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
            a->kind = FF_ARG_INT;
            a->u.i = (int64_t)lua_tointeger(L, idx);
        } else {
            a->kind = FF_ARG_NUM;
            a->u.d = (double)lua_tonumber(L, idx);
        }
        return;
    case LUA_TUSERDATA: {
        int is_item;
        ffl_node *n = ffl_test_handle(L, ctx, idx, &is_item);
        if (n != NULL) {
            a->kind = is_item ? FF_ARG_ITEM : FF_ARG_NODE;
            a->u.node = n->id;
            if (!is_item)
                return;
        }
        break;
    }
    case LUA_TTABLE:
        lua_pushvalue(L, idx);
        a->kind = table_kind;
        a->handle = luaL_ref(L, LUA_REGISTRYINDEX);
        return;
    default:
        break;
    }
    lua_pushvalue(L, idx);
    if (a->kind != FF_ARG_ITEM)
        a->kind = FF_ARG_HANDLE;
    a->handle = luaL_ref(L, LUA_REGISTRYINDEX);
}

/* Creates a node of function fid from the arguments at [first, top], with
 * the extra ordering dependencies in the sequence at deps_idx (0: none), and
 * pushes its handle. */
static int make_node(lua_State *L, ffl_ctx *ctx, uint32_t fid, int first, int deps_idx) {
    int top = lua_gettop(L);
    int nargs = top - first + 1;
    if (nargs < 0)
        nargs = 0;
    ff_arg stackargs[8];
    ff_arg *args = stackargs;
    if (nargs > 8) /* scratch the collector owns, so an error cannot leak it */
        args = lua_newuserdatauv(L, (size_t)nargs * sizeof *args, 0);
    /* The handle first: allocating it may run finalizers, which only queue. */
    ffl_node *h = lua_newuserdatauv(L, sizeof *h, 0); /* [.., handle] */
    h->ctx = ctx;
    h->id = UINT32_MAX;
    lua_rawgeti(L, LUA_REGISTRYINDEX, ctx->node_mt_ref);
    lua_setmetatable(L, -2);
    /* First what may raise (scanning tables, checking dependencies), then
     * the registry references, so that an error leaves none behind. This
     * node's dependencies are deps[base..]: allocating may run a finalizer
     * that makes a node of its own, which uses (and gives back) the deps
     * after these. */
    size_t base = ctx->ndeps;
    for (int i = 0; i < nargs; i++) {
        int is_item;
        ffl_node *n;
        if (lua_type(L, first + i) == LUA_TTABLE)
            args[i].kind = scan_arg(L, ctx, fid, first + i, i + 1);
        else if ((n = ffl_test_handle(L, ctx, first + i, &is_item)) != NULL)
            refuse_internal(L, n, i + 1);
    }
    if (deps_idx != 0) {
        lua_Integer nd = luaL_len(L, deps_idx);
        for (lua_Integer i = 1; i <= nd; i++) {
            lua_rawgeti(L, deps_idx, i);
            int is_item;
            ffl_node *d = test_handle(L, -1, &is_item);
            if (d == NULL)
                luaL_error(L, "dependency %d is not a node", (int)i);
            add_dep(L, ctx, d->id);
            lua_pop(L, 1);
        }
    }
    /* Tables with nodes and items become weak copies (push_weak). */
    for (int i = 0; i < nargs; i++) {
        int is_item;
        ffl_node *n;
        if (lua_type(L, first + i) == LUA_TTABLE && args[i].kind == FF_ARG_DEEP) {
            lua_newtable(L);
            push_weak_copy(L, ctx, first + i, lua_gettop(L), 0);
            lua_replace(L, first + i);
            lua_pop(L, 1);
        } else if ((n = ffl_test_handle(L, ctx, first + i, &is_item)) != NULL && is_item) {
            push_weak(L, ctx, first + i, n, 1);
            lua_replace(L, first + i);
        }
    }
    for (int i = 0; i < nargs; i++)
        make_arg(L, ctx, first + i, &args[i]);
    uint32_t id;
    int rc = ff_graph_add_node(ctx->graph, fid, args, (uint32_t)nargs, ctx->deps + base,
                               (uint32_t)(ctx->ndeps - base), &id);
    ctx->ndeps = base;
    if (rc != 0)
        return luaL_error(L, "cannot create a node: %s", fflua_strerror(rc));
    h->id = id;
    return 1;
}

/* What a factory holds: one reference on its function in the graph,
 * dropped when the factory is collected. Like a node handle's, the drop is
 * queued and applied at the next graph call. */
typedef struct ffl_fref {
    ffl_ctx *ctx;
    uint32_t fid; /* UINT32_MAX while it holds no reference */
} ffl_fref;

static int ffl_fref_gc(lua_State *L) {
    ffl_fref *f = lua_touserdata(L, 1);
    ffl_ctx *ctx = f->ctx;
    if (f->fid == UINT32_MAX || ctx == NULL || ctx->graph == NULL)
        return 0;
    if (queue_push(&ctx->pending_funcs, &ctx->npending_funcs, &ctx->pending_funcs_cap, f->fid) != 0)
        return 0; /* the function stays: a leak, never a crash */
    f->fid = UINT32_MAX;
    return 0;
}

/* A node factory: upvalue 1 is its ffl_fref. */
static int ffl_factory_call(lua_State *L) {
    ffl_fref *f = lua_touserdata(L, lua_upvalueindex(1));
    ffl_ctx *ctx = f->ctx;
    if (ctx->graph == NULL)
        return luaL_error(L, "the functionfuse engine of this state is closed");
    ctx->L = L;
    flush_pending(ctx);
    return make_node(L, ctx, f->fid, 1, 0);
}

/* core.factory(fn, name [, kind]) -> factory: nodes of fn named
 * "<name>_<NNNN>". kind "constructor" or "method" makes class nodes
 * (ff_graph_func_kind), which a cluster runs as actors. Factories of the
 * same function, name and kind share one counter, which goes on where it
 * stopped when the function was freed and wrapped again. */
static int ffl_core_factory(lua_State *L) {
    if (!ffl_is_callable(L, 1))
        return luaL_typeerror(L, 1, "function");
    size_t len;
    const char *name = luaL_checklstring(L, 2, &len);
    if (len == 0)
        return luaL_argerror(L, 2, "name must not be empty");
    if (strlen(name) != len)
        return luaL_argerror(L, 2, "name must not hold a zero byte");
    static const char *const kinds[] = {"plain", "constructor", "method", NULL};
    enum ff_func_kind kind = (enum ff_func_kind)luaL_checkoption(L, 3, "plain", kinds);
    lua_settop(L, 2);
    if (kind != FF_FUNC_PLAIN) { /* its own counter key: a name holds no zero byte */
        lua_pushfstring(L, "%s%c%s", name, 0, kinds[kind]);
        lua_rotate(L, 2, 1); /* [fn, key, name]: name stays for ff_graph_add_func */
    }
    ffl_ctx *ctx = ffl_ctx_get(L);
    /* The reference's holder first, so that an error cannot leak it. */
    ffl_fref *f = lua_newuserdatauv(L, sizeof *f, 0); /* [fn, name, fref] */
    f->ctx = ctx;
    f->fid = UINT32_MAX;
    luaL_setmetatable(L, FREF_MT);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ctx->funcs_ref); /* [fn, name, fref, funcs] */
    lua_pushvalue(L, 1);
    if (lua_rawget(L, -2) != LUA_TTABLE) { /* [.., funcs, names] */
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, 1);
        lua_pushvalue(L, -2);
        lua_rawset(L, -4);
    }
    lua_pushvalue(L, 2);
    lua_Integer v = lua_rawget(L, -2) == LUA_TNUMBER ? lua_tointeger(L, -1) : -1;
    lua_pop(L, 1); /* [fn, name, fref, funcs, names] */
    uint32_t fid = (uint32_t)v;
    if (v >= 0 && ff_graph_func_is_live(ctx->graph, fid)) {
        ff_graph_func_incref(ctx->graph, fid);
        f->fid = fid;
    } else {
        lua_pushvalue(L, 1);
        int32_t h = luaL_ref(L, LUA_REGISTRYINDEX);
        uint32_t counter = v < 0 ? (uint32_t)(-1 - v) : 0;
        if (ff_graph_add_func(ctx->graph, h, name, counter, &fid) != 0)
            return luaL_error(L, "not enough memory");
        ff_graph_set_func_kind(ctx->graph, fid, kind);
        f->fid = fid;
        lua_pushvalue(L, 2);
        lua_pushinteger(L, (lua_Integer)fid);
        lua_rawset(L, -3);
    }
    lua_pop(L, 2);                            /* [fn, name, fref] */
    lua_pushcclosure(L, ffl_factory_call, 1); /* [fn, name, factory] */
    return 1;
}

static uint32_t check_factory(lua_State *L, int idx) {
    if (lua_tocfunction(L, idx) != ffl_factory_call)
        luaL_typeerror(L, idx, "node factory");
    lua_getupvalue(L, idx, 1);
    uint32_t fid = ((ffl_fref *)lua_touserdata(L, -1))->fid;
    lua_pop(L, 1);
    return fid;
}

/* core.apply(factory, deps, ...) -> node: a node with ordering
 * dependencies beyond its arguments (class method calls). */
static int ffl_core_apply(lua_State *L) {
    uint32_t fid = check_factory(L, 1);
    if (!lua_isnil(L, 2))
        luaL_checktype(L, 2, LUA_TTABLE);
    ffl_ctx *ctx = ffl_ctx_get(L);
    return make_node(L, ctx, fid, 3, lua_isnil(L, 2) ? 0 : 2);
}

/* core.is_node(v) -> true for a Node or NodeItem handle */
static int ffl_core_is_node(lua_State *L) {
    int is_item;
    lua_pushboolean(L, test_handle(L, 1, &is_item) != NULL);
    return 1;
}

/* core.graph_size() -> number of live nodes in this state */
static int ffl_core_graph_size(lua_State *L) {
    ffl_ctx *ctx = ffl_ctx_get(L);
    lua_pushinteger(L, (lua_Integer)ff_graph_size(ctx->graph));
    return 1;
}

/* --- Node and NodeItem methods ------------------------------------------- */

/* node:set_name(name) -> node */
static int ffl_node_set_name(lua_State *L) {
    ffl_node *n = check_node(L, 1);
    size_t len;
    if (lua_type(L, 2) != LUA_TSTRING)
        return luaL_typeerror(L, 2, "string");
    const char *s = lua_tolstring(L, 2, &len);
    if (len == 0)
        return luaL_argerror(L, 2, "node name must not be empty");
    if (memchr(s, 0, len) != NULL) /* names are C strings in the graph and on the wire */
        return luaL_argerror(L, 2, "node name must not hold a zero byte");
    ffl_ctx *ctx = ffl_ctx_get(L);
    if (ff_graph_set_name(ctx->graph, n->id, s, len) != 0)
        return luaL_error(L, "not enough memory");
    lua_settop(L, 1);
    return 1;
}

/* node:get_name() / node:name() -> string */
static int ffl_node_get_name(lua_State *L) {
    ffl_node *n = check_node(L, 1);
    ffl_push_name(L, ffl_ctx_get(L), n->id);
    return 1;
}

/* node:parents() -> its parents (distinct Node handles: node arguments in
 * order, then nodes inside table arguments, then ordering dependencies) */
static int ffl_node_parents(lua_State *L) {
    ffl_node *n = check_node(L, 1);
    ffl_ctx *ctx = ffl_ctx_get(L);
    uint32_t np;
    ff_graph_parents(ctx->graph, n->id, &np);
    lua_createtable(L, (int)np, 0);
    for (uint32_t i = 0; i < np; i++) {
        /* Refetched: pushing a handle may run a finalizer, which only
         * queues, but the array lives in the node table. */
        ffl_push_node(L, ctx, ff_graph_parents(ctx->graph, n->id, &np)[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

/* node:children() -> the nodes made with it as a parent (Node handles, in
 * creation order) */
static int ffl_node_children(lua_State *L) {
    ffl_node *n = check_node(L, 1);
    ffl_ctx *ctx = ffl_ctx_get(L);
    uint32_t nc = ff_graph_children(ctx->graph, n->id, NULL, 0);
    uint32_t *ids = lua_newuserdatauv(L, (size_t)nc * sizeof *ids + 1, 0); /* [ids] */
    ff_graph_children(ctx->graph, n->id, ids, nc);
    lua_createtable(L, (int)nc, 0);
    for (uint32_t i = 0; i < nc; i++) {
        ffl_push_node(L, ctx, ids[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

/* Pushes node id's backend info table, made on first use. Stack effect: +1. */
static void push_info(lua_State *L, ffl_ctx *ctx, uint32_t id) {
    int32_t h = ff_graph_slot(ctx->graph, id, FF_SLOT_INFO);
    if (h != FF_NOHANDLE) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, h);
        return;
    }
    lua_newtable(L);
    lua_pushvalue(L, -1);
    if (ff_graph_set_slot(ctx->graph, id, FF_SLOT_INFO, luaL_ref(L, LUA_REGISTRYINDEX)) != 0)
        luaL_error(L, "not enough memory");
}

/* node:backend_info() -> the node's table of backend information (as
 * functionfuse's Node.backend_info: "print" marks a node of log_nodes) */
static int ffl_node_backend_info(lua_State *L) {
    ffl_node *n = check_node(L, 1);
    push_info(L, ffl_ctx_get(L), n->id);
    return 1;
}

/* node:set_backend_info(key, value): backend_info()[key] = value */
static int ffl_node_set_backend_info(lua_State *L) {
    ffl_node *n = check_node(L, 1);
    luaL_checkany(L, 3);
    if (lua_isnil(L, 2))
        return luaL_argerror(L, 2, "key must not be nil");
    lua_settop(L, 3);
    push_info(L, ffl_ctx_get(L), n->id); /* [node, key, value, info] */
    lua_insert(L, 2);
    lua_rawset(L, 2);
    return 0;
}

/* Pushes a NodeItem for handle at idx (Node or NodeItem) extended by the key
 * at kidx. */
static int push_item(lua_State *L, int idx, int kidx) {
    int is_item;
    ffl_node *n = test_handle(L, idx, &is_item);
    check_live(L, n);
    if (lua_isnil(L, kidx))
        return luaL_argerror(L, kidx, "item key must not be nil");
    ffl_ctx *ctx = ffl_ctx_get(L);
    ffl_node *it = lua_newuserdatauv(L, sizeof *it, 1); /* [item] */
    it->ctx = ctx;
    it->id = UINT32_MAX;
    luaL_setmetatable(L, ITEM_MT);
    lua_newtable(L); /* [item, path] */
    lua_Integer len = 0;
    if (is_item) {
        lua_getiuservalue(L, idx, 1);
        len = luaL_len(L, -1);
        for (lua_Integer i = 1; i <= len; i++) {
            lua_rawgeti(L, -1, i);
            lua_rawseti(L, -3, i);
        }
        lua_pop(L, 1);
    }
    lua_pushvalue(L, kidx);
    lua_rawseti(L, -2, len + 1);
    lua_setiuservalue(L, -2, 1); /* [item] */
    ff_graph_incref(ctx->graph, n->id);
    it->id = n->id;
    return 1;
}

/* node:item(key) -> NodeItem */
static int ffl_node_item(lua_State *L) {
    check_node(L, 1);
    return push_item(L, 1, 2);
}

/* node[k] is always the item k, also when k names a method: a result's
 * field "name" passed to a node is the field. The method is reached by
 * calling that item with its node, which is what node:name() does
 * (ffl_item_call). */
static int ffl_node_index(lua_State *L) {
    return push_item(L, 1, 2);
}

/* item(self, ...): node:method(...) arrives here as node.method(node, ...)
 * and runs the method when the item is node[method] itself; any other
 * call of an item is an error that says what the item is. Upvalue 1 is
 * the table of Node methods. */
static int ffl_item_call(lua_State *L) {
    ffl_node *it = lua_touserdata(L, 1);
    lua_getiuservalue(L, 1, 1); /* [.., path] */
    int one = luaL_len(L, -1) == 1;
    lua_rawgeti(L, -1, 1); /* [.., path, key] */
    lua_CFunction method = NULL;
    if (one && lua_type(L, -1) == LUA_TSTRING) {
        lua_pushvalue(L, -1);
        if (lua_rawget(L, lua_upvalueindex(1)) == LUA_TFUNCTION)
            method = lua_tocfunction(L, -1);
        lua_pop(L, 1);
    }
    int is_item;
    ffl_node *self = test_handle(L, 2, &is_item);
    if (method != NULL && self != NULL && !is_item && self->id == it->id) {
        lua_settop(L, lua_gettop(L) - 2);
        lua_remove(L, 1); /* [node, args...] */
        return method(L);
    }
    lua_pushvalue(L, 1);
    const char *what = luaL_tolstring(L, -1, NULL); /* [.., path, key, item, what] */
    if (method != NULL)
        return luaL_error(L,
                          "'%s' is a method of the node and a field of its result (%s): call "
                          "the method as node:%s(...)",
                          lua_tostring(L, -3), what, lua_tostring(L, -3));
    return luaL_error(L,
                      "attempt to call a node item (%s): it stands for a field of the node's "
                      "result",
                      what);
}

static int ffl_item_index(lua_State *L) {
    return push_item(L, 1, 2);
}

static int ffl_node_tostring(lua_State *L) {
    int is_item;
    ffl_node *n = test_handle(L, 1, &is_item);
    ffl_ctx *ctx = ffl_ctx_get(L);
    if (n == NULL || n->id == UINT32_MAX) {
        lua_pushstring(L, is_item ? ITEM_MT " (closed)" : NODE_MT " (closed)");
        return 1;
    }
    lua_pushstring(L, is_item ? ITEM_MT ": " : NODE_MT ": ");
    ffl_push_name(L, ctx, n->id);
    if (is_item) {
        lua_getiuservalue(L, 1, 1);
        lua_Integer len = luaL_len(L, -1);
        for (lua_Integer i = 1; i <= len; i++) {
            lua_rawgeti(L, -1, i);
            const char *k = luaL_tolstring(L, -1, NULL);
            lua_pushfstring(L, lua_type(L, -2) == LUA_TSTRING ? "[\"%s\"]" : "[%s]", k);
            lua_replace(L, -3);
            lua_pop(L, 1);
            lua_insert(L, -2);
        }
        lua_pop(L, 1);
        lua_concat(L, (int)len + 2);
    } else {
        lua_concat(L, 2);
    }
    return 1;
}

static int ffl_node_eq(lua_State *L) {
    int a_item, b_item;
    ffl_node *a = test_handle(L, 1, &a_item), *b = test_handle(L, 2, &b_item);
    lua_pushboolean(L, a && b && !a_item && !b_item && a->ctx == b->ctx && a->id == b->id);
    return 1;
}

/* --- leaf sets ----------------------------------------------------------- */

typedef struct ffl_leaves {
    ffl_ctx *ctx;
    int flags; /* ff_graph_plan's: FF_PLAN_NEEDED for only what the leaves need */
} ffl_leaves;

void ffl_check_leaves(lua_State *L, int idx) {
    luaL_checkudata(L, idx, LEAVES_MT);
}

/* core.leaf_set(leaves[, only_needed]) -> LeafSet; leaves is a sequence
 * of Node or NodeItem handles (copied). Its plans are the leaves' whole
 * workflow, or with only_needed the leaves and their ancestors. */
static int ffl_core_leaf_set(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    int only_needed = lua_toboolean(L, 2);
    lua_Integer n = luaL_len(L, 1);
    if (n < 1)
        return luaL_argerror(L, 1, "a workflow needs at least one leaf node");
    ffl_ctx *ctx = ffl_ctx_get(L);
    ffl_leaves *ls = lua_newuserdatauv(L, sizeof *ls, 1);
    ls->ctx = ctx;
    ls->flags = only_needed ? FF_PLAN_NEEDED : 0;
    luaL_setmetatable(L, LEAVES_MT);
    lua_createtable(L, (int)n, 0);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, 1, i);
        int is_item;
        if (test_handle(L, -1, &is_item) == NULL)
            return luaL_error(L, "leaf %d is a %s, not a node", (int)i, luaL_typename(L, -1));
        lua_rawseti(L, -2, i);
    }
    lua_setiuservalue(L, -2, 1);
    return 1;
}

ff_plan *ffl_leaves_plan(lua_State *L, ffl_ctx *ctx, int idx, uint32_t **leaf_pos,
                         uint32_t *nleaves) {
    int flags = ((ffl_leaves *)lua_touserdata(L, idx))->flags;
    lua_getiuservalue(L, idx, 1); /* [leaves] */
    uint32_t n = (uint32_t)luaL_len(L, -1);
    /* Nothing below raises until ids is freed or handed over. */
    uint32_t *ids = malloc((size_t)n * sizeof *ids);
    if (ids == NULL)
        luaL_error(L, "not enough memory");
    for (uint32_t i = 0; i < n; i++) {
        lua_rawgeti(L, -1, (lua_Integer)i + 1);
        int is_item;
        ids[i] = ffl_test_handle(L, ctx, -1, &is_item)->id;
        lua_pop(L, 1);
    }
    lua_pop(L, 1); /* [] */
    ff_plan *p = NULL;
    int rc = ff_graph_plan(ctx->graph, ids, n, flags, &p);
    if (rc != 0) {
        free(ids);
        luaL_error(L, "cannot plan the workflow: %s", fflua_strerror(rc));
    }
    if (leaf_pos == NULL) {
        free(ids);
        return p;
    }
    for (uint32_t i = 0; i < n; i++)
        ids[i] = ff_plan_pos(p, ids[i]);
    *leaf_pos = ids;
    *nleaves = n;
    return p;
}

static const char *const slot_names[] = {"func", "remote", "plugins", "info", NULL};

/* ls:set_slot(node, "func"|"remote"|"plugins"|"info", value|nil) */
static int ffl_leaves_set_slot(lua_State *L) {
    ffl_check_leaves(L, 1);
    ffl_node *n = check_node(L, 2);
    int slot = luaL_checkoption(L, 3, NULL, slot_names);
    ffl_ctx *ctx = ffl_ctx_get(L);
    int32_t h = FF_NOHANDLE;
    if (!lua_isnoneornil(L, 4)) {
        lua_pushvalue(L, 4);
        h = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    if (ff_graph_set_slot(ctx->graph, n->id, (enum ff_slot)slot, h) != 0)
        return luaL_error(L, "not enough memory");
    return 0;
}

/* ls:get_slot(node, slot) -> value or nil */
static int ffl_leaves_get_slot(lua_State *L) {
    ffl_check_leaves(L, 1);
    ffl_node *n = check_node(L, 2);
    int slot = luaL_checkoption(L, 3, NULL, slot_names);
    ffl_ctx *ctx = ffl_ctx_get(L);
    int32_t h = ff_graph_slot(ctx->graph, n->id, (enum ff_slot)slot);
    if (h == FF_NOHANDLE)
        lua_pushnil(L);
    else
        lua_rawgeti(L, LUA_REGISTRYINDEX, h);
    return 1;
}

/* ls:func_of(node) -> fn, kind: the function the node runs (its
 * replacement, else its factory's) and its factory's kind ("plain",
 * "constructor" or "method"). */
static int ffl_leaves_func_of(lua_State *L) {
    static const char *const kinds[] = {"plain", "constructor", "method"};
    ffl_check_leaves(L, 1);
    ffl_node *n = check_node(L, 2);
    ffl_ctx *ctx = ffl_ctx_get(L);
    int32_t h = ff_graph_slot(ctx->graph, n->id, FF_SLOT_FUNC);
    uint32_t fid = ff_graph_fid(ctx->graph, n->id);
    lua_rawgeti(L, LUA_REGISTRYINDEX, h != FF_NOHANDLE ? h : ff_graph_func_handle(ctx->graph, fid));
    lua_pushstring(L, kinds[ff_graph_func_kind(ctx->graph, fid)]);
    return 2;
}

/* ls:leaves() -> a copy of the leaves */
static int ffl_leaves_leaves(lua_State *L) {
    ffl_check_leaves(L, 1);
    lua_getiuservalue(L, 1, 1);
    lua_Integer n = luaL_len(L, -1);
    lua_createtable(L, (int)n, 0);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, -2, i);
        lua_rawseti(L, -2, i);
    }
    return 1;
}

/* --- registration -------------------------------------------------------- */

static const luaL_Reg node_methods[] = {
    {"set_name", ffl_node_set_name},
    {"get_name", ffl_node_get_name},
    {"name", ffl_node_get_name},
    {"item", ffl_node_item},
    {"parents", ffl_node_parents},
    {"children", ffl_node_children},
    {"backend_info", ffl_node_backend_info},
    {"set_backend_info", ffl_node_set_backend_info},
    {NULL, NULL},
};

/* The LeafSet's own methods; queries and runs add theirs
 * (ffl_leaves_add_methods). */
static const luaL_Reg leaves_methods[] = {
    {"set_slot", ffl_leaves_set_slot},
    {"get_slot", ffl_leaves_get_slot},
    {"func_of", ffl_leaves_func_of},
    {"leaves", ffl_leaves_leaves},
    {NULL, NULL},
};

const luaL_Reg ffl_graph_funcs[] = {
    {"factory", ffl_core_factory}, /* named in Lua: functionfuse._names */
    {"apply", ffl_core_apply},
    {"is_node", ffl_core_is_node},
    {"graph_size", ffl_core_graph_size},
    {"leaf_set", ffl_core_leaf_set},
    {NULL, NULL},
};

void ffl_graph_open(lua_State *L) {
    /* Handles hold a reference on their node, released by __gc; they own
     * nothing to close. functionfuse.Node: methods first, any other key
     * is an item. */
    ffl_new_type(L, NODE_MT, NULL, ffl_handle_gc, NULL, ffl_node_tostring); /* [mt] */
    lua_pushcfunction(L, ffl_node_index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, ffl_node_eq);
    lua_setfield(L, -2, "__eq");
    lua_pop(L, 1);

    ffl_new_type(L, ITEM_MT, NULL, ffl_handle_gc, NULL, ffl_node_tostring);
    lua_pushcfunction(L, ffl_item_index);
    lua_setfield(L, -2, "__index");
    luaL_newlib(L, node_methods);
    lua_pushcclosure(L, ffl_item_call, 1);
    lua_setfield(L, -2, "__call");
    lua_pop(L, 1);

    /* A factory's reference on its function, released by __gc. */
    ffl_new_type(L, FREF_MT, NULL, ffl_fref_gc, NULL, NULL);
    lua_pop(L, 1);

    /* A LeafSet's leaves are its user value: nothing of C to free. */
    ffl_new_type(L, LEAVES_MT, leaves_methods, NULL, NULL, NULL);
    lua_pop(L, 1);

    ffl_ctx *ctx = ffl_ctx_get(L); /* the engine exists from the first require */
    lua_newtable(L);               /* [funcs] */
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    ctx->funcs_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    luaL_getmetatable(L, NODE_MT);
    ctx->node_mt = lua_topointer(L, -1);
    ctx->node_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    luaL_getmetatable(L, ITEM_MT);
    ctx->item_mt = lua_topointer(L, -1);
    lua_pop(L, 1);
}

void ffl_leaves_add_methods(lua_State *L, const luaL_Reg *methods) {
    luaL_getmetatable(L, LEAVES_MT);
    lua_getfield(L, -1, "__index");
    luaL_setfuncs(L, methods, 0);
    lua_pop(L, 2);
}
