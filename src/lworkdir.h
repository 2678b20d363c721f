/*
 * lworkdir.h: the Lua binding of working directories (lworkdir.c, over
 * workdir.c): core.workdir_pack. Not installed; called from the thread
 * that runs the state.
 */
#ifndef FFLUA_LWORKDIR_H
#define FFLUA_LWORKDIR_H

#include <lauxlib.h>

/* The working directory functions of functionfuse.core. */
extern const luaL_Reg ffl_workdir_funcs[];

#endif
