/*
 * lcmd.c: commands run as child processes for the stdlib's shell nodes
 * (stdlib/shell.lua), functions of functionfuse.core:
 *
 *   core.cmd_start{ argv = { ... }, stdin = s, env = { NAME = v | false },
 *                   cwd = dir, shell = bool } -> a functionfuse.Cmd
 *   cmd:step(seconds) -> true once the command ended and its output is read
 *   cmd:result() -> stdout, stderr, exit code | nil, signal
 *   cmd:pid()    cmd:close()  (also __close and __gc)
 *   core.node_env([vars])  the node's environment overlay (see below)
 *
 * The command starts with posix_spawnp, without a shell unless shell is
 * true (then argv[1] is a script for /bin/sh -c), with stdin from the
 * string given (or /dev/null), stdout and stderr to pipes, the default
 * action for every signal and an empty signal mask. step() moves bytes
 * through the pipes with poll, all three at once, so a command that
 * fills one pipe while this side writes to or waits on another never
 * deadlocks; it returns to Lua at least every `seconds`, so an interrupt
 * or a node's timeout (both count hooks) stops the loop, and a command
 * still running when its object is closed or collected is killed
 * (SIGKILL) and reaped. No descriptor leaks into the child (all are
 * O_CLOEXEC) or survives close().
 *
 * Each command runs in a process group of its own (its pid is the
 * group's id): a terminal's Ctrl-C does not reach it directly (fflua
 * stops the Lua code, which kills it), and killing it kills the group, so
 * the processes a shell script started go with it.
 *
 * The state keeps its live commands in a registry table (weak values;
 * close removes a command): ffl_cmd_close_all kills them all, for the
 * engine to call after it stopped a node (a timeout, a cancel, Ctrl-C):
 * a stop hook that stays armed makes the <close> handlers that would
 * have killed them fail as the error unwinds.
 *
 * The child's environment is always an explicit copy (the process's,
 * with the entries of env put in), never the live environ. Nothing here
 * writes the process's environment: on a worker of several threads that
 * would race every other thread's reads of it. Instead, a state has an
 * environment overlay, core.node_env(vars) to set, core.node_env() to
 * read: the stdlib's EnvPlugin sets it in its pre-run function, its shell
 * nodes add it to their commands' env, and the engine clears it
 * (ffl_cmd_node_start) before each node's pre-run call, so it never
 * reaches a later node.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "buf.h"
#include "lcmd.h"
#include "lutil.h"

#define CMD_MT "functionfuse.Cmd"
#define CHUNK 65536

/* Registry keys (their addresses): the live commands, the overlay. */
static const char live_key = 'l';
static const char overlay_key = 'o';

typedef struct ffl_cmd {
    pid_t pid;      /* 0 once reaped (or never started) */
    int fd[3];      /* this side's ends: stdin (write), stdout, stderr; -1 when closed */
    const char *in; /* the stdin string, kept alive by the userdata's user value */
    size_t in_len, in_off;
    ff_buf out, err; /* what the command wrote */
    int status;      /* waitpid's status, valid once pid is 0 and started */
    int started;
} ffl_cmd;

static ffl_cmd *check_cmd(lua_State *L, int idx) {
    ffl_cmd *c = luaL_checkudata(L, idx, CMD_MT);
    if (!c->started)
        luaL_error(L, "attempt to use a closed command");
    return c;
}

static void close_fd(int *fd) {
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

/* Kills a command still running, reaps it, closes every descriptor and
 * frees the buffers. Idempotent; never raises. */
static void cmd_release(ffl_cmd *c) {
    for (int i = 0; i < 3; i++)
        close_fd(&c->fd[i]);
    if (c->pid > 0) {
        /* The group, the command's own (SETPGROUP): what it started too.
         * The command itself as well, should the group not exist yet. */
        kill(-c->pid, SIGKILL);
        kill(c->pid, SIGKILL);
        while (waitpid(c->pid, &c->status, 0) < 0 && errno == EINTR)
            ;
        c->pid = 0;
    }
    ff_buf_free(&c->out);
    ff_buf_free(&c->err);
    c->started = 0;
}

/* cmd:close(), __close, __gc. Stack effect: 0. */
static int ffl_cmd_close(lua_State *L) {
    ffl_cmd *c = luaL_checkudata(L, 1, CMD_MT);
    cmd_release(c);
    /* Out of the live table (setting a field to nil allocates nothing). */
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &live_key) == LUA_TTABLE) {
        lua_pushnil(L);
        lua_rawsetp(L, -2, c);
    }
    lua_pop(L, 1);
    return 0;
}

