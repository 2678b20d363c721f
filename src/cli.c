/*
 * cli.c: what the fflua program's parts share: protected calls, error
 * reports, the version banner and the program's signals.
 *
 * main.c (arguments and subcommands) and repl.c (the interactive loop) both
 * run Lua code through ff_cli_docall and report through ff_cli_report; this
 * file calls neither of them. Its statics are the signal state: a signal
 * handler can reach nothing else, and one process has one terminal, so they
 * belong to the program, never to the library; so does the program's name
 * that reports start with.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "cli.h"
#include "fflua.h"
#include "lcmd.h"
#include "lutil.h"

/* --- SIGINT, SIGTERM and SIGHUP -------------------------------------------
 * SIGINT interrupts the running Lua code ("interrupted!"); the REPL goes
 * on. SIGTERM and SIGHUP interrupt it too ("terminated") and end the
 * program, but only after the Lua state is closed: storages commit what
 * they hold then, so a terminated run keeps every result it finished. The
 * program then dies of the signal, so its parent sees why. A second signal
 * while the code is stuck in C ends the process at once. */
static lua_State *volatile sig_L;
static volatile sig_atomic_t sig_in_call; /* Lua code is running */
static volatile sig_atomic_t sig_pending; /* SIGINT arrived between calls */
static volatile sig_atomic_t sig_term;    /* SIGTERM or SIGHUP arrived */

/* Raises "interrupted!" (or "terminated") and stays armed, so a pcall in
 * the interrupted code cannot swallow it: the error comes back at the next
 * instruction until control reaches the top. ff_cli_docall disarms it. */
static void ff_hook_stop(lua_State *L, lua_Debug *ar) {
    (void)ar;
    lua_sethook(L, ff_hook_stop, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
    luaL_error(L, sig_term ? "terminated" : "interrupted!");
}

static void set_handler(int sig, void (*handler)(int)) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART: interrupt blocking reads */
    sigaction(sig, &sa, NULL);
}

static void stop_lua(void) {
    lua_sethook(sig_L, ff_hook_stop, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
}

static void on_sigint(int sig) {
    if (sig_in_call && sig_L != NULL) {
        /* A second Ctrl-C, if the code does not reach a hook (a long C
         * call), ends the process the default way. */
        set_handler(sig, SIG_DFL);
        stop_lua();
    } else {
        sig_pending = 1;
    }
}

static void on_sigterm(int sig) {
    sig_term = sig;
    if (sig_in_call && sig_L != NULL) {
        set_handler(sig, SIG_DFL);
        stop_lua();
    }
}

void ff_cli_sigint_install(lua_State *L) {
    sig_L = L;
    set_handler(SIGINT, on_sigint);
    static const int term[] = {SIGTERM, SIGHUP};
    for (size_t i = 0; i < sizeof term / sizeof term[0]; i++) {
        struct sigaction old;
        /* Left alone when ignored (nohup). */
        if (sigaction(term[i], NULL, &old) == 0 && old.sa_handler != SIG_IGN)
            set_handler(term[i], on_sigterm);
    }
}

void ff_cli_close_state(lua_State *L) {
    sig_L = NULL;
    lua_close(L);
}

void ff_cli_reraise_term(void) {
    if (sig_term) {
        int sig = sig_term;
        set_handler(sig, SIG_DFL);
        raise(sig);
    }
}

int ff_cli_interrupt_pending(void) {
    return sig_pending;
}

int ff_cli_take_interrupt(void) {
    int was = sig_pending;
    sig_pending = 0;
    return was;
}

int ff_cli_terminate_pending(void) {
    return sig_term != 0;
}

/* --- SIGPIPE --------------------------------------------------------------
 * The head and the worker write to sockets with libuv, whose writev cannot
 * be told MSG_NOSIGNAL: a peer that closes while a write is in flight would
 * kill the process. With a handler installed, the write fails with EPIPE
 * instead and only that connection ends. A handler that does nothing
 * rather than SIG_IGN: an ignored signal stays ignored across exec, and the
 * programs a task starts (io.popen, os.execute) should get the default
 * action, as they would anywhere else. The driver needs none of this: its
 * client sends with MSG_NOSIGNAL. */
static void on_sigpipe(int sig) {
    (void)sig;
}

void ff_cli_sigpipe_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigpipe;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGPIPE, &sa, NULL);
}

/* --- calls and reports ---------------------------------------------------- */

/* The name errors are reported with: the program's argv[0], as lua.c's
 * progname (set once by main; NULL while the REPL runs). */
static const char *progname = FF_PROGNAME;

void ff_cli_set_progname(const char *name) {
    progname = name;
}

const char *ff_cli_progname(void) {
    return progname;
}

void ff_cli_message(const char *prefix, const char *msg) {
    if (prefix != NULL)
        fprintf(stderr, "%s: ", prefix);
    fprintf(stderr, "%s\n", msg);
    fflush(stderr);
}

int ff_cli_report(lua_State *L, int status, int interactive) {
    if (status != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        if (msg == NULL)
            msg = "(error object is not a string)";
        ff_cli_message(interactive ? NULL : progname, msg);
        lua_pop(L, 1);
    }
    return status;
}

int ff_cli_docall(lua_State *L, int narg, int nres) {
    int base = lua_gettop(L) - narg;
    lua_pushcfunction(L, ffl_traceback);
    lua_insert(L, base);
    sig_in_call = 1;
    if (sig_term)
        stop_lua(); /* terminated before the call: it stops at once */
    int status = lua_pcall(L, narg, nres, base);
    sig_in_call = 0;
    /* A stop (Ctrl-C, SIGTERM) keeps its hook armed as it unwinds, so the
     * <close> handlers of the commands running (shell.run) failed: kill
     * those commands now. */
    int stopped = status != LUA_OK && lua_gethook(L) == ff_hook_stop;
    lua_sethook(L, NULL, 0, 0); /* disarm a pending interrupt */
    if (stopped)
        ffl_cmd_close_all(L);
    set_handler(SIGINT, on_sigint); /* a second Ctrl-C may have reset it */
    lua_remove(L, base);
    return status;
}

void ff_cli_print_version(void) {
    printf("fflua %s -- %s\n", FFLUA_VERSION, LUA_COPYRIGHT);
    fflush(stdout);
}
