/*
 * conn.h: a framed, authenticated connection on libuv, shared by the head
 * and the worker. Reads are split into frames (net.c); writes are batched:
 * frames appended while a write is in flight go out together in the next.
 * Both sides run the handshake of docs/protocol.md before anything else.
 * A buffer that grew past 1 MiB for a large frame gives its memory back
 * once the frame is handled (read) or written, so one large message does
 * not leave its peak allocation behind for the connection's life.
 */
#ifndef FFLUA_CONN_H
#define FFLUA_CONN_H

#include <uv.h>

#include "net.h"

typedef struct ff_conn ff_conn;

/* Called for each frame after the handshake. Return nonzero to close the
 * connection (a protocol error: logged by the callee). */
typedef int (*ff_conn_frame_fn)(ff_conn *c, int type, const char *p, size_t n);
/* Called once when the connection is gone (after the handle closed). */
typedef void (*ff_conn_close_fn)(ff_conn *c);
/* Called when the handshake succeeded (server: with the peer's role). */
typedef void (*ff_conn_ready_fn)(ff_conn *c, int role);

enum { FF_CONN_HANDSHAKE, FF_CONN_READY, FF_CONN_CLOSING };

/* Lines about unauthenticated connections (refused, reset, timed out) are
 * whatever a stranger makes them: a server keeps them to a burst of
 * FF_NOISE_BURST, then one per FF_NOISE_EVERY_MS, and counts the others,
 * which one line sums up ("N more lines ... suppressed") at most every
 * FF_NOISE_EVERY_MS. One per server, shared by its connections. */
#define FF_NOISE_BURST 10
#define FF_NOISE_EVERY_MS 2000

typedef struct ff_noise {
    uv_timer_t timer; /* the summary of what was suppressed */
    int timer_init;
    uint64_t tokens_ms; /* lines allowed, in ms of credit: FF_NOISE_EVERY_MS per line */
    uint64_t last_ms;   /* when the credit was last topped up */
    uint64_t suppressed;
} ff_noise;

/* Starts the limiter on loop (0, or a libuv error). */
int ff_noise_init(ff_noise *q, uv_loop_t *loop);
/* Writes the summary of what is suppressed, then closes the timer. */
void ff_noise_close(ff_noise *q);
/* Logs a line as ff_log("net", ...) does, through q's limit (q NULL: no
 * limit). */
void ff_noise_log(ff_noise *q, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define FF_HANDSHAKE_MS 5000 /* a peer that has not authenticated by then goes */

struct ff_conn {
    uv_tcp_t tcp;
    uv_timer_t hs_timer; /* the handshake must end before it fires */
    int hs_timer_init;
    unsigned handshake_ms; /* 0: FF_HANDSHAKE_MS */
    int server;            /* accepted by us (we send HELLO) */
    int state;
    int authed; /* the handshake succeeded */
    int role;   /* server: the peer's role; client: ours */
    ff_hs hs;   /* the handshake (net.h) */
    ff_buf in;
    ff_buf out, wbuf; /* pending frames, the frames being written */
    int writing;
    uv_write_t wreq;
    uint64_t nreads;   /* reads so far (for the owner's busy-polling) */
    char peer[64];     /* address, for logs */
    ff_noise *noise;   /* server: the limiter of lines before authentication, or NULL */
    char refused[600]; /* a client: why it could not get in */
    ff_conn_frame_fn on_frame;
    ff_conn_close_fn on_close;
    ff_conn_ready_fn on_ready;
    void *data;
};

/* Accepted connection: starts reading and sends HELLO. The key
 * (FF_KEY_LEN bytes) must live as long as the connection. */
int ff_conn_accept(ff_conn *c, uv_stream_t *server, const unsigned char *key);
/* Client side: connects to addr and authenticates with role; the key as
 * for ff_conn_accept. */
int ff_conn_connect(ff_conn *c, uv_loop_t *loop, const struct sockaddr *addr, int role,
                    const unsigned char *key);
/* Frames to send are written into c->out by the message writers (msg.h),
 * which return 0, or -ENOMEM or -EMSGSIZE when the frame could not be
 * written whole or is over FF_FRAME_MAX: it is then dropped, and the
 * caller says what failed instead, or closes the connection. Frames are
 * sent by ff_conn_flush, which the owner calls once per loop iteration (a
 * uv_check_t), so that everything one iteration produced goes out in one
 * write. */
void ff_conn_flush(ff_conn *c);
/* Closes (idempotent); on_close runs when libuv is done with the handle. */
void ff_conn_close(ff_conn *c);
/* Frees the buffers; call from on_close. */
void ff_conn_free(ff_conn *c);

/* Runs loop until it has no more work, like uv_run(UV_RUN_DEFAULT), but
 * after each burst of reads keeps polling (yielding the CPU) for up to
 * spin_us before blocking, so that a peer's quick answer is seen without
 * the wake-up latency of a sleeping process. activity() returns a number
 * that grows with every read. */
void ff_loop_run(uv_loop_t *loop, unsigned spin_us, uint64_t (*activity)(void *), void *ud);

/* "HOST:PORT" to a socket address (IPv4 or IPv6 numeric, or a name): 0,
 * -EINVAL for text that is not an address, FFLUA_ERESOLVE for a name that
 * does not resolve; why in err. */
int ff_parse_address(const char *s, struct sockaddr_storage *out, char *err, size_t errlen);

/* Turns on TCP keepalive on fd, so that a peer whose machine vanishes is
 * noticed within about two minutes instead of never (a head would wait for
 * its tasks, a driver for its run, for ever). */
void ff_tcp_keepalive(int fd);

/* Logs a line to stderr: "fflua <who>: message". */
void ff_log(const char *who, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
