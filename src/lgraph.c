/*
 * lgraph.c: the Lua binding of the workflow graph and its executors.
 *
 * Lua sees three types, registered once in luaopen_functionfuse_core:
 *   functionfuse.Node      a handle on a graph node (returned by factories)
 *   functionfuse.NodeItem  a handle on a field of a node's result (node[k])
 *   functionfuse.LeafSet   the leaves of a workflow, with what backends need
 * and node factories, C closures made by core.factory(fn[, name]). A
 * LeafSet's queries are in lquery.c.
 *
 * Per-state context: one ffl_ctx userdata in the registry under
 * "functionfuse.ctx" owns the graph. Lua values the graph keeps are registry
 * references (the graph's opaque handles), released through the graph's
 * release callback. Node handles keep their node alive (a reference count in
 * the graph); their __gc only queues the decrement, which is applied at the
 * next graph operation, so the graph is never changed from inside a
 * collection step.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <lua.h>

#include <xxhash.h>

#include "cluster.h"
#include "codec.h"
#include "fflua.h"
#include "graph.h"
#include "lgraph.h"
#include "lcluster.h"
#include "lstore.h"
#include "net.h"
#include "sched.h"
#include "lutil.h"
#include "text.h"

#define CTX_KEY "functionfuse.ctx"
#define NODE_MT "functionfuse.Node"
#define ITEM_MT "functionfuse.NodeItem"
#define LEAVES_MT "functionfuse.LeafSet"

/* --- context ------------------------------------------------------------- */

static void release_handle(void *ud, int32_t h) {
    ffl_ctx *ctx = ud;
    if (ctx->L != NULL)
        luaL_unref(ctx->L, LUA_REGISTRYINDEX, h);
}

static void flush_pending(ffl_ctx *ctx) {
    while (ctx->npending > 0)
        ff_graph_decref(ctx->graph, ctx->pending[--ctx->npending]);
}

static int ffl_ctx_gc(lua_State *L) {
    ffl_ctx *ctx = lua_touserdata(L, 1);
    if (ctx->graph != NULL) {
        ctx->L = L;
        ff_graph_destroy(ctx->graph);
        ctx->graph = NULL;
    }
    free(ctx->pending);
    free(ctx->deps);
    ctx->pending = ctx->deps = NULL;
    ctx->npending = ctx->ndeps = 0;
    return 0;
}

ffl_ctx *ffl_ctx_get(lua_State *L) {
    ffl_ctx *ctx;
    if (lua_getfield(L, LUA_REGISTRYINDEX, CTX_KEY) == LUA_TUSERDATA) {
        ctx = lua_touserdata(L, -1);
        lua_pop(L, 1);
    } else {
        lua_pop(L, 1);
        ctx = lua_newuserdatauv(L, sizeof *ctx, 0); // [ctx]
        memset(ctx, 0, sizeof *ctx);
        ctx->nested_err = ctx->nested_core = LUA_NOREF;
        lua_createtable(L, 0, 1);
        lua_pushcfunction(L, ffl_ctx_gc);
        lua_setfield(L, -2, "__gc");
        lua_setmetatable(L, -2);
        if (ff_graph_create(&ctx->graph, release_handle, ctx) != 0)
            luaL_error(L, "not enough memory");
        lua_setfield(L, LUA_REGISTRYINDEX, CTX_KEY); // []
    }
    if (ctx->graph == NULL)
        luaL_error(L, "the functionfuse engine of this state is closed");
    ctx->L = L;
    flush_pending(ctx);
    return ctx;
}

int fflua_set_hooks(lua_State *L, const fflua_hooks *hooks, void *ud) {
    ffl_ctx *ctx = ffl_ctx_get(L);
    if (hooks != NULL)
        ctx->hooks = *hooks;
    else
        memset(&ctx->hooks, 0, sizeof ctx->hooks);
    ctx->hooks_ud = ud;
    return 0;
}

/* --- handles ------------------------------------------------------------- */

/* The Node or NodeItem at idx, or NULL. Compares metatable identities
 * (kept in the context) instead of looking names up in the registry: this
 * is on the path of every node argument. */
static ffl_node *test_handle(lua_State *L, int idx, int *is_item) {
    *is_item = 0;
    if (lua_type(L, idx) != LUA_TUSERDATA || !lua_getmetatable(L, idx))
        return NULL;
    const void *mt = lua_topointer(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, LUA_REGISTRYINDEX, CTX_KEY);
    ffl_ctx *ctx = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (ctx == NULL || (mt != ctx->node_mt && mt != ctx->item_mt))
        return NULL;
    *is_item = mt == ctx->item_mt;
    return lua_touserdata(L, idx);
}

/* The same, when the context is at hand. */
static ffl_node *ctx_test_handle(lua_State *L, ffl_ctx *ctx, int idx, int *is_item) {
    *is_item = 0;
    if (lua_type(L, idx) != LUA_TUSERDATA || !lua_getmetatable(L, idx))
        return NULL;
    const void *mt = lua_topointer(L, -1);
    lua_pop(L, 1);
    if (mt != ctx->node_mt && mt != ctx->item_mt)
        return NULL;
    *is_item = mt == ctx->item_mt;
    return lua_touserdata(L, idx);
}

