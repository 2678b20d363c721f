/*
 * lrun.c: what the two executors share (lrun.h): the state of a run from
 * its plan to its end, runs inside runs, the plugin pass, node arguments
 * with parents' results in place, the leaves' results, and the message
 * handler that names the node an error belongs to.
 *
 * The local executor (llocal.c) and the cluster driver (ldriver.c) each
 * keep a struct ffl_run on their C stack and go through the same steps:
 * ffl_run_plan, ffl_run_push_msgh, ffl_run_begin, a protected call that
 * starts with ffl_run_plugins, then ffl_run_release and ffl_run_end.
 */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "codec.h"
#include "graph.h"
#include "lgraph.h"
#include "lrun.h"
#include "lutil.h"

/* --- arguments and results ------------------------------------------------ */

static void push_result(lua_State *L, struct ffl_run *r, int idx);

/* Pushes value with node handles replaced by their results, copying tables
 * that hold them (memo: stack index of a table old -> copy); depth is the
 * number of tables around it. The graph made these tables when the node
 * was made (lgraph.c copies a table argument with nodes), so the limit
 * holds; it is checked again all the same, as the walk is recursive. */
static void push_substituted(lua_State *L, struct ffl_run *r, int idx, int memo, int depth,
                             const struct ffl_walk *w) {
    idx = lua_absindex(L, idx);
    int is_item;
    if (ffl_test_handle(L, r->ctx, idx, &is_item) != NULL) {
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
        ffl_arg_depth_error(L, ff_graph_func_name(g, ff_graph_fid(g, id)), r->argn, w);
    }
    luaL_checkstack(L, 8, "argument tables nested too deep");
    lua_pushvalue(L, idx);
    if (lua_rawget(L, memo) != LUA_TNIL)
        return; /* shared or cyclic: the same copy */
    lua_pop(L, 1);
    lua_newtable(L); /* [copy] */
    int copy = lua_gettop(L);
    lua_pushvalue(L, idx);
    lua_pushvalue(L, copy);
    lua_rawset(L, memo);
    lua_pushnil(L);
    while (lua_next(L, idx)) { /* [copy, k, v] */
        struct ffl_walk step = {lua_gettop(L) - 1, w};
        push_substituted(L, r, -2, memo, depth + 1, &step); /* [copy, k, v, k'] */
        push_substituted(L, r, -2, memo, depth + 1, &step); /* [copy, k, v, k', v'] */
        lua_rawset(L, copy);                                /* [copy, k, v] */
        lua_pop(L, 1);
    }
    if (lua_getmetatable(L, idx))
        lua_setmetatable(L, copy);
}

/* Pushes the result the handle at idx stands for: a node's result or a
 * field of it (indexing may run metamethods of the result). */
static void push_result(lua_State *L, struct ffl_run *r, int idx) {
    int is_item;
    ffl_node *n = ffl_test_handle(L, r->ctx, idx, &is_item);
    uint32_t pos = ff_plan_pos(r->plan, n->id);
    if (r->current != UINT32_MAX && (pos == UINT32_MAX || pos >= r->current)) {
        /* Arguments only name parents, which come first: this is a
         * reference that escaped its node (a stale one) or a node of
         * another workflow held in a value. */
        ff_graph *g = r->ctx->graph;
        uint32_t id = r->plan->order[r->current];
        ffl_push_short_name(L, r->ctx, id);
        luaL_error(L,
                   "argument #%d of node '%s' (function '%s') holds a node that is not one of its "
                   "parents: pass nodes as arguments when the node is made",
                   r->argn, lua_tostring(L, -1), ff_graph_func_name(g, ff_graph_fid(g, id)));
    }
    lua_rawgeti(L, r->results, (lua_Integer)pos + 1);
    if (!is_item)
        return;
    lua_getiuservalue(L, idx, 1); /* [value, path] */
    lua_Integer len = luaL_len(L, -1);
    lua_insert(L, -2); /* [path, value] */
    for (lua_Integer i = 1; i <= len; i++) {
        lua_rawgeti(L, -2, i); /* [path, value, key] */
        lua_gettable(L, -2);   /* [path, value, field] */
        lua_remove(L, -2);
    }
    lua_remove(L, -2);
}

