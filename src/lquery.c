/*
 * lquery.c: the Lua binding of queries over node names (query.c).
 *
 * Lua sees one type, functionfuse.Pattern: a pattern compiled once by
 * core.compile(pattern), with pattern:match(name) and pattern:jit(). The
 * LeafSet's method nodes([pattern[, names_only]]) lists the planned nodes
 * whose names a Pattern matches, in run order: the backends' queries
 * (wf:query, find_nodes, set_plugin) and wf:names() rest on it; graph()
 * gives the same nodes with their edges, for drawing.
 */
#include <errno.h>
#include <stddef.h>

#include <lauxlib.h>
#include <lua.h>

#include "fflua.h"
#include "graph.h"
#include "lgraph.h"
#include "lquery.h"
#include "lutil.h"
#include "query.h"

#define QUERY_MT "functionfuse.Pattern"

typedef struct ffl_pattern {
    ff_query *q;
} ffl_pattern;

/* __gc and __close: frees the compiled pattern (idempotent). */
static int ffl_pattern_gc(lua_State *L) {
    ffl_pattern *p = luaL_checkudata(L, 1, QUERY_MT);
    ff_query_free(p->q);
    p->q = NULL;
    return 0;
}

/* The open Pattern at idx; raises when it was closed. */
static ffl_pattern *check_pattern(lua_State *L, int idx) {
    ffl_pattern *p = luaL_checkudata(L, idx, QUERY_MT);
    if (p->q == NULL)
        luaL_error(L, "attempt to use a closed " QUERY_MT);
    return p;
}

/* tostring(pattern): "functionfuse.Pattern: <pattern>" (shortened and
 * escaped), or "(closed)". */
static int ffl_pattern_tostring(lua_State *L) {
    ffl_pattern *p = luaL_checkudata(L, 1, QUERY_MT);
    if (p->q == NULL) {
        lua_pushliteral(L, QUERY_MT " (closed)");
        return 1;
    }
    lua_getiuservalue(L, 1, 1);
    lua_pushfstring(L, QUERY_MT ": %s", ffl_push_short_at(L, -1));
    return 1;
}

/* core.compile(pattern) -> Pattern; raises on an invalid pattern. The
 * pattern's text is the userdata's user value, for messages. Stack effect:
 * +1. */
static int ffl_core_compile(lua_State *L) {
    size_t len;
    const char *pat = luaL_checklstring(L, 1, &len);
    ffl_pattern *p = lua_newuserdatauv(L, sizeof *p, 1); /* [pat, udata] */
    p->q = NULL;
    luaL_setmetatable(L, QUERY_MT);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
    char msg[256];
    size_t off = 0;
    int rc = ff_query_compile(pat, len, &p->q, msg, sizeof msg, &off);
    if (rc == FFLUA_EPATTERN)
        return luaL_error(L, "invalid pattern '%s': %s at offset %d", ffl_push_short(L, pat, len),
                          msg, (int)off);
    if (rc != 0)
        return luaL_error(L, "not enough memory");
    return 1;
}

/* Raises the error rc of matching the Pattern at pidx against a name:
 * "cannot match pattern 'p' against <what>'name': <why>", the name at the
 * top of the stack. */
static int match_fail(lua_State *L, ffl_pattern *p, int pidx, int rc, const char *what) {
    if (rc != FFLUA_EPATTERN)
        return luaL_error(L, "%s", rc == -ENOMEM ? "not enough memory" : fflua_strerror(rc));
    const char *name = ffl_push_short_at(L, -1);
    lua_getiuservalue(L, pidx, 1);
    const char *pat = ffl_push_short_at(L, -1);
    return luaL_error(L, "cannot match pattern '%s' against %s'%s': %s", pat, what, name,
                      ff_query_errmsg(p->q));
}

/* pattern:match(name) -> boolean; a match that fails (a limit reached) is
 * an error. Stack effect: +1. */
static int ffl_pattern_match(lua_State *L) {
    ffl_pattern *p = check_pattern(L, 1);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    int rc = ff_query_match(p->q, s, len);
    if (rc < 0) {
        lua_settop(L, 2);
        return match_fail(L, p, 1, rc, "");
    }
    lua_pushboolean(L, rc);
    return 1;
}

/* pattern:jit() -> boolean */
static int ffl_pattern_jit(lua_State *L) {
    ffl_pattern *p = check_pattern(L, 1);
    lua_pushboolean(L, ff_query_is_jit(p->q));
    return 1;
}

/* ls:nodes([pattern[, names_only]]) -> sequence of Node handles (or
 * names) in run order whose names the Pattern matches (nil: every node).
 * Stack effect: +1 (the sequence). A match that fails (a limit reached) is
 * an error naming the pattern and the node, never a node left out. */
/* A plan held by a query: released when its to-be-closed slot closes,
 * also when a memory error raises while the result is built (the plan
 * holds its nodes, which would otherwise stay for ever). */
typedef struct plan_guard {
    ff_graph *g;
    ff_plan *p;
} plan_guard;

static int plan_guard_close(lua_State *L) {
    plan_guard *gd = lua_touserdata(L, 1);
    if (gd->p != NULL) {
        ff_plan_release(gd->g, gd->p);
        gd->p = NULL;
    }
    return 0;
}