static ffl_node *check_node(lua_State *L, int idx) {
    return luaL_checkudata(L, idx, NODE_MT);
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

static int ffl_handle_gc(lua_State *L) {
    ffl_node *n = lua_touserdata(L, 1);
    ffl_ctx *ctx = n->ctx;
    if (n->id == UINT32_MAX || ctx == NULL)
        return 0;
    if (ctx->graph == NULL)
        return 0; /* the engine went first, at lua_close */
    if (ctx->npending == ctx->pending_cap) {
        size_t cap = ctx->pending_cap ? ctx->pending_cap * 2 : 256;
        uint32_t *p = realloc(ctx->pending, cap * sizeof *p);
        if (p == NULL)
            return 0; /* the node stays: a leak, never a crash */
        ctx->pending = p;
        ctx->pending_cap = cap;
    }
    ctx->pending[ctx->npending++] = n->id;
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
static const char *push_short_name(lua_State *L, ffl_ctx *ctx, uint32_t id) {
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

/* A step of a walk down an argument's tables: the stack index of the key
 * that led here and the step before (NULL at the argument), so that an
 * error can name the path without the walk keeping one. */
struct walk {
    int key;
    const struct walk *up;
};

/* Raises "argument #argn of 'f': tables nested more than 1000 levels deep
 * (at <path>)" for the table reached through w. */
static int depth_error(lua_State *L, const char *fname, int argn, const struct walk *w) {
    int n = 0;
    for (const struct walk *s = w; s != NULL; s = s->up)
        n++;
    ffc_step *steps = lua_newuserdatauv(L, (size_t)n * sizeof *steps + 1, 0);
    int i = n;
    for (const struct walk *s = w; s != NULL; s = s->up)
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
static size_t scan_table(lua_State *L, struct scan *sc, int t, int depth, const struct walk *w) {
    if (depth >= FFC_MAX_DEPTH)
        depth_error(L, ff_graph_func_name(sc->ctx->graph, sc->fid), sc->argn, w);
    luaL_checkstack(L, 6, "argument tables nested too deep");
    lua_pushvalue(L, t);
    lua_pushboolean(L, 1);
    lua_rawset(L, sc->seen);
    size_t found = 0;
    lua_pushnil(L);
    while (lua_next(L, t)) { // [key, value]
        for (int pos = -1; pos >= -2; pos--) {
            int type = lua_type(L, pos);
            if (type == LUA_TUSERDATA) {
                int is_item;
                ffl_node *n = ctx_test_handle(L, sc->ctx, pos, &is_item);
                if (n != NULL) {
                    add_dep(L, sc->ctx, n->id);
                    found++;
                }
            } else if (type == LUA_TTABLE) {
                struct walk step = {lua_gettop(L) - 1, w};
                lua_pushvalue(L, pos); // [key, value, sub]
                lua_pushvalue(L, -1);
                if (lua_rawget(L, sc->seen) == LUA_TNIL) {
                    lua_pop(L, 1);
                    found += scan_table(L, sc, lua_gettop(L), depth + 1, &step);
                } else {
                    lua_pop(L, 1);
                }
                lua_pop(L, 1); // [key, value]
            }
        }
        lua_pop(L, 1); // [key]
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
        ffl_node *n = ctx_test_handle(L, ctx, idx, &is_item);
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

/* A stable readable name for a function nothing names: fn_<file>_<line>. */
static void push_fallback_name(lua_State *L, int fidx) {
    lua_Debug ar;
    lua_pushvalue(L, fidx);
    lua_getinfo(L, ">S", &ar);
    if (ar.what[0] == 'C') {
        lua_pushliteral(L, "cfunction");
        return;
    }
    const char *src = ar.short_src, *slash = strrchr(src, '/');
    if (slash != NULL)
        src = slash + 1;
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, "fn_");
    for (const char *p = src; *p && *p != '.'; p++) {
        char c = *p;
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        luaL_addchar(&b, ok ? c : '_');
    }
    lua_pushfstring(L, "_%d", ar.linedefined);
    luaL_addvalue(&b);
    luaL_pushresult(&b);
}

/* Gives function fid a name if it has none: the name the caller used for
 * the factory at level `level` (local, global, field or method), else a
 * fallback from where the function was defined. */
static void ensure_func_name(lua_State *L, ffl_ctx *ctx, uint32_t fid, int level) {
    if (ff_graph_func_name(ctx->graph, fid) != NULL)
        return;
    lua_Debug ar;
    const char *name = NULL;
    if (lua_getstack(L, level, &ar) && lua_getinfo(L, "n", &ar) && ar.name != NULL &&
        strcmp(ar.name, "?") != 0)
        name = lua_pushstring(L, ar.name);
    if (name == NULL) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, ff_graph_func_handle(ctx->graph, fid));
        push_fallback_name(L, lua_gettop(L));
        lua_remove(L, -2);
        name = lua_tostring(L, -1);
    }
    if (ff_graph_func_set_name(ctx->graph, fid, name) != 0)
        luaL_error(L, "not enough memory");
    lua_pop(L, 1);
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
    ffl_node *h = lua_newuserdatauv(L, sizeof *h, 0); // [.., handle]
    h->ctx = ctx;
    h->id = UINT32_MAX;
    lua_rawgeti(L, LUA_REGISTRYINDEX, ctx->node_mt_ref);
    lua_setmetatable(L, -2);
    /* First what may raise (scanning tables, checking dependencies), then
     * the registry references, so that an error leaves none behind. */
    ctx->ndeps = 0;
    for (int i = 0; i < nargs; i++)
        if (lua_type(L, first + i) == LUA_TTABLE)
            args[i].kind = scan_arg(L, ctx, fid, first + i, i + 1);
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
    for (int i = 0; i < nargs; i++)
        make_arg(L, ctx, first + i, &args[i]);
    uint32_t id;
    int rc = ff_graph_add_node(ctx->graph, fid, args, (uint32_t)nargs, ctx->deps,
                               (uint32_t)ctx->ndeps, &id);
    ctx->ndeps = 0;
    if (rc != 0)
        return luaL_error(L, "cannot create a node: %s", fflua_strerror(rc));
    h->id = id;
    return 1;
}

/* A node factory: upvalue 1 is the context, upvalue 2 the function id. */
static int ffl_factory_call(lua_State *L) {
    ffl_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    uint32_t fid = (uint32_t)lua_tointeger(L, lua_upvalueindex(2));
    if (ctx->graph == NULL)
        return luaL_error(L, "the functionfuse engine of this state is closed");
    ctx->L = L;
    flush_pending(ctx);
    ensure_func_name(L, ctx, fid, 0);
    return make_node(L, ctx, fid, 1, 0);
}

static int is_callable(lua_State *L, int idx) {
    if (lua_isfunction(L, idx))
        return 1;
    if (luaL_getmetafield(L, idx, "__call") != LUA_TNIL) {
        lua_pop(L, 1);
        return 1;
    }
    return 0;
}

/* core.factory(fn[, name]) -> factory */
static int ffl_core_factory(lua_State *L) {
    if (!is_callable(L, 1))
        return luaL_typeerror(L, 1, "function");
    const char *name = luaL_optstring(L, 2, NULL);
    if (name != NULL && name[0] == '\0')
        return luaL_argerror(L, 2, "name must not be empty");
    ffl_ctx *ctx = ffl_ctx_get(L);
    lua_pushvalue(L, 1);
    int32_t h = luaL_ref(L, LUA_REGISTRYINDEX);
    uint32_t fid;
    if (ff_graph_add_func(ctx->graph, h, name, &fid) != 0)
        return luaL_error(L, "not enough memory");
    lua_getfield(L, LUA_REGISTRYINDEX, CTX_KEY);
    lua_pushinteger(L, fid);
    lua_pushcclosure(L, ffl_factory_call, 2);
    return 1;
}

static uint32_t check_factory(lua_State *L, int idx) {
    if (lua_tocfunction(L, idx) != ffl_factory_call)
        luaL_typeerror(L, idx, "node factory");
    lua_getupvalue(L, idx, 2);
    uint32_t fid = (uint32_t)lua_tointeger(L, -1);
    lua_pop(L, 1);
    return fid;
}

/* core.factory_name(factory[, level]) -> name: the name its nodes take,
 * inferred now from the caller at `level` (default 2) if it has none. */
static int ffl_core_factory_name(lua_State *L) {
    uint32_t fid = check_factory(L, 1);
    ffl_ctx *ctx = ffl_ctx_get(L);
    ensure_func_name(L, ctx, fid, (int)luaL_optinteger(L, 2, 2));
    lua_pushstring(L, ff_graph_func_name(ctx->graph, fid));
    return 1;
}

/* core.apply(factory, deps, ...) -> node: a node with ordering
 * dependencies beyond its arguments (class method calls). */
static int ffl_core_apply(lua_State *L) {
    uint32_t fid = check_factory(L, 1);
    if (!lua_isnil(L, 2))
        luaL_checktype(L, 2, LUA_TTABLE);
    ffl_ctx *ctx = ffl_ctx_get(L);
    ensure_func_name(L, ctx, fid, 1);
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

/* Pushes a NodeItem for handle at idx (Node or NodeItem) extended by the key
 * at kidx. */
static int push_item(lua_State *L, int idx, int kidx) {
    int is_item;
    ffl_node *n = test_handle(L, idx, &is_item);
    if (lua_isnil(L, kidx))
        return luaL_argerror(L, kidx, "item key must not be nil");
    ffl_ctx *ctx = ffl_ctx_get(L);
    ffl_node *it = lua_newuserdatauv(L, sizeof *it, 1); // [item]
    it->ctx = ctx;
    it->id = UINT32_MAX;
    luaL_setmetatable(L, ITEM_MT);
    lua_newtable(L); // [item, path]
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
    lua_setiuservalue(L, -2, 1); // [item]
    ff_graph_incref(ctx->graph, n->id);
    it->id = n->id;
    return 1;
}

/* node:item(key) -> NodeItem */
static int ffl_node_item(lua_State *L) {
    check_node(L, 1);
    return push_item(L, 1, 2);
}

static int ffl_node_index(lua_State *L) {
    if (lua_type(L, 2) == LUA_TSTRING) {
        lua_pushvalue(L, 2);
        if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL)
            return 1; /* a method */
        lua_pop(L, 1);
    }
    return push_item(L, 1, 2);
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
} ffl_leaves;

void ffl_check_leaves(lua_State *L, int idx) {
    luaL_checkudata(L, idx, LEAVES_MT);
}

/* core.leaf_set(leaves) -> LeafSet; leaves is a sequence of Node or
 * NodeItem handles (copied). */
static int ffl_core_leaf_set(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Integer n = luaL_len(L, 1);
    if (n < 1)
        return luaL_argerror(L, 1, "a workflow needs at least one leaf node");
    ffl_ctx *ctx = ffl_ctx_get(L);
    ffl_leaves *ls = lua_newuserdatauv(L, sizeof *ls, 1);
    ls->ctx = ctx;
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

ff_plan *ffl_leaves_plan(lua_State *L, ffl_ctx *ctx, int idx) {
    lua_getiuservalue(L, idx, 1); // [leaves]
    lua_Integer n = luaL_len(L, -1);
    uint32_t *ids = lua_newuserdatauv(L, (size_t)n * sizeof *ids, 0); // [leaves, ids]
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, -2, i);
        int is_item;
        ids[i - 1] = test_handle(L, -1, &is_item)->id;
        lua_pop(L, 1);
    }
    ff_plan *p = NULL;
    int rc = ff_graph_plan(ctx->graph, ids, (uint32_t)n, &p);
    lua_pop(L, 2);
    if (rc != 0)
        luaL_error(L, "cannot plan the workflow: %s", fflua_strerror(rc));
    return p;
}

static const char *const slot_names[] = {"func", "remote", "plugins", NULL};

/* ls:set_slot(node, "func"|"remote"|"plugins", value|nil) */
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

/* --- the local executor -------------------------------------------------- */

struct ffl_run;
static void push_result(lua_State *L, struct ffl_run *r, int idx);

enum { CACHE_NONE, CACHE_NAME, CACHE_FINGERPRINT };
enum { ACT_SKIP, ACT_NEED, ACT_RUN, ACT_LOAD };

struct ffl_run {
    ffl_ctx *ctx;
    ff_plan *plan;
    int results;      /* stack index of the results table (position + 1 -> value) */
    int pre;          /* stack index of the pre-run functions (position + 1 -> fn) */
    uint32_t current; /* position of the node running, or UINT32_MAX */
    uint32_t plugin;  /* position of the node whose plugin runs, or UINT32_MAX */
    int argn;         /* the argument of it being prepared (1-based), for errors */
    int leaf;         /* the leaf being read (1-based), or 0 */
    struct ffl_run *outer; /* the run this one is nested in, or NULL */
    int core, levels;  /* a nested failure this run's error carries (run_end) */
    /* With storage (st != NULL): */
    ff_store *st;
    const char *wf;
    size_t wflen;
    int cache, always_read, verbose;
    uint8_t *fp;  /* FF_FP_LEN bytes per position */
    uint8_t *act; /* ACT_* per position */
    ff_buf buf;   /* scratch for encodings */
    ff_buf vbuf;  /* a stored value, copied out of the storage to decode */
    ff_buf names; /* every node's name, back to back */
    size_t *name_off; /* n + 1 offsets into names */
    int fn_cache, modmap; /* stack indices: function -> digest; module names */
    size_t computed, loaded, skipped, damaged;
};

/* Pushes value with node handles replaced by their results, copying tables
 * that hold them (memo: stack index of a table old -> copy); depth is the
 * number of tables around it. The tables may have been made deeper since
 * the node was made: the limit is checked again. */
static void push_substituted(lua_State *L, struct ffl_run *r, int idx, int memo, int depth,
                             const struct walk *w) {
    idx = lua_absindex(L, idx);
    int is_item;
    if (ctx_test_handle(L, r->ctx, idx, &is_item) != NULL) {
        push_result(L, r, idx);
        return;
    }
    if (lua_type(L, idx) != LUA_TTABLE) {
        lua_pushvalue(L, idx);
        return;
    }
    if (depth >= FFC_MAX_DEPTH) {
        ff_graph *g = r->ctx->graph;
        uint32_t id = r->plan->order[r->current];
        depth_error(L, ff_graph_func_name(g, ff_graph_fid(g, id)), r->argn, w);
    }
    luaL_checkstack(L, 8, "argument tables nested too deep");
    lua_pushvalue(L, idx);
    if (lua_rawget(L, memo) != LUA_TNIL)
        return; /* shared or cyclic: the same copy */
    lua_pop(L, 1);
    lua_newtable(L); // [copy]
    int copy = lua_gettop(L);
    lua_pushvalue(L, idx);
    lua_pushvalue(L, copy);
    lua_rawset(L, memo);
    lua_pushnil(L);
    while (lua_next(L, idx)) { // [copy, k, v]
        struct walk step = {lua_gettop(L) - 1, w};
        push_substituted(L, r, -2, memo, depth + 1, &step); // [copy, k, v, k']
        push_substituted(L, r, -2, memo, depth + 1, &step); // [copy, k, v, k', v']
        lua_rawset(L, copy);                         // [copy, k, v]
        lua_pop(L, 1);
    }
    if (lua_getmetatable(L, idx))
        lua_setmetatable(L, copy);
}

/* Pushes the result the handle at idx stands for: a node's result or a
 * field of it (indexing may run metamethods of the result). */
static void push_result(lua_State *L, struct ffl_run *r, int idx) {
    int is_item;
    ffl_node *n = ctx_test_handle(L, r->ctx, idx, &is_item);
    uint32_t pos = ff_plan_pos(r->plan, n->id);
    lua_rawgeti(L, r->results, (lua_Integer)pos + 1);
    if (!is_item)
        return;
    lua_getiuservalue(L, idx, 1); // [value, path]
    lua_Integer len = luaL_len(L, -1);
    lua_insert(L, -2); // [path, value]
    for (lua_Integer i = 1; i <= len; i++) {
        lua_rawgeti(L, -2, i); // [path, value, key]
        lua_gettable(L, -2);   // [path, value, field]
        lua_remove(L, -2);
    }
    lua_remove(L, -2);
}

static void push_arg(lua_State *L, struct ffl_run *r, const ff_arg *a) {
    switch (a->kind) {
    case FF_ARG_NIL:
        lua_pushnil(L);
        break;
    case FF_ARG_FALSE:
    case FF_ARG_TRUE:
        lua_pushboolean(L, a->kind == FF_ARG_TRUE);
        break;
    case FF_ARG_INT:
        lua_pushinteger(L, (lua_Integer)a->u.i);
        break;
    case FF_ARG_NUM:
        lua_pushnumber(L, (lua_Number)a->u.d);
        break;
    case FF_ARG_HANDLE:
        lua_rawgeti(L, LUA_REGISTRYINDEX, a->handle);
        break;
    case FF_ARG_NODE:
        lua_rawgeti(L, r->results, (lua_Integer)ff_plan_pos(r->plan, a->u.node) + 1);
        break;
    case FF_ARG_ITEM:
        lua_rawgeti(L, LUA_REGISTRYINDEX, a->handle);
        push_result(L, r, lua_gettop(L));
        lua_remove(L, -2);
        break;
    case FF_ARG_DEEP:
        lua_newtable(L); // [memo]
        lua_rawgeti(L, LUA_REGISTRYINDEX, a->handle);
        push_substituted(L, r, -1, lua_gettop(L) - 1, 0, NULL); // [memo, orig, copy]
        lua_replace(L, -3);
        lua_pop(L, 1);
        break;
    }
}

/* Pushes the results of the leaves of the LeafSet at lsidx, in order;
 * returns how many. */
static int push_leaves(lua_State *L, struct ffl_run *r, int lsidx) {
    lua_getiuservalue(L, lsidx, 1);
    int leaves = lua_gettop(L);
    lua_Integer n = luaL_len(L, leaves);
    luaL_checkstack(L, (int)n + LUA_MINSTACK, "too many leaves");
    for (lua_Integer i = 1; i <= n; i++) {
        r->leaf = (int)i;
        lua_rawgeti(L, leaves, i);
        push_result(L, r, lua_gettop(L));
        lua_remove(L, -2);
    }
    r->leaf = 0;
    return (int)n;
}

/* Pushes "node 'x' (function 'f' defined at src:line)", long names
 * shortened. */
static void push_node_desc(lua_State *L, ffl_ctx *ctx, uint32_t id, int fidx) {
    lua_Debug ar;
    const char *f = ff_graph_func_name(ctx->graph, ff_graph_fid(ctx->graph, id));
    const char *fname = ffl_push_short(L, f ? f : "?", f ? strlen(f) : 1);
    const char *name = push_short_name(L, ctx, id); // [fname, name]
    lua_pushvalue(L, fidx);
    if (lua_isfunction(L, -1)) {
        lua_getinfo(L, ">S", &ar);
        if (ar.what[0] == 'C')
            lua_pushfstring(L, "node '%s' (function '%s', a C function)", name, fname);
        else
            lua_pushfstring(L, "node '%s' (function '%s' defined at %s:%d)", name, fname,
                            ar.short_src, ar.linedefined);
    } else {
        lua_pop(L, 1);
        lua_pushfstring(L, "node '%s' (function '%s')", name, fname);
    }
    lua_replace(L, -3);
    lua_pop(L, 1);
}

/* --- runs inside runs ---------------------------------------------------- */

/* A node's function (or its plugin) may run another workflow: that is a
 * run nested in the first, on the same C stack. Running again a node whose
 * code is running is refused (it would recurse until the C stack runs
 * out); other nested runs work. A failure that comes out of a nested run
 * is not wrapped again with a traceback by each run outside it: the
 * message keeps the outermost node and the innermost failure. */

/* The node of a run in progress whose code is running and that plan p
 * would run again, or UINT32_MAX; *plugin says whether it is its plugin. */
static uint32_t reentered(const ffl_ctx *ctx, const ff_plan *p, int *plugin) {
    for (const struct ffl_run *a = ctx->running; a != NULL; a = a->outer) {
        uint32_t pos = a->current != UINT32_MAX ? a->current : a->plugin;
        if (pos == UINT32_MAX)
            continue;
        uint32_t id = a->plan->order[pos];
        if (ff_plan_pos(p, id) != UINT32_MAX) {
            *plugin = a->current == UINT32_MAX;
            return id;
        }
    }
    return UINT32_MAX;
}

/* Refuses run r (its plan made, nothing else yet) when it would run a node
 * whose code is running: raises, the plan released. */
static void run_check(lua_State *L, struct ffl_run *r) {
    ffl_ctx *ctx = r->ctx;
    int plugin = 0;
    uint32_t id = ctx->running != NULL ? reentered(ctx, r->plan, &plugin) : UINT32_MAX;
    if (id != UINT32_MAX) {
        ff_plan_release(ctx->graph, r->plan); /* the leaves keep id alive */
        r->plan = NULL;
        lua_pushfstring(L, "%snode '%s' cannot run a workflow that includes it",
                        plugin ? "the plugin of " : "", push_short_name(L, ctx, id));
        lua_error(L); /* no position: the call is in the backend's Lua code */
    }
}

/* Makes r the innermost run in progress, right before its protected part
 * (nothing may raise between this and run_end). */
static void run_begin(struct ffl_run *r) {
    r->outer = r->ctx->running;
    r->ctx->running = r;
}

/* Ends run r, with its error at the top when failed. A failure of a run
 * that was inside another is remembered for the handler of the run
 * outside (push_nested_failure); once no run is left, nothing is. */
static void run_end(lua_State *L, struct ffl_run *r, int failed) {
    ffl_ctx *ctx = r->ctx;
    ctx->running = r->outer;
    luaL_unref(L, LUA_REGISTRYINDEX, ctx->nested_err);
    luaL_unref(L, LUA_REGISTRYINDEX, ctx->nested_core);
    ctx->nested_err = ctx->nested_core = LUA_NOREF;
    if (failed && ctx->running != NULL) {
        lua_pushvalue(L, -1);
        ctx->nested_err = luaL_ref(L, LUA_REGISTRYINDEX);
        if (r->core != LUA_NOREF) { /* it carried a failure from further in */
            ctx->nested_core = r->core;
            ctx->nested_levels = r->levels;
            r->core = LUA_NOREF;
        } else {
            lua_pushvalue(L, -1);
            ctx->nested_core = luaL_ref(L, LUA_REGISTRYINDEX);
            ctx->nested_levels = 1;
        }
    }
    luaL_unref(L, LUA_REGISTRYINDEX, r->core);
    r->core = LUA_NOREF;
}

/* For r's message handler: when the error at idx is what a run nested in r
 * failed with, pushes the innermost failure it carries ("in a run nested
 * N deep, " first when runs between are left out), keeps it in r for the
 * runs outside, and returns 1; else returns 0 and pushes nothing. */
static int push_nested_failure(lua_State *L, struct ffl_run *r, int idx) {
    ffl_ctx *ctx = r->ctx;
    if (ctx->nested_err == LUA_NOREF)
        return 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, ctx->nested_err);
    int same = lua_rawequal(L, -1, idx);
    lua_pop(L, 1);
    if (!same)
        return 0;
    if (lua_rawgeti(L, LUA_REGISTRYINDEX, ctx->nested_core) != LUA_TSTRING) {
        lua_pop(L, 1);
        return 0;
    }
    lua_pushvalue(L, -1); // [core, core]
    luaL_unref(L, LUA_REGISTRYINDEX, r->core);
    r->core = luaL_ref(L, LUA_REGISTRYINDEX);
    r->levels = ctx->nested_levels + 1;
    if (ctx->nested_levels > 1) {
        lua_pushfstring(L, "in a run nested %d deep, %s", ctx->nested_levels, lua_tostring(L, -1));
        lua_remove(L, -2);
    }
    return 1;
}

/* Message handler of a plugin's call: as ffl_traceback, but a failure of
 * a nested run is not wrapped again. Upvalue 1: the run. */
static int plugin_msgh(lua_State *L) {
    if (push_nested_failure(L, lua_touserdata(L, lua_upvalueindex(1)), 1))
        return 1;
    return ffl_traceback(L);
}

static void run_plugins(lua_State *L, struct ffl_run *r) {
    ff_plan *p = r->plan;
    ff_graph *g = r->ctx->graph;
    lua_pushlightuserdata(L, r);
    lua_pushcclosure(L, plugin_msgh, 1); // [msgh]
    int msgh = lua_gettop(L);
    for (uint32_t pos = 0; pos < p->n; pos++) {
        int32_t ph = ff_graph_slot(g, p->order[pos], FF_SLOT_PLUGINS);
        if (ph == FF_NOHANDLE)
            continue;
        lua_rawgeti(L, LUA_REGISTRYINDEX, ph); // [msgh, plugin]
        static const char *const steps[] = {"local_initialize", "remote_initialize"};
        r->plugin = pos;
        for (int s = 0; s < 2; s++) {
            lua_getfield(L, -1, steps[s]);
            lua_pushvalue(L, -2);
            if (lua_pcall(L, 1, s, msgh) != LUA_OK) {
                r->plugin = UINT32_MAX;
                push_short_name(L, r->ctx, p->order[pos]);
                lua_pushfstring(L, "plugin of node '%s': %s failed: %s", lua_tostring(L, -1),
                                steps[s], lua_tostring(L, -2));
                lua_error(L);
            }
        }
        r->plugin = UINT32_MAX;
        if (!lua_isnil(L, -1) && !is_callable(L, -1)) {
            push_short_name(L, r->ctx, p->order[pos]);
            luaL_error(L, "plugin of node '%s': remote_initialize returned a %s, not a function",
                       lua_tostring(L, -1), luaL_typename(L, -2));
        }
        lua_rawseti(L, r->pre, (lua_Integer)pos + 1);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

/* The function a node runs: its replacement, or its factory's. */
static int32_t node_func(ff_graph *g, uint32_t id) {
    int32_t fh = ff_graph_slot(g, id, FF_SLOT_FUNC);
    return fh != FF_NOHANDLE ? fh : ff_graph_func_handle(g, ff_graph_fid(g, id));
}


/* --- fingerprints and storage -------------------------------------------- */

#define NAME_BUF 256

/* The name of the node at pos, from the run's names. */
static const char *pos_name(struct ffl_run *r, uint32_t pos, size_t *len) {
    *len = r->name_off[pos + 1] - r->name_off[pos];
    return r->names.p + r->name_off[pos];
}

/* Collects every planned node's name and refuses duplicates: results are
 * stored by name, so two nodes with one name would overwrite each other
 * and load each other's results. A hash set of positions, by XXH3-64.
 * Names the storage cannot hold are refused too, before anything runs. */
static void collect_names(lua_State *L, struct ffl_run *r) {
    ff_plan *p = r->plan;
    if (r->wflen > FF_STORE_WF_MAX)
        luaL_error(L, "workflow '%s': a workflow name in a storage has at most %d bytes",
                   ffl_push_short(L, r->wf, r->wflen), FF_STORE_WF_MAX);
    r->names.n = 0;
    r->name_off[0] = 0;
    for (uint32_t pos = 0; pos < p->n; pos++) {
        for (;;) {
            if (ff_buf_reserve(&r->names, NAME_BUF) != 0)
                luaL_error(L, "not enough memory");
            size_t room = r->names.cap - r->names.n;
            size_t len = ff_graph_name(r->ctx->graph, p->order[pos], r->names.p + r->names.n, room);
            if (len < room) {
                r->names.n += len;
                break;
            }
            if (ff_buf_reserve(&r->names, len + 1) != 0)
                luaL_error(L, "not enough memory");
        }
        r->name_off[pos + 1] = r->names.n;
    }
    size_t cap = 16;
    while (cap < (size_t)p->n * 2)
        cap *= 2;
    uint32_t *set = lua_newuserdatauv(L, cap * sizeof *set, 0);
    memset(set, 0, cap * sizeof *set);
    for (uint32_t pos = 0; pos < p->n; pos++) {
        size_t len, olen;
        const char *nm = pos_name(r, pos, &len);
        if (len > FF_STORE_TASK_MAX)
            luaL_error(L, "node '%s': a node name in a storage has at most %d bytes",
                       ffl_push_short(L, nm, len), FF_STORE_TASK_MAX);
        size_t i = (size_t)XXH3_64bits(nm, len) & (cap - 1);
        for (; set[i] != 0; i = (i + 1) & (cap - 1)) {
            const char *other = pos_name(r, set[i] - 1, &olen);
            if (olen == len && memcmp(other, nm, len) == 0) {
                luaL_error(L, "workflow '%s' has two nodes named '%s': with a storage, node "
                              "names must be distinct (use set_name)",
                           ffl_push_short(L, r->wf, r->wflen), ffl_push_short(L, nm, len));
            }
        }
        set[i] = pos + 1;
    }
    lua_pop(L, 1);
}

/* Raises "<what> of node 'x': <msg at the top>". */
static int node_error(lua_State *L, struct ffl_run *r, uint32_t id, const char *what) {
    const char *msg = lua_tostring(L, -1);
    push_short_name(L, r->ctx, id);
    return luaL_error(L, "%s of node '%s': %s", what, lua_tostring(L, -1), msg);
}

/* FFC_HASH hook: a node handle inside an argument table stands for its
 * fingerprint (and, for an item, the path into the result). */
static int fp_hook(void *ud, ffc_enc *e, lua_State *L, int idx) {
    struct ffl_run *r = ud;
    int is_item;
    ffl_node *n = ctx_test_handle(L, r->ctx, idx, &is_item);
    if (n == NULL)
        return 0;
    uint8_t tag = FFC_TAG_NODE;
    ffc_put_bytes(e, &tag, 1);
    ffc_put_bytes(e, r->fp + (size_t)ff_plan_pos(r->plan, n->id) * FF_FP_LEN, FF_FP_LEN);
    if (is_item) { /* the keys: a key that cannot be encoded fails the fingerprint */
        ff_buf sub = {0};
        ffc_opts o = {FFC_HASH, NULL, NULL, r->modmap};
        lua_getiuservalue(L, idx, 1);
        int rc = ffc_encode(L, -1, &o, &sub);
        if (rc == 0)
            ffc_put_bytes(e, sub.p, sub.n);
        ff_buf_free(&sub);
        if (rc != 0) { // [path, msg]
            lua_remove(L, -2);
            return -1;
        }
        lua_pop(L, 1);
    }
    return 1;
}

/* Appends the FFC_HASH encoding of the value at the top (popped). */
static void fp_value(lua_State *L, struct ffl_run *r, uint32_t id) {
    ffc_opts o = {FFC_HASH, fp_hook, r, r->modmap};
    if (ffc_encode(L, -1, &o, &r->buf) != 0)
        node_error(L, r, id, "fingerprint");
    lua_pop(L, 1);
}

static void fp_bytes(lua_State *L, struct ffl_run *r, const void *p, size_t n) {
    if (ff_buf_reserve(&r->buf, n) != 0)
        luaL_error(L, "not enough memory");
    memcpy(r->buf.p + r->buf.n, p, n);
    r->buf.n += n;
}

/* The digest of a node's function: its bytecode and upvalues, cached per
 * function for the run. */
static void fp_function(lua_State *L, struct ffl_run *r, uint32_t id, uint8_t out[FF_FP_LEN]) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, node_func(r->ctx->graph, id)); // [fn]
    lua_pushvalue(L, -1);
    if (lua_rawget(L, r->fn_cache) == LUA_TSTRING) {
        memcpy(out, lua_tostring(L, -1), FF_FP_LEN);
        lua_pop(L, 2);
        return;
    }
    lua_pop(L, 1);
    size_t start = r->buf.n;
    lua_pushvalue(L, -1);
    fp_value(L, r, id);
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits(r->buf.p + start, r->buf.n - start));
    r->buf.n = start;
    memcpy(out, c.digest, FF_FP_LEN);
    lua_pushlstring(L, (const char *)c.digest, FF_FP_LEN);
    lua_rawset(L, r->fn_cache);
}

