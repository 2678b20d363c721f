/*
 * lcore.c: the functionfuse.core Lua C module.
 *
 * This is the one place where the engine's C side meets Lua: each engine
 * module gets its binding file (l<module>.c), named after what Lua sees,
 * and registers it here: the version and error tables (here), the graph
 * and its LeafSet (lgraph.c), queries (lquery.c), the executors that run a
 * LeafSet (lrun.h: the local executor in llocal.c, the cluster driver in
 * ldriver.c), the store (lstore.c), the codec (lcodec.c), the cluster
 * client (lclient.c), the process helpers (lproc.c), and the stdlib's
 * commands (lcmd.c) and file helpers (lfs.c). Each userdata type
 * registers its metatable through ffl_new_type (lutil.h).
 *
 * The same object code is linked into the fflua program and libfflua (where
 * fflua_open() puts it in package.preload) and built as core.so for hosts
 * that load C modules from package.cpath.
 */
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "exec.h"
#include "fflua.h"
#include "lclient.h"
#include "lcmd.h"
#include "lcodec.h"
#include "lfs.h"
#include "lgraph.h"
#include "lproc.h"
#include "lquery.h"
#include "lrecord.h"
#include "lrun.h"
#include "lstore.h"
#include "lworkdir.h"
#include "text.h"

/* core.strerror(code) -> string */
static int ffl_core_strerror(lua_State *L) {
    lua_pushstring(L, fflua_strerror((int)luaL_checkinteger(L, 1)));
    return 1;
}

/* core.err_name(code) -> string */
static int ffl_core_err_name(lua_State *L) {
    lua_pushstring(L, fflua_err_name((int)luaL_checkinteger(L, 1)));
    return 1;
}

/* core.escape(s[, max]) -> s with control characters and
 * malformed UTF-8 escaped, cut to at most max bytes (with "...") */
static int ffl_core_escape(lua_State *L) {
    size_t n;
    const char *s = luaL_checklstring(L, 1, &n);
    lua_Integer max = luaL_optinteger(L, 2, 0);
    luaL_argcheck(L, max == 0 || max >= 8, 2, "at least 8 bytes");
    size_t cap = max > 0 ? (size_t)max + 1 : n * 4 + 1;
    luaL_Buffer b;
    char *out = luaL_buffinitsize(L, &b, cap);
    ff_text_escape(out, cap, s, n);
    luaL_pushresultsize(&b, strlen(out));
    return 1;
}

/* core.node_name() -> the name of the node this cluster worker's Lua
 * state is running, or nil (not on a worker, or between nodes). */
static int ffl_core_node_name(lua_State *L) {
    lua_getfield(L, LUA_REGISTRYINDEX, FF_EXEC_NODE_KEY);
    return 1;
}

static const luaL_Reg ffl_core_funcs[] = {
    {"node_name", ffl_core_node_name},
    {"escape", ffl_core_escape},
    {"strerror", ffl_core_strerror},
    {"err_name", ffl_core_err_name},
    {NULL, NULL},
};

int luaopen_functionfuse_core(lua_State *L) {
    ffl_graph_open(L);
    ffl_query_open(L);
    ffl_store_open(L);
    ffl_client_open(L);
    ffl_record_open(L);
    ffl_cmd_open(L);
    /* A LeafSet's methods beyond its own (set_slot, get_slot, leaves). */
    ffl_leaves_add_methods(L, ffl_query_methods);  /* nodes */
    ffl_leaves_add_methods(L, ffl_local_methods);  /* run_local */
    ffl_leaves_add_methods(L, ffl_driver_methods); /* run_cluster */
    luaL_newlib(L, ffl_core_funcs);                /* [core] */
    luaL_setfuncs(L, ffl_graph_funcs, 0);
    luaL_setfuncs(L, ffl_query_funcs, 0);
    luaL_setfuncs(L, ffl_store_funcs, 0);
    luaL_setfuncs(L, ffl_codec_funcs, 0);
    luaL_setfuncs(L, ffl_client_funcs, 0);
    luaL_setfuncs(L, ffl_proc_funcs, 0);
    luaL_setfuncs(L, ffl_workdir_funcs, 0);
    luaL_setfuncs(L, ffl_record_funcs, 0);
    luaL_setfuncs(L, ffl_run_funcs, 0);
    luaL_setfuncs(L, ffl_cmd_funcs, 0);
    luaL_setfuncs(L, ffl_fs_funcs, 0);
    lua_pushstring(L, fflua_version());
    lua_setfield(L, -2, "version");
    lua_pushinteger(L, FFLUA_VERSION_NUM);
    lua_setfield(L, -2, "version_num");
    lua_pushstring(L, LUA_RELEASE);
    lua_setfield(L, -2, "lua_release");
    lua_pushinteger(L, FF_STORE_TASK_MAX);
    lua_setfield(L, -2, "store_task_max");
    lua_pushinteger(L, FF_STORE_WF_MAX);
    lua_setfield(L, -2, "store_wf_max");

    /* core.errors: name -> code, for every FFLUA_E* code. */
    lua_createtable(L, 0, 16); /* [core, errors] */
#define XX(name, code, text)                                                                       \
    lua_pushinteger(L, code);                                                                      \
    lua_setfield(L, -2, #name);
    FFLUA_ERRNO_MAP(XX)
#undef XX
    lua_setfield(L, -2, "errors"); /* [core] */
    return 1;
}
