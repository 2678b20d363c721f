/*
 * lproc.h: the Lua binding of the process helpers (lproc.c): spawning,
 * signalling and waiting for processes, tokens, clocks. Not installed;
 * called from the thread that runs the state.
 */
#ifndef FFLUA_LPROC_H
#define FFLUA_LPROC_H

#include <lauxlib.h>

/* The process helpers of functionfuse.core. */
extern const luaL_Reg ffl_proc_funcs[];

#endif
