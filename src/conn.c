/*
 * conn.c: framed, authenticated libuv connections (see conn.h).
 *
 * The handshake is net.c's state machine (ff_hs), which the blocking
 * client of drivers drives too; here it gets the frames that arrive
 * before the connection is ready, a timer that ends it, and the logs.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "conn.h"
#include "fflua.h"

void ff_log(const char *who, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "fflua %s: %s\n", who, msg);
    fflush(stderr);
}

void ff_tcp_keepalive(int fd) {
    int on = 1, idle = 60, intvl = 10, cnt = 6;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on);
#ifdef TCP_KEEPIDLE
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
#else
    (void)idle, (void)intvl, (void)cnt;
#endif
}

static void conn_keepalive(ff_conn *c) {
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
        ff_tcp_keepalive(fd);
}

/* --- lines about strangers ----------------------------------------------- */

static void on_noise_timer(uv_timer_t *t) {
    ff_noise *q = t->data;
    if (q->suppressed > 0)
        ff_log("net", "%llu more lines about unauthenticated connections suppressed",
               (unsigned long long)q->suppressed);
    q->suppressed = 0;
}

int ff_noise_init(ff_noise *q, uv_loop_t *loop) {
    memset(q, 0, sizeof *q);
    int rc = uv_timer_init(loop, &q->timer);
    if (rc != 0)
        return rc;
    q->timer_init = 1;
    q->timer.data = q;
    q->tokens_ms = (uint64_t)FF_NOISE_BURST * FF_NOISE_EVERY_MS;
    q->last_ms = uv_now(loop);
    return 0;
}

void ff_noise_close(ff_noise *q) {
    if (!q->timer_init)
        return;
    on_noise_timer(&q->timer);
    uv_close((uv_handle_t *)&q->timer, NULL);
    q->timer_init = 0;
}

/* Whether a line about a stranger may be written now (see ff_noise). */
static int noise_allow(ff_noise *q) {
    if (!q->timer_init)
        return 1;
    uint64_t now = uv_now(q->timer.loop), cap = (uint64_t)FF_NOISE_BURST * FF_NOISE_EVERY_MS;
    q->tokens_ms += now - q->last_ms;
    if (q->tokens_ms > cap)
        q->tokens_ms = cap;
    q->last_ms = now;
    if (q->tokens_ms >= FF_NOISE_EVERY_MS) {
        q->tokens_ms -= FF_NOISE_EVERY_MS;
        return 1;
    }
    if (q->suppressed++ == 0 && !uv_is_active((uv_handle_t *)&q->timer))
        uv_timer_start(&q->timer, on_noise_timer, FF_NOISE_EVERY_MS, 0);
    return 0;
}

void ff_noise_log(ff_noise *q, const char *fmt, ...) {
    if (q != NULL && !noise_allow(q))
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ff_log("net", "%s", msg);
}

/* Logs a line about connection c, through the server's limiter while the
 * peer has not authenticated. */