/* Fingerprints every planned node, in order (parents first): its function,
 * its arguments (a node argument by the parent's fingerprint) and its
 * plugins' pre-run function. */
static void fingerprint_all(lua_State *L, struct ffl_run *r) {
    ff_plan *p = r->plan;
    lua_newtable(L);
    r->fn_cache = lua_gettop(L);
    ffc_push_modmap(L);
    r->modmap = lua_gettop(L);
    collect_names(L, r);
    for (uint32_t pos = 0; pos < p->n; pos++) {
        uint32_t id = p->order[pos];
        uint8_t fd[FF_FP_LEN];
        fp_function(L, r, id, fd);
        r->buf.n = 0;
        fp_bytes(L, r, "ffn1", 4);
        fp_bytes(L, r, fd, FF_FP_LEN);
        uint32_t nargs;
        const ff_arg *args = ff_graph_args(r->ctx->graph, id, &nargs);
        fp_bytes(L, r, &nargs, sizeof nargs);
        for (uint32_t i = 0; i < nargs; i++) {
            ff_arg a = args[i];
            uint8_t k = (uint8_t)a.kind;
            fp_bytes(L, r, &k, 1);
            switch (a.kind) {
            case FF_ARG_INT:
                fp_bytes(L, r, &a.u.i, sizeof a.u.i);
                break;
            case FF_ARG_NUM:
                fp_bytes(L, r, &a.u.d, sizeof a.u.d);
                break;
            case FF_ARG_NODE:
                fp_bytes(L, r, r->fp + (size_t)ff_plan_pos(p, a.u.node) * FF_FP_LEN, FF_FP_LEN);
                break;
            case FF_ARG_HANDLE:
            case FF_ARG_ITEM:
            case FF_ARG_DEEP:
                lua_rawgeti(L, LUA_REGISTRYINDEX, a.handle);
                fp_value(L, r, id);
                break;
            default:
                break;
            }
            args = ff_graph_args(r->ctx->graph, id, &nargs); /* encoding may run Lua */
        }
        /* Plugins by what they do to this node: the pre-run function
         * remote_initialize made (a seed is one of its upvalues). The
         * plugin object itself is left out: its state after the plugin
         * pass depends on how many nodes share it. */
        if (lua_rawgeti(L, r->pre, (lua_Integer)pos + 1) != LUA_TNIL) {
            fp_bytes(L, r, "plug", 4);
            fp_value(L, r, id);
        } else {
            lua_pop(L, 1);
        }
        XXH128_canonical_t c;
        XXH128_canonicalFromHash(&c, XXH3_128bits(r->buf.p, r->buf.n));
        memcpy(r->fp + (size_t)pos * FF_FP_LEN, c.digest, FF_FP_LEN);
    }
    lua_pop(L, 2);
}

