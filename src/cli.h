/*
 * cli.h: what the fflua program's main.c and repl.c share.
 *
 * These are the pieces of lua.c's design the REPL reuses: protected calls
 * with a traceback and Ctrl-C handling, and error reporting. They belong to
 * the program, not to the library: the SIGINT state they keep is per process
 * by nature (a signal handler has no other place to find it).
 */
#ifndef FF_CLI_H
#define FF_CLI_H

#include <lua.h>

#define FF_PROGNAME "fflua"

/// Calls the function below narg arguments on L's stack in protected mode,
/// with a traceback message handler; SIGINT during the call interrupts it
/// with the error "interrupted!", SIGTERM or SIGHUP with "terminated" (and
/// after one of those, every call fails at once). Same stack effect as
/// lua_pcall.
int ff_cli_docall(lua_State *L, int narg, int nres);

/// Prints the error message on top of L's stack when status is not LUA_OK,
/// prefixed with the program name unless interactive, and pops it.
/// Returns status.
int ff_cli_report(lua_State *L, int status, int interactive);

/// Prints the version banner on stdout.
void ff_cli_print_version(void);

/// Installs fflua's handlers of SIGINT, SIGTERM and SIGHUP (without
/// SA_RESTART, so a blocked read is interrupted).
void ff_cli_sigint_install(lua_State *L);

/// Returns 1 once SIGTERM or SIGHUP arrived: the program is ending.
int ff_cli_terminate_pending(void);

/// Returns 1 and clears the flag when SIGINT arrived while no Lua code ran.
int ff_cli_take_interrupt(void);

/// Returns 1 when SIGINT arrived while no Lua code ran; keeps the flag.
int ff_cli_interrupt_pending(void);

/// Runs the interactive loop on L until end of input. Uses libedit when
/// standard input is a terminal and plain stdio otherwise.
void ff_repl_run(lua_State *L);

#endif