static void conn_log(ff_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void conn_log(ff_conn *c, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    ff_noise_log(c->server && !c->authed ? c->noise : NULL, "%s: %s", c->peer, msg);
}

/* --- closing ------------------------------------------------------------- */

static void on_closed(uv_handle_t *h) {
    ff_conn *c = h->data;
    if (c->on_close != NULL)
        c->on_close(c);
}

static void flush(ff_conn *c);

static void after_timer(uv_handle_t *h) {
    ff_conn *c = h->data;
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

/* Closes the handles, the timer first: libuv runs close callbacks in the
 * reverse order of uv_close calls, and on_closed may free the connection. */
static void close_handles(ff_conn *c) {
    if (c->hs_timer_init)
        uv_close((uv_handle_t *)&c->hs_timer, after_timer);
    else
        uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
    ff_conn *c = req->data;
    (void)status;
    free(req);
    close_handles(c);
}

/* Closes after what was written is out (uv_shutdown waits for pending
 * writes), so a REFUSE or BYE reaches the peer. */
void ff_conn_close(ff_conn *c) {
    if (c->state == FF_CONN_CLOSING)
        return;
    flush(c);
    c->state = FF_CONN_CLOSING;
    if (c->tcp.type != UV_TCP) { /* no handle (its init failed, or the fuzz target's) */
        if (c->on_close != NULL)
            c->on_close(c);
        return;
    }
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_shutdown_t *req = c->writing ? malloc(sizeof *req) : NULL;
    if (req != NULL) {
        req->data = c;
        if (uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown) == 0)
            return;
        free(req);
    }
    close_handles(c);
}

void ff_conn_free(ff_conn *c) {
    ff_buf_free(&c->in);
    ff_buf_free(&c->out);
    ff_buf_free(&c->wbuf);
}

/* --- buffers ------------------------------------------------------------- */

/* A buffer keeps at most this much memory once what it held is handled:
 * one large message must not leave its peak allocation behind for the
 * connection's lifetime (a head or worker lives for days). */
#define CONN_KEEP ((size_t)1 << 20)

/* Gives back the memory of b beyond what it holds (at least 64 KiB kept,
 * the size of a read) when it grew past CONN_KEEP. Without memory for the
 * smaller block, b stays as it is. */
static void conn_shrink(ff_buf *b) {
    if (b->cap <= CONN_KEEP || b->n > b->cap / 4)
        return;
    if (b->n == 0) {
        ff_buf_free(b);
        return;
    }
    size_t cap = 64 * 1024;
    while (cap < b->n)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (p != NULL) {
        b->p = p;
        b->cap = cap;
    }
}

/* --- writing ------------------------------------------------------------- */

static void on_written(uv_write_t *req, int status) {
    ff_conn *c = req->data;
    c->writing = 0;
    c->wbuf.n = 0;
    conn_shrink(&c->wbuf);
    if (status < 0) {
        if (c->state != FF_CONN_CLOSING)
            conn_log(c, "write failed: %s", uv_strerror(status));
        ff_conn_close(c);
        return;
    }
    flush(c);
}

static void flush(ff_conn *c) {
    if (c->tcp.type != UV_TCP) { /* no socket: the head's fuzz target */
        c->out.n = 0;
        return;
    }
    if (c->writing || c->out.n == 0 || c->state == FF_CONN_CLOSING ||
        uv_is_closing((uv_handle_t *)&c->tcp))
        return;
    ff_buf t = c->wbuf; /* swap: out is written, the old wbuf collects */
    c->wbuf = c->out;
    c->out = t;
    c->out.n = 0;
    uv_buf_t b = uv_buf_init(c->wbuf.p, (unsigned)c->wbuf.n);
    c->wreq.data = c;
    c->writing = 1;
    int rc = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_written);
    if (rc < 0) {
        c->writing = 0;
        ff_conn_close(c);
    }
}

void ff_conn_flush(ff_conn *c) {
    flush(c);
}

/* --- the handshake ------------------------------------------------------- */

/* Feeds a frame to the handshake (net.c's state machine). Nonzero closes
 * the connection: a server logs why (through the limiter for strangers),
 * a client keeps it in c->refused. */
static int handshake(ff_conn *c, int type, const char *p, size_t n) {
    int rc = ff_hs_step(&c->hs, type, p, n, &c->out);
    if (rc < 0) {
        if (!c->server)
            snprintf(c->refused, sizeof c->refused, "%s", c->hs.why);
        else if (c->hs.why[0] != '\0')
            conn_log(c, "%s", c->hs.why);
        return 1;
    }
    if (rc == 0) {
        if (!c->server)
            flush(c); /* AUTH */
        return 0;
    }
    c->role = c->hs.role;
    c->authed = 1;
    c->state = FF_CONN_READY;
    uv_timer_stop(&c->hs_timer);
    if (c->on_ready)
        c->on_ready(c, c->role);
    return 0;
}

