/*
 * lclient.c: the Lua binding of the cluster client, a blocking connection
 * to a head for drivers and status clients. Lua sees one type,
 * functionfuse.ClusterClient:
 *
 *   core.cluster_connect(address, { role = "driver" | "status", token = s,
 *                        token_file = f, timeout = seconds }) -> Client
 *   client:status() -> { places = {...}, queued, running, finished }
 *   client:store(where, op, path, ...) -> { out... }   a call on a storage
 *     held by a worker (msg.h, STORE); where = { resources = {name =
 *     amount}, machine = hex }; raises with the storage's message
 *   core.machine_id() -> this machine's identity, in hex (as status shows)
 *   core.cwd() -> the current directory (nil, message when it has none)
 *   client:close()
 *
 * The cluster driver (ls:run_cluster in ldriver.c) runs workflows over a
 * Client through lclient.h. The client is blocking (poll with timeouts):
 * a driver waits for its run anyway, and the REPL stays interruptible
 * between reads. The handshake is net.c's state machine (ff_hs), as for
 * the libuv connections of heads and workers.
 *
 * Head liveness: the head PINGs every connection (docs/protocol.md,
 * "Faults"); the client consumes PINGs wherever it reads and takes their
 * timeout as the head's heartbeat timeout (FF_HEARTBEAT_MS before the
 * first). While it waits for the head without a timeout of its own (a
 * run, a storage call), nothing from it for that long, or nothing it
 * takes for that long, fails with "the head at ADDR stopped answering
 * (nothing for 5.0 s)"; a STOPPING fails with the head's reason. Either
 * breaks the client, so the next run connects again.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
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
#include "text.h"

#define CLIENT_MT "functionfuse.ClusterClient"

struct ffl_client {
    int fd;
    ff_buf in, out;
    size_t consumed; /* bytes of `in` handed out by the last recv */
    char address[300];
    char err[640];     /* a handshake's failure (ff_hs.why) fits whole */
    uint64_t next_req; /* the last STORE's req */
    int broken;        /* the connection failed: it cannot carry another run */
    /* The head's heartbeat timeout: FF_HEARTBEAT_MS until its first PING
     * says otherwise. Nothing from the head for that long while the
     * client waits for it means the head is lost. */
    uint64_t hb_ms;
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

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The head is taken for lost: nothing came from it (or nothing could be
 * sent to it) for the heartbeat timeout. */
static int head_silent(ffl_client *c) {
    snprintf(c->err, sizeof c->err, "the head at %s stopped answering (nothing for %.1f s)",
             c->address, (double)c->hb_ms / 1000);
    c->broken = 1;
    return -1;
}

int ffl_client_flush(ffl_client *c) {
    size_t off = 0;
    while (off < c->out.n) {
        /* A head that stopped reading (SIGSTOP, a cut link) fills the
         * socket's buffer: after the heartbeat timeout without progress,
         * it is lost, as when it sends nothing. */
        int w = wait_fd(c->fd, POLLOUT, (int)c->hb_ms);
        if (w < 0 && errno == EINTR) {
            snprintf(c->err, sizeof c->err, "interrupted while waiting for the cluster");
            return -1; /* a frame may be cut short: the connection cannot go on */
        }
        if (w == 0)
            return head_silent(c);
        ssize_t n = send(c->fd, c->out.p + off, c->out.n - off, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
            continue;
        if (n <= 0) {
            snprintf(c->err, sizeof c->err, "lost the connection to the head at %s: %s", c->address,
                     strerror(errno));
            c->broken = 1;
            return -1;
        }
        off += (size_t)n;
    }
    c->out.n = 0;
    return 0;
}

/* Reads what the socket has into c->in without waiting: 0, or -1 when the
 * head closed the connection or it failed (c->err says so). */
static int read_some(ffl_client *c) {
    if (ff_buf_reserve(&c->in, 256 * 1024) != 0) {
        snprintf(c->err, sizeof c->err, "not enough memory");
        return -1;
    }
    ssize_t got = recv(c->fd, c->in.p + c->in.n, c->in.cap - c->in.n, MSG_DONTWAIT);
    if (got < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK))
        return 0;
    if (got <= 0) {
        snprintf(c->err, sizeof c->err, "the head at %s closed the connection", c->address);
        c->broken = 1;
        return -1;
    }
    c->in.n += (size_t)got;
    return 0;
}

/* Handles a frame of the connection itself: a PING (its timeout is the
 * one to use from now on) returns 1, to be skipped; a STOPPING fails with
 * the head's reason (-1); other frames return 0. */
static int client_frame(ffl_client *c, int type, const char *p, size_t n) {
    if (type == FF_M_PING) {
        uint64_t ms;
        if (ff_msg_ping_read(p, n, &ms) == 0 && ms > 0)
            c->hb_ms = ms < 3600 * 1000 ? ms : 3600 * 1000;
        return 1;
    }
    if (type == FF_M_STOPPING) {
        const char *why;
        size_t len;
        char esc[300];
        if (ff_msg_stopping_read(p, n, &why, &len) != 0)
            why = "", len = 0;
        snprintf(c->err, sizeof c->err, "the head at %s is stopping: %s", c->address,
                 ff_text_escape(esc, sizeof esc, why, len));
        c->broken = 1;
        return -1;
    }
    return 0;
}