void ffl_cmd_close_all(lua_State *L) {
    /* No allocation and no Lua call: safe outside a protected call. */
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &live_key) == LUA_TTABLE) {
        lua_pushnil(L);
        while (lua_next(L, -2)) { /* [live, key, cmd] */
            ffl_cmd *c = luaL_testudata(L, -1, CMD_MT);
            if (c != NULL)
                cmd_release(c);
            lua_pop(L, 1);
            lua_pushvalue(L, -1);
            lua_pushnil(L);
            lua_rawset(L, -4); /* clearing a field during the traversal is allowed */
        }
    }
    lua_pop(L, 1);
}

void ffl_cmd_node_start(lua_State *L) {
    lua_pushnil(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &overlay_key);
}

/* core.node_env(vars | nil) sets the overlay (a copy of vars, checked:
 * names to strings or false); core.node_env() -> the overlay or nil.
 * Stack effect: 0 or +1. */
static int ffl_cmd_node_env(lua_State *L) {
    if (lua_gettop(L) == 0) {
        lua_rawgetp(L, LUA_REGISTRYINDEX, &overlay_key);
        if (lua_istable(L, -1)) { /* a copy: the caller may change it */
            lua_newtable(L);
            lua_pushnil(L);
            while (lua_next(L, -3)) {
                lua_pushvalue(L, -2);
                lua_insert(L, -2);
                lua_rawset(L, -4);
            }
        }
        return 1;
    }
    if (lua_isnil(L, 1)) {
        ffl_cmd_node_start(L);
        return 0;
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_newtable(L);
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        if (k == NULL || *k == '\0' || strchr(k, '=') != NULL)
            return luaL_argerror(L, 1, "names of variables (non-empty, without '=') expected");
        if (lua_type(L, -1) != LUA_TSTRING && !(lua_isboolean(L, -1) && !lua_toboolean(L, -1)))
            return luaL_error(L,
                              "bad argument #1 to 'node_env' (the value of '%s' must be a "
                              "string or false, got %s)",
                              k, luaL_typename(L, -1));
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, 2);
    }
    lua_rawsetp(L, LUA_REGISTRYINDEX, &overlay_key);
    return 0;
}

static int ffl_cmd_tostring(lua_State *L) {
    ffl_cmd *c = luaL_checkudata(L, 1, CMD_MT);
    if (!c->started)
        lua_pushliteral(L, CMD_MT ": (closed)");
    else
        lua_pushfstring(L, CMD_MT ": %p (pid %d)", (void *)c, (int)c->pid);
    return 1;
}

/* Pushes "<what> '<s>': <strerror>" and raises; the command (not yet
 * started) owns nothing. */
static int start_error(lua_State *L, const char *what, const char *s, int e) {
    return luaL_error(L, "%s '%s': %s", what, s, strerror(e));
}

/* The environment of the child at the top of the stack, as a userdata
 * array of "NAME=value" pointers: this process's environment with the
 * entries of the table at envidx put in (a false value removes NAME). The
 * strings are anchored in the table at anchor. Stack effect: +1. */
static char **build_env(lua_State *L, int envidx, int anchor) {
    extern char **environ;
    size_t ne = 0, nx = 0;
    while (environ[ne])
        ne++;
    lua_pushnil(L);
    while (lua_next(L, envidx)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "bad field 'env' (names must be strings, got %s)", luaL_typename(L, -2));
        const char *k = lua_tostring(L, -2);
        if (*k == '\0' || strchr(k, '=') != NULL)
            luaL_error(L, "bad field 'env' (the name '%s' is empty or holds '=')", k);
        if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER &&
            !(lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1)))
            luaL_error(L, "bad field 'env' (the value of '%s' must be a string or false, got %s)",
                       k, luaL_typename(L, -1));
        nx++;
        lua_pop(L, 1);
    }
    char **env = lua_newuserdatauv(L, sizeof(char *) * (ne + nx + 1), 0);
    size_t j = 0;
    for (size_t i = 0; i < ne; i++) {
        const char *eq = strchr(environ[i], '=');
        size_t nl = eq ? (size_t)(eq - environ[i]) : strlen(environ[i]);
        lua_pushlstring(L, environ[i], nl);
        int overridden = lua_rawget(L, envidx) != LUA_TNIL;
        lua_pop(L, 1);
        if (!overridden) { /* a copy, anchored */
            lua_pushstring(L, environ[i]);
            env[j++] = (char *)lua_tostring(L, -1);
            lua_rawseti(L, anchor, (lua_Integer)luaL_len(L, anchor) + 1);
        }
    }
    lua_pushnil(L);
    while (lua_next(L, envidx)) { /* [.., env, k, v] */
        if (lua_type(L, -1) != LUA_TBOOLEAN) {
            lua_pushfstring(L, "%s=%s", lua_tostring(L, -2), lua_tostring(L, -1));
            env[j++] = (char *)lua_tostring(L, -1);
            lua_rawseti(L, anchor, (lua_Integer)luaL_len(L, anchor) + 1);
        }
        lua_pop(L, 1);
    }
    env[j] = NULL;
    return env;
}

