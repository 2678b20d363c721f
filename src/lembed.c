/*
 * lembed.c: the embedding API of fflua.h: engines, running code and
 * workflows from C, C functions as workflow functions, hooks, errors.
 *
 * An engine is C memory (struct fflua_engine) that points to a Lua state:
 * its own (fflua_new) or a host's (fflua_attach). The state's registry
 * holds the engine's pointer under "fflua.engine", so that a state has at
 * most one engine, the workflow functions made by fflua_register under
 * "fflua.cfunctions" (the table that is also functionfuse's field c), and
 * fflua_run's Lua part under "fflua.runner". The hooks are the state's
 * engine context's (lgraph.h), where the executors read them.
 *
 * Every call into Lua is a protected call whose message handler keeps a
 * run's error object (it carries the failing node's name) and gives any
 * other error a traceback; a failure is kept in the engine as text for
 * fflua_errmsg and fflua_errnode.
 */
#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "fflua.h"
#include "lgraph.h"
#include "lutil.h"

#define ENGINE_KEY "fflua.engine"
#define CFUNCS_KEY "fflua.cfunctions"
#define RUNNER_KEY "fflua.runner"

struct fflua_engine {
    lua_State *L;
    int own;       /* 1: fflua_new made L, and fflua_close closes it */
    char *errmsg;  /* the last failure's message, or NULL */
    char *errnode; /* the name of the node it belongs to, or NULL */
};

/* --- errors ---------------------------------------------------------------- */

static void clear_error(fflua_engine *e) {
    free(e->errmsg);
    free(e->errnode);
    e->errmsg = e->errnode = NULL;
}

/* Keeps a copy of msg (and node, which may be NULL) as the last failure. */
static void set_error(fflua_engine *e, const char *msg, const char *node) {
    clear_error(e);
    e->errmsg = strdup(msg);
    e->errnode = node != NULL ? strdup(node) : NULL;
}

/* Protected: (err) -> message, node or nil. A table's "message" and
 * "node" fields (a run's error), else the value as tostring shows it. */
static int describe(lua_State *L) {
    if (lua_type(L, 1) == LUA_TTABLE && lua_getfield(L, 1, "message") == LUA_TSTRING) {
        if (lua_getfield(L, 1, "node") != LUA_TSTRING) {
            lua_pop(L, 1);
            lua_pushnil(L);
        }
        return 2;
    }
    lua_settop(L, 1);
    if (lua_type(L, 1) == LUA_TSTRING || luaL_getmetafield(L, 1, "__tostring") != LUA_TNIL)
        luaL_tolstring(L, 1, NULL);
    else
        lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    lua_pushnil(L);
    return 2;
}

/* Records the error at the top of L's stack as e's last failure and pops
 * it. Returns FFLUA_ELUA. */
static int fail(fflua_engine *e) {
    lua_State *L = e->L;
    lua_pushcfunction(L, describe);
    lua_insert(L, -2); /* [describe, err] */
    if (lua_pcall(L, 1, 2, 0) == LUA_OK) {
        set_error(e, lua_tostring(L, -2), lua_tostring(L, -1));
        lua_pop(L, 2);
    } else {
        set_error(e, "(error object cannot be shown: its __tostring failed)", NULL);
        lua_pop(L, 1);
    }
    return FFLUA_ELUA;
}

/* Message handler: a run's error (a table with a node) as it is, any other
 * error with a traceback (ffl_traceback). */
static int msgh(lua_State *L) {
    if (lua_type(L, 1) == LUA_TTABLE) {
        int t = lua_getfield(L, 1, "node");
        lua_pop(L, 1);
        if (t == LUA_TSTRING) {
            lua_settop(L, 1);
            return 1;
        }
    }
    return ffl_traceback(L);
}

/* lua_pcall(L, nargs, nres) with msgh; on failure records the error and
 * leaves the stack without the function and its arguments. Returns 0 or
 * FFLUA_ELUA. */
