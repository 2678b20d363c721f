/*
 * lutil.h: helpers shared by the Lua bindings.
 */
#ifndef FF_LUTIL_H
#define FF_LUTIL_H

#include <lua.h>

/// The traceback message handler: turns the error object into a string
/// (through __tostring where it has one) with a traceback appended.
int ffl_traceback(lua_State *L);

/// lua_pcall with ffl_traceback as message handler, removed afterwards.
/// Same stack effect as lua_pcall.
int ffl_pcall(lua_State *L, int nargs, int nres);

#endif
