/*
 * cli.h: the fflua program's shared helpers (cli.c).
 *
 * These are the pieces of lua.c's design that both main.c (arguments and
 * subcommands) and repl.c (the interactive loop) use: protected calls with
 * a traceback and Ctrl-C handling, error reports, the version banner, and
 * the program's signal handlers. They belong to the program, not to the
 * library: the signal state they keep is per process by nature (a signal
 * handler has no other place to find it). Every function here is called
 * from the main thread only.
 */
#ifndef FFLUA_CLI_H
#define FFLUA_CLI_H

#include <lua.h>

#define FF_PROGNAME "fflua"

/* Calls the function below narg arguments on L's stack in protected mode,
 * with a traceback message handler; SIGINT during the call interrupts it
 * with the error "interrupted!", SIGTERM or SIGHUP with "terminated" (and
 * after one of those, every call fails at once). Same stack effect as
 * lua_pcall. */
int ff_cli_docall(lua_State *L, int narg, int nres);

/* Sets the name reports are prefixed with (ff_cli_report): argv[0], as
 * lua.c does, when the program has one; NULL for none (the REPL). The
 * string must outlive its use. The default is FF_PROGNAME. */
void ff_cli_set_progname(const char *name);

/* The name set by ff_cli_set_progname. */
const char *ff_cli_progname(void);

/* Prints the error message on top of L's stack when status is not LUA_OK,
 * prefixed with the program name (ff_cli_progname; none when NULL) unless
 * interactive, and pops it. Returns status. */
int ff_cli_report(lua_State *L, int status, int interactive);

/* Prints "PREFIX: MSG" (or only MSG when prefix is NULL) and a newline on
 * stderr. */
void ff_cli_message(const char *prefix, const char *msg);

/* Prints the version banner on stdout. */
void ff_cli_print_version(void);

/* Installs fflua's handlers of SIGINT, SIGTERM and SIGHUP (without
 * SA_RESTART, so a blocked read is interrupted); they stop Lua code that
 * ff_cli_docall runs on L. */
void ff_cli_sigint_install(lua_State *L);

/* Closes L, which the handlers of ff_cli_sigint_install stop touching
 * first. */
void ff_cli_close_state(lua_State *L);

/* When SIGTERM or SIGHUP arrived, restores its default action and raises
 * it again, so the program dies of it; otherwise returns. Call it once the
 * Lua state is closed (storages commit then). */
void ff_cli_reraise_term(void);

/* Makes SIGPIPE harmless (a handler that does nothing), so that a write to
 * a peer that closed fails with EPIPE; for the head and the worker. */
void ff_cli_sigpipe_install(void);

/* Returns 1 once SIGTERM or SIGHUP arrived: the program is ending. */
int ff_cli_terminate_pending(void);

/* Returns 1 and clears the flag when SIGINT arrived while no Lua code ran. */
int ff_cli_take_interrupt(void);

/* Returns 1 when SIGINT arrived while no Lua code ran; keeps the flag. */
int ff_cli_interrupt_pending(void);

#endif
