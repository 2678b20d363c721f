/*
 * The engine API of fflua.h, as a host uses it: engines of their own and
 * attached, code, C functions as workflow functions, runs whose results
 * are read off the stack, and errors with the failing node's name. Linked
 * with libfflua.so, so that what it exports is all a host needs.
 */
#include <errno.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "fflua.h"
#include "test.h"

static fflua_engine *new_engine(void) {
    fflua_engine *e = NULL;
    ASSERT_EQ(fflua_new(&e), 0);
    ASSERT(e != NULL);
    ASSERT_EQ(lua_gettop(fflua_state(e)), 0);
    return e;
}

static void ok(fflua_engine *e, int rc) {
    if (rc != 0)
        FAIL_("rc %d: %s", rc, fflua_errmsg(e) ? fflua_errmsg(e) : "(no message)");
}

/* scale(x, k): x * k, or an error naming a bad argument. */
static int scale(lua_State *L) {
    lua_Number x = luaL_checknumber(L, 1), k = luaL_optnumber(L, 2, 2);
    lua_pushnumber(L, x * k);
    return 1;
}

/* minmax(t): the smallest and the largest of a sequence: two results. */
static int minmax(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Integer n = luaL_len(L, 1);
    lua_Number lo = 0, hi = 0;
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, 1, i);
        lua_Number v = luaL_checknumber(L, -1);
        lua_pop(L, 1);
        lo = i == 1 || v < lo ? v : lo;
        hi = i == 1 || v > hi ? v : hi;
    }
    lua_pushnumber(L, lo);
    lua_pushnumber(L, hi);
    return 2;
}

static void test_dostring_results_and_errors(void) {
    fflua_engine *e = new_engine();
    lua_State *L = fflua_state(e);
    ok(e, fflua_dostring(e, "return require('functionfuse').version, 42", "=versions"));
    ASSERT_EQ(lua_gettop(L), 2);
    ASSERT_STR_EQ(lua_tostring(L, 1), FFLUA_VERSION);
    ASSERT_EQ(lua_tointeger(L, 2), 42);
    ASSERT(fflua_errmsg(e) == NULL);
    lua_settop(L, 0);

    ASSERT_EQ(fflua_dostring(e, "return +", "=broken"), FFLUA_ELUA);
    ASSERT_EQ(lua_gettop(L), 0);
    ASSERT_STR_EQ(fflua_errmsg(e), "broken:1: unexpected symbol near '+'");
    ASSERT(fflua_errnode(e) == NULL);

    ASSERT_EQ(fflua_dostring(e, "error('plain')", "=plain"), FFLUA_ELUA);
    ASSERT_EQ(lua_gettop(L), 0);
    ASSERT(strncmp(fflua_errmsg(e), "plain:1: plain\nstack traceback:\n", 32) == 0);

    ASSERT_EQ(fflua_dofile(e, "/nonexistent/x.lua"), FFLUA_ELUA);
    ASSERT_STR_EQ(fflua_errmsg(e), "cannot open /nonexistent/x.lua: No such file or directory");
    ASSERT_EQ(fflua_dostring(e, NULL, NULL), -EINVAL);
    ok(e, fflua_dostring(e, "x = 1", NULL));
    ASSERT(fflua_errmsg(e) == NULL); /* cleared by a call that succeeds */
    fflua_close(e);
}

