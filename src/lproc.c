/*
 * lproc.c: the Lua binding of the process helpers a local cluster and
 * the specs need, functions of functionfuse.core:
 *
 *   core.spawn(argv, env_extra[, { die_with_parent = bool }]) -> pid
 *   core.kill(pid[, signal]) -> ok
 *   core.wait(pid[, nohang]) -> code | nil, signal | nothing (still running)
 *   core.token_new() -> a fresh random token
 *   core.cpu_count()   core.exe_path()   core.getpid()
 *   core.sleep(seconds)   core.monotime() -> seconds
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "lproc.h"
#include "net.h"

/* Starts argv with env as spawn does, tied to this process: the child
 * gets SIGTERM when the thread that started it ends, this process's death
 * by kill -9 included (prctl PR_SET_PDEATHSIG, which posix_spawn cannot
 * ask for). Between fork and exec the child calls only async-signal-safe
 * functions; an exec that fails reports its errno through a pipe closed
 * on exec. Pushes the pid. */
static int spawn_tied(lua_State *L, char **argv, char **env) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0)
        return luaL_error(L, "cannot start %s: %s", argv[0], strerror(errno));
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        int e;
        close(fds[0]);
        setpgid(0, 0); /* its own group, as spawn's: a Ctrl-C is the driver's */
        if (prctl(PR_SET_PDEATHSIG, SIGTERM) != 0 || getppid() != parent) {
            e = errno != 0 ? errno : ESRCH; /* the parent died before the prctl */
        } else {
            execve(argv[0], argv, env);
            e = errno;
        }
        while (write(fds[1], &e, sizeof e) < 0 && errno == EINTR)
            ;
        _exit(127);
    }
    int err = errno;
    close(fds[1]);
    if (pid < 0) {
        close(fds[0]);
        return luaL_error(L, "cannot start %s: %s", argv[0], strerror(err));
    }
    int e = 0;
    ssize_t got;
    do
        got = read(fds[0], &e, sizeof e);
    while (got < 0 && errno == EINTR);
    close(fds[0]);
    if (got == (ssize_t)sizeof e) {
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
        return luaL_error(L, "cannot start %s: %s", argv[0], strerror(e));
    }
    lua_pushinteger(L, pid);
    return 1;
}

/* core.spawn(argv, env_extra[, opts]) -> pid: argv[1] is a path; env_extra
 * a table of NAME = value added to (replacing in) this process's
 * environment; opts.die_with_parent: the child gets SIGTERM when this
 * process (the thread calling this) ends, however it ends. */
static int ffl_proc_spawn(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 3);
    lua_Integer argc = luaL_len(L, 1);
    luaL_argcheck(L, argc >= 1, 1, "empty argv");
    char **argv = lua_newuserdatauv(L, sizeof(char *) * (size_t)(argc + 1), 0);
    for (lua_Integer i = 1; i <= argc; i++) {
        lua_rawgeti(L, 1, i);
        argv[i - 1] = (char *)luaL_checkstring(L, -1);
        lua_pop(L, 1); /* the table keeps the string */
    }
    argv[argc] = NULL;
    extern char **environ;
    size_t ne = 0, nx = 0;
    while (environ[ne])
        ne++;
    if (lua_istable(L, 2)) {
        lua_pushnil(L);
        while (lua_next(L, 2)) {
            nx++;
            lua_pop(L, 1);
        }
    }
    char **env = lua_newuserdatauv(L, sizeof(char *) * (ne + nx + 1), 0);
    lua_newtable(L); /* keeps the NAME=value strings alive */
    int anchor = lua_gettop(L);
    size_t j = 0;
    if (lua_istable(L, 2)) {
        lua_pushnil(L);
        while (lua_next(L, 2)) {
            lua_pushfstring(L, "%s=%s", luaL_checkstring(L, -2), luaL_checkstring(L, -1));
            env[j++] = (char *)lua_tostring(L, -1);
            lua_rawseti(L, anchor, (lua_Integer)j);
            lua_pop(L, 1);
        }
    }
    for (size_t i = 0; i < ne; i++) {
        const char *eq = strchr(environ[i], '=');
        size_t nl = eq ? (size_t)(eq - environ[i]) : strlen(environ[i]);
        int replaced = 0;
        for (size_t k = 0; k < j && !replaced; k++)
            replaced = strncmp(env[k], environ[i], nl) == 0 && env[k][nl] == '=';
        if (!replaced)
            env[j++] = environ[i];
    }
    env[j] = NULL;
    int pdeath = lua_istable(L, 3) && (lua_getfield(L, 3, "die_with_parent"), lua_toboolean(L, -1));
    if (pdeath)
        return spawn_tied(L, argv, env);
    /* A process group of its own: a Ctrl-C at the terminal (the REPL's)
     * interrupts the driver, not the cluster it started. */
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&attr, 0);
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], NULL, &attr, argv, env);
    posix_spawnattr_destroy(&attr);
    if (rc != 0)
        return luaL_error(L, "cannot start %s: %s", argv[0], strerror(rc));
    lua_pushinteger(L, pid);
    return 1;
}

