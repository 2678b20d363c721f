/*
 * lutil.h: helpers shared by the Lua bindings.
 */
#ifndef FF_LUTIL_H
#define FF_LUTIL_H

#include <lua.h>

/// The traceback message handler, as lua.c's: a string error gets a
/// traceback appended; an object with __tostring is shown through it (no
/// traceback); any other object becomes "(error object is a T value)" with
/// a traceback.
int ffl_traceback(lua_State *L);

/// lua_pcall with ffl_traceback as message handler, removed afterwards.
/// Same stack effect as lua_pcall.
int ffl_pcall(lua_State *L, int nargs, int nres);

/// Makes the values above stack index base one result, as every backend
/// does: none -> nil, one -> itself, several -> { v1, ..., n = N }.
void ffl_one_result(lua_State *L, int base);

#endif
