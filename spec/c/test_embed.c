/*
 * Embedding: a C application with its own Lua states uses fflua_open() and
 * requires the functionfuse package from the copy compiled into libfflua.
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "fflua.h"
#include "test.h"

static lua_State *new_state(void) {
    lua_State *L = luaL_newstate();
    ASSERT(L != NULL);
    luaL_openlibs(L);
    int top = lua_gettop(L);
    ASSERT_EQ(fflua_open(L), 0);
    ASSERT_EQ(lua_gettop(L), top); /* stack-balanced */
    return L;
}

static const char *eval(lua_State *L, const char *code) {
    if (luaL_dostring(L, code) != LUA_OK)
        FAIL_("%s: %s", code, lua_tostring(L, -1));
    return lua_tostring(L, -1);
}

static void test_require_from_embedded_copy(void) {
    lua_State *L = new_state();
    /* ctest runs this with FFLUA_TREE empty: the embedded copy is used. */
    ASSERT_STR_EQ(eval(L, "return require('functionfuse').version"), FFLUA_VERSION);
    ASSERT_STR_EQ(eval(L, "package.loaded.functionfuse = nil; "
                          "local _, where = require('functionfuse'); return where"),
                  "functionfuse/init.lua");
    ASSERT_STR_EQ(eval(L, "return require('functionfuse.core').err_name(-31003)"), "FFLUA_ECYCLE");
    lua_close(L);
}

static void test_missing_module_message(void) {
    lua_State *L = new_state();
    ASSERT(luaL_dostring(L, "require 'functionfuse.nope'") != LUA_OK);
    const char *msg = lua_tostring(L, -1);
    ASSERT(strstr(msg, "module 'functionfuse.nope' not found") != NULL);
    ASSERT(strstr(msg, "no embedded module 'functionfuse.nope'") != NULL);
    lua_close(L);
}

static void test_two_states_are_independent(void) {
    lua_State *a = new_state(), *b = new_state();
    eval(a, "require('functionfuse').marker = 'a'");
    eval(b, "require('functionfuse').marker = 'b'");
    ASSERT_STR_EQ(eval(a, "return require('functionfuse').marker"), "a");
    ASSERT_STR_EQ(eval(b, "return require('functionfuse').marker"), "b");
    lua_close(a);
    lua_close(b);
}

static void test_open_without_package_library(void) {
    lua_State *L = luaL_newstate();
    ASSERT_EQ(fflua_open(L), FFLUA_EINTERNAL);
    ASSERT_EQ(lua_gettop(L), 0);
    lua_close(L);
}

int main(void) {
    RUN(test_require_from_embedded_copy);
    RUN(test_missing_module_message);
    RUN(test_two_states_are_independent);
    RUN(test_open_without_package_library);
    return 0;
}