static int ffl_proc_kill(lua_State *L) {
    pid_t pid = (pid_t)luaL_checkinteger(L, 1);
    int sig = (int)luaL_optinteger(L, 2, SIGTERM);
    luaL_argcheck(L, pid > 0, 1, "not a process id");
    lua_pushboolean(L, kill(pid, sig) == 0);
    return 1;
}

static int ffl_proc_wait(lua_State *L) {
    pid_t pid = (pid_t)luaL_checkinteger(L, 1);
    int status;
    pid_t rc;
    do
        rc = waitpid(pid, &status, lua_toboolean(L, 2) ? WNOHANG : 0);
    while (rc < 0 && errno == EINTR);
    if (rc == 0)
        return 0;
    if (rc < 0)
        return luaL_error(L, "waitpid(%d): %s", (int)pid, strerror(errno));
    if (WIFEXITED(status)) {
        lua_pushinteger(L, WEXITSTATUS(status));
        return 1;
    }
    lua_pushnil(L);
    lua_pushinteger(L, WTERMSIG(status));
    return 2;
}

static int ffl_proc_token_new(lua_State *L) {
    char t[65];
    ff_token_new(t);
    lua_pushstring(L, t);
    return 1;
}

/* core.exe_path() -> this process's executable */
static int ffl_proc_exe_path(lua_State *L) {
    char buf[4096];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0)
        return 0;
    lua_pushlstring(L, buf, (size_t)n);
    return 1;
}

static int ffl_proc_getpid(lua_State *L) {
    lua_pushinteger(L, getpid());
    return 1;
}

/* core.sleep(seconds) */
static int ffl_proc_sleep(lua_State *L) {
    double s = luaL_checknumber(L, 1);
    luaL_argcheck(L, s >= 0 && s <= 1e9, 1, "a finite non-negative number of seconds expected");
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
    return 0;
}

/* core.monotime() -> seconds on the machine's monotonic clock (the same
 * clock in every process, so tasks on workers can be compared). */
static int ffl_proc_monotime(lua_State *L) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9);
    return 1;
}

static int ffl_proc_cpu_count(lua_State *L) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    lua_pushinteger(L, n > 0 ? n : 1);
    return 1;
}

const luaL_Reg ffl_proc_funcs[] = {
    {"spawn", ffl_proc_spawn},         {"kill", ffl_proc_kill},
    {"wait", ffl_proc_wait},           {"token_new", ffl_proc_token_new},
    {"cpu_count", ffl_proc_cpu_count}, {"exe_path", ffl_proc_exe_path},
    {"getpid", ffl_proc_getpid},       {"sleep", ffl_proc_sleep},
    {"monotime", ffl_proc_monotime},   {NULL, NULL},
};
