/*
 * lcmd.h: the Lua binding of commands run as child processes (lcmd.c):
 * core.cmd_start and its functionfuse.Cmd objects, core.node_env. Not
 * installed; called from the thread that runs the state.
 */
#ifndef FFLUA_LCMD_H
#define FFLUA_LCMD_H

#include <lauxlib.h>

/* Registers the metatable functionfuse.Cmd. Stack effect: 0. */
void ffl_cmd_open(lua_State *L);

/* Kills and reaps every command of L still running (not closed): for
 * the engine after a node was stopped by a hook that stays armed (its
 * <close> handlers could not run). Never raises, allocates nothing, runs
 * no Lua code. */
void ffl_cmd_close_all(lua_State *L);

/* Clears L's environment overlay (core.node_env): the engine calls it
 * before each node's pre-run call. Never raises. */
void ffl_cmd_node_start(lua_State *L);

/* core.cmd_start, core.node_env. */
extern const luaL_Reg ffl_cmd_funcs[];

#endif
