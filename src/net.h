/*
 * net.h: the cluster protocol's bytes: frames, message fields, the
 * handshake (versions and challenge-response authentication). No sockets
 * here (the head and worker drive libuv, the driver blocking sockets), so
 * everything that reads a peer's bytes can be tested and fuzzed alone.
 * docs/protocol.md is the specification.
 *
 * A frame is a u32 little-endian length (of what follows), a u8 message
 * type, then the payload. Fields inside payloads: varints (LEB128, at most
 * 10 bytes), strings (varint length + bytes), fixed 32-byte nonces and MACs.
 * The payload of each message, the handshake's included, is built and
 * read by its codec in msg.h.
 */
#ifndef FFLUA_NET_H
#define FFLUA_NET_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* 2: SUBMIT's max_pending, TASK's cpus; 3: SUBMIT in parts; 4: machines in
 * REGISTER and STATUS_REPLY; 5: storage on a cluster (STORE, STORE_CALL,
 * STORE_REPLY, RUN_STORE, SUBMIT's save and load flags), actors (the
 * constructor and method flags of SUBMIT and TASK), working directories
 * (WORKDIR, RUN_WORKDIR); 6: faults (PING, STARTED, HANDBACK, STOPPING;
 * RESULT's status, TASK's timeout, SUBMIT's run flags and each task's
 * retries, timeout and restarts, DONE's worker and attempts) */
#define FF_PROTO_VERSION 7
#define FF_NET_MAGIC "fflua-cluster"
#define FF_FRAME_HDR 5
#define FF_FRAME_MAX ((size_t)256 << 20) /* larger frames end the connection */
#define FF_NONCE_LEN 32
#define FF_MACHINE_LEN 16 /* a machine's identity (ff_machine_id, cluster.h) */
#define FF_MAC_LEN 32
#define FF_KEY_LEN 32
#define FF_TOKEN_MIN 16                      /* bytes of a token file, at least */
#define FF_RUN_MAX_TASKS ((uint32_t)1 << 24) /* tasks of one run, at most */

enum ff_msg_type {
    FF_M_HELLO = 1,        /* server -> client: magic, versions, server nonce */
    FF_M_AUTH,             /* client -> server: versions, role, client nonce, MAC */
    FF_M_WELCOME,          /* server -> client: the server's MAC */
    FF_M_REFUSE,           /* either way: a reason, then the connection closes */
    FF_M_REGISTER,         /* worker -> head: cpus, resources */
    FF_M_FUNC,             /* -> worker: function id, encoded function */
    FF_M_TASK,             /* head -> worker: a task to run */
    FF_M_RESULT,           /* worker -> head: a task's result or error */
    FF_M_SUBMIT,           /* driver -> head: tasks of a run */
    FF_M_DONE,             /* head -> driver: a leaf's result, or a failure */
    FF_M_STATUS,           /* client -> head: ask for the cluster's state */
    FF_M_STATUS_REPLY,     /* head -> client: places, their resources, task counts */
    FF_M_FREE,             /* head -> worker: results no longer needed */
    FF_M_BYE,              /* either way: closing cleanly */
    FF_M_RUN_END,          /* driver -> head: the run is over, free its state */
    FF_M_STORE = 16,       /* driver -> head: a call on a storage */
    FF_M_STORE_CALL = 17,  /* head -> worker: the call, on the storage's worker */
    FF_M_STORE_REPLY = 18, /* worker -> head -> driver: its answer */
    FF_M_RUN_STORE = 19,   /* driver -> head: the storage a run loads from and saves to */
    FF_M_WORKDIR = 24,     /* driver -> head -> worker: a working directory, by its hash */
    FF_M_RUN_WORKDIR = 25, /* driver -> head -> worker: the working directory of a run */
    FF_M_PING = 26,        /* either way: I am alive, and the heartbeat timeout */
    FF_M_STARTED = 27,     /* worker -> head: tasks that started running */
    FF_M_HANDBACK = 28,    /* worker -> head: tasks it will not run or finish */
    FF_M_STOPPING = 29,    /* either way: the sender stops: give it no more work */
    FF_M_PROGRESS = 30,    /* head -> driver: how far a run is */
    FF_M_RUN_TIMES = 31,   /* head -> driver: what became of each task, and when */
    FF_M_LAST
};

enum ff_role { FF_ROLE_WORKER = 1, FF_ROLE_DRIVER = 2, FF_ROLE_STATUS = 3 };

/* --- frames -------------------------------------------------------------- */

/* Appends a frame header; the payload is appended next. *at is set (to
 * where the frame starts) even when this fails with -ENOMEM, so that
 * ff_frame_end can remove the frame. */
int ff_frame_begin(ff_buf *b, int type, size_t *at);
/* Ends the frame begun at at: patches its length and returns 0. Returns
 * -ENOMEM when a write into b failed since (b->err, which is cleared), or
 * -EMSGSIZE when the frame is larger than FF_FRAME_MAX; the frame is then
 * removed from b, so that nothing cut short or oversized is ever sent. */
int ff_frame_end(ff_buf *b, size_t at);
/* The bytes of a varint of v, and of a str of n bytes: for checking a
 * frame's size before building it. */
size_t ff_varint_size(uint64_t v);
size_t ff_str_size(size_t n);

/* The first complete frame in p[0..n): 0 and its type, payload and total
 * size; FFLUA_EINCOMPLETE when more bytes are needed; FFLUA_EPROTO for a
 * frame that is too large (over max) or of an unknown type. */
int ff_frame_parse(const char *p, size_t n, size_t max, int *type, const char **payload,
                   size_t *plen, size_t *total);

/* --- fields -------------------------------------------------------------- */

typedef struct ff_rd {
    const unsigned char *p, *end;
    int err; /* sticky: FFLUA_EPROTO once anything was missing or bad */
} ff_rd;

void ff_rd_init(ff_rd *r, const char *p, size_t n);
uint64_t ff_rd_varint(ff_rd *r);
int64_t ff_rd_svarint(ff_rd *r);              /* zigzag */
const char *ff_rd_str(ff_rd *r, size_t *len); /* points into the payload */
const unsigned char *ff_rd_fixed(ff_rd *r, size_t n);
double ff_rd_double(ff_rd *r);
/* 0 if the payload was read exactly (no error, nothing left over). */
int ff_rd_done(const ff_rd *r);
/* Marks r malformed (sticky, as a field cut short does). */
void ff_rd_fail(ff_rd *r);

int ff_wr_varint(ff_buf *b, uint64_t v);
int ff_wr_svarint(ff_buf *b, int64_t v);
int ff_wr_str(ff_buf *b, const char *p, size_t n);
int ff_wr_fixed(ff_buf *b, const void *p, size_t n);
int ff_wr_double(ff_buf *b, double v);

/* --- handshake ----------------------------------------------------------- */

typedef struct ff_versions {
    uint64_t proto;
    const char *fflua, *lua; /* point into a payload or are static */
    size_t fflua_len, lua_len;
} ff_versions;

/* This build's versions. */
void ff_versions_local(ff_versions *v);
/* 0 when both sides can talk; otherwise FFLUA_EVERSION and a message
 * showing both sides in msg. */
int ff_versions_check(const ff_versions *mine, const ff_versions *theirs, char *msg, size_t cap);

/* The MAC key of a token (BLAKE2b of it): the token itself never travels. */
int ff_auth_key(const char *token, size_t len, unsigned char key[FF_KEY_LEN]);
void ff_nonce(unsigned char nonce[FF_NONCE_LEN]);
/* MAC over (label, the first nonce, the second nonce) with the key. */
void ff_auth_mac(const unsigned char key[FF_KEY_LEN], const char *label,
                 const unsigned char a[FF_NONCE_LEN], const unsigned char b[FF_NONCE_LEN],
                 unsigned char mac[FF_MAC_LEN]);
int ff_auth_verify(const unsigned char key[FF_KEY_LEN], const char *label,
                   const unsigned char a[FF_NONCE_LEN], const unsigned char b[FF_NONCE_LEN],
                   const unsigned char mac[FF_MAC_LEN]);

/* --- the handshake, without I/O --------------------------------------------
 *
 * Both sides of the handshake (docs/protocol.md) as a state machine: the
 * owner feeds it each frame it reads, and sends what it wrote into out.
 * The libuv connections (conn.c: the head's side, the worker's) and the
 * blocking client (lclient.c: drivers, `fflua status`) drive the same one.
 * One ff_hs per connection, used by one thread at a time. */

enum { FF_HS_HELLO, FF_HS_AUTH, FF_HS_WELCOME, FF_HS_DONE, FF_HS_FAILED };

typedef struct ff_hs {
    int server;               /* the side that sends HELLO */
    int role;                 /* the client's: given to the client, learnt by the server */
    int state;                /* what it waits for: FF_HS_HELLO (client), FF_HS_AUTH (server),
                   FF_HS_WELCOME (client); then FF_HS_DONE or FF_HS_FAILED */
    const unsigned char *key; /* FF_KEY_LEN bytes, the owner's, for as long as it runs */
    const char *peer;         /* client: the server's address, for messages (the owner's) */
    unsigned char my_nonce[FF_NONCE_LEN], peer_nonce[FF_NONCE_LEN];
    char why[600]; /* why it failed, a whole sentence; "" when there is nothing to say */
} ff_hs;

/* Starts a client's side: nothing to send until the server's HELLO. */
void ff_hs_client(ff_hs *h, int role, const unsigned char *key, const char *peer);
/* Starts a server's side: writes HELLO into out. 0, or the writer's error. */
int ff_hs_server(ff_hs *h, const unsigned char *key, ff_buf *out);
/* Feeds a frame. 0: send what is in out, and feed the next frame; 1: the
 * peer is authenticated (a server: h->role is the peer's), send what is in
 * out; negative: it failed, with why in h->why, and out may hold a REFUSE
 * to send before closing: -ECONNREFUSED (the peer refused), FFLUA_EVERSION,
 * FFLUA_EAUTH (a wrong MAC), FFLUA_EPROTO (not the expected message) or
 * -ENOMEM. */
int ff_hs_step(ff_hs *h, int type, const char *p, size_t n, ff_buf *out);

/* 0 when the n bytes at tok are printable ASCII (a token travels through
 * environments and files as text; a NUL would cut it short); otherwise
 * FFLUA_EAUTH and why ("holds an unprintable byte (0x.. at offset N): ..."),
 * to be prefixed with what holds the token. */
int ff_token_check(const char *tok, size_t n, char *why, size_t whylen);
/* Reads a token file: refuses one that is not a regular file (without
 * waiting on a FIFO), that others may read (mode & 077), that is shorter
 * than FF_TOKEN_MIN or not printable; trailing newlines are not part of
 * it. */
int ff_token_read(const char *path, char *out, size_t cap, size_t *len, char *err, size_t errlen);
/* A fresh random token (hex, 64 characters, NUL-terminated). */
void ff_token_new(char out[65]);

#endif