static int pcall(fflua_engine *e, int nargs, int nres) {
    lua_State *L = e->L;
    int base = lua_gettop(L) - nargs; /* the function */
    lua_pushcfunction(L, msgh);
    lua_insert(L, base);
    int status = lua_pcall(L, nargs, nres, base);
    lua_remove(L, base);
    if (status != LUA_OK)
        return fail(e);
    clear_error(e);
    return 0;
}

const char *fflua_errmsg(const fflua_engine *e) {
    return e->errmsg;
}

const char *fflua_errnode(const fflua_engine *e) {
    return e->errnode;
}

/* --- engines ---------------------------------------------------------------- */

/* Protected: (engine, openlibs) -> (). Opens the standard libraries when
 * asked, installs the package loader and marks the state as the engine's. */
static int setup(lua_State *L) {
    void *e = lua_touserdata(L, 1);
    if (lua_toboolean(L, 2))
        luaL_openlibs(L);
    if (lua_getfield(L, LUA_REGISTRYINDEX, ENGINE_KEY) != LUA_TNIL)
        return luaL_error(L, "this Lua state has an fflua engine already");
    if (fflua_open(L) != 0)
        return luaL_error(L, "this Lua state has no package library: open it (luaL_openlibs) "
                             "before fflua_attach");
    lua_pushlightuserdata(L, e);
    lua_setfield(L, LUA_REGISTRYINDEX, ENGINE_KEY);
    return 0;
}

/* Makes an engine on L; own: it made L and opens its libraries. */
static int engine_create(lua_State *L, int own, fflua_engine **ep, char **why) {
    fflua_engine *e = calloc(1, sizeof *e);
    if (e == NULL)
        return -ENOMEM;
    e->L = L;
    e->own = own;
    int top = lua_gettop(L);
    lua_pushcfunction(L, setup);
    lua_pushlightuserdata(L, e);
    lua_pushboolean(L, own);
    if (pcall(e, 2, 0) != 0) {
        *why = e->errmsg;
        e->errmsg = NULL;
        clear_error(e);
        free(e);
        return FFLUA_ELUA;
    }
    assert(lua_gettop(L) == top);
    (void)top;
    *ep = e;
    return 0;
}

int fflua_new(fflua_engine **ep) {
    *ep = NULL;
    lua_State *L = luaL_newstate();
    if (L == NULL)
        return -ENOMEM;
    char *why = NULL;
    int rc = engine_create(L, 1, ep, &why);
    free(why); /* only memory can fail here */
    if (rc != 0) {
        lua_close(L);
        return -ENOMEM;
    }
    return 0;
}

int fflua_attach(struct lua_State *L, fflua_engine **ep) {
    *ep = NULL;
    char *why = NULL;
    int rc = engine_create(L, 0, ep, &why);
    if (rc == FFLUA_ELUA) {
        if (why != NULL && strstr(why, "engine already") != NULL)
            rc = -EEXIST;
        else if (why != NULL && strstr(why, "no package library") != NULL)
            rc = FFLUA_EINTERNAL;
        else
            rc = -ENOMEM;
    }
    free(why);
    return rc;
}

/* Protected: (). Removes the hooks, which point into the host, and the
 * engine's mark from a state that outlives the engine. */
static int detach(lua_State *L) {
    if (lua_getfield(L, LUA_REGISTRYINDEX, "functionfuse.ctx") == LUA_TUSERDATA) {
        ffl_ctx *ctx = lua_touserdata(L, -1);
        memset(&ctx->hooks, 0, sizeof ctx->hooks);
        ctx->hooks_ud = NULL;
    }
    lua_pushnil(L);
    lua_setfield(L, LUA_REGISTRYINDEX, ENGINE_KEY);
    return 0;
}

void fflua_close(fflua_engine *e) {
    if (e == NULL)
        return;
    if (e->own) {
        lua_close(e->L);
    } else {
        lua_pushcfunction(e->L, detach);
        if (lua_pcall(e->L, 0, 0, 0) != LUA_OK)
            lua_pop(e->L, 1); /* only memory: the mark stays, the engine goes */
    }
    clear_error(e);
    free(e);
}

