/*
 * lutil.c: helpers shared by the Lua bindings (see lutil.h).
 */
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "lutil.h"
#include "text.h"

int ffl_traceback(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (msg != NULL && (strncmp(msg, "stack traceback:\n", 17) == 0 ||
                        strstr(msg, "\nstack traceback:\n") != NULL)) {
        lua_pushvalue(L, 1); /* it has one: from a failed run, or debug.traceback */
        return 1;
    }
    if (msg == NULL) {
        /* As lua.c: an object that knows how to show itself is shown that
         * way, with no traceback. */
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

int ffl_pcall(lua_State *L, int nargs, int nres) {
    int base = lua_gettop(L) - nargs;
    lua_pushcfunction(L, ffl_traceback);
    lua_insert(L, base);
    int status = lua_pcall(L, nargs, nres, base);
    lua_remove(L, base);
    return status;
}

int ffl_is_callable(lua_State *L, int idx) {
    if (lua_isfunction(L, idx))
        return 1;
    if (luaL_getmetafield(L, idx, "__call") != LUA_TNIL) {
        lua_pop(L, 1);
        /* A NodeItem's __call only serves node:method() calls. */
        return luaL_testudata(L, idx, "functionfuse.NodeItem") == NULL;
    }
    return 0;
}

void ffl_one_result(lua_State *L, int base) {
    int nres = lua_gettop(L) - base;
    if (nres == 0) {
        lua_pushnil(L);
    } else if (nres > 1) { /* several values: a sequence with n, as a tuple */
        lua_createtable(L, nres, 1);
        lua_insert(L, base + 1);
        for (int i = nres; i >= 1; i--)
            lua_rawseti(L, base + 1, i);
        lua_pushinteger(L, nres);
        lua_setfield(L, -2, "n");
    }
}

const char *ffl_push_short(lua_State *L, const char *s, size_t len) {
    char buf[FFL_SHORT_MAX + 1];
    if (ff_text_escaped_len(s, len) <= FFL_SHORT_MAX)
        return lua_pushstring(L, ff_text_escape(buf, sizeof buf, s, len));
    /* The first FFL_SHORT_KEEP bytes of the escaped text, then "...". */
    ff_text_escape(buf, FFL_SHORT_KEEP + 4, s, len);
    return lua_pushfstring(L, "%s (%I bytes)", buf, (lua_Integer)len);
}

const char *ffl_push_short_at(lua_State *L, int idx) {
    size_t len;
    const char *s = luaL_tolstring(L, idx, &len);
    ffl_push_short(L, s, len);
    lua_remove(L, -2);
    return lua_tostring(L, -1);
}

/* __tostring of a type that shows no more than what it is: "<name>: 0x...". */
static int type_tostring(lua_State *L) {
    luaL_getmetafield(L, 1, "__name");
    lua_pushfstring(L, "%s: %p", lua_tostring(L, -1), lua_topointer(L, 1));
    return 1;
}

void ffl_new_type(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc,
                  lua_CFunction close, lua_CFunction tostring) {
    luaL_newmetatable(L, name); /* [mt] */
    if (methods != NULL) {
        lua_newtable(L); /* not luaL_newlib: it sizes by an array, not a pointer */
        luaL_setfuncs(L, methods, 0);
        lua_setfield(L, -2, "__index");
    }
    const lua_CFunction fns[] = {gc, close, tostring ? tostring : type_tostring};
    static const char *const fields[] = {"__gc", "__close", "__tostring"};
    for (int i = 0; i < 3; i++) {
        if (fns[i] != NULL) {
            lua_pushcfunction(L, fns[i]);
            lua_setfield(L, -2, fields[i]);
        }
    }
}