/* A warning that the stored result of task key cannot be used, on
 * stderr, names escaped; the node runs instead. */
static void damaged_note(struct ffl_run *r, const char *key, size_t nl, const char *what,
                         const char *why) {
    char task[160], wf[160];
    fprintf(stderr, "fflua: warning: storage '%s': the stored result of task '%s' of workflow "
                    "'%s' %s (%s); computing it again\n",
            ff_store_path(r->st), ff_text_escape(task, sizeof task, key, nl),
            ff_text_escape(wf, sizeof wf, r->wf, r->wflen), what, why);
}

/* A line of verbose = true about node key. */
static void verbose_note(struct ffl_run *r, const char *key, size_t nl, const char *what) {
    char task[160], wf[160];
    fprintf(stderr, "fflua: workflow '%s': node '%s' %s\n",
            ff_text_escape(wf, sizeof wf, r->wf, r->wflen),
            ff_text_escape(task, sizeof task, key, nl), what);
}

/* Tries to load node pos from the storage into the results. A damaged
 * record, or a damaged part of the file, is a warning: the node runs. */
static int try_load(lua_State *L, struct ffl_run *r, uint32_t pos) {
    size_t nl;
    const char *key = pos_name(r, pos, &nl);
    ff_rec rec;
    int rc = ff_store_get(r->st, r->wf, r->wflen, key, nl, &rec);
    int loaded = 0;
    if (rc == FFLUA_ECHECKSUM || rc == FFLUA_ECORRUPT) {
        r->damaged++;
        damaged_note(r, key, nl, "is damaged", rec.why);
    } else if (rc != 0 && rc != FFLUA_ENOTFOUND) {
        ff_store_read_end(r->st);
        luaL_error(L, "storage '%s': %s", ff_store_path(r->st), ff_store_errmsg(r->st));
    } else if (rc == 0 && (r->cache == CACHE_NAME ||
                           memcmp(rec.fp, r->fp + (size_t)pos * FF_FP_LEN, FF_FP_LEN) == 0)) {
        /* Copied out, and the read transaction ended, before decoding:
         * decoding may run Lua code (a serializer, a finalizer), and no Lua
         * code may run while a read transaction is active (store.c). */
        r->vbuf.n = 0;
        if (ff_buf_reserve(&r->vbuf, rec.len) != 0) {
            ff_store_read_end(r->st);
            luaL_error(L, "not enough memory to load a result of %I bytes", (lua_Integer)rec.len);
        }
        memcpy(r->vbuf.p, rec.val, rec.len);
        ff_store_read_end(r->st);
        if (ffc_decode(L, r->vbuf.p, rec.len, 0) == 0) {
            lua_rawseti(L, r->results, (lua_Integer)pos + 1);
            loaded = 1;
            if (r->verbose)
                verbose_note(r, key, nl, "is read from the storage");
        } else {
            r->damaged++;
            damaged_note(r, key, nl, "cannot be read", lua_tostring(L, -1));
            lua_pop(L, 1);
        }
    } else if (rc == 0 && r->verbose) {
        verbose_note(r, key, nl, "changed since it was stored");
    }
    return loaded;
}