/* core.cmd_start(spec) -> cmd. Stack effect: +1 (the Cmd). */
static int ffl_cmd_start(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    lua_newtable(L); /* [spec, anchor]: keeps the strings argv and env point to */
    int anchor = 2;
    int shell = lua_getfield(L, 1, "shell") != LUA_TNIL && lua_toboolean(L, -1);
    lua_pop(L, 1);
    char **argv;
    if (lua_getfield(L, 1, "argv") != LUA_TTABLE)
        return luaL_error(L, "bad field 'argv' (table expected, got %s)", luaL_typename(L, -1));
    int av = lua_gettop(L);
    lua_Integer argc = luaL_len(L, av);
    if (argc < 1)
        return luaL_error(L, "bad field 'argv' (an empty list)");
    if (shell && argc != 1)
        return luaL_error(L, "bad field 'argv' (with shell = true, one string: the script)");
    lua_Integer extra = shell ? 2 : 0;
    argv = lua_newuserdatauv(L, sizeof(char *) * (size_t)(argc + extra + 1), 0);
    lua_rawseti(L, anchor, 1);
    if (shell) {
        argv[0] = "/bin/sh";
        argv[1] = "-c";
    }
    for (lua_Integer i = 1; i <= argc; i++) {
        int t = lua_rawgeti(L, av, i);
        if (t != LUA_TSTRING && t != LUA_TNUMBER)
            return luaL_error(L, "bad field 'argv' (item %d is a %s, not a string)", (int)i,
                              luaL_typename(L, -1));
        const char *s = lua_tostring(L, -1);
        if (strlen(s) != lua_rawlen(L, -1))
            return luaL_error(L, "bad field 'argv' (item %d holds a zero byte)", (int)i);
        argv[extra + i - 1] = (char *)s;
        lua_rawseti(L, anchor, (lua_Integer)luaL_len(L, anchor) + 1);
    }
    argv[extra + argc] = NULL;
    lua_pop(L, 1); /* [spec, anchor] */

    /* Always an explicit copy: posix_spawnp never reads the live environ. */
    int et = lua_getfield(L, 1, "env");
    if (et == LUA_TNIL) {
        lua_pop(L, 1);
        lua_newtable(L);
    } else if (et != LUA_TTABLE) {
        return luaL_error(L, "bad field 'env' (table expected, got %s)", luaL_typename(L, -1));
    }
    char **env = build_env(L, lua_gettop(L), anchor); /* [spec, anchor, envt, envarr] */
    lua_rawseti(L, anchor, (lua_Integer)luaL_len(L, anchor) + 1);
    lua_pop(L, 1);

    const char *cwd = NULL;
    if (lua_getfield(L, 1, "cwd") != LUA_TNIL) {
        cwd = luaL_tolstring(L, -1, NULL);
        if (lua_type(L, -2) != LUA_TSTRING)
            return luaL_error(L, "bad field 'cwd' (string expected, got %s)", luaL_typename(L, -2));
        struct stat st;
        if (stat(cwd, &st) != 0)
            return start_error(L, "cannot run in the directory", cwd, errno);
        if (!S_ISDIR(st.st_mode))
            return start_error(L, "cannot run in the directory", cwd, ENOTDIR);
        lua_rawseti(L, anchor, (lua_Integer)luaL_len(L, anchor) + 1);
    }
    lua_pop(L, 1);

    int has_in = lua_getfield(L, 1, "stdin") != LUA_TNIL;
    if (has_in && lua_type(L, -1) != LUA_TSTRING)
        return luaL_error(L, "bad field 'stdin' (string expected, got %s)", luaL_typename(L, -1));
    int in_idx = lua_gettop(L); /* [spec, anchor, stdin] */

    /* The userdata first, closed, then the resources: an error after this
     * point leaves them to __gc. */
    ffl_cmd *c = lua_newuserdatauv(L, sizeof *c, 1); /* [.., stdin, cmd] */
    memset(c, 0, sizeof *c);
    c->fd[0] = c->fd[1] = c->fd[2] = -1;
    luaL_setmetatable(L, CMD_MT);
    lua_pushvalue(L, in_idx);
    lua_setiuservalue(L, -2, 1);
    if (has_in)
        c->in = lua_tolstring(L, in_idx, &c->in_len);

    int p_in[2] = {-1, -1}, p_out[2] = {-1, -1}, p_err[2] = {-1, -1};
    int e = 0;
    if ((has_in && pipe2(p_in, O_CLOEXEC) != 0) || pipe2(p_out, O_CLOEXEC) != 0 ||
        pipe2(p_err, O_CLOEXEC) != 0)
        e = errno;
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    if (e == 0) {
        posix_spawn_file_actions_init(&fa);
        if (has_in)
            posix_spawn_file_actions_adddup2(&fa, p_in[0], 0);
        else
            posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_adddup2(&fa, p_out[1], 1);
        posix_spawn_file_actions_adddup2(&fa, p_err[1], 2);
        if (cwd != NULL)
            posix_spawn_file_actions_addchdir_np(&fa, cwd);
        posix_spawnattr_init(&attr);
        sigset_t none, all;
        sigemptyset(&none);
        sigfillset(&all);
        posix_spawnattr_setsigmask(&attr, &none);
        posix_spawnattr_setsigdefault(&attr, &all);
        posix_spawnattr_setpgroup(&attr, 0); /* a group of its own */
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
                                            POSIX_SPAWN_SETPGROUP);
        e = posix_spawnp(&c->pid, argv[0], &fa, &attr, argv, env);
        posix_spawn_file_actions_destroy(&fa);
        posix_spawnattr_destroy(&attr);
        if (e != 0)
            c->pid = 0;
    }
    /* The child's ends are closed here whatever happened. */
    if (p_in[0] >= 0)
        close(p_in[0]);
    if (p_out[1] >= 0)
        close(p_out[1]);
    if (p_err[1] >= 0)
        close(p_err[1]);
    c->fd[0] = p_in[1];
    c->fd[1] = p_out[0];
    c->fd[2] = p_err[0];
    c->started = 1;
    if (e != 0) {
        cmd_release(c);
        return start_error(L, "cannot start", argv[0], e);
    }
    for (int i = 0; i < 3; i++)
        if (c->fd[i] >= 0)
            fcntl(c->fd[i], F_SETFL, fcntl(c->fd[i], F_GETFL) | O_NONBLOCK);
    if (c->in_len == 0)
        close_fd(&c->fd[0]);
    /* Among the live commands (an error here leaves it to __gc). */
    lua_rawgetp(L, LUA_REGISTRYINDEX, &live_key);
    lua_pushvalue(L, -2);
    lua_rawsetp(L, -2, c);
    lua_pop(L, 1);
    return 1;
}

