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

#endif