struct lua_State *fflua_state(const fflua_engine *e) {
    return e->L;
}

/* --- code ------------------------------------------------------------------- */

int fflua_dostring(fflua_engine *e, const char *code, const char *chunkname) {
    if (code == NULL)
        return -EINVAL;
    if (luaL_loadbuffer(e->L, code, strlen(code), chunkname != NULL ? chunkname : code) != LUA_OK)
        return fail(e);
    return pcall(e, 0, LUA_MULTRET);
}

int fflua_dofile(fflua_engine *e, const char *path) {
    if (luaL_loadfile(e->L, path) != LUA_OK)
        return fail(e);
    return pcall(e, 0, LUA_MULTRET);
}

/* --- C functions as workflow functions ---------------------------------------- */

/* Protected: (name, fn) -> (). functionfuse.c[name] = ff.workflow(name, fn). */
static int reg(lua_State *L) {
    lua_settop(L, 2);
    lua_getglobal(L, "require");
    lua_pushliteral(L, "functionfuse");
    lua_call(L, 1, 1); /* [name, fn, ff] */
    if (lua_getfield(L, LUA_REGISTRYINDEX, CFUNCS_KEY) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, CFUNCS_KEY);
    } /* [name, fn, ff, cfuncs] */
    lua_pushvalue(L, -1);
    lua_setfield(L, 3, "c");
    lua_getfield(L, 3, "workflow");
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    lua_call(L, 2, 1); /* [name, fn, ff, cfuncs, factory] */
    lua_setfield(L, 4, lua_tostring(L, 1));
    /* The function itself in package.loaded["functionfuse.c"], where
     * luaL_argerror looks for the name of a function called from C: its
     * errors then say 'functionfuse.c.NAME', not '?'. */
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    luaL_getsubtable(L, -1, "functionfuse.c");
    lua_pushvalue(L, 2);
    lua_setfield(L, -2, lua_tostring(L, 1));
    return 0;
}

int fflua_register(fflua_engine *e, const char *name, fflua_cfunction fn) {
    if (name == NULL || fn == NULL)
        return -EINVAL;
    lua_State *L = e->L;
    lua_pushcfunction(L, reg);
    lua_pushstring(L, name);
    lua_pushcfunction(L, fn);
    return pcall(e, 2, 0);
}

/* --- hooks ------------------------------------------------------------------ */

/* Protected: (hooks or nil, ud) -> (). */
static int sethooks(lua_State *L) {
    const fflua_hooks *h = lua_touserdata(L, 1);
    ffl_ctx *ctx = ffl_ctx_get(L);
    if (h != NULL)
        ctx->hooks = *h;
    else
        memset(&ctx->hooks, 0, sizeof ctx->hooks);
    ctx->hooks_ud = lua_touserdata(L, 2);
    return 0;
}

int fflua_set_hooks(fflua_engine *e, const fflua_hooks *hooks, void *ud) {
    lua_State *L = e->L;
    lua_pushcfunction(L, sethooks);
    lua_pushlightuserdata(L, (void *)hooks);
    lua_pushlightuserdata(L, ud);
    return pcall(e, 2, 0);
}

/* --- running workflows --------------------------------------------------------- */

/* fflua_run's Lua part: two functions of (name, n, v1..vn): check raises
 * for a misuse (called without a traceback), run returns the results. */