void ffl_run_push_arg(lua_State *L, struct ffl_run *r, const ff_arg *a) {
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
        lua_newtable(L); /* [memo] */
        lua_rawgeti(L, LUA_REGISTRYINDEX, a->handle);
        push_substituted(L, r, -1, lua_gettop(L) - 1, 0, NULL); /* [memo, orig, copy] */
        lua_replace(L, -3);
        lua_pop(L, 1);
        break;
    }
}

int ffl_run_push_leaves(lua_State *L, struct ffl_run *r, int lsidx) {
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

const char *ffl_run_push_desc(lua_State *L, ffl_ctx *ctx, uint32_t id) {
    lua_Debug ar;
    const char *f = ff_graph_func_name(ctx->graph, ff_graph_fid(ctx->graph, id));
    const char *fname = ffl_push_short(L, f ? f : "?", f ? strlen(f) : 1);
    const char *name = ffl_push_short_name(L, ctx, id); /* [fname, name] */
    lua_rawgeti(L, LUA_REGISTRYINDEX, ffl_run_func(ctx->graph, id));
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
    return lua_tostring(L, -1);
}

/* --- runs inside runs ----------------------------------------------------- */

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
 * whose code is running: raises, what the plan made released. */
static void run_check(lua_State *L, struct ffl_run *r) {
    ffl_ctx *ctx = r->ctx;
    int plugin = 0;
    uint32_t id = ctx->running != NULL ? reentered(ctx, r->plan, &plugin) : UINT32_MAX;
    if (id != UINT32_MAX) {
        ffl_run_release(r); /* the leaves keep id alive */
        lua_pushfstring(L, "%snode '%s' cannot run a workflow that includes it",
                        plugin ? "the plugin of " : "", ffl_push_short_name(L, ctx, id));
        lua_error(L); /* no position: the call is in the backend's Lua code */
    }
}

void ffl_run_begin(struct ffl_run *r) {
    r->outer = r->ctx->running;
    r->ctx->running = r;
}

void ffl_run_end(lua_State *L, struct ffl_run *r, int failed) {
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
    int t = lua_rawgeti(L, LUA_REGISTRYINDEX, ctx->nested_core); /* [core] */
    if (t == LUA_TTABLE && ffl_is_run_error(L, -1)) {
        lua_pushvalue(L, -1);
        lua_getfield(L, -1, "message"); /* [core, core, text] */
        lua_replace(L, -2);
        lua_insert(L, -2); /* [text, core] */
    } else if (t == LUA_TSTRING) {
        lua_pushvalue(L, -1); /* [text, core] */
    } else {
        lua_pop(L, 1);
        return 0;
    }
    luaL_unref(L, LUA_REGISTRYINDEX, r->core);
    r->core = luaL_ref(L, LUA_REGISTRYINDEX); /* [text] */
    r->levels = ctx->nested_levels + 1;
    if (ctx->nested_levels > 1) {
        lua_pushfstring(L, "in a run nested %d deep, %s", ctx->nested_levels, lua_tostring(L, -1));
        lua_remove(L, -2);
    }
    return 1;
}

/* --- planning, plugins, the message handler ------------------------------- */

void ffl_run_count_leaves(struct ffl_run *r) {
    for (uint32_t i = 0; i < r->nleaves; i++)
        r->plan->consumers[r->leaf_pos[i]]++;
}

void ffl_run_plan(lua_State *L, struct ffl_run *r, int lsidx) {
    r->plan = ffl_leaves_plan(L, r->ctx, lsidx, &r->leaf_pos, &r->nleaves);
    run_check(L, r);
    ffl_run_count_leaves(r);
}

void ffl_run_release(struct ffl_run *r) {
    if (r->plan != NULL)
        ff_plan_release(r->ctx->graph, r->plan);
    r->plan = NULL;
    free(r->leaf_pos);
    r->leaf_pos = NULL;
    r->nleaves = 0;
}

/* Message handler of a plugin's call: as ffl_traceback, but a failure of
 * a nested run is not wrapped again. Upvalue 1: the run. */
static int plugin_msgh(lua_State *L) {
    if (push_nested_failure(L, lua_touserdata(L, lua_upvalueindex(1)), 1))
        return 1;
    return ffl_traceback(L);
}

/* Pushes a copy of the value at idx for this run's plugin pass: tables are
 * copied (their metatables shared), shared tables and cycles stay shared
 * through memo (table -> copy); other values are pushed as they are. */
static void push_plugin_copy(lua_State *L, struct ffl_run *r, int idx, int memo, int depth,
                             uint32_t pos) {
    idx = lua_absindex(L, idx);
    if (lua_type(L, idx) != LUA_TTABLE) {
        lua_pushvalue(L, idx);
        return;
    }
    lua_pushvalue(L, idx);
    if (lua_rawget(L, memo) != LUA_TNIL)
        return;
    lua_pop(L, 1);
    if (depth >= FFC_MAX_DEPTH)
        luaL_error(L, "plugin of node '%s': tables nested more than %d levels deep",
                   ffl_push_short_name(L, r->ctx, r->plan->order[pos]), FFC_MAX_DEPTH);
    luaL_checkstack(L, 8, "plugin tables nested too deep");
    lua_newtable(L); /* [copy] */
    int copy = lua_gettop(L);
    lua_pushvalue(L, idx);
    lua_pushvalue(L, copy);
    lua_rawset(L, memo);
    lua_pushnil(L);
    while (lua_next(L, idx)) {                            /* [copy, k, v] */
        push_plugin_copy(L, r, -2, memo, depth + 1, pos); /* [copy, k, v, k'] */
        push_plugin_copy(L, r, -2, memo, depth + 1, pos); /* [copy, k, v, k', v'] */
        lua_rawset(L, copy);                              /* [copy, k, v] */
        lua_pop(L, 1);
    }
    if (lua_getmetatable(L, idx))
        lua_setmetatable(L, copy);
}

/* The registry key of the name of the node whose plugin the plugin pass
 * is calling (unset between calls). */
#define PLUGIN_NODE_KEY "functionfuse.plugin_node"

/* core.plugin_node() -> the name of the node whose plugin's
 * local_initialize or remote_initialize is running, or nil: a plugin
 * learns which node it serves. Stack effect: +1. */
static int ffl_run_plugin_node(lua_State *L) {
    lua_getfield(L, LUA_REGISTRYINDEX, PLUGIN_NODE_KEY);
    return 1;
}

const luaL_Reg ffl_run_funcs[] = {
    {"plugin_node", ffl_run_plugin_node},
    {NULL, NULL},
};

void ffl_run_plugins(lua_State *L, struct ffl_run *r) {
    ff_plan *p = r->plan;
    ff_graph *g = r->ctx->graph;
    lua_createtable(L, (int)p->n, 0);
    r->results = lua_gettop(L);
    lua_newtable(L);
    r->pre = lua_gettop(L);
    lua_newtable(L); /* the plugins' copies for this run: original -> copy */
    int memo = lua_gettop(L);
    lua_pushlightuserdata(L, r);
    lua_pushcclosure(L, plugin_msgh, 1); /* [results, pre, memo, msgh] */
    int msgh = lua_gettop(L);
    for (uint32_t pos = 0; pos < p->n; pos++) {
        int32_t ph = ff_graph_slot(g, p->order[pos], FF_SLOT_PLUGINS);
        if (ph == FF_NOHANDLE)
            continue;
        /* Every run starts from the plugins as they were attached: the
         * pass works on a copy made for this run, so what local_initialize
         * changes (a RandomStatePlugin's seed) is gone when the run ends. */
        lua_rawgeti(L, LUA_REGISTRYINDEX, ph);
        push_plugin_copy(L, r, -1, memo, 0, pos);
        lua_remove(L, -2); /* [.., msgh, plugin] */
        static const char *const steps[] = {"local_initialize", "remote_initialize"};
        r->plugin = pos;
        ffl_push_name(L, r->ctx, p->order[pos]); /* core.plugin_node() answers it */
        lua_setfield(L, LUA_REGISTRYINDEX, PLUGIN_NODE_KEY);
        for (int s = 0; s < 2; s++) {
            lua_getfield(L, -1, steps[s]);
            lua_pushvalue(L, -2);
            if (lua_pcall(L, 1, s, msgh) != LUA_OK) {
                r->plugin = UINT32_MAX;
                lua_pushnil(L);
                lua_setfield(L, LUA_REGISTRYINDEX, PLUGIN_NODE_KEY);
                ffl_push_short_name(L, r->ctx, p->order[pos]);
                lua_pushfstring(L, "plugin of node '%s': %s failed: %s", lua_tostring(L, -1),
                                steps[s], lua_tostring(L, -2));
                lua_error(L);
            }
        }
        r->plugin = UINT32_MAX;
        lua_pushnil(L);
        lua_setfield(L, LUA_REGISTRYINDEX, PLUGIN_NODE_KEY);
        if (!lua_isnil(L, -1) && !ffl_is_callable(L, -1)) {
            ffl_push_short_name(L, r->ctx, p->order[pos]);
            luaL_error(L, "plugin of node '%s': remote_initialize returned a %s, not a function",
                       lua_tostring(L, -1), luaL_typename(L, -2));
        }
        lua_rawseti(L, r->pre, (lua_Integer)pos + 1);
        lua_pop(L, 1);
    }
    lua_pop(L, 2); /* [results, pre] */
}

/* --- the run's error ------------------------------------------------------ */

#define RUN_ERROR_MT "functionfuse.RunError"

static int run_error_tostring(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "message");
    return 1;
}