/* Plans the LeafSet at 1 and pushes a to-be-closed guard of the plan.
 * Stack effect: +1. */
static ff_plan *push_plan(lua_State *L, ffl_ctx *ctx) {
    plan_guard *gd = lua_newuserdatauv(L, sizeof *gd, 0);
    gd->g = ctx->graph;
    gd->p = NULL;
    if (luaL_newmetatable(L, "functionfuse.PlanGuard")) {
        lua_pushcfunction(L, plan_guard_close);
        lua_setfield(L, -2, "__close");
        lua_pushcfunction(L, plan_guard_close);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    lua_toclose(L, -1);
    gd->p = ffl_leaves_plan(L, ctx, 1, NULL, NULL);
    return gd->p;
}

static int ffl_leaves_nodes(lua_State *L) {
    ffl_check_leaves(L, 1);
    ffl_pattern *pat = lua_isnoneornil(L, 2) ? NULL : check_pattern(L, 2);
    int names_only = lua_toboolean(L, 3);
    ffl_ctx *ctx = ffl_ctx_get(L);
    lua_settop(L, 3);
    lua_pushnil(L); /* [ls, pat, names_only, scratch]: for names too long for buf */
    int scratch = lua_gettop(L);
    char *big = NULL;
    size_t bigcap = 0;
    ff_plan *p = push_plan(L, ctx); /* [.., scratch, guard] */
    lua_newtable(L);                /* [.., scratch, guard, out] */
    lua_Integer k = 0;
    char buf[FFL_NAME_STACK];
    int rc = 0;
    uint32_t i;
    for (i = 0; i < p->n; i++) {
        uint32_t id = p->order[i];
        if (pat != NULL) {
            const char *nm = buf;
            size_t len = ff_graph_name(ctx->graph, id, buf, sizeof buf);
            if (len >= sizeof buf) {
                if (len >= bigcap) { /* Lua-owned, so an error cannot leak it */
                    bigcap = len + 1;
                    big = lua_newuserdatauv(L, bigcap, 0);
                    lua_replace(L, scratch);
                }
                ff_graph_name(ctx->graph, id, big, len + 1);
                nm = big;
            }
            rc = ff_query_match(pat->q, nm, len);
            if (rc < 0)
                break;
            if (rc == 0)
                continue;
        }
        if (names_only)
            ffl_push_name(L, ctx, id);
        else
            ffl_push_node(L, ctx, id);
        lua_rawseti(L, -2, ++k);
    }
    if (rc < 0) {
        ffl_push_name(L, ctx, p->order[i]);
        return match_fail(L, pat, 2, rc, "node "); /* the guard releases the plan */
    }
    return 1; /* the guard's slot closes on return */
}

/* ls:graph() -> names, parents: the planned nodes' names in run order, and
 * for each the run-order positions of its distinct parents, in the order
 * of its arguments (an empty table for a root). The graph backend and
 * `fflua graph` draw it. */
static int ffl_leaves_graph(lua_State *L) {
    ffl_check_leaves(L, 1);
    ffl_ctx *ctx = ffl_ctx_get(L);
    lua_settop(L, 1);
    lua_newtable(L);                /* [ls, names] */
    lua_newtable(L);                /* [ls, names, parents] */
    ff_plan *p = push_plan(L, ctx); /* [ls, names, parents, guard] */
    for (uint32_t i = 0; i < p->n; i++) {
        uint32_t id = p->order[i], np;
        ffl_push_name(L, ctx, id);
        lua_rawseti(L, 2, (lua_Integer)i + 1);
        ff_graph_parents(ctx->graph, id, &np);
        lua_createtable(L, (int)np, 0); /* [ls, names, parents, these] */
        lua_Integer k = 0;
        for (uint32_t j = 0; j < np; j++) {
            /* Fetched again each time: pushing may run finalizers that
             * make nodes, which moves the node table. */
            const uint32_t *par = ff_graph_parents(ctx->graph, id, &np);
            uint32_t pos = ff_plan_pos(p, par[j]);
            if (pos == UINT32_MAX) /* not planned: cannot happen for an ancestor */
                continue;
            lua_pushinteger(L, (lua_Integer)pos + 1);
            lua_rawseti(L, -2, ++k);
        }
        lua_rawseti(L, 3, (lua_Integer)i + 1);
    }
    lua_closeslot(L, 4);
    lua_settop(L, 3);
    return 2;
}

const luaL_Reg ffl_query_funcs[] = {
    {"compile", ffl_core_compile},
    {NULL, NULL},
};

const luaL_Reg ffl_query_methods[] = {
    {"nodes", ffl_leaves_nodes},
    {"graph", ffl_leaves_graph},
    {NULL, NULL},
};

static const luaL_Reg pattern_methods[] = {
    {"match", ffl_pattern_match},
    {"jit", ffl_pattern_jit},
    {NULL, NULL},
};

void ffl_query_open(lua_State *L) {
    ffl_new_type(L, QUERY_MT, pattern_methods, ffl_pattern_gc, ffl_pattern_gc,
                 ffl_pattern_tostring);
    lua_pop(L, 1);
}