/* --- reading ------------------------------------------------------------- */

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
    ff_conn *c = h->data;
    (void)hint;
    /* Before authentication frames are small: a stranger's connection
     * costs a few KiB, however many there are. */
    size_t want = c->state == FF_CONN_HANDSHAKE ? 4096 + FF_FRAME_HDR : 64 * 1024;
    if (ff_buf_reserve(&c->in, want) != 0) {
        buf->base = NULL;
        buf->len = 0;
        return;
    }
    buf->base = c->in.p + c->in.n;
    buf->len = c->in.cap - c->in.n;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
    ff_conn *c = s->data;
    (void)buf;
    if (nread < 0) {
        if (nread != UV_EOF && c->state != FF_CONN_CLOSING)
            conn_log(c, "%s", uv_strerror((int)nread));
        ff_conn_close(c);
        return;
    }
    c->in.n += (size_t)nread;
    c->nreads++;
    size_t off = 0;
    while (c->state != FF_CONN_CLOSING) {
        int type;
        const char *payload;
        size_t plen, total;
        /* Before authentication only small frames: a stranger must not
         * make us buffer a large one. */
        size_t max = c->state == FF_CONN_HANDSHAKE ? 4096 : FF_FRAME_MAX;
        int rc = ff_frame_parse(c->in.p + off, c->in.n - off, max, &type, &payload, &plen, &total);
        if (rc == FFLUA_EINCOMPLETE)
            break;
        if (rc != 0) {
            conn_log(c, "malformed or oversized frame: disconnected");
            ff_conn_close(c);
            return;
        }
        int bad = c->state == FF_CONN_HANDSHAKE ? handshake(c, type, payload, plen)
                                                : c->on_frame(c, type, payload, plen);
        off += total;
        if (bad) {
            if (!c->server && c->refused[0] != '\0') /* it names the head */
                ff_log("net", "%s", c->refused);
            ff_conn_close(c);
            return;
        }
    }
    if (off > 0 && c->state != FF_CONN_CLOSING) {
        memmove(c->in.p, c->in.p + off, c->in.n - off);
        c->in.n -= off;
        conn_shrink(&c->in);
    }
}

static void peer_name(ff_conn *c) {
    struct sockaddr_storage ss;
    int len = sizeof ss;
    char host[48] = "?";
    int port = 0;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET) {
            uv_ip4_name((struct sockaddr_in *)&ss, host, sizeof host);
            port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            uv_ip6_name((struct sockaddr_in6 *)&ss, host, sizeof host);
            port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
        }
    }
    snprintf(c->peer, sizeof c->peer, "%s:%d", host, port);
}

static void on_handshake_timeout(uv_timer_t *t) {
    ff_conn *c = t->data;
    if (c->state != FF_CONN_HANDSHAKE)
        return;
    snprintf(c->refused, sizeof c->refused, "the handshake did not end within %u ms",
             c->handshake_ms ? c->handshake_ms : FF_HANDSHAKE_MS);
    conn_log(c, "%s: disconnected", c->refused);
    ff_conn_close(c);
}

static void start_timer(ff_conn *c, uv_loop_t *loop) {
    if (uv_timer_init(loop, &c->hs_timer) != 0)
        return;
    c->hs_timer_init = 1;
    c->hs_timer.data = c;
    uv_timer_start(&c->hs_timer, on_handshake_timeout,
                   c->handshake_ms ? c->handshake_ms : FF_HANDSHAKE_MS, 0);
}