/* "text" .. err and err .. "text" work as with the message itself. */
static int run_error_concat(lua_State *L) {
    luaL_tolstring(L, 1, NULL);
    luaL_tolstring(L, 2, NULL);
    lua_concat(L, 2);
    return 1;
}

int ffl_is_run_error(lua_State *L, int idx) {
    if (!lua_getmetatable(L, idx))
        return 0;
    luaL_getmetatable(L, RUN_ERROR_MT);
    int is = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return is;
}

/* Sets field k of the table at the top to the value at idx (0: nothing). */
static void set_from(lua_State *L, const char *k, int idx) {
    if (idx == 0)
        return;
    lua_pushvalue(L, idx);
    lua_setfield(L, -2, k);
}

void ffl_run_push_error(lua_State *L, ffl_ctx *ctx, uint32_t id, int value, int text, int cause) {
    value = value ? lua_absindex(L, value) : 0;
    text = lua_absindex(L, text);
    cause = cause ? lua_absindex(L, cause) : 0;
    luaL_checkstack(L, 8, "not enough stack for a run's error");
    ffl_run_push_desc(L, ctx, id); /* [desc] */
    lua_createtable(L, 0, 8);      /* [desc, e] */
    lua_pushfstring(L, "%s failed: %s", lua_tostring(L, -2), lua_tostring(L, text));
    lua_setfield(L, -2, "message");
    set_from(L, "value", value);
    set_from(L, "cause", cause);
    /* The traceback: the text from its "stack traceback:" line on. */
    const char *tx = lua_tostring(L, text);
    const char *tb =
        strncmp(tx, "stack traceback:\n", 17) == 0 ? tx : strstr(tx, "\nstack traceback:\n");
    if (tb != NULL) {
        lua_pushstring(L, tb[0] == '\n' ? tb + 1 : tb);
        lua_setfield(L, -2, "traceback");
    }
    ffl_push_name(L, ctx, id);
    lua_setfield(L, -2, "node");
    const char *f = ff_graph_func_name(ctx->graph, ff_graph_fid(ctx->graph, id));
    lua_pushstring(L, f != NULL ? f : "?");
    lua_setfield(L, -2, "func");
    lua_rawgeti(L, LUA_REGISTRYINDEX, ffl_run_func(ctx->graph, id)); /* [desc, e, fn] */
    lua_Debug ar;
    if (lua_isfunction(L, -1)) {
        lua_getinfo(L, ">S", &ar); /* [desc, e] */
        if (ar.what[0] != 'C') {
            lua_pushfstring(L, "%s:%d", ar.short_src, ar.linedefined);
            lua_setfield(L, -2, "where");
        }
    } else {
        lua_pop(L, 1);
    }
    if (luaL_newmetatable(L, RUN_ERROR_MT)) { /* [desc, e, mt] */
        lua_pushcfunction(L, run_error_tostring);
        lua_setfield(L, -2, "__tostring");
        lua_pushcfunction(L, run_error_concat);
        lua_setfield(L, -2, "__concat");
    }
    lua_setmetatable(L, -2);
    lua_remove(L, -2); /* [e] */
}

