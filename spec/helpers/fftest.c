/*
 * fftest.c: a Lua C module for the specs, to run programs as a user would.
 *
 *   local fftest = require "fftest"
 *   local r = fftest.run{ argv = {...}, stdin = "text", env = { K = "v", X = false },
 *                         cwd = "/dir", timeout = 30 }
 *       -- r.code (exit status, or nil when killed), r.signal, r.stdout,
 *       -- r.stderr, r.timed_out
 *   local p = fftest.pty{ argv = {...}, env = ..., cwd = ..., cols = 80, rows = 24 }
 *   p:send(s); p:expect(text, timeout) -> found, everything read so far
 *   p:kill(signo); p:wait(timeout) -> code, signal; p:close()
 *   fftest.mkdtemp() -> path
 *
 * Real processes, real pipes and a real pseudo-terminal: nothing is mocked.
 * `env` starts from this process's environment; false removes a variable.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

extern char **environ;

int luaopen_fftest(lua_State *L);

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Builds a NULL-terminated argv from field `argv` of the table at idx. The
 * strings stay owned by Lua (they are in the table). The array is a
 * userdata on the stack. */
static char **check_argv(lua_State *L, int idx) {
    if (lua_getfield(L, idx, "argv") != LUA_TTABLE)
        luaL_error(L, "'argv' must be a table");
    int n = (int)lua_rawlen(L, -1);
    if (n < 1)
        luaL_error(L, "'argv' is empty");
    char **argv = lua_newuserdatauv(L, sizeof(char *) * (size_t)(n + 1), 0);
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, -2, i + 1);
        argv[i] = (char *)luaL_checkstring(L, -1);
        lua_pop(L, 1); /* still referenced by the table */
    }
    argv[n] = NULL;
    lua_remove(L, -2);
    return argv;
}

/* Builds envp from environ plus the overrides of field `env`. Leaves a
 * userdata and a table of strings on the stack to keep them alive. */
static char **build_env(lua_State *L, int idx) {
    int has_env = lua_getfield(L, idx, "env") == LUA_TTABLE; // [env]
    size_t n = 0;
    while (environ[n])
        n++;
    lua_newtable(L); // [env, strings] name -> "name=value" or false
    for (size_t i = 0; i < n; i++) {
        const char *eq = strchr(environ[i], '=');
        if (eq == NULL)
            continue;
        lua_pushlstring(L, environ[i], (size_t)(eq - environ[i]));
        lua_pushstring(L, environ[i]);
        lua_rawset(L, -3);
    }
    if (has_env) {
        lua_pushnil(L);
        while (lua_next(L, -3)) { // [env, strings, k, v]
            const char *k = luaL_checkstring(L, -2);
            if (lua_toboolean(L, -1))
                lua_pushfstring(L, "%s=%s", k, luaL_checkstring(L, -1));
            else
                lua_pushboolean(L, 0);
            lua_remove(L, -2);
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_rawset(L, -4);
        }
    }
    size_t count = 0;
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        count++;
        lua_pop(L, 1);
    }
    char **envp = lua_newuserdatauv(L, sizeof(char *) * (count + 1), 0); // [env, strings, envp]
    size_t j = 0;
    lua_pushnil(L);
    while (lua_next(L, -3)) {
        if (lua_type(L, -1) == LUA_TSTRING)
            envp[j++] = (char *)lua_tostring(L, -1);
        lua_pop(L, 1);
    }
    envp[j] = NULL;
    lua_remove(L, -3); // [strings, envp]
    return envp;
}

static const char *opt_string(lua_State *L, int idx, const char *field) {
    lua_getfield(L, idx, field);
    const char *s = lua_tostring(L, -1);
    lua_pop(L, 1); /* strings of the options table stay alive */
    return s;
}

static double opt_number(lua_State *L, int idx, const char *field, double dflt) {
    lua_getfield(L, idx, field);
    double d = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : dflt;
    lua_pop(L, 1);
    return d;
}

