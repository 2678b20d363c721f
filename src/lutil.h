/*
 * lutil.h: helpers shared by the Lua bindings.
 */
#ifndef FFLUA_LUTIL_H
#define FFLUA_LUTIL_H

#include <lua.h>

/* The traceback message handler, as lua.c's: a string error gets a
 * traceback appended, unless it holds one already (the error of a failed
 * run, or debug.traceback's), so that an error passing through several
 * protected calls gets one; an object with __tostring is shown through it
 * (no traceback); any other object becomes "(error object is a T value)"
 * with a traceback. Stack effect: +1. */
int ffl_traceback(lua_State *L);

/* lua_pcall with ffl_traceback as message handler, removed afterwards.
 * Same stack effect as lua_pcall. */
int ffl_pcall(lua_State *L, int nargs, int nres);

/* 1 when the value at idx is a function or has a __call metamethod, but
 * for a NodeItem (a field of a node's result). Stack effect: 0. */
int ffl_is_callable(lua_State *L, int idx);

/* Makes the values above stack index base one result, as every backend
 * does: none -> nil, one -> itself, several -> { v1, ..., n = N }. */
void ffl_one_result(lua_State *L, int base);

/* Names, patterns and keys in error messages are shown escaped (text.h:
 * control characters and malformed UTF-8 as \xHH), whole up to
 * FFL_SHORT_MAX bytes of escaped text; longer ones as their first
 * FFL_SHORT_KEEP bytes (cut at a character boundary), "..." and the
 * original length: "... (N bytes)". */
#define FFL_SHORT_MAX 80
#define FFL_SHORT_KEEP 60

/* Pushes s[0..len) for an error message, shortened as above; returns it.
 * Stack effect: +1. */
const char *ffl_push_short(lua_State *L, const char *s, size_t len);

/* The same for the string at idx (any value: through luaL_tolstring).
 * Stack effect: +1. */
const char *ffl_push_short_at(lua_State *L, int idx);

/* Registers the metatable of a userdata type Lua sees, as every binding
 * does (CONVENTIONS.md, item 7): luaL_newmetatable(L, name), so __name is
 * name; __index a table of the methods (none when methods is NULL: the
 * caller sets __index); __gc, __close and __tostring the functions given
 * (NULL: none; a NULL tostring gives "<name>: 0x..."). Leaves the
 * metatable on the stack for what a type adds (an __index function,
 * __eq). Call once per state, from luaopen_functionfuse_core. Stack
 * effect: +1. */
void ffl_new_type(lua_State *L, const char *name, const luaL_Reg *methods, lua_CFunction gc,
                  lua_CFunction close, lua_CFunction tostring);

#endif
