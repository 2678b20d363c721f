/* An embedding application watches nodes run through fflua_set_hooks. */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "fflua.h"
#include "test.h"

struct seen {
    char log[1024];
};

static void before(void *ud, const char *name) {
    struct seen *s = ud;
    strncat(s->log, "+", sizeof s->log - strlen(s->log) - 1);
    strncat(s->log, name, sizeof s->log - strlen(s->log) - 1);
}

static void after(void *ud, const char *name, int failed) {
    struct seen *s = ud;
    strncat(s->log, failed ? " !" : " -", sizeof s->log - strlen(s->log) - 1);
    strncat(s->log, name, sizeof s->log - strlen(s->log) - 1);
    strncat(s->log, " ", sizeof s->log - strlen(s->log) - 1);
}

static const char script[] =
    "local ff = require 'functionfuse'\n"
    "local LW = require('functionfuse.backends.builtin.localback').LocalWorkflow\n"
    "local sum = ff.workflow(function(a, b) return a + b end)\n"
    "local a = sum(1, 1)\n"
    "local b = sum(a, 1):set_name('b')\n"
    "assert(LW(b, { workflow_name = 'h' }):run() == 3)\n"
    "local bad = sum(b, nil):set_name('bad')\n"
    "local wf = LW(bad, { workflow_name = 'h2' })\n"
    "return pcall(wf.run, wf)\n";

static void test_hooks(void) {
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    ASSERT_EQ(fflua_open(L), 0);
    struct seen s = {""};
    fflua_hooks h = {before, after};
    ASSERT_EQ(luaL_dostring(L, "require 'functionfuse'"), LUA_OK);
    ASSERT_EQ(fflua_set_hooks(L, &h, &s), 0);
    if (luaL_dostring(L, script) != LUA_OK)
        FAIL_("%s", lua_tostring(L, -1));
    ASSERT_EQ(lua_gettop(L), 2); /* the failed run's pcall: false, the run's error */
    ASSERT(!lua_toboolean(L, 1));
    ASSERT(lua_istable(L, 2)); /* an error object: its message, its node */
    ASSERT_EQ(lua_getfield(L, 2, "message"), LUA_TSTRING);
    ASSERT(strncmp(lua_tostring(L, -1), "node 'bad' ", 11) == 0);
    ASSERT_EQ(lua_getfield(L, 2, "node"), LUA_TSTRING);
    ASSERT_STR_EQ(lua_tostring(L, -1), "bad");
    lua_settop(L, 0);
    ASSERT_STR_EQ(s.log, "+sum_0000 -sum_0000 +b -b +sum_0000 -sum_0000 +b -b +bad !bad ");
    ASSERT_EQ(fflua_set_hooks(L, NULL, NULL), 0);
    lua_close(L);
}

int main(void) {
    RUN(test_hooks);
    return 0;
}