/* Adds one consumer per leaf (the leaves' results are kept to the end). */
static void count_leaves(lua_State *L, ff_plan *p, int lsidx) {
    lua_getiuservalue(L, lsidx, 1);
    lua_Integer n = luaL_len(L, -1);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        int is_item;
        p->consumers[ff_plan_pos(p, test_handle(L, -1, &is_item)->id)]++;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
}

/* Decides, from the leaves down, what runs: a needed node is loaded when
 * the storage has it (same name, and same fingerprint unless cache =
 * "name"), else it runs and its parents are needed. Nodes nobody needs are
 * skipped. Then counts consumers among the nodes that run. */
static void decide(lua_State *L, struct ffl_run *r, int lsidx) {
    ff_plan *p = r->plan;
    ff_graph *g = r->ctx->graph;
    memset(r->act, ACT_SKIP, p->n);
    lua_getiuservalue(L, lsidx, 1);
    lua_Integer nl = luaL_len(L, -1);
    for (lua_Integer i = 1; i <= nl; i++) {
        lua_rawgeti(L, -1, i);
        int is_item;
        r->act[ff_plan_pos(p, test_handle(L, -1, &is_item)->id)] = ACT_NEED;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    for (uint32_t pos = p->n; pos-- > 0;) {
        if (r->act[pos] == ACT_SKIP) {
            r->skipped++;
            continue;
        }
        if (r->cache != CACHE_NONE && try_load(L, r, pos)) {
            r->act[pos] = ACT_LOAD;
            r->loaded++;
            continue;
        }
        r->act[pos] = ACT_RUN;
        uint32_t np;
        const uint32_t *par = ff_graph_parents(g, p->order[pos], &np);
        for (uint32_t j = 0; j < np; j++) {
            uint32_t pp = ff_plan_pos(p, par[j]);
            if (r->act[pp] == ACT_SKIP) /* not yet visited: lower positions */
                r->act[pp] = ACT_NEED;
        }
    }
    ff_store_read_end(r->st);
    memset(p->consumers, 0, sizeof *p->consumers * p->n);
    for (uint32_t pos = 0; pos < p->n; pos++) {
        if (r->act[pos] != ACT_RUN)
            continue;
        uint32_t np;
        const uint32_t *par = ff_graph_parents(g, p->order[pos], &np);
        for (uint32_t j = 0; j < np; j++)
            p->consumers[ff_plan_pos(p, par[j])]++;
    }
    count_leaves(L, p, lsidx);
}

static uint64_t mono_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Stores the result at the top (replacing it by the value read back when
 * always_read is set). */
static void save_result(lua_State *L, struct ffl_run *r, uint32_t pos, uint64_t compute_ns) {
    uint32_t id = r->plan->order[pos];
    r->buf.n = 0;
    if (ffc_encode(L, -1, NULL, &r->buf) != 0)
        node_error(L, r, id, "result");
    size_t nl;
    const char *key = pos_name(r, pos, &nl);
    if (ff_store_put(r->st, r->wf, r->wflen, key, nl, r->fp + (size_t)pos * FF_FP_LEN,
                     compute_ns, r->buf.p, r->buf.n) != 0)
        luaL_error(L, "storage '%s': %s", ff_store_path(r->st), ff_store_errmsg(r->st));
    if (r->always_read) {
        if (ffc_decode(L, r->buf.p, r->buf.n, 0) != 0)
            node_error(L, r, id, "reading back the result");
        lua_replace(L, -2);
    }
}

/* Message handler of a run. An error while a node runs (its plugins'
 * pre-run call, its arguments, its function) becomes "node 'x' (function
 * 'f' defined at ...) failed: <error>" with a traceback (or, for the
 * failure of a run nested in this one, the failure it carries); the hooks
 * hear of the failure. Other errors (the plugin phase) pass as they are. */
static int run_msgh(lua_State *L) {
    struct ffl_run *r = lua_touserdata(L, lua_upvalueindex(1));
    if (r->current == UINT32_MAX && r->leaf != 0) {
        /* Reading a leaf item of a result that does not have it. */
        int leaf = r->leaf;
        r->leaf = 0;
        lua_getiuservalue(L, lua_upvalueindex(2), 1);
        lua_rawgeti(L, -1, leaf);
        lua_pushfstring(L, "cannot read leaf %d (%s): %s", leaf, ffl_push_short_at(L, -1),
                        lua_tostring(L, 1));
        return 1;
    }
    if (r->current == UINT32_MAX)
        return 1;
    ffl_ctx *ctx = r->ctx;
    uint32_t id = r->plan->order[r->current];
    r->current = UINT32_MAX; /* once: an error in here must not recurse */
    if (ctx->hooks.after != NULL) {
        ffl_push_name(L, ctx, id);
        ctx->hooks.after(ctx->hooks_ud, lua_tostring(L, -1), 1);
        lua_pop(L, 1);
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, node_func(ctx->graph, id));
    push_node_desc(L, ctx, id, lua_gettop(L)); // [err, fn, desc]
    if (!push_nested_failure(L, r, 1))
        ffl_traceback(L); // [err, fn, desc, msg]
    lua_pushfstring(L, "%s failed: %s", lua_tostring(L, -2), lua_tostring(L, -1));
    return 1;
}

/* Runs the plan; protected (called through lua_pcall by ffl_leaves_run_local,
 * with run_msgh). Arguments: the run (light userdata) and the LeafSet.
 * Node functions are called with lua_call: one protected region for the
 * whole run instead of one per node; run->current says whom an error
 * belongs to. */
static int run_inner(lua_State *L) {
    struct ffl_run *r = lua_touserdata(L, 1);
    ffl_ctx *ctx = r->ctx;
    ff_plan *p = r->plan;
    lua_createtable(L, (int)p->n, 0);
    r->results = lua_gettop(L);
    lua_newtable(L);
    r->pre = lua_gettop(L);
    run_plugins(L, r);
    int has_pre = lua_next(L, (lua_pushnil(L), r->pre)) != 0;
    lua_settop(L, r->pre);
    if (r->st != NULL) {
        fingerprint_all(L, r);
        decide(L, r, 2);
    } else {
        r->computed = p->n;
    }

    for (uint32_t pos = 0; pos < p->n; pos++) {
        uint32_t id = p->order[pos];
        ff_graph *g = ctx->graph;
        int top = lua_gettop(L);
        uint64_t t0 = 0;
        if (r->act != NULL) {
            if (r->act[pos] != ACT_RUN)
                continue;
            r->computed++;
            t0 = mono_ns();
        }
        r->current = pos;
        if (ctx->hooks.before != NULL) {
            ffl_push_name(L, ctx, id);
            ctx->hooks.before(ctx->hooks_ud, lua_tostring(L, -1));
            lua_pop(L, 1);
        }
        if (has_pre) {
            if (lua_rawgeti(L, r->pre, (lua_Integer)pos + 1) != LUA_TNIL)
                lua_call(L, 0, 0); /* the plugins' pre-run call */
            else
                lua_pop(L, 1);
        }
        lua_rawgeti(L, LUA_REGISTRYINDEX, node_func(g, id));
        uint32_t nargs;
        const ff_arg *args = ff_graph_args(g, id, &nargs);
        luaL_checkstack(L, (int)nargs + LUA_MINSTACK, "too many arguments");
        for (uint32_t i = 0; i < nargs; i++) {
            ff_arg a = args[i];
            r->argn = (int)i + 1;
            push_arg(L, r, &a);
            /* An item or a table with nodes may run Lua code (an __index,
             * a __gc) that adds nodes and moves the node table: fetch the
             * arguments afresh after those. */
            if (a.kind == FF_ARG_ITEM || a.kind == FF_ARG_DEEP)
                args = ff_graph_args(ctx->graph, id, &nargs);
        }
        lua_call(L, (int)nargs, LUA_MULTRET);
        ffl_one_result(L, top);
        if (r->st != NULL) {
            r->current = UINT32_MAX; /* errors here name the node themselves */
            save_result(L, r, pos, mono_ns() - t0);
        }
        lua_rawseti(L, r->results, (lua_Integer)pos + 1);
        lua_settop(L, top);
        if (ctx->hooks.after != NULL) {
            ffl_push_name(L, ctx, id);
            ctx->hooks.after(ctx->hooks_ud, lua_tostring(L, -1), 0);
            lua_pop(L, 1);
        }
        /* Release what no later node needs. */
        g = ctx->graph;
        uint32_t np;
        const uint32_t *par = ff_graph_parents(g, id, &np);
        for (uint32_t j = 0; j < np; j++) {
            uint32_t pp = ff_plan_pos(p, par[j]);
            if (--p->consumers[pp] == 0) {
                lua_pushnil(L);
                lua_rawseti(L, r->results, (lua_Integer)pp + 1);
            }
        }
    }
    r->current = UINT32_MAX;
    return push_leaves(L, r, 2);
}

static int opt_bool(lua_State *L, int t, const char *k, int dflt) {
    int ty = lua_getfield(L, t, k);
    int v = ty == LUA_TNIL ? dflt : lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

/* Reads the storage options of a run from the table at idx. */
static void run_options(lua_State *L, struct ffl_run *r, int idx) {
    if (lua_getfield(L, idx, "storage") == LUA_TNIL) {
        lua_pop(L, 1);
        return;
    }
    r->st = ffl_check_store(L, -1);
    lua_pop(L, 1); /* the caller's table keeps it */
    lua_getfield(L, idx, "workflow");
    r->wf = luaL_checklstring(L, -1, &r->wflen);
    lua_pop(L, 1); /* the workflow object keeps the string */
    lua_getfield(L, idx, "cache");
    if (lua_isnil(L, -1) || (lua_type(L, -1) == LUA_TSTRING &&
                             strcmp(lua_tostring(L, -1), "fingerprint") == 0))
        r->cache = CACHE_FINGERPRINT;
    else if (lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "name") == 0)
        r->cache = CACHE_NAME;
    else if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1))
        r->cache = CACHE_NONE;
    else
        luaL_error(L, "bad option 'cache' (\"fingerprint\", \"name\" or false expected, got %s)",
                   luaL_tolstring(L, -1, NULL));
    lua_pop(L, 1);
    r->always_read = opt_bool(L, idx, "always_read", 0);
    r->verbose = opt_bool(L, idx, "verbose", 0);
}