static const char runner_code[] =
    "local ff = require 'functionfuse'\n"
    "local LocalWorkflow = require('functionfuse.backends.builtin.localback').LocalWorkflow\n"
    "local function check(name, n, first, ...)\n"
    "  if n == 0 then error('fflua_run: nothing to run (nargs is 0)', 0) end\n"
    "  if n == 1 and not ff.is_node(first) then\n"
    "    local ok, run = pcall(function() return first.run end)\n"
    "    if not ok or run == nil then\n"
    "      error(('fflua_run: a node or a workflow object (with a run method) expected, '\n"
    "             .. 'got a %s'):format(type(first)), 0)\n"
    "    end\n"
    "    if name ~= nil then\n"
    "      error('fflua_run: workflow_name must be NULL with a workflow object, '\n"
    "            .. 'which has its name', 0)\n"
    "    end\n"
    "    return\n"
    "  end\n"
    "  for i = 1, n do\n"
    "    local v = select(i, first, ...)\n"
    "    if not ff.is_node(v) then\n"
    "      error(('fflua_run: value #%d is a %s, not a node'):format(i, type(v)), 0)\n"
    "    end\n"
    "  end\n"
    "end\n"
    "local function run(name, n, first, ...)\n"
    "  if n == 1 and not ff.is_node(first) then return first:run() end\n"
    "  local args = table.pack(first, ...)\n"
    "  args[n + 1] = { workflow_name = name or 'fflua' }\n"
    "  return LocalWorkflow(table.unpack(args, 1, n + 1)):run()\n"
    "end\n"
    "return check, run\n";

/* Protected: (name as a C string or NULL, n, v1..vn) -> check, run, name,
 * n, v1..vn. */
static int runner(lua_State *L) {
    const char *name = lua_touserdata(L, 1);
    if (name != NULL)
        lua_pushstring(L, name);
    else
        lua_pushnil(L);
    lua_replace(L, 1);
    if (lua_getfield(L, LUA_REGISTRYINDEX, RUNNER_KEY) != LUA_TTABLE) {
        lua_pop(L, 1);
        if (luaL_loadbufferx(L, runner_code, sizeof runner_code - 1, "=fflua_run", "t") != LUA_OK)
            return lua_error(L);
        lua_call(L, 0, 2);
        lua_createtable(L, 2, 0);
        lua_insert(L, -3);
        lua_rawseti(L, -3, 2);
        lua_rawseti(L, -2, 1);
        lua_pushvalue(L, -1);
        lua_setfield(L, LUA_REGISTRYINDEX, RUNNER_KEY);
    } /* [name, n, v..., runner] */
    luaL_checkstack(L, lua_gettop(L) + 2, "too many values to run");
    lua_rawgeti(L, -1, 1);
    lua_rawgeti(L, -2, 2);
    lua_remove(L, -3);
    lua_rotate(L, 1, 2); /* [check, run, name, n, v...] */
    return lua_gettop(L);
}

int fflua_run(fflua_engine *e, const char *workflow_name, int nargs, int *nresults) {
    lua_State *L = e->L;
    if (nargs < 0 || lua_gettop(L) < nargs)
        return -EINVAL;
    int base = lua_gettop(L) - nargs;
    if (nresults != NULL)
        *nresults = 0;
    if (!lua_checkstack(L, nargs + 8)) {
        lua_settop(L, base);
        set_error(e, "fflua_run: stack overflow", NULL);
        return -ENOMEM;
    }
    /* Nothing that allocates outside a protected call: the name goes as a
     * pointer, which runner makes a string. */
    lua_pushlightuserdata(L, (void *)workflow_name);
    lua_insert(L, base + 1);
    lua_pushinteger(L, nargs);
    lua_insert(L, base + 2); /* [name, n, v1..vn] */
    lua_pushcfunction(L, runner);
    lua_insert(L, base + 1);
    int rc = pcall(e, nargs + 2, LUA_MULTRET); /* [check, run, name, n, v1..vn] */
    if (rc != 0)
        return rc;
    /* check(name, n, v...) on copies, without a traceback: a misuse. */
    for (int i = 0; i < nargs + 2; i++)
        lua_pushvalue(L, base + 3 + i);
    lua_pushvalue(L, base + 1);
    lua_insert(L, -(nargs + 3));
    if (lua_pcall(L, nargs + 2, 0, 0) != LUA_OK) {
        fail(e);
        lua_settop(L, base);
        return FFLUA_ELUA;
    }
    lua_remove(L, base + 1); /* [run, name, n, v1..vn] */
    rc = pcall(e, nargs + 2, LUA_MULTRET);
    if (rc == 0 && nresults != NULL)
        *nresults = lua_gettop(L) - base;
    return rc;
}