/* Reads what fd has into b; closes fd at its end. 0, or an errno. */
static int drain(int *fd, ff_buf *b) {
    for (;;) {
        if (ff_buf_reserve(b, CHUNK) != 0)
            return ENOMEM;
        ssize_t n = read(*fd, b->p + b->n, CHUNK);
        if (n > 0) {
            b->n += (size_t)n;
            continue;
        }
        if (n == 0) {
            close_fd(fd);
            return 0;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        int e = errno;
        close_fd(fd);
        return e;
    }
}

/* Writes what it can of the stdin string. A command that closed its
 * stdin (EPIPE) gets no more: its exit status says what that meant. The
 * SIGPIPE the write raises is blocked and taken back, unless one was
 * already pending for this thread. */
static void feed(ffl_cmd *c) {
    sigset_t pipe_set, old, pending;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    sigpending(&pending);
    int was_pending = sigismember(&pending, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    while (c->fd[0] >= 0 && c->in_off < c->in_len) {
        size_t want = c->in_len - c->in_off;
        ssize_t n = write(c->fd[0], c->in + c->in_off, want > CHUNK ? CHUNK : want);
        if (n > 0) {
            c->in_off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        } else {
            if (errno == EPIPE && !was_pending) {
                struct timespec zero = {0, 0};
                while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR)
                    ;
            }
            close_fd(&c->fd[0]);
        }
    }
    if (c->fd[0] >= 0 && c->in_off >= c->in_len)
        close_fd(&c->fd[0]);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* Reaps the command when it ended (waiting when block). 1 when reaped. */
static int reap(lua_State *L, ffl_cmd *c, int block) {
    if (c->pid == 0)
        return 1;
    pid_t r;
    do
        r = waitpid(c->pid, &c->status, block ? 0 : WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r == 0)
        return 0;
    if (r < 0) {
        int e = errno;
        c->pid = 0;
        return luaL_error(L, "cannot wait for the command: %s", strerror(e));
    }
    c->pid = 0;
    return 1;
}

/* cmd:step([seconds]) -> done. Moves bytes through the pipes for up to
 * seconds (default 0.1); true once the command ended and both its
 * outputs are read to their end. Stack effect: +1. */
static int ffl_cmd_step(lua_State *L) {
    ffl_cmd *c = check_cmd(L, 1);
    double s = luaL_optnumber(L, 2, 0.1);
    luaL_argcheck(L, s >= 0 && s <= 3600, 2, "a number of seconds from 0 to 3600 expected");
    if (c->fd[1] < 0 && c->fd[2] < 0) {
        /* The outputs ended; the command may still run (it closed them). */
        if (!reap(L, c, 0)) {
            struct timespec ts = {0, (long)(s < 0.01 ? s * 1e9 : 1e7)};
            nanosleep(&ts, NULL);
            lua_pushboolean(L, reap(L, c, 0));
            return 1;
        }
        lua_pushboolean(L, 1);
        return 1;
    }
    struct pollfd pf[3];
    int n = 0;
    static const short ev[3] = {POLLOUT, POLLIN, POLLIN};
    for (int i = 0; i < 3; i++)
        if (c->fd[i] >= 0)
            pf[n++] = (struct pollfd){.fd = c->fd[i], .events = ev[i]};
    int rc = poll(pf, (nfds_t)n, (int)(s * 1000));
    if (rc < 0 && errno != EINTR)
        return luaL_error(L, "poll: %s", strerror(errno));
    if (rc > 0) {
        for (int k = 0; k < n; k++) {
            if (pf[k].revents == 0)
                continue;
            if (pf[k].fd == c->fd[0]) {
                feed(c);
            } else {
                int i = pf[k].fd == c->fd[1] ? 1 : 2;
                int e = drain(&c->fd[i], i == 1 ? &c->out : &c->err);
                if (e != 0)
                    return luaL_error(L, "cannot read the command's %s: %s",
                                      i == 1 ? "stdout" : "stderr", strerror(e));
            }
        }
    }
    if (c->fd[1] < 0 && c->fd[2] < 0) {
        close_fd(&c->fd[0]); /* what it did not read, it will not */
        lua_pushboolean(L, reap(L, c, 0));
        return 1;
    }
    lua_pushboolean(L, 0);
    return 1;
}

/* cmd:result() -> stdout, stderr, code | nil, signal (after step() said
 * done). Stack effect: +4. */
static int ffl_cmd_result(lua_State *L) {
    ffl_cmd *c = check_cmd(L, 1);
    if (c->pid != 0 || c->fd[1] >= 0 || c->fd[2] >= 0)
        return luaL_error(L, "the command has not ended: call step() until it returns true");
    lua_pushlstring(L, c->out.p != NULL ? c->out.p : "", c->out.n);
    lua_pushlstring(L, c->err.p != NULL ? c->err.p : "", c->err.n);
    if (WIFEXITED(c->status)) {
        lua_pushinteger(L, WEXITSTATUS(c->status));
        lua_pushnil(L);
    } else {
        lua_pushnil(L);
        lua_pushinteger(L, WIFSIGNALED(c->status) ? WTERMSIG(c->status) : 0);
    }
    return 4;
}

/* cmd:pid() -> the process id, or nil once reaped. Stack effect: +1. */
static int ffl_cmd_pid(lua_State *L) {
    ffl_cmd *c = check_cmd(L, 1);
    if (c->pid == 0)
        lua_pushnil(L);
    else
        lua_pushinteger(L, c->pid);
    return 1;
}

static const luaL_Reg cmd_methods[] = {
    {"step", ffl_cmd_step}, {"result", ffl_cmd_result},
    {"pid", ffl_cmd_pid},   {"close", ffl_cmd_close},
    {NULL, NULL},
};

void ffl_cmd_open(lua_State *L) {
    ffl_new_type(L, CMD_MT, cmd_methods, ffl_cmd_close, ffl_cmd_close, ffl_cmd_tostring);
    lua_pop(L, 1);
    lua_newtable(L); /* the live commands: weak values, close removes them */
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "v");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &live_key);
}

const luaL_Reg ffl_cmd_funcs[] = {
    {"cmd_start", ffl_cmd_start},
    {"node_env", ffl_cmd_node_env},
    {NULL, NULL},
};
