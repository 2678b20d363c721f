/*
 * lcmd.h: the Lua binding of commands run as child processes (lcmd.c):
 * core.cmd_start and its functionfuse.Cmd objects, core.setenv. Not
 * installed; called from the thread that runs the state.
 */
#ifndef FFLUA_LCMD_H
#define FFLUA_LCMD_H

#include <lauxlib.h>

/* Registers the metatable functionfuse.Cmd. Stack effect: 0. */
void ffl_cmd_open(lua_State *L);

/* core.cmd_start, core.setenv. */
extern const luaL_Reg ffl_cmd_funcs[];

#endif
