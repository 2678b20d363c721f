/*
 * repl.h: fflua's interactive loop (repl.c), which main.c starts. It runs
 * code through cli.h's helpers and calls nothing in main.c.
 */
#ifndef FFLUA_REPL_H
#define FFLUA_REPL_H

#include <lua.h>

/* Runs the interactive loop on L until end of input (or SIGTERM/SIGHUP),
 * from the main thread. Preloads the global `ff` unless it exists. Uses
 * libedit when standard input is a terminal and plain stdio otherwise. */
void ff_repl_run(lua_State *L);

#endif
