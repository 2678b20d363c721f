/*
 * lcodec.c: the Lua binding of the codec (codec.c), functions of
 * functionfuse.core:
 *
 *   core.encode(v[, mode]) -> string     core.decode(s[, mode]) -> v
 *   core.register_class(name, mt)        core.register_serializer(mt_or_name, spec)
 *
 * The Lua package (functionfuse.register_class, ...) rests on them.
 */
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "codec.h"
#include "lcodec.h"

/* ff.register_class(name, mt): tables with metatable mt are stored with the
 * name and get mt back when loaded. */
static int ffl_codec_register_class(lua_State *L) {
    size_t n;
    const char *name = luaL_checklstring(L, 1, &n);
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_argcheck(L, n > 0, 1, "empty class name");
    ffc_push_registry(L); /* [reg] */
    lua_getfield(L, -1, "classes");
    lua_pushvalue(L, 1);
    if (lua_rawget(L, -2) == LUA_TTABLE && !lua_rawequal(L, -1, 2))
        return luaL_error(L, "class '%s' is already registered with another metatable", name);
    lua_pop(L, 1);
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 2);
    lua_rawset(L, -3);
    lua_getfield(L, -2, "class_names");
    lua_pushvalue(L, 2);
    lua_pushvalue(L, 1);
    lua_rawset(L, -3);
    lua_settop(L, 2);
    return 1;
}

/* ff.register_serializer(mt_or_name, {pack = f, unpack = g [, name = s]}) */
static int ffl_codec_register_serializer(lua_State *L) {
    luaL_checktype(L, 2, LUA_TTABLE);
    if (lua_type(L, 1) == LUA_TSTRING) {
        if (luaL_getmetatable(L, lua_tostring(L, 1)) != LUA_TTABLE)
            return luaL_error(L, "no metatable named '%s' (luaL_newmetatable) exists",
                              lua_tostring(L, 1));
        lua_pushvalue(L, 1); /* [mt, name] */
    } else {
        luaL_checktype(L, 1, LUA_TTABLE);
        lua_pushvalue(L, 1);
        if (lua_getfield(L, 2, "name") != LUA_TSTRING) {
            lua_pop(L, 1);
            if (lua_getfield(L, 1, "__name") != LUA_TSTRING)
                return luaL_error(
                    L, "the metatable has no __name: give the serializer a name "
                       "(register_serializer(mt, {name = ..., pack = ..., unpack = ...}))");
        }
    }
    int mt = lua_gettop(L) - 1, name = lua_gettop(L);
    for (int i = 0; i < 2; i++) {
        const char *f = i ? "unpack" : "pack";
        lua_getfield(L, 2, f);
        if (!lua_isfunction(L, -1) && !luaL_getmetafield(L, -1, "__call"))
            return luaL_error(L, "the serializer has no '%s' function", f);
        lua_settop(L, name);
    }
    lua_createtable(L, 0, 3); /* [.., spec] */
    int spec = lua_gettop(L);
    lua_pushvalue(L, name);
    lua_setfield(L, spec, "name");
    lua_getfield(L, 2, "pack");
    lua_setfield(L, spec, "pack");
    lua_getfield(L, 2, "unpack");
    lua_setfield(L, spec, "unpack");
    ffc_push_registry(L);
    lua_getfield(L, -1, "ser");
    lua_pushvalue(L, mt);
    lua_pushvalue(L, spec);
    lua_rawset(L, -3);
    lua_getfield(L, -2, "ser_names");
    lua_pushvalue(L, name);
    lua_pushvalue(L, spec);
    lua_rawset(L, -3);
    lua_settop(L, name);
    return 1;
}

/* core.encode(v [, mode]) -> string; mode "hash" (or true): fingerprint
 * input; "code": functions and modules travel (for authenticated peers). */
static int ffl_codec_encode(lua_State *L) {
    ffc_opts o = {0, NULL, NULL, 0};
    if (lua_type(L, 2) == LUA_TSTRING && strcmp(lua_tostring(L, 2), "code") == 0)
        o.flags |= FFC_CODE;
    else if (lua_toboolean(L, 2))
        o.flags |= FFC_HASH;
    lua_settop(L, 1);
    ff_buf b = {0};
    int rc = ffc_encode(L, 1, &o, &b);
    if (rc != 0) {
        ff_buf_free(&b);
        return lua_error(L);
    }
    lua_pushlstring(L, b.p, b.n);
    ff_buf_free(&b);
    return 1;
}

/* core.decode(s [, mode]) -> v; mode "inspect" (or true): placeholders for
 * unknown classes and serializers; "code": accept functions and modules. */
static int ffl_codec_decode(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    unsigned flags = 0;
    if (lua_type(L, 2) == LUA_TSTRING && strcmp(lua_tostring(L, 2), "code") == 0)
        flags = FFC_CODE;
    else if (lua_toboolean(L, 2))
        flags = FFC_INSPECT;
    lua_settop(L, 1);
    int rc = ffc_decode(L, s, n, flags);
    if (rc != 0)
        return lua_error(L);
    return 1;
}

const luaL_Reg ffl_codec_funcs[] = {
    {"encode", ffl_codec_encode},
    {"decode", ffl_codec_decode},
    {"register_class", ffl_codec_register_class},
    {"register_serializer", ffl_codec_register_serializer},
    {NULL, NULL},
};