static void set_count(lua_State *L, int t, const char *k, size_t v) {
    lua_pushinteger(L, (lua_Integer)v);
    lua_setfield(L, t, k);
}

/* ls:run_local([opts]) -> one value per leaf. opts: storage (a Store),
 * workflow (its name there), cache, always_read, verbose; after the run
 * opts also holds the counts computed, loaded, skipped, damaged. */
static int ffl_leaves_run_local(lua_State *L) {
    ffl_check_leaves(L, 1);
    lua_settop(L, 2);
    ffl_ctx *ctx = ffl_ctx_get(L);
    struct ffl_run r = {.ctx = ctx, .current = UINT32_MAX, .plugin = UINT32_MAX, .core = LUA_NOREF};
    if (!lua_isnil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        run_options(L, &r, 2);
    }
    lua_pushlightuserdata(L, &r);
    lua_pushvalue(L, 1);
    lua_pushcclosure(L, run_msgh, 2); // [ls, opts, msgh]
    lua_pushcfunction(L, run_inner);
    lua_pushlightuserdata(L, &r);
    lua_pushvalue(L, 1);
    r.plan = ffl_leaves_plan(L, ctx, 1);
    run_check(L, &r);
    count_leaves(L, r.plan, 1);
    if (r.st != NULL) {
        r.fp = malloc((size_t)r.plan->n * FF_FP_LEN + 1);
        r.act = malloc((size_t)r.plan->n + 1);
        r.name_off = malloc(((size_t)r.plan->n + 1) * sizeof *r.name_off);
        if (r.fp == NULL || r.act == NULL || r.name_off == NULL) {
            free(r.fp);
            free(r.act);
            free(r.name_off);
            ff_plan_release(ctx->graph, r.plan);
            return luaL_error(L, "not enough memory");
        }
    }
    run_begin(&r);
    int status = lua_pcall(L, 2, LUA_MULTRET, 3);
    ctx->L = L;
    ff_plan_release(ctx->graph, r.plan);
    free(r.fp);
    free(r.act);
    free(r.name_off);
    ff_buf_free(&r.buf);
    ff_buf_free(&r.vbuf);
    ff_buf_free(&r.names);
    if (r.st != NULL) {
        /* What was computed is committed even when the run failed. */
        ff_store_read_end(r.st);
        if (ff_store_flush(r.st) != 0 && status == LUA_OK) {
            lua_pushfstring(L, "storage '%s': %s", ff_store_path(r.st), ff_store_errmsg(r.st));
            status = LUA_ERRRUN;
        }
    }
    run_end(L, &r, status != LUA_OK);
    if (lua_istable(L, 2)) {
        set_count(L, 2, "computed", r.computed);
        set_count(L, 2, "loaded", r.loaded);
        set_count(L, 2, "skipped", r.skipped);
        set_count(L, 2, "damaged", r.damaged);
    }
    if (status != LUA_OK)
        return lua_error(L);
    return lua_gettop(L) - 3;
}


/* --- the cluster executor ------------------------------------------------ */

#define SUBMIT_TASKS 4096
#define SUBMIT_BYTES ((size_t)8 << 20)
#define SUBMIT_HDR 64 /* a SUBMIT's header and counts, at most */

/* A run on a cluster: the plugin pass here, then every planned node as a
 * task (function once per distinct function, arguments with references to
 * parents, pre-run function, resources), one SUBMIT, then the leaves'
 * results as they come. See cluster.h for the messages. */
struct crun {
    struct ffl_run r;
    ffl_client *c;
    uint64_t run_id;
    uint32_t cur; /* the node whose arguments are being encoded */
    int fids;     /* stack index: function -> fid */
    int modmap;
    uint64_t nfids;
    int opts; /* stack index of the options table */
    int bad_key; /* an item key that cannot ship (set by cl_hook) */
    ff_buf tasks; /* the SUBMIT being built (freed by the caller, also on errors) */
    /* For a node with many parents: parent id -> slot, open addressing
     * (pairs of id + 1 and slot; cap a power of two, 0 when unused). */
    uint32_t *smap;
    size_t smap_cap;
};

static uint32_t smap_hash(uint32_t id) {
    return id * 2654435761u;
}

/* Builds the slot map of node id's parents when it has many. */
static void cl_slots(lua_State *L, struct crun *x, uint32_t id) {
    uint32_t np;
    const uint32_t *par = ff_graph_parents(x->r.ctx->graph, id, &np);
    if (np <= 8) {
        x->smap_cap = 0;
        return;
    }
    size_t cap = 16;
    while (cap < (size_t)np * 2)
        cap *= 2;
    if (cap > x->smap_cap || x->smap == NULL) {
        uint32_t *m = realloc(x->smap, cap * 2 * sizeof *m);
        if (m == NULL)
            luaL_error(L, "not enough memory");
        x->smap = m;
    }
    x->smap_cap = cap;
    memset(x->smap, 0, cap * 2 * sizeof *x->smap);
    for (uint32_t j = 0; j < np; j++) {
        size_t i = smap_hash(par[j]) & (cap - 1);
        while (x->smap[2 * i] != 0 && x->smap[2 * i] != par[j] + 1)
            i = (i + 1) & (cap - 1);
        if (x->smap[2 * i] == 0) { /* parents are distinct; keep the first */
            x->smap[2 * i] = par[j] + 1;
            x->smap[2 * i + 1] = j;
        }
    }
}

/* FFC_CODE hook: a Node or NodeItem inside a task's arguments is a node
 * tag with the parent's slot in the task's dependency list (and the item's
 * keys). */
static int cl_hook(void *ud, ffc_enc *e, lua_State *L, int idx) {
    struct crun *x = ud;
    int is_item;
    ffl_node *n = ctx_test_handle(L, x->r.ctx, idx, &is_item);
    if (n == NULL)
        return 0;
    uint32_t np, slot = 0;
    if (x->smap_cap > 0) {
        size_t i = smap_hash(n->id) & (x->smap_cap - 1);
        while (x->smap[2 * i] != 0 && x->smap[2 * i] != n->id + 1)
            i = (i + 1) & (x->smap_cap - 1);
        slot = x->smap[2 * i + 1];
    } else {
        const uint32_t *par = ff_graph_parents(x->r.ctx->graph, x->cur, &np);
        while (slot < np && par[slot] != n->id)
            slot++;
    }
    uint8_t tag = FFC_TAG_NODE;
    ffc_put_bytes(e, &tag, 1);
    ffc_put_varint(e, slot);
    if (!is_item) {
        ffc_put_varint(e, 0);
        return 1;
    }
    lua_getiuservalue(L, idx, 1);
    lua_Integer len = luaL_len(L, -1);
    ffc_put_varint(e, (uint64_t)len);
    ff_buf sub = {0};
    ffc_opts o = {FFC_CODE, NULL, NULL, x->modmap};
    for (lua_Integer i = 1; i <= len; i++) {
        /* Keys are encoded apart, so only keys without references (a
         * table or function key would number them on its own). */
        int kt = lua_rawgeti(L, -1, i);
        sub.n = 0;
        if ((kt == LUA_TSTRING || kt == LUA_TNUMBER || kt == LUA_TBOOLEAN) &&
            ffc_encode(L, -1, &o, &sub) == 0) {
            ffc_put_bytes(e, sub.p + 1, sub.n - 1); /* without the version byte */
        } else {
            x->bad_key = 1;
            ffc_put_bytes(e, "", 1); /* nil: the run stops before sending */
        }
        lua_pop(L, 1);
    }
    ff_buf_free(&sub);
    lua_pop(L, 1);
    return 1;
}

