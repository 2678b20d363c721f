/*
 * lquery.h: the Lua binding of queries over node names (lquery.c): the
 * Pattern type, core.compile and the LeafSet's nodes method. Not
 * installed; called from the thread that runs the Lua state.
 */
#ifndef FFLUA_LQUERY_H
#define FFLUA_LQUERY_H

#include <lauxlib.h>
#include <lua.h>

/* Registers the Pattern metatable; called by luaopen_functionfuse_core. */
void ffl_query_open(lua_State *L);

/* core.compile. */
extern const luaL_Reg ffl_query_funcs[];

/* The LeafSet's query method (nodes), added by luaopen_functionfuse_core. */
extern const luaL_Reg ffl_query_methods[];

#endif
