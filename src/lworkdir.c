/*
 * lworkdir.c: core.workdir_pack(dir [, exclude]) -> blob, hash: a run's
 * working directory packed for the cluster (workdir.h), and its identity
 * (16 bytes, XXH3-128 of the blob). exclude: a list of paths left out
 * (the workflow's storage). A directory that cannot be packed raises an
 * error naming it and why (over a cap: its size and the cap).
 * core.workdir_hash(bytes) -> hash: the identity of any bytes as a blob
 * (for tools and specs that send blobs of their own).
 */
#include <stdlib.h>

#include <lauxlib.h>
#include <lua.h>

#include "buf.h"
#include "lworkdir.h"
#include "workdir.h"

/* The blob being made lives in a userdata whose __gc frees it, so that a
 * memory error while it is pushed leaks nothing. */
static int buf_gc(lua_State *L) {
    ff_buf_free(lua_touserdata(L, 1));
    return 0;
}

static int ffl_workdir_pack(lua_State *L) {
    const char *dir = luaL_checkstring(L, 1);
    size_t nex = 0;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        nex = (size_t)luaL_len(L, 2);
    }
    /* [dir, exclude?, ex] the paths, kept alive in a userdata */
    const char **ex = lua_newuserdatauv(L, (nex ? nex : 1) * sizeof *ex, 1);
    lua_newtable(L);
    for (size_t i = 0; i < nex; i++) {
        lua_rawgeti(L, 2, (lua_Integer)i + 1);
        if (!lua_isstring(L, -1))
            return luaL_argerror(L, 2, "a list of paths expected");
        ex[i] = lua_tostring(L, -1);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setiuservalue(L, -2, 1);
    ff_buf *out = lua_newuserdatauv(L, sizeof *out, 0); /* [.., ex, out] */
    *out = (ff_buf){0};
    if (luaL_newmetatable(L, "functionfuse.WorkdirBuf")) {
        lua_pushcfunction(L, buf_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    char err[600];
    int rc = ff_wd_pack(dir, ex, nex, out, err, sizeof err);
    if (rc != 0) {
        ff_buf_free(out);
        lua_pushstring(L, err);
        return lua_error(L);
    }
    unsigned char hash[FF_WD_HASH_LEN];
    ff_wd_hash(out->p, out->n, hash);
    lua_pushlstring(L, out->p ? out->p : "", out->n);
    ff_buf_free(out);
    lua_pushlstring(L, (const char *)hash, sizeof hash);
    return 2;
}

/* core.workdir_hash(bytes) -> the 16 bytes that identify a blob. */
static int ffl_workdir_hash(lua_State *L) {
    size_t n;
    const char *p = luaL_checklstring(L, 1, &n);
    unsigned char hash[FF_WD_HASH_LEN];
    ff_wd_hash(p, n, hash);
    lua_pushlstring(L, (const char *)hash, sizeof hash);
    return 1;
}

const luaL_Reg ffl_workdir_funcs[] = {
    {"workdir_pack", ffl_workdir_pack},
    {"workdir_hash", ffl_workdir_hash},
    {NULL, NULL},
};