/* Raises "node 'x' (function 'f' defined at ...): <what>: <msg at top>". */
static int cl_node_error(lua_State *L, struct crun *x, uint32_t id, const char *what) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, node_func(x->r.ctx->graph, id));
    push_node_desc(L, x->r.ctx, id, lua_gettop(L));
    if (what[0] == '\0')
        return luaL_error(L, "%s: %s", lua_tostring(L, -1), lua_tostring(L, -3));
    return luaL_error(L, "%s: %s: %s", lua_tostring(L, -1), what, lua_tostring(L, -3));
}

/* Pushes "N.N MiB, more than the 256 MiB one message may carry". */
static void push_too_big(lua_State *L, size_t n) {
    char msg[100];
    snprintf(msg, sizeof msg, "%.1f MiB, more than the %d MiB one message may carry",
             (double)n / (1 << 20), (int)(FF_FRAME_MAX >> 20));
    lua_pushstring(L, msg);
}

/* The fid of node id's function, sending the function the first time. */
static uint64_t cl_fid(lua_State *L, struct crun *x, uint32_t id) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, node_func(x->r.ctx->graph, id));
    lua_pushvalue(L, -1);
    if (lua_rawget(L, x->fids) == LUA_TNUMBER) {
        uint64_t fid = (uint64_t)lua_tointeger(L, -1);
        lua_pop(L, 2);
        return fid;
    }
    lua_pop(L, 1);
    uint64_t fid = ++x->nfids;
    ff_buf *b = ffl_client_out(x->c);
    size_t at;
    ff_frame_begin(b, FF_M_FUNC, &at);
    ff_wr_varint(b, x->run_id);
    ff_wr_varint(b, fid);
    size_t lenpos = b->n; /* the code string: varint length + bytes */
    ff_buf code = {0};
    ffc_opts o = {FFC_CODE, NULL, NULL, x->modmap};
    if (ffc_encode(L, -1, &o, &code) != 0) {
        ff_buf_free(&code);
        b->n = at;
        cl_node_error(L, x, id, "its function cannot be shipped");
    }
    b->n = lenpos;
    ff_wr_str(b, code.p, code.n);
    size_t n = code.n;
    ff_buf_free(&code);
    int rc = ff_frame_end(b, at);
    if (rc == -EMSGSIZE) {
        push_too_big(L, n);
        lua_pushfstring(L, "it takes %s", lua_tostring(L, -1));
        cl_node_error(L, x, id, "its function cannot be shipped");
    }
    if (rc != 0)
        luaL_error(L, "not enough memory to send the function of a node (%d MiB)",
                   (int)(n >> 20));
    lua_pushinteger(L, (lua_Integer)fid);
    lua_rawset(L, x->fids);
    return fid;
}

/* Appends the resources a node asks for (its remote args). */
static void cl_resources(lua_State *L, struct crun *x, uint32_t id, ff_buf *b) {
    int32_t h = ff_graph_slot(x->r.ctx->graph, id, FF_SLOT_REMOTE);
    if (h == FF_NOHANDLE) {
        ff_wr_varint(b, 0); /* the default: 1 CPU */
        return;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, h); // [args]
    int t = lua_gettop(L);
    size_t count_at = b->n;
    ff_wr_varint(b, 0);
    uint64_t n = 0;
    int64_t amount;
    if (lua_getfield(L, t, "num_cpus") != LUA_TNIL) {
        if (!lua_isnumber(L, -1) || ff_sched_amount(lua_tonumber(L, -1), &amount) != 0) {
            lua_pushfstring(L, "num_cpus must be a non-negative number with at most 4 decimals");
            cl_node_error(L, x, id, "bad remote args");
        }
        ff_wr_str(b, "CPU", 3);
        ff_wr_varint(b, (uint64_t)amount);
        n++;
    }
    lua_pop(L, 1);
    if (lua_getfield(L, t, "resources") == LUA_TTABLE) {
        int rt = lua_gettop(L);
        lua_pushnil(L);
        while (lua_next(L, rt)) {
            if (lua_type(L, -2) != LUA_TSTRING || !lua_isnumber(L, -1) ||
                ff_sched_amount(lua_tonumber(L, -1), &amount) != 0 ||
                strcmp(lua_tostring(L, -2), "CPU") == 0) {
                lua_pushfstring(L, "resources must map names to non-negative numbers with at "
                                   "most 4 decimals (CPUs go in num_cpus)");
                cl_node_error(L, x, id, "bad remote args");
            }
            size_t len;
            const char *nm = lua_tolstring(L, -2, &len);
            if (ff_res_name_check(nm, len) != 0) {
                lua_pushfstring(L, "resource names must be 1 to %d bytes of text without "
                                   "control characters or backslashes", FF_RES_NAME_MAX);
                cl_node_error(L, x, id, "bad remote args");
            }
            ff_wr_str(b, nm, len);
            ff_wr_varint(b, (uint64_t)amount);
            n++;
            lua_pop(L, 1);
        }
    } else if (!lua_isnil(L, -1)) {
        lua_pushliteral(L, "resources must be a table");
        cl_node_error(L, x, id, "bad remote args");
    }
    lua_settop(L, t - 1);
    /* Patch the count: re-encode it in place (it was one byte, 0). */
    if (n > 0) {
        ff_buf tail = {0};
        ff_wr_fixed(&tail, b->p + count_at + 1, b->n - count_at - 1);
        b->n = count_at;
        ff_wr_varint(b, n);
        ff_wr_fixed(b, tail.p, tail.n);
        if (tail.err != 0)
            b->err = tail.err;
        ff_buf_free(&tail);
    }
}

/* Appends one SUBMIT task for the node at pos. */
static void cl_task(lua_State *L, struct crun *x, uint32_t pos, const uint8_t *leaf, ff_buf *b) {
    ff_plan *p = x->r.plan;
    ffl_ctx *ctx = x->r.ctx;
    uint32_t id = p->order[pos];
    uint64_t fid = cl_fid(L, x, id);
    ff_wr_varint(b, fid);
    ffl_push_name(L, ctx, id);
    size_t nl;
    const char *nm = lua_tolstring(L, -1, &nl);
    ff_wr_str(b, nm, nl);
    lua_pop(L, 1);
    ff_wr_varint(b, leaf[pos]);
    uint32_t np;
    const uint32_t *par = ff_graph_parents(ctx->graph, id, &np);
    ff_wr_varint(b, np);
    for (uint32_t j = 0; j < np; j++)
        ff_wr_varint(b, ff_plan_pos(p, par[j]));
    /* The arguments as a sequence with n. */
    uint32_t nargs;
    const ff_arg *args = ff_graph_args(ctx->graph, id, &nargs);
    lua_createtable(L, (int)nargs, 1);
    int t = lua_gettop(L);
    for (uint32_t i = 0; i < nargs; i++) {
        ff_arg a = args[i];
        if (a.kind == FF_ARG_NODE)
            ffl_push_node(L, ctx, a.u.node);
        else if (a.kind == FF_ARG_ITEM || a.kind == FF_ARG_DEEP || a.kind == FF_ARG_HANDLE)
            lua_rawgeti(L, LUA_REGISTRYINDEX, a.handle);
        else
            push_arg(L, &x->r, &a);
        lua_rawseti(L, t, (lua_Integer)i + 1);
        args = ff_graph_args(ctx->graph, id, &nargs);
    }
    lua_pushinteger(L, nargs);
    lua_setfield(L, t, "n");
    ff_buf enc = {0};
    x->cur = id;
    cl_slots(L, x, id);
    ffc_opts o = {FFC_CODE | FFC_ARGS, cl_hook, x, x->modmap};
    x->bad_key = 0;
    if (ffc_encode(L, t, &o, &enc) != 0 || x->bad_key) {
        ff_buf_free(&enc);
        if (x->bad_key)
            lua_pushliteral(L, "an item key (node[k]) must be a string, a number or a boolean");
        cl_node_error(L, x, id, "its arguments cannot be shipped");
    }
    ff_wr_str(b, enc.p, enc.n);
    enc.n = 0;
    lua_settop(L, t - 1);
    if (lua_rawgeti(L, x->r.pre, (lua_Integer)pos + 1) != LUA_TNIL) {
        if (ffc_encode(L, -1, &o, &enc) != 0) {
            ff_buf_free(&enc);
            cl_node_error(L, x, id, "its plugins' pre-run function cannot be shipped");
        }
    }
    lua_pop(L, 1);
    ff_wr_str(b, enc.p, enc.n);
    ff_buf_free(&enc);
    cl_resources(L, x, id, b);
}

/* Sends the SUBMIT of tasks first .. first + count - 1: the first n bytes
 * of x->tasks. */
static void cl_submit(lua_State *L, struct crun *x, lua_Integer maxp, uint32_t first,
                      uint32_t count, size_t n) {
    ff_buf *b = ffl_client_out(x->c);
    size_t at;
    ff_frame_begin(b, FF_M_SUBMIT, &at);
    ff_wr_varint(b, x->run_id);
    ff_wr_varint(b, (uint64_t)maxp);
    ff_wr_varint(b, x->r.plan->n);
    ff_wr_varint(b, first);
    ff_wr_varint(b, count);
    ff_wr_fixed(b, x->tasks.p, n);
    if (ff_frame_end(b, at) != 0) /* parts are made to fit: no memory */
        luaL_error(L, "not enough memory to send the run's tasks");
    if (ffl_client_flush(x->c) != 0)
        luaL_error(L, "%s", ffl_client_error(x->c));
}