int ff_conn_accept(ff_conn *c, uv_stream_t *server, const unsigned char *key) {
    c->server = 1;
    c->state = FF_CONN_HANDSHAKE;
    c->tcp.data = c;
    int rc = uv_tcp_init(server->loop, &c->tcp);
    if (rc == 0)
        rc = uv_accept(server, (uv_stream_t *)&c->tcp);
    if (rc != 0)
        return rc;
    uv_tcp_nodelay(&c->tcp, 1);
    conn_keepalive(c);
    peer_name(c);
    start_timer(c, server->loop);
    if (ff_hs_server(&c->hs, key, &c->out) != 0)
        return UV_ENOMEM;
    flush(c);
    return uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void on_connected(uv_connect_t *req, int status) {
    ff_conn *c = req->data;
    free(req);
    if (status < 0) {
        snprintf(c->refused, sizeof c->refused, "cannot connect: %s", uv_strerror(status));
        conn_log(c, "%s", c->refused);
        ff_conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    conn_keepalive(c);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

int ff_conn_connect(ff_conn *c, uv_loop_t *loop, const struct sockaddr *addr, int role,
                    const unsigned char *key) {
    c->server = 0;
    c->state = FF_CONN_HANDSHAKE;
    c->role = role;
    c->tcp.data = c;
    char host[48] = "?";
    int port = 0;
    if (addr->sa_family == AF_INET) {
        uv_ip4_name((const struct sockaddr_in *)addr, host, sizeof host);
        port = ntohs(((const struct sockaddr_in *)addr)->sin_port);
    } else if (addr->sa_family == AF_INET6) {
        uv_ip6_name((const struct sockaddr_in6 *)addr, host, sizeof host);
        port = ntohs(((const struct sockaddr_in6 *)addr)->sin6_port);
    }
    snprintf(c->peer, sizeof c->peer, "%s:%d", host, port);
    ff_hs_client(&c->hs, role, key, c->peer);
    int rc = uv_tcp_init(loop, &c->tcp);
    if (rc != 0)
        return rc;
    start_timer(c, loop);
    uv_connect_t *req = malloc(sizeof *req);
    if (req == NULL)
        return UV_ENOMEM;
    req->data = c;
    rc = uv_tcp_connect(req, &c->tcp, addr, on_connected);
    if (rc != 0)
        free(req);
    return rc;
}

int ff_parse_address(const char *s, struct sockaddr_storage *out, char *err, size_t errlen) {
    const char *colon = strrchr(s, ':');
    if (colon == NULL || colon == s || colon[1] == '\0') {
        snprintf(err, errlen, "bad address '%s' (HOST:PORT expected)", s);
        return -EINVAL;
    }
    char host[256];
    size_t hl = (size_t)(colon - s);
    if (hl >= sizeof host) {
        snprintf(err, errlen, "bad address '%s' (host too long)", s);
        return -EINVAL;
    }
    memcpy(host, s, hl);
    host[hl] = '\0';
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') { /* [::1]:6380 */
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = '\0';
    }
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || port < 0 || port > 65535) {
        snprintf(err, errlen, "bad port in address '%s'", s);
        return -EINVAL;
    }
    memset(out, 0, sizeof *out);
    if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)out) == 0 ||
        uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)out) == 0)
        return 0;
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host, colon + 1, &hints, &res);
    if (rc != 0 || res == NULL) {
        snprintf(err, errlen, "cannot resolve '%s': %s", host, gai_strerror(rc));
        return FFLUA_ERESOLVE;
    }
    memcpy(out, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

static uint64_t now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void ff_loop_run(uv_loop_t *loop, unsigned spin_us, uint64_t (*activity)(void *), void *ud) {
    uint64_t seen = activity(ud), last = now_us();
    for (;;) {
        int alive = uv_run(loop, UV_RUN_NOWAIT);
        if (!alive)
            return;
        uint64_t a = activity(ud), t = now_us();
        if (a != seen) {
            seen = a;
            last = t;
        }
        if (t - last < spin_us) {
            sched_yield();
            continue;
        }
        if (!uv_run(loop, UV_RUN_ONCE))
            return;
        seen = activity(ud);
        last = now_us();
    }
}