/* The run's message handler (ffl_run_push_msgh). Upvalues: the run, the
 * LeafSet. */
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
    lua_settop(L, 1);
    if (push_nested_failure(L, r, 1)) { /* [err, text] */
        /* The innermost failure's value, and the nested run's error. */
        if (lua_rawgeti(L, LUA_REGISTRYINDEX, r->core) == LUA_TTABLE) /* [err, text, core] */
            lua_getfield(L, -1, "value");
        else
            lua_pushvalue(L, -1); /* [err, text, core, value] */
        ffl_run_push_error(L, ctx, id, -1, 2, 1);
    } else {
        ffl_traceback(L); /* [err, ..., text] */
        ffl_run_push_error(L, ctx, id, 1, lua_gettop(L), 0);
    }
    ffl_run_hook_failure(L, ctx);
    return 1;
}

void ffl_run_hook_failure(lua_State *L, ffl_ctx *ctx) {
    if (ctx->hooks.failure == NULL)
        return;
    lua_getfield(L, -1, "node");
    lua_getfield(L, -2, "message");
    ctx->hooks.failure(ctx->hooks_ud, lua_tostring(L, -2), lua_tostring(L, -1));
    lua_pop(L, 2);
}

void ffl_run_push_msgh(lua_State *L, struct ffl_run *r, int lsidx) {
    lua_pushlightuserdata(L, r);
    lua_pushvalue(L, lsidx);
    lua_pushcclosure(L, run_msgh, 2);
}