static void test_register_and_run_nodes(void) {
    fflua_engine *e = new_engine();
    lua_State *L = fflua_state(e);
    ok(e, fflua_register(e, "scale", scale));
    ok(e, fflua_register(e, "minmax", minmax));
    /* A pipeline mixing Lua and C workflow functions: two leaves. */
    ok(e, fflua_dostring(e,
                         "local ff = require 'functionfuse'\n"
                         "local gen = ff.workflow('gen', function(n)\n"
                         "  local t = {} for i = 1, n do t[i] = i end return t end)\n"
                         "local data = gen(4)\n"
                         "return ff.c.scale(ff.c.minmax(data)[2], 10):set_name('big'),\n"
                         "       ff.c.minmax(data)\n",
                         "=pipeline"));
    ASSERT_EQ(lua_gettop(L), 2);
    int n = -1;
    ok(e, fflua_run(e, "pipeline", 2, &n));
    ASSERT_EQ(n, 2);
    ASSERT_EQ(lua_gettop(L), 2);
    ASSERT_EQ(lua_tonumber(L, 1), 40);
    ASSERT(lua_istable(L, 2)); /* two results of a node: { v1, v2, n = 2 } */
    lua_getfield(L, 2, "n");
    ASSERT_EQ(lua_tointeger(L, -1), 2);
    lua_rawgeti(L, 2, 1);
    ASSERT_EQ(lua_tonumber(L, -1), 1);
    lua_settop(L, 0);

    /* A workflow object made in Lua runs through its run method. */
    ok(e, fflua_dostring(e,
                         "local ff = require 'functionfuse'\n"
                         "local LW = require('functionfuse.backends.builtin.localback')"
                         ".LocalWorkflow\n"
                         "return LW(ff.c.scale(3), { workflow_name = 'obj' })\n",
                         "=object"));
    ok(e, fflua_run(e, NULL, 1, &n));
    ASSERT_EQ(n, 1);
    ASSERT_EQ(lua_tonumber(L, 1), 6);
    lua_settop(L, 0);
    fflua_close(e);
}

static void test_failing_node(void) {
    fflua_engine *e = new_engine();
    lua_State *L = fflua_state(e);
    ok(e, fflua_register(e, "scale", scale));
    lua_pushinteger(L, 7); /* the host's own value stays below */
    ok(e, fflua_dostring(e, "return require('functionfuse').c.scale('x'):set_name('bad_input')",
                         "=failing"));
    ASSERT_EQ(fflua_run(e, NULL, 1, NULL), FFLUA_ELUA);
    ASSERT_EQ(lua_gettop(L), 1);
    ASSERT_EQ(lua_tointeger(L, 1), 7);
    ASSERT_STR_EQ(fflua_errnode(e), "bad_input");
    const char *want = "node 'bad_input' (function 'scale', a C function) failed: bad argument "
                       "#1 to 'functionfuse.c.scale' (number expected, got string)";
    if (strncmp(fflua_errmsg(e), want, strlen(want)) != 0)
        FAIL_("%s", fflua_errmsg(e));

    /* A node's failure inside a script names the node too. */
    ASSERT_EQ(
        fflua_dostring(e,
                       "local ff = require 'functionfuse'\n"
                       "local LW = require('functionfuse.backends.builtin.localback')"
                       ".LocalWorkflow\n"
                       "LW(ff.c.scale({}):set_name('inner'), { workflow_name = 's' }):run()\n",
                       "=script"),
        FFLUA_ELUA);
    ASSERT_STR_EQ(fflua_errnode(e), "inner");
    ASSERT_EQ(lua_gettop(L), 1);
    fflua_close(e);
}

