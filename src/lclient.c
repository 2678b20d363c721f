/*
 * lclient.c: the Lua binding of the cluster client, a blocking connection
 * to a head for drivers and status clients. Lua sees one type,
 * functionfuse.ClusterClient:
 *
 *   core.cluster_connect(address, { role = "driver" | "status", token = s,
 *                        token_file = f, timeout = seconds }) -> Client
 *   client:status() -> { places = {...}, queued, running, finished }
 *   client:close()
 *
 * The cluster driver (ls:run_cluster in ldriver.c) runs workflows over a
 * Client through lclient.h. The client is blocking (poll with timeouts):
 * a driver waits for its run anyway, and the REPL stays interruptible
 * between reads. The handshake is net.c's state machine (ff_hs), as for
 * the libuv connections of heads and workers.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "cluster.h"
#include "conn.h"
#include "fflua.h"
#include "lclient.h"
#include "lutil.h"
#include "msg.h"
#include "net.h"
#include "sched.h"

#define CLIENT_MT "functionfuse.ClusterClient"

struct ffl_client {
    int fd;
    ff_buf in, out;
    size_t consumed; /* bytes of `in` handed out by the last recv */
    char address[300];
    char err[640]; /* a handshake's failure (ff_hs.why) fits whole */
};

ffl_client *ffl_check_client(lua_State *L, int idx) {
    ffl_client *c = luaL_checkudata(L, idx, CLIENT_MT);
    if (c->fd < 0)
        luaL_error(L, "the cluster connection is closed");
    return c;
}

const char *ffl_client_error(ffl_client *c) {
    return c->err;
}

const char *ffl_client_address(ffl_client *c) {
    return c->address;
}

ff_buf *ffl_client_out(ffl_client *c) {
    return &c->out;
}

/* poll() for one fd: > 0 ready, 0 timeout, < 0 error or a signal (EINTR:
 * a Ctrl-C in the REPL must end the wait). */
static int wait_fd(int fd, short ev, int timeout_ms) {
    struct pollfd p = {fd, ev, 0};
    return poll(&p, 1, timeout_ms);
}

int ffl_client_flush(ffl_client *c) {
    size_t off = 0;
    while (off < c->out.n) {
        ssize_t n = send(c->fd, c->out.p + off, c->out.n - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            wait_fd(c->fd, POLLOUT, 1000);
            continue;
        }
        if (n <= 0) {
            snprintf(c->err, sizeof c->err, "lost the connection to the head at %s: %s", c->address,
                     strerror(errno));
            return -1;
        }
        off += (size_t)n;
    }
    c->out.n = 0;
    return 0;
}