/* Pushes "<n> <what>s" ("1 node", "3 nodes"). */
static void push_count(lua_State *L, size_t n, const char *what) {
    lua_pushfstring(L, "%d %s%s", (int)n, what, n == 1 ? "" : "s");
}

void ffl_run_raise_failures(lua_State *L, int fails, size_t skipped) {
    fails = lua_absindex(L, fails);
    lua_Integer nf = luaL_len(L, fails);
    /* A copy of the first failure (its fields, its metatable), so that the
     * failures listed keep their own messages. */
    lua_rawgeti(L, fails, 1); /* [e1] */
    lua_createtable(L, 0, 12);
    if (lua_istable(L, -2)) {
        for (lua_pushnil(L); lua_next(L, -3) != 0;) {
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_rawset(L, -4);
        }
        if (lua_getmetatable(L, -2))
            lua_setmetatable(L, -2);
    } else { /* an error that met no message handler (out of memory) */
        lua_pushvalue(L, -2);
        lua_setfield(L, -2, "value");
    }
    lua_remove(L, -2); /* [e] */
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    push_count(L, (size_t)nf, "node");
    luaL_addvalue(&b);
    luaL_addstring(&b, " failed");
    if (skipped > 0) {
        luaL_addstring(&b, ", and ");
        push_count(L, skipped, "node");
        luaL_addvalue(&b);
        luaL_addstring(&b, skipped == 1 ? " that depends on a failed one did not run"
                                        : " that depend on them did not run");
    }
    luaL_addstring(&b, " (keep_going):");
    for (lua_Integer i = 1; i <= nf; i++) {
        luaL_addchar(&b, '\n'); /* before pushing: the buffer's box is at the top */
        if (lua_rawgeti(L, fails, i) == LUA_TTABLE)
            lua_getfield(L, -1, "message");
        else
            lua_pushvalue(L, -1);
        size_t len;
        const char *msg = luaL_tolstring(L, -1, &len);
        const char *tb = strstr(msg, "\nstack traceback:\n");
        lua_pushlstring(L, msg, tb != NULL ? (size_t)(tb - msg) : len);
        lua_replace(L, -4); /* [item, msgval, str, line] -> [line, msgval, str] */
        lua_pop(L, 2);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b); /* [e, message] */
    lua_setfield(L, -2, "message");
    lua_pushvalue(L, fails);
    lua_setfield(L, -2, "failures");
    lua_pushinteger(L, (lua_Integer)skipped);
    lua_setfield(L, -2, "skipped");
    lua_error(L);
}

void ffl_run_on_end(lua_State *L, int optsidx, int status) {
    if (!lua_istable(L, optsidx))
        return;
    if (lua_getfield(L, optsidx, "on_end") != LUA_TFUNCTION) {
        lua_pop(L, 1);
        return;
    }
    lua_pushboolean(L, status == LUA_OK);
    if (status == LUA_OK) {
        lua_pushnil(L);
        lua_call(L, 2, 0);
    } else {
        lua_pushvalue(L, -3); /* the error */
        if (lua_pcall(L, 2, 0, 0) != LUA_OK)
            lua_pop(L, 1);
    }
}