/* Protected: args (crun light userdata, LeafSet, options). */
static int cluster_inner(lua_State *L) {
    struct crun *x = lua_touserdata(L, 1);
    x->opts = 3;
    struct ffl_run *r = &x->r;
    ff_plan *p = r->plan;
    lua_createtable(L, (int)p->n, 0);
    r->results = lua_gettop(L);
    lua_newtable(L);
    r->pre = lua_gettop(L);
    run_plugins(L, r);
    lua_newtable(L);
    x->fids = lua_gettop(L);
    ffc_push_modmap(L);
    x->modmap = lua_gettop(L);
    /* Leaves. */
    uint8_t *leaf = lua_newuserdatauv(L, p->n + 1, 0);
    memset(leaf, 0, p->n + 1);
    lua_getiuservalue(L, 2, 1);
    lua_Integer nl = luaL_len(L, -1);
    for (lua_Integer i = 1; i <= nl; i++) {
        lua_rawgeti(L, -1, i);
        int is_item;
        leaf[ff_plan_pos(p, test_handle(L, -1, &is_item)->id)] = 1;
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    /* Functions (FUNC frames) and tasks, in SUBMITs of up to SUBMIT_TASKS
     * tasks or about SUBMIT_BYTES, each sent as soon as it is encoded (the
     * head reads one while the next is encoded; it starts the run once
     * every part is there, so a node that cannot be encoded stops the run
     * before anything ran). */
    lua_getfield(L, x->opts, "max_pending_tasks");
    lua_Integer maxp = lua_isnil(L, -1) ? 0 : luaL_checkinteger(L, -1);
    lua_pop(L, 1);
    if (maxp < 0)
        luaL_error(L, "bad option 'max_pending_tasks' (a positive integer expected)");
    if (p->n > FF_RUN_MAX_TASKS)
        luaL_error(L, "cannot run workflow: it has %d nodes, more than the %d a run on a "
                      "cluster may have", (int)p->n, (int)FF_RUN_MAX_TASKS);
    uint32_t first = 0;
    for (uint32_t pos = 0; pos < p->n; pos++) {
        size_t start = x->tasks.n;
        cl_task(L, x, pos, leaf, &x->tasks);
        if (x->tasks.err != 0)
            luaL_error(L, "not enough memory to send the run's tasks");
        size_t one = x->tasks.n - start;
        if (one + SUBMIT_HDR > FF_FRAME_MAX) {
            push_too_big(L, one);
            lua_pushfstring(L, "its arguments take %s: pass large inputs through a storage or "
                               "a file", lua_tostring(L, -1));
            cl_node_error(L, x, p->order[pos], "");
        }
        if (start > 0 && x->tasks.n + SUBMIT_HDR > FF_FRAME_MAX) {
            /* This task does not fit with the part so far: that goes first. */
            cl_submit(L, x, maxp, first, pos - first, start);
            memmove(x->tasks.p, x->tasks.p + start, one);
            x->tasks.n = one;
            first = pos;
        }
        uint32_t count = pos + 1 - first;
        if (count < SUBMIT_TASKS && x->tasks.n < SUBMIT_BYTES && pos + 1 < p->n)
            continue;
        cl_submit(L, x, maxp, first, count, x->tasks.n);
        x->tasks.n = 0;
        first = pos + 1;
    }
    /* Results. */
    for (;;) {
        int type;
        const char *msg;
        size_t n;
        int rc = ffl_client_recv(x->c, &type, &msg, &n, -1);
        if (rc != 0)
            return luaL_error(L, "%s", ffl_client_error(x->c));
        ff_rd rd;
        ff_rd_init(&rd, msg, n);
        if (type == FF_M_DONE) {
            uint64_t run = ff_rd_varint(&rd), i = ff_rd_varint(&rd), st = ff_rd_varint(&rd);
            size_t len;
            const char *bytes = ff_rd_str(&rd, &len);
            if (run != x->run_id && rd.err == 0)
                continue; /* left over from an earlier run on this connection */
            if (ff_rd_done(&rd) != 0 || i >= p->n)
                return luaL_error(L, "the head sent a malformed result");
            uint32_t id = p->order[i];
            if (st == 2)
                return luaL_error(L, "cannot run workflow: %s", lua_pushlstring(L, bytes, len));
            if (st != 0) {
                lua_pushlstring(L, bytes, len);
                lua_rawgeti(L, LUA_REGISTRYINDEX, node_func(r->ctx->graph, id));
                push_node_desc(L, r->ctx, id, lua_gettop(L));
                return luaL_error(L, "%s failed: %s", lua_tostring(L, -1), lua_tostring(L, -3));
            }
            if (ffc_decode_code(L, bytes, len, NULL, NULL) != 0)
                return luaL_error(L, "the result of a leaf cannot be read: %s", lua_tostring(L, -1));
            lua_rawseti(L, r->results, (lua_Integer)i + 1);
        } else if (type == FF_M_RUN_END) {
            uint64_t run = ff_rd_varint(&rd), np = ff_rd_varint(&rd);
            if (run != x->run_id && rd.err == 0)
                continue;
            if (rd.err || np > n)
                return luaL_error(L, "the head sent a malformed run end");
            lua_createtable(L, (int)np, 0);
            int names = lua_gettop(L);
            for (uint64_t k = 0; k < np; k++) {
                size_t len;
                const char *s = ff_rd_str(&rd, &len);
                lua_pushlstring(L, s, len);
                lua_rawseti(L, names, (lua_Integer)k + 1);
            }
            lua_createtable(L, 0, (int)p->n);
            for (uint32_t i = 0; i < p->n; i++) {
                uint64_t place = ff_rd_varint(&rd);
                ffl_push_name(L, r->ctx, p->order[i]);
                lua_rawgeti(L, names, (lua_Integer)place);
                lua_rawset(L, -3);
            }
            if (ff_rd_done(&rd) != 0)
                return luaL_error(L, "the head sent a malformed run end");
            lua_setfield(L, x->opts, "placement");
            lua_pop(L, 1);
            break;
        } else if (type == FF_M_BYE) {
            return luaL_error(L, "the head at %s stopped during the run",
                              ffl_client_address(x->c));
        } else {
            return luaL_error(L, "unexpected message %d from the head", type);
        }
    }
    if (lua_getfield(L, x->opts, "return_results") == LUA_TBOOLEAN && !lua_toboolean(L, -1))
        return 0;
    lua_pop(L, 1);
    return push_leaves(L, r, 2);
}

/* ls:run_cluster(client, opts) -> one value per leaf (none when
 * opts.return_results == false); opts.placement gets node name -> worker. */
static int ffl_leaves_run_cluster(lua_State *L) {
    ffl_check_leaves(L, 1);
    ffl_client *c = ffl_check_client(L, 2);
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_settop(L, 3);
    ffl_ctx *ctx = ffl_ctx_get(L);
    struct crun x = {.r = {.ctx = ctx, .current = UINT32_MAX, .plugin = UINT32_MAX,
                           .core = LUA_NOREF},
                     .c = c};
    lua_getfield(L, 3, "run_id");
    x.run_id = (uint64_t)luaL_checkinteger(L, -1);
    lua_pop(L, 1);
    lua_pushlightuserdata(L, &x.r);
    lua_pushvalue(L, 1);
    lua_pushcclosure(L, run_msgh, 2); // [ls, client, opts, msgh]
    lua_pushcfunction(L, cluster_inner);
    lua_pushlightuserdata(L, &x);
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 3);
    x.r.plan = ffl_leaves_plan(L, ctx, 1);
    run_check(L, &x.r);
    count_leaves(L, x.r.plan, 1);
    run_begin(&x.r);
    int status = lua_pcall(L, 3, LUA_MULTRET, 4);
    ctx->L = L;
    free(x.smap);
    ff_buf_free(&x.tasks);
    ff_plan_release(ctx->graph, x.r.plan);
    run_end(L, &x.r, status != LUA_OK);
    if (status != LUA_OK) {
        /* Tell the head to drop the run (it may be running still). */
        ff_buf *b = ffl_client_out(c);
        size_t at;
        b->n = 0;
        ff_frame_begin(b, FF_M_RUN_END, &at);
        ff_wr_varint(b, x.run_id);
        ff_frame_end(b, at);
        ffl_client_flush(c);
        return lua_error(L);
    }
    return lua_gettop(L) - 4;
}

/* --- registration -------------------------------------------------------- */

static const luaL_Reg node_methods[] = {
    {"set_name", ffl_node_set_name},
    {"get_name", ffl_node_get_name},
    {"name", ffl_node_get_name},
    {"item", ffl_node_item},
    {NULL, NULL},
};

/* The LeafSet's own methods; queries add theirs (ffl_leaves_add_methods). */
static const luaL_Reg leaves_methods[] = {
    {"set_slot", ffl_leaves_set_slot},
    {"get_slot", ffl_leaves_get_slot},
    {"leaves", ffl_leaves_leaves},
    {"run_local", ffl_leaves_run_local},
    {"run_cluster", ffl_leaves_run_cluster},
    {NULL, NULL},
};

const luaL_Reg ffl_graph_funcs[] = {
    {"factory", ffl_core_factory},
    {"factory_name", ffl_core_factory_name},
    {"apply", ffl_core_apply},
    {"is_node", ffl_core_is_node},
    {"graph_size", ffl_core_graph_size},
    {"leaf_set", ffl_core_leaf_set},
    {NULL, NULL},
};

void ffl_graph_open(lua_State *L) {
    /* functionfuse.Node: methods first, any other key is an item. */
    luaL_newmetatable(L, NODE_MT);
    luaL_newlib(L, node_methods);
    lua_pushcclosure(L, ffl_node_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, ffl_handle_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, ffl_node_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushcfunction(L, ffl_node_eq);
    lua_setfield(L, -2, "__eq");
    lua_pushliteral(L, NODE_MT);
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);

    luaL_newmetatable(L, ITEM_MT);
    lua_pushcfunction(L, ffl_item_index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, ffl_handle_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, ffl_node_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);

    luaL_newmetatable(L, LEAVES_MT);
    luaL_newlib(L, leaves_methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);

    ffl_ctx *ctx = ffl_ctx_get(L); /* the engine exists from the first require */
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