int ffl_client_recv(ffl_client *c, int *type, const char **p, size_t *n, int timeout_ms) {
    uint64_t start = now_ms(), heard = start;
    for (;;) {
        if (c->consumed > 0) {
            memmove(c->in.p, c->in.p + c->consumed, c->in.n - c->consumed);
            c->in.n -= c->consumed;
            c->consumed = 0;
        }
        size_t total;
        int rc = ff_frame_parse(c->in.p, c->in.n, FF_FRAME_MAX, type, p, n, &total);
        if (rc == 0) {
            c->consumed = total;
            int own = client_frame(c, *type, *p, *n);
            if (own < 0)
                return -1;
            if (own == 0)
                return 0;
            continue; /* a PING */
        }
        if (rc != FFLUA_EINCOMPLETE) {
            snprintf(c->err, sizeof c->err, "the head at %s sent a malformed frame", c->address);
            c->broken = 1;
            return -1;
        }
        /* The caller's timeout, or without one the heartbeat's, counted
         * from the last byte that came. */
        uint64_t now = now_ms(),
                 end = timeout_ms >= 0 ? start + (uint64_t)timeout_ms : heard + c->hb_ms;
        int w = end > now ? wait_fd(c->fd, POLLIN, (int)(end - now)) : 0;
        if (w < 0 && errno == EINTR) {
            snprintf(c->err, sizeof c->err, "interrupted while waiting for the cluster");
            return -1;
        }
        if (w == 0) {
            if (timeout_ms < 0)
                return head_silent(c);
            snprintf(c->err, sizeof c->err, "the head at %s did not answer in time", c->address);
            return 1;
        }
        size_t before = c->in.n;
        if (read_some(c) != 0)
            return -1;
        if (c->in.n > before)
            heard = now_ms(); /* any byte is a sign of life: a large frame takes a while */
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
    c->hb_ms = FF_HEARTBEAT_MS;
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

int ffl_client_store_where(lua_State *L, int idx, ff_msg_res *res, uint32_t *nres,
                           unsigned char machine[FF_MACHINE_LEN]) {
    int has_machine = 0;
    *nres = 0;
    idx = lua_absindex(L, idx);
    if (lua_getfield(L, idx, "resources") == LUA_TTABLE) {
        int t = lua_gettop(L);
        lua_pushnil(L);
        while (lua_next(L, t)) {
            int64_t amount;
            size_t len;
            if (lua_type(L, -2) != LUA_TSTRING || !lua_isnumber(L, -1) ||
                ff_sched_amount(lua_tonumber(L, -1), &amount) != 0)
                luaL_error(L, "a storage's resources must map names to non-negative numbers "
                              "with at most 4 decimals");
            const char *nm = lua_tolstring(L, -2, &len);
            if (ff_res_name_check(nm, len) != 0 || *nres == FF_MSG_RES_MAX)
                luaL_error(L, "a storage's resource names must be 1 to %d bytes of text",
                           FF_RES_NAME_MAX);
            res[(*nres)++] = (ff_msg_res){nm, len, (uint64_t)amount}; /* the table keeps nm */
            lua_pop(L, 1);
        }
    }
    lua_pop(L, 1);
    if (lua_getfield(L, idx, "machine") == LUA_TSTRING) {
        size_t len;
        const char *hex = lua_tolstring(L, -1, &len);
        if (len != 2 * FF_MACHINE_LEN)
            luaL_error(L, "a machine identity is %d hex digits", 2 * FF_MACHINE_LEN);
        for (int k = 0; k < FF_MACHINE_LEN; k++) {
            unsigned v = 0;
            for (int j = 0; j < 2; j++) {
                char ch = hex[2 * k + j];
                int d = ch >= '0' && ch <= '9'   ? ch - '0'
                        : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
                                                 : -1;
                if (d < 0)
                    luaL_error(L, "a machine identity is %d hex digits", 2 * FF_MACHINE_LEN);
                v = v * 16 + (unsigned)d;
            }
            machine[k] = (unsigned char)v;
        }
        has_machine = 1;
    }
    lua_pop(L, 1);
    return has_machine;
}

int ffl_client_store(lua_State *L, ffl_client *c, ff_msg_store *m, const ff_msg_res *res,
                     const ff_msg_str *args, size_t n, ff_msg_list *out) {
    m->req = ++c->next_req;
    int rc = ff_msg_store_write(&c->out, m, res, args, n);
    if (rc == -EMSGSIZE)
        luaL_error(L, "a storage call of more than %d MiB: ask for less at once",
                   (int)(FF_FRAME_MAX >> 20));
    if (rc != 0)
        luaL_error(L, "not enough memory");
    if (ffl_client_flush(c) != 0)
        luaL_error(L, "%s", c->err);
    for (;;) {
        int type;
        const char *p;
        size_t len;
        if (ffl_client_recv(c, &type, &p, &len, -1) != 0)
            luaL_error(L, "%s", c->err);
        if (type == FF_M_DONE || type == FF_M_RUN_END || type == FF_M_PROGRESS ||
            type == FF_M_RUN_TIMES)
            continue; /* of a run that ended */
        ff_msg_store_reply rep;
        if (type != FF_M_STORE_REPLY || ff_msg_store_reply_read(p, len, &rep, out) != 0)
            luaL_error(L, "the head answered a storage call with a malformed message (%d)", type);
        if (rep.req != m->req)
            continue; /* of a call that was given up */
        if (!rep.ok && out->n != 1)
            luaL_error(L, "the head answered a storage call with a malformed message");
        return rep.ok ? 0 : 1;
    }
}

static const char *const store_ops[] = {"lookup",   "get",  "put",       "flush", "list", "del",
                                        "del_many", "drop", "workflows", "runs",  NULL};

/* client:store(where, op, path, ...) -> { out... } */
static int ffl_client_store_call(lua_State *L) {
    ffl_client *c = ffl_check_client(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    int op = luaL_checkoption(L, 3, NULL, store_ops) + 1;
    int n = lua_gettop(L) - 3;
    ff_msg_res res[FF_MSG_RES_MAX];
    ff_msg_store m = {.op = (uint64_t)op};
    unsigned char machine[FF_MACHINE_LEN];
    if (ffl_client_store_where(L, 2, res, &m.nres, machine))
        m.machine = machine;
    ff_msg_str *args = lua_newuserdatauv(L, (size_t)(n > 0 ? n : 1) * sizeof *args, 0);
    for (int i = 0; i < n; i++)
        args[i].p = luaL_checklstring(L, 4 + i, &args[i].len);
    ff_msg_list out;
    int rc = ffl_client_store(L, c, &m, res, args, (size_t)n, &out);
    if (rc != 0) {
        ff_msg_str s;
        ff_msg_next_str(&out, &s);
        lua_pushlstring(L, s.p, s.len);
        return lua_error(L);
    }
    lua_createtable(L, out.n < 1024 ? (int)out.n : 0, 0);
    for (lua_Integer i = 1; out.n > 0; i++) {
        ff_msg_str s;
        ff_msg_next_str(&out, &s);
        lua_pushlstring(L, s.p, s.len);
        lua_rawseti(L, -2, i);
    }
    return 1;
}

/* core.machine_id() -> hex */
static int ffl_machine_id(lua_State *L) {
    unsigned char id[FF_MACHINE_LEN];
    char hex[2 * FF_MACHINE_LEN + 1];
    ff_machine_id(id);
    for (int k = 0; k < FF_MACHINE_LEN; k++)
        snprintf(hex + 2 * k, 3, "%02x", id[k]);
    lua_pushstring(L, hex);
    return 1;
}

/* core.cwd() -> the current directory, or nil and a message */
static int ffl_cwd(lua_State *L) {
    char buf[4096];
    if (getcwd(buf, sizeof buf) == NULL) {
        lua_pushnil(L);
        lua_pushstring(L, strerror(errno));
        return 2;
    }
    lua_pushstring(L, buf);
    return 1;
}

/* client:close(), also __close: says goodbye to the head (idempotent). */
static int ffl_client_close(lua_State *L) {
    client_close(luaL_checkudata(L, 1, CLIENT_MT));
    return 0;
}

/* client:usable() -> false once the connection is closed or failed (the
 * head closed it or said it stops, a write failed, a frame was
 * malformed, the head stopped answering): a later run then connects
 * again. What came between runs (PINGs, frames of earlier runs) is read
 * now and kept for the next run, which skips what is not its own. */
static int ffl_client_usable(lua_State *L) {
    ffl_client *c = luaL_checkudata(L, 1, CLIENT_MT);
    while (c->fd >= 0 && !c->broken && wait_fd(c->fd, POLLIN, 0) > 0) {
        size_t before = c->in.n;
        if (read_some(c) != 0 || c->in.n == before)
            break;
    }
    /* Drop the PINGs at the start; a STOPPING anywhere breaks the client. */
    size_t off = c->consumed;
    while (c->fd >= 0 && !c->broken) {
        int type;
        const char *p;
        size_t n, total;
        if (ff_frame_parse(c->in.p + off, c->in.n - off, FF_FRAME_MAX, &type, &p, &n, &total) != 0)
            break;
        if (client_frame(c, type, p, n) < 0)
            break;
        off += total;
    }
    lua_pushboolean(L, c->fd >= 0 && !c->broken);
    return 1;
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
    {"store", ffl_client_store_call},
    {"close", ffl_client_close},
    {"usable", ffl_client_usable},
    {NULL, NULL},
};

const luaL_Reg ffl_client_funcs[] = {
    {"cluster_connect", ffl_client_connect},
    {"machine_id", ffl_machine_id},
    {"cwd", ffl_cwd},
    {NULL, NULL},
};

void ffl_client_open(lua_State *L) {
    ffl_new_type(L, CLIENT_MT, client_methods, ffl_client_gc, ffl_client_close,
                 ffl_client_tostring);
    lua_pop(L, 1);
}