int ffl_client_recv(ffl_client *c, int *type, const char **p, size_t *n, int timeout_ms) {
    if (c->consumed > 0) {
        memmove(c->in.p, c->in.p + c->consumed, c->in.n - c->consumed);
        c->in.n -= c->consumed;
        c->consumed = 0;
    }
    for (;;) {
        size_t total;
        int rc = ff_frame_parse(c->in.p, c->in.n, FF_FRAME_MAX, type, p, n, &total);
        if (rc == 0) {
            c->consumed = total;
            return 0;
        }
        if (rc != FFLUA_EINCOMPLETE) {
            snprintf(c->err, sizeof c->err, "the head at %s sent a malformed frame", c->address);
            return -1;
        }
        int w = wait_fd(c->fd, POLLIN, timeout_ms);
        if (w < 0 && errno == EINTR) {
            snprintf(c->err, sizeof c->err, "interrupted while waiting for the cluster");
            return -1;
        }
        if (w == 0) {
            snprintf(c->err, sizeof c->err, "the head at %s did not answer in time", c->address);
            return 1;
        }
        if (ff_buf_reserve(&c->in, 256 * 1024) != 0) {
            snprintf(c->err, sizeof c->err, "not enough memory");
            return -1;
        }
        ssize_t got = recv(c->fd, c->in.p + c->in.n, c->in.cap - c->in.n, 0);
        if (got < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (got <= 0) {
            snprintf(c->err, sizeof c->err, "the head at %s closed the connection", c->address);
            return -1;
        }
        c->in.n += (size_t)got;
    }
}

static void client_close(ffl_client *c) {
    if (c->fd >= 0) {
        c->out.n = 0;
        if (ff_msg_bye_write(&c->out) == 0)
            ffl_client_flush(c);
        close(c->fd);
        c->fd = -1;
    }
    ff_buf_free(&c->in);
    ff_buf_free(&c->out);
}

static int ffl_client_gc(lua_State *L) {
    client_close(luaL_checkudata(L, 1, CLIENT_MT));
    return 0;
}

/* Connects and authenticates; 0 or an error in c->err. */
static int client_open(ffl_client *c, const char *address, int role, const char *token, size_t tl,
                       int timeout_ms) {
    struct sockaddr_storage addr;
    snprintf(c->address, sizeof c->address, "%s", address);
    if (ff_parse_address(address, &addr, c->err, sizeof c->err) != 0)
        return -1;
    c->fd = socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        return snprintf(c->err, sizeof c->err, "socket: %s", strerror(errno)), -1;
    socklen_t alen =
        addr.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (connect(c->fd, (struct sockaddr *)&addr, alen) != 0) {
        snprintf(c->err, sizeof c->err, "cannot connect to the head at %s: %s", address,
                 strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    ff_tcp_keepalive(c->fd);
    /* The handshake: net.c's state machine, fed from this socket. */
    unsigned char key[FF_KEY_LEN];
    ff_auth_key(token, tl, key);
    ff_hs hs;
    ff_hs_client(&hs, role, key, address);
    for (;;) {
        int type;
        const char *p;
        size_t n;
        if (ffl_client_recv(c, &type, &p, &n, timeout_ms) != 0)
            return -1;
        int rc = ff_hs_step(&hs, type, p, n, &c->out);
        if (c->out.n > 0 && ffl_client_flush(c) != 0 && rc >= 0)
            return -1;
        if (rc == 1)
            return 0;
        if (rc < 0)
            return snprintf(c->err, sizeof c->err, "%s", hs.why), -1;
    }
}

/* core.cluster_connect(address, opts) -> Client */
static int ffl_client_connect(lua_State *L) {
    const char *address = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_getfield(L, 2, "role");
    const char *rs = luaL_optstring(L, -1, "driver");
    int role = strcmp(rs, "status") == 0 ? FF_ROLE_STATUS : FF_ROLE_DRIVER;
    lua_getfield(L, 2, "token");
    lua_getfield(L, 2, "token_file");
    lua_getfield(L, 2, "timeout");
    double timeout = luaL_optnumber(L, -1, 10);
    if (!(timeout >= 0.01 && timeout <= 3600)) /* also NaN */
        return luaL_error(L,
                          "bad option 'timeout' (a number of seconds from 0.01 to 3600 "
                          "expected, got %s)",
                          lua_tostring(L, -1));
    char token[512], err[512];
    size_t tl = 0;
    if (lua_isstring(L, -3)) {
        const char *t = lua_tolstring(L, -3, &tl);
        if (tl >= sizeof token)
            return luaL_error(L, "the token is too long");
        if (ff_token_check(t, tl, err, sizeof err) != 0)
            return luaL_error(L, "bad option 'token' (it %s)", err);
        memcpy(token, t, tl);
    } else if (ff_cluster_token(lua_tostring(L, -2), token, sizeof token, &tl, err, sizeof err) !=
               0) {
        return luaL_error(L, "%s", err);
    }
    if (tl == 0)
        return luaL_error(L,
                          "no token for the cluster at %s: give token_file (or set "
                          "FFLUA_TOKEN)",
                          address);
    ffl_client *c = lua_newuserdatauv(L, sizeof *c, 0);
    memset(c, 0, sizeof *c);
    c->fd = -1;
    luaL_setmetatable(L, CLIENT_MT);
    if (client_open(c, address, role, token, tl, (int)(timeout * 1000)) != 0) {
        lua_pushstring(L, c->err);
        client_close(c);
        return lua_error(L);
    }
    return 1;
}

/* client:status() -> { places = { {name, running, resources = {name =
 * {total, free}}}, ... }, queued, running, finished } */
static int ffl_client_status(lua_State *L) {
    ffl_client *c = ffl_check_client(L, 1);
    if (ff_msg_status_write(&c->out) != 0)
        return luaL_error(L, "not enough memory");
    int type;
    const char *p;
    size_t n;
    if (ffl_client_flush(c) != 0 || ffl_client_recv(c, &type, &p, &n, 10000) != 0)
        return luaL_error(L, "%s", c->err);
    if (type != FF_M_STATUS_REPLY)
        return luaL_error(L, "the head answered a status request with message %d", type);
    ff_msg_status_reply m;
    ff_msg_list places, res;
    if (ff_msg_status_reply_read(p, n, &m, &places) != 0)
        return luaL_error(L, "the head sent a malformed status");
    lua_createtable(L, 0, 4);
    lua_createtable(L, places.n < 1024 ? (int)places.n : 0, 0);
    for (lua_Integer i = 1; places.n > 0; i++) {
        ff_msg_place pl;
        ff_msg_next_place(&places, &pl, &res);
        lua_createtable(L, 0, 4);
        lua_pushlstring(L, pl.name, pl.len);
        lua_setfield(L, -2, "name");
        char hex[2 * FF_MACHINE_LEN + 1];
        for (int k = 0; k < FF_MACHINE_LEN; k++)
            snprintf(hex + 2 * k, 3, "%02x", pl.machine[k]);
        lua_pushstring(L, hex);
        lua_setfield(L, -2, "machine");
        lua_pushinteger(L, (lua_Integer)pl.running);
        lua_setfield(L, -2, "running");
        lua_newtable(L);
        while (res.n > 0) {
            ff_msg_res_state rs;
            ff_msg_next_res_state(&res, &rs);
            lua_pushlstring(L, rs.name, rs.len);
            lua_createtable(L, 0, 2);
            lua_pushnumber(L, (double)rs.total / FF_RES_SCALE);
            lua_setfield(L, -2, "total");
            lua_pushnumber(L, (double)rs.free / FF_RES_SCALE);
            lua_setfield(L, -2, "free");
            lua_rawset(L, -3);
        }
        lua_setfield(L, -2, "resources");
        lua_rawseti(L, -2, i);
    }
    lua_setfield(L, -2, "places");
    lua_pushinteger(L, (lua_Integer)m.queued);
    lua_setfield(L, -2, "queued");
    lua_pushinteger(L, (lua_Integer)m.running);
    lua_setfield(L, -2, "running");
    lua_pushinteger(L, (lua_Integer)m.finished);
    lua_setfield(L, -2, "finished");
    return 1;
}

/* client:close(), also __close: says goodbye to the head (idempotent). */
static int ffl_client_close(lua_State *L) {
    client_close(luaL_checkudata(L, 1, CLIENT_MT));
    return 0;
}

/* tostring(client): "functionfuse.ClusterClient: ADDRESS", or "(closed)". */
static int ffl_client_tostring(lua_State *L) {
    ffl_client *c = luaL_checkudata(L, 1, CLIENT_MT);
    if (c->fd < 0)
        lua_pushliteral(L, CLIENT_MT " (closed)");
    else
        lua_pushfstring(L, CLIENT_MT ": %s", c->address);
    return 1;
}

static const luaL_Reg client_methods[] = {
    {"status", ffl_client_status},
    {"close", ffl_client_close},
    {NULL, NULL},
};

const luaL_Reg ffl_client_funcs[] = {
    {"cluster_connect", ffl_client_connect},
    {NULL, NULL},
};

void ffl_client_open(lua_State *L) {
    ffl_new_type(L, CLIENT_MT, client_methods, ffl_client_gc, ffl_client_close,
                 ffl_client_tostring);
    lua_pop(L, 1);
}