static void test_run_bad_input(void) {
    fflua_engine *e = new_engine();
    lua_State *L = fflua_state(e);
    ASSERT_EQ(fflua_run(e, NULL, 1, NULL), -EINVAL); /* an empty stack */
    lua_pushinteger(L, 5);
    ASSERT_EQ(fflua_run(e, NULL, 1, NULL), FFLUA_ELUA);
    ASSERT_EQ(lua_gettop(L), 0);
    ASSERT_STR_EQ(fflua_errmsg(e), "fflua_run: a node or a workflow object (with a run method) "
                                   "expected, got a number");
    ok(e, fflua_dostring(e,
                         "local ff = require 'functionfuse'\n"
                         "return ff.workflow('id', function(x) return x end)(1), 'no node'",
                         "=mixed"));
    ASSERT_EQ(fflua_run(e, NULL, 2, NULL), FFLUA_ELUA);
    ASSERT_STR_EQ(fflua_errmsg(e), "fflua_run: value #2 is a string, not a node");
    ASSERT_EQ(fflua_run(e, NULL, 0, NULL), FFLUA_ELUA);
    ASSERT_STR_EQ(fflua_errmsg(e), "fflua_run: nothing to run (nargs is 0)");
    ok(e, fflua_dostring(e,
                         "local ff = require 'functionfuse'\n"
                         "return require('functionfuse.backends.builtin.localback')"
                         ".LocalWorkflow(ff.workflow('one', function() return 1 end)(), "
                         "{ workflow_name = 'w' })",
                         "=object"));
    ASSERT_EQ(fflua_run(e, "named", 1, NULL), FFLUA_ELUA);
    ASSERT_STR_EQ(fflua_errmsg(e), "fflua_run: workflow_name must be NULL with a workflow "
                                   "object, which has its name");
    ASSERT_EQ(lua_gettop(L), 0);
    ASSERT_EQ(fflua_register(e, NULL, scale), -EINVAL);
    ASSERT_EQ(fflua_register(e, "scale", NULL), -EINVAL);
    ASSERT_EQ(fflua_register(e, "", scale), FFLUA_ELUA);
    ASSERT(strstr(fflua_errmsg(e), "bad argument #1 to 'workflow' (name must not be empty)"));
    ASSERT_EQ(lua_gettop(L), 0);
    fflua_close(e);
}

static void test_attach(void) {
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    lua_pushliteral(L, "host");
    fflua_engine *e = NULL, *e2 = NULL;
    ASSERT_EQ(fflua_attach(L, &e), 0);
    ASSERT(fflua_state(e) == L);
    ASSERT_EQ(lua_gettop(L), 1);
    ASSERT_EQ(fflua_attach(L, &e2), -EEXIST);
    ASSERT(e2 == NULL);
    ASSERT_EQ(lua_gettop(L), 1);
    ok(e, fflua_register(e, "scale", scale));
    ok(e, fflua_dostring(e, "return require('functionfuse').c.scale(21)", "=attached"));
    ok(e, fflua_run(e, NULL, 1, NULL));
    ASSERT_EQ(lua_tonumber(L, 2), 42);
    ASSERT_STR_EQ(lua_tostring(L, 1), "host");
    fflua_close(e);
    /* The state is the host's again: open, and free for another engine. */
    ASSERT_EQ(luaL_dostring(L, "return require('functionfuse').c.scale ~= nil"), LUA_OK);
    ASSERT(lua_toboolean(L, -1));
    ASSERT_EQ(fflua_attach(L, &e), 0);
    fflua_close(e);
    lua_close(L);

    L = luaL_newstate(); /* no package library */
    ASSERT_EQ(fflua_attach(L, &e), FFLUA_EINTERNAL);
    ASSERT(e == NULL);
    ASSERT_EQ(lua_gettop(L), 0);
    lua_close(L);
}

static void test_two_engines(void) {
    fflua_engine *a = new_engine(), *b = new_engine();
    ok(a, fflua_register(a, "scale", scale));
    ok(b, fflua_dostring(b, "return require('functionfuse').c", "=b"));
    ASSERT(lua_isnil(fflua_state(b), -1)); /* a's registration is a's */
    ASSERT_EQ(fflua_dostring(b, "error('only b')", "=b"), FFLUA_ELUA);
    ASSERT(fflua_errmsg(a) == NULL);
    ASSERT(strncmp(fflua_errmsg(b), "b:1: only b", 11) == 0);
    fflua_close(a);
    fflua_close(b);
    fflua_close(NULL);
}

int main(void) {
    RUN(test_dostring_results_and_errors);
    RUN(test_register_and_run_nodes);
    RUN(test_failing_node);
    RUN(test_run_bad_input);
    RUN(test_attach);
    RUN(test_two_engines);
    return 0;
}
