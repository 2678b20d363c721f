/*
 * lstore.h: the Lua binding of the store (lstore.c).
 */
#ifndef FFLUA_LSTORE_H
#define FFLUA_LSTORE_H

#include <lauxlib.h>
#include <lua.h>

#include "store.h"

#define STORE_MT "functionfuse.Store"

/* The open store of the Store userdata at idx (raises when closed). */
ff_store *ffl_check_store(lua_State *L, int idx);

extern const luaL_Reg ffl_store_funcs[];
void ffl_store_open(lua_State *L);

#endif