/* In the child: report exec failure on the pipe and die. */
static void exec_child(char **argv, char **envp, const char *cwd) {
    if (cwd != NULL && chdir(cwd) != 0)
        _exit(126);
    signal(SIGPIPE, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    execve(argv[0], argv, envp);
    if (strchr(argv[0], '/') == NULL)
        execvpe(argv[0], argv, envp);
    _exit(127);
}

static void push_status(lua_State *L, int status, int idx) {
    if (WIFEXITED(status)) {
        lua_pushinteger(L, WEXITSTATUS(status));
        lua_setfield(L, idx, "code");
    } else if (WIFSIGNALED(status)) {
        lua_pushinteger(L, WTERMSIG(status));
        lua_setfield(L, idx, "signal");
    }
}

struct buf {
    char *p;
    size_t n, cap;
};

static int buf_read(struct buf *b, int fd) {
    if (b->cap - b->n < 4096) {
        size_t cap = b->cap ? b->cap * 2 : 8192;
        char *p = realloc(b->p, cap);
        if (p == NULL)
            return -1;
        b->p = p, b->cap = cap;
    }
    ssize_t r = read(fd, b->p + b->n, b->cap - b->n);
    if (r > 0)
        b->n += (size_t)r;
    return (int)r;
}

/* fftest.run(opts) -> result table */
static int fft_run(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    char **argv = check_argv(L, 1);
    char **envp = build_env(L, 1);
    size_t inlen = 0;
    lua_getfield(L, 1, "stdin");
    const char *in = lua_tolstring(L, -1, &inlen);
    const char *cwd = opt_string(L, 1, "cwd");
    double timeout = opt_number(L, 1, "timeout", 60);

    int pin[2], pout[2], perr[2];
    if (pipe2(pin, O_CLOEXEC) || pipe2(pout, O_CLOEXEC) || pipe2(perr, O_CLOEXEC))
        return luaL_error(L, "pipe: %s", strerror(errno));
    pid_t pid = fork();
    if (pid < 0)
        return luaL_error(L, "fork: %s", strerror(errno));
    if (pid == 0) {
        dup2(pin[0], 0), dup2(pout[1], 1), dup2(perr[1], 2);
        exec_child(argv, envp, cwd);
    }
    close(pin[0]), close(pout[1]), close(perr[1]);
    if (in == NULL) {
        close(pin[1]);
        pin[1] = -1;
    } else {
        fcntl(pin[1], F_SETFL, O_NONBLOCK);
    }
    struct buf out = {0}, err = {0};
    size_t written = 0;
    int open_out = 1, open_err = 1, timed_out = 0;
    double deadline = now() + timeout;
    void (*oldpipe)(int) = signal(SIGPIPE, SIG_IGN);
    while (open_out || open_err) {
        struct pollfd fds[3] = {{pout[0], POLLIN, 0}, {perr[0], POLLIN, 0}, {pin[1], POLLOUT, 0}};
        if (!open_out)
            fds[0].fd = -1;
        if (!open_err)
            fds[1].fd = -1;
        int left = (int)((deadline - now()) * 1000);
        if (left <= 0) {
            timed_out = 1;
            kill(pid, SIGKILL);
            break;
        }
        if (poll(fds, 3, left) < 0 && errno != EINTR)
            break;
        if (fds[0].revents && buf_read(&out, pout[0]) <= 0)
            open_out = 0;
        if (fds[1].revents && buf_read(&err, perr[0]) <= 0)
            open_err = 0;
        if (pin[1] >= 0 && fds[2].revents) {
            ssize_t w = (fds[2].revents & POLLOUT) ? write(pin[1], in + written, inlen - written) : -1;
            if (w > 0)
                written += (size_t)w;
            if (w < 0 || written == inlen) {
                close(pin[1]);
                pin[1] = -1;
            }
        }
    }
    signal(SIGPIPE, oldpipe);
    if (pin[1] >= 0)
        close(pin[1]);
    close(pout[0]), close(perr[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    lua_newtable(L);
    int res = lua_gettop(L);
    lua_pushlstring(L, out.p ? out.p : "", out.n);
    lua_setfield(L, res, "stdout");
    lua_pushlstring(L, err.p ? err.p : "", err.n);
    lua_setfield(L, res, "stderr");
    free(out.p), free(err.p);
    lua_pushboolean(L, timed_out);
    lua_setfield(L, res, "timed_out");
    push_status(L, status, res);
    return 1;
}

/* --- pseudo-terminal ----------------------------------------------------- */

struct pty {
    int fd;
    pid_t pid;
    int reaped, status;
    struct buf seen;
};

#define PTY_MT "fftest.Pty"

static struct pty *check_pty(lua_State *L) {
    struct pty *p = luaL_checkudata(L, 1, PTY_MT);
    if (p->fd < 0 && !p->reaped && p->pid <= 0)
        luaL_error(L, "attempt to use a closed pty");
    return p;
}

/* fftest.pty(opts) -> Pty */
static int fft_pty(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    char **argv = check_argv(L, 1);
    char **envp = build_env(L, 1);
    const char *cwd = opt_string(L, 1, "cwd");
    struct winsize ws = {0};
    ws.ws_col = (unsigned short)opt_number(L, 1, "cols", 80);
    ws.ws_row = (unsigned short)opt_number(L, 1, "rows", 24);

    struct pty *p = lua_newuserdatauv(L, sizeof *p, 0);
    memset(p, 0, sizeof *p);
    p->fd = -1;
    luaL_setmetatable(L, PTY_MT);

    int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0 || grantpt(master) || unlockpt(master))
        return luaL_error(L, "posix_openpt: %s", strerror(errno));
    const char *name = ptsname(master);
    pid_t pid = fork();
    if (pid < 0)
        return luaL_error(L, "fork: %s", strerror(errno));
    if (pid == 0) {
        setsid();
        int slave = open(name, O_RDWR);
        if (slave < 0)
            _exit(126);
        ioctl(slave, TIOCSCTTY, 0);
        ioctl(slave, TIOCSWINSZ, &ws);
        dup2(slave, 0), dup2(slave, 1), dup2(slave, 2);
        if (slave > 2)
            close(slave);
        exec_child(argv, envp, cwd);
    }
    p->fd = master;
    p->pid = pid;
    return 1;
}

static void pty_pump(struct pty *p, int ms) {
    struct pollfd pfd = {p->fd, POLLIN, 0};
    if (poll(&pfd, 1, ms) > 0 && buf_read(&p->seen, p->fd) <= 0) {
        close(p->fd); /* EIO: the child closed its side */
        p->fd = -1;
    }
}

/* p:send(s) */
static int fft_pty_send(lua_State *L) {
    struct pty *p = check_pty(L);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    while (len > 0 && p->fd >= 0) {
        ssize_t w = write(p->fd, s, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return luaL_error(L, "write to pty: %s", strerror(errno));
        }
        s += w, len -= (size_t)w;
    }
    return 0;
}

/* Returns 1 + the offset just past the first occurrence of s, or 0. */
static int find_end(const struct buf *b, const char *s, size_t n) {
    if (n == 0)
        return 1;
    for (size_t i = 0; i + n <= b->n; i++)
        if (memcmp(b->p + i, s, n) == 0)
            return (int)(i + n) + 1;
    return 0;
}

/* p:expect(text[, timeout]) -> found, text read since the last expect
 * Waits until `text` appears in the output read since the previous
 * successful expect (a plain string, no patterns). */
static int fft_pty_expect(lua_State *L) {
    struct pty *p = check_pty(L);
    size_t n;
    const char *s = luaL_checklstring(L, 2, &n);
    double deadline = now() + luaL_optnumber(L, 3, 10);
    for (;;) {
        int found = find_end(&p->seen, s, n);
        if (found) {
            size_t end = (size_t)found - 1;
            lua_pushboolean(L, 1);
            lua_pushlstring(L, p->seen.p, end);
            memmove(p->seen.p, p->seen.p + end, p->seen.n - end);
            p->seen.n -= end;
            return 2;
        }
        double left = deadline - now();
        if (left <= 0 || p->fd < 0)
            break;
        pty_pump(p, (int)(left * 1000) + 1);
    }
    lua_pushboolean(L, 0);
    lua_pushlstring(L, p->seen.p ? p->seen.p : "", p->seen.n);
    return 2;
}

/* p:wait_raw([timeout]) -> true when the terminal left canonical mode
 * (a line editor has taken it), false on timeout. Input sent before that
 * is seen by the kernel's line discipline first: echoed by it, and a Ctrl-D
 * becomes an end-of-file mark that the switch to raw mode turns into NUL. */
static int fft_pty_wait_raw(lua_State *L) {
    struct pty *p = check_pty(L);
    double deadline = now() + luaL_optnumber(L, 2, 10);
    for (;;) {
        struct termios t;
        if (p->fd >= 0 && tcgetattr(p->fd, &t) == 0 && !(t.c_lflag & ICANON)) {
            lua_pushboolean(L, 1);
            return 1;
        }
        if (now() > deadline || p->fd < 0)
            break;
        pty_pump(p, 5);
    }
    lua_pushboolean(L, 0);
    return 1;
}

/* p:pid() -> process id */
static int fft_pty_pid(lua_State *L) {
    struct pty *p = check_pty(L);
    lua_pushinteger(L, p->pid);
    return 1;
}

/* p:kill(signo) */
static int fft_pty_kill(lua_State *L) {
    struct pty *p = check_pty(L);
    if (!p->reaped)
        kill(p->pid, (int)luaL_checkinteger(L, 2));
    return 0;
}

/* p:wait([timeout]) -> code, signal (nil, nil on timeout: the child is left) */
static int fft_pty_wait(lua_State *L) {
    struct pty *p = check_pty(L);
    double deadline = now() + luaL_optnumber(L, 2, 10);
    while (!p->reaped) {
        int st;
        pid_t r = waitpid(p->pid, &st, WNOHANG);
        if (r == p->pid) {
            p->reaped = 1, p->status = st;
            break;
        }
        if (now() > deadline)
            return 0;
        if (p->fd >= 0)
            pty_pump(p, 20);
        else
            usleep(10000);
    }
    lua_pushnil(L);
    lua_pushnil(L);
    if (WIFEXITED(p->status))
        lua_pushinteger(L, WEXITSTATUS(p->status)), lua_replace(L, -3);
    else if (WIFSIGNALED(p->status))
        lua_pushinteger(L, WTERMSIG(p->status)), lua_replace(L, -2);
    return 2;
}

static int fft_pty_close(lua_State *L) {
    struct pty *p = luaL_checkudata(L, 1, PTY_MT);
    if (p->fd >= 0)
        close(p->fd);
    p->fd = -1;
    if (p->pid > 0 && !p->reaped) {
        kill(p->pid, SIGKILL);
        waitpid(p->pid, &p->status, 0);
        p->reaped = 1;
    }
    free(p->seen.p);
    p->seen.p = NULL;
    p->seen.n = p->seen.cap = 0;
    return 0;
}

/* fftest.mkdtemp() -> path */
static int fft_mkdtemp(lua_State *L) {
    const char *base = getenv("TMPDIR");
    lua_pushfstring(L, "%s/fftest.XXXXXX", base && *base ? base : "/tmp");
    char *tmpl = strdup(lua_tostring(L, -1));
    if (tmpl == NULL || mkdtemp(tmpl) == NULL) {
        free(tmpl);
        return luaL_error(L, "mkdtemp: %s", strerror(errno));
    }
    lua_pushstring(L, tmpl);
    free(tmpl);
    return 1;
}

/* fftest.signals: the numbers of the signals the specs send */
static void push_signals(lua_State *L) {
    lua_newtable(L);
#define SIG(n)                                                                \
    lua_pushinteger(L, n);                                                    \
    lua_setfield(L, -2, #n);
    SIG(SIGINT) SIG(SIGTERM) SIG(SIGKILL) SIG(SIGHUP) SIG(SIGQUIT)
#undef SIG
}

int luaopen_fftest(lua_State *L) {
    static const luaL_Reg pty_methods[] = {
        {"send", fft_pty_send}, {"expect", fft_pty_expect}, {"kill", fft_pty_kill},
        {"wait", fft_pty_wait}, {"close", fft_pty_close},   {"pid", fft_pty_pid},
        {"wait_raw", fft_pty_wait_raw},
        {NULL, NULL},
    };
    luaL_newmetatable(L, PTY_MT);
    luaL_newlib(L, pty_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, fft_pty_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, fft_pty_close);
    lua_setfield(L, -2, "__close");
    lua_pop(L, 1);
    static const luaL_Reg funcs[] = {
        {"run", fft_run}, {"pty", fft_pty}, {"mkdtemp", fft_mkdtemp}, {NULL, NULL},
    };
    luaL_newlib(L, funcs);
    push_signals(L);
    lua_setfield(L, -2, "signals");
    return 1;
}
