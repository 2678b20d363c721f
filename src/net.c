/*
 * net.c: frames, fields and the handshake of the cluster protocol (see
 * net.h and docs/protocol.md): versions, MACs, tokens, and the handshake's
 * state machine, which both kinds of connection drive. Everything that
 * reads a peer's bytes checks every length against what is left and fails
 * with FFLUA_EPROTO.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "fflua.h"
#include "msg.h"
#include "net.h"
#include "text.h"

/* --- frames -------------------------------------------------------------- */

int ff_frame_begin(ff_buf *b, int type, size_t *at) {
    *at = b->n;
    if (ff_buf_reserve(b, FF_FRAME_HDR) != 0)
        return -ENOMEM;
    memset(b->p + b->n, 0, 4);
    b->p[b->n + 4] = (char)type;
    b->n += FF_FRAME_HDR;
    return 0;
}

int ff_frame_end(ff_buf *b, size_t at) {
    if (b->err != 0 || b->n < at + FF_FRAME_HDR) {
        b->err = 0;
        b->n = at;
        return -ENOMEM;
    }
    if (b->n - at - 4 > FF_FRAME_MAX) {
        b->n = at;
        return -EMSGSIZE;
    }
    uint32_t len = (uint32_t)(b->n - at - 4);
    for (int i = 0; i < 4; i++)
        b->p[at + (size_t)i] = (char)(len >> (8 * i));
    return 0;
}

size_t ff_varint_size(uint64_t v) {
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

size_t ff_str_size(size_t n) {
    return ff_varint_size(n) + n;
}

int ff_frame_parse(const char *p, size_t n, size_t max, int *type, const char **payload,
                   size_t *plen, size_t *total) {
    if (n < 4)
        return FFLUA_EINCOMPLETE;
    const unsigned char *u = (const unsigned char *)p;
    uint32_t len =
        (uint32_t)u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 | (uint32_t)u[3] << 24;
    if (len < 1 || len > max)
        return FFLUA_EPROTO;
    if (n < 4 || n - 4 < len)
        return FFLUA_EINCOMPLETE;
    int t = u[4];
    if (t < FF_M_HELLO || t >= FF_M_LAST)
        return FFLUA_EPROTO;
    *type = t;
    *payload = p + FF_FRAME_HDR;
    *plen = len - 1;
    *total = 4 + (size_t)len;
    return 0;
}

/* --- fields -------------------------------------------------------------- */

void ff_rd_init(ff_rd *r, const char *p, size_t n) {
    r->p = (const unsigned char *)p;
    r->end = r->p + n;
    r->err = 0;
}

void ff_rd_fail(ff_rd *r) {
    r->err = FFLUA_EPROTO;
    r->p = r->end;
}

uint64_t ff_rd_varint(ff_rd *r) {
    uint64_t x = 0;
    for (int i = 0; i < 10; i++) {
        if (r->p >= r->end)
            break;
        unsigned c = *r->p++;
        if (i == 9 && c > 1)
            break;
        x |= (uint64_t)(c & 0x7f) << (7 * i);
        if (!(c & 0x80))
            return x;
    }
    ff_rd_fail(r);
    return 0;
}

int64_t ff_rd_svarint(ff_rd *r) {
    uint64_t u = ff_rd_varint(r);
    return (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
}

const char *ff_rd_str(ff_rd *r, size_t *len) {
    uint64_t n = ff_rd_varint(r);
    if (r->err || n > (uint64_t)(r->end - r->p)) {
        ff_rd_fail(r);
        *len = 0;
        return "";
    }
    const char *s = (const char *)r->p;
    r->p += n;
    *len = (size_t)n;
    return s;
}

const unsigned char *ff_rd_fixed(ff_rd *r, size_t n) {
    static const unsigned char zeros[64];
    if (r->err || n > (size_t)(r->end - r->p) || n > sizeof zeros) {
        ff_rd_fail(r);
        return zeros;
    }
    const unsigned char *p = r->p;
    r->p += n;
    return p;
}

double ff_rd_double(ff_rd *r) {
    const unsigned char *p = ff_rd_fixed(r, 8);
    uint64_t u = 0;
    for (int i = 0; i < 8; i++)
        u |= (uint64_t)p[i] << (8 * i);
    double d;
    memcpy(&d, &u, 8);
    return d;
}

int ff_rd_done(const ff_rd *r) {
    return r->err ? r->err : (r->p == r->end ? 0 : FFLUA_EPROTO);
}

int ff_wr_varint(ff_buf *b, uint64_t v) {
    if (ff_buf_reserve(b, 10) != 0)
        return -ENOMEM;
    do {
        unsigned char c = (unsigned char)(v & 0x7f);
        v >>= 7;
        b->p[b->n++] = (char)(v ? c | 0x80 : c);
    } while (v);
    return 0;
}

int ff_wr_svarint(ff_buf *b, int64_t v) {
    return ff_wr_varint(b, ((uint64_t)v << 1) ^ (uint64_t)(v >> 63));
}

int ff_wr_fixed(ff_buf *b, const void *p, size_t n) {
    if (ff_buf_reserve(b, n) != 0)
        return -ENOMEM;
    if (n > 0)
        memcpy(b->p + b->n, p, n);
    b->n += n;
    return 0;
}

int ff_wr_str(ff_buf *b, const char *p, size_t n) {
    return ff_wr_varint(b, n) || ff_wr_fixed(b, p, n) ? -ENOMEM : 0;
}

int ff_wr_double(ff_buf *b, double v) {
    uint64_t u;
    unsigned char t[8];
    memcpy(&u, &v, 8);
    for (int i = 0; i < 8; i++)
        t[i] = (unsigned char)(u >> (8 * i));
    return ff_wr_fixed(b, t, 8);
}

/* --- versions ------------------------------------------------------------ */

void ff_versions_local(ff_versions *v) {
    v->proto = FF_PROTO_VERSION;
    v->fflua = FFLUA_VERSION;
    v->fflua_len = strlen(FFLUA_VERSION);
    v->lua = FF_LUA_RELEASE;
    v->lua_len = strlen(FF_LUA_RELEASE);
}

int ff_versions_check(const ff_versions *mine, const ff_versions *theirs, char *msg, size_t cap) {
    /* Bytecode and the codec must agree: the protocol, fflua and Lua all
     * have to match exactly. */
    if (mine->proto == theirs->proto && mine->fflua_len == theirs->fflua_len &&
        memcmp(mine->fflua, theirs->fflua, mine->fflua_len) == 0 &&
        mine->lua_len == theirs->lua_len && memcmp(mine->lua, theirs->lua, mine->lua_len) == 0)
        return 0;
    char fflua[48], lua[48]; /* the peer's, as it sent them */
    snprintf(msg, cap,
             "version mismatch: this side has protocol %llu, fflua %.*s, %.*s; "
             "the peer has protocol %llu, fflua %s, %s",
             (unsigned long long)mine->proto, (int)mine->fflua_len, mine->fflua, (int)mine->lua_len,
             mine->lua, (unsigned long long)theirs->proto,
             ff_text_escape(fflua, sizeof fflua, theirs->fflua, theirs->fflua_len),
             ff_text_escape(lua, sizeof lua, theirs->lua, theirs->lua_len));
    return FFLUA_EVERSION;
}

/* --- authentication ------------------------------------------------------ */

int ff_auth_key(const char *token, size_t len, unsigned char key[FF_KEY_LEN]) {
    if (sodium_init() < 0)
        return FFLUA_EINTERNAL;
    static const unsigned char ctx[] = "fflua cluster token v1";
    return crypto_generichash(key, FF_KEY_LEN, (const unsigned char *)token, len, ctx,
                              sizeof ctx - 1) == 0
               ? 0
               : FFLUA_EINTERNAL;
}

void ff_nonce(unsigned char nonce[FF_NONCE_LEN]) {
    if (sodium_init() < 0)
        memset(nonce, 0, FF_NONCE_LEN); /* cannot happen once a key was made */
    randombytes_buf(nonce, FF_NONCE_LEN);
}

static void mac_input(unsigned char in[16 + 2 * FF_NONCE_LEN], const char *label,
                      const unsigned char a[FF_NONCE_LEN], const unsigned char b[FF_NONCE_LEN]) {
    memset(in, 0, 16);
    memcpy(in, label, strlen(label) < 16 ? strlen(label) : 16);
    memcpy(in + 16, a, FF_NONCE_LEN);
    memcpy(in + 16 + FF_NONCE_LEN, b, FF_NONCE_LEN);
}

void ff_auth_mac(const unsigned char key[FF_KEY_LEN], const char *label,
                 const unsigned char a[FF_NONCE_LEN], const unsigned char b[FF_NONCE_LEN],
                 unsigned char mac[FF_MAC_LEN]) {
    unsigned char in[16 + 2 * FF_NONCE_LEN];
    mac_input(in, label, a, b);
    crypto_auth_hmacsha512256(mac, in, sizeof in, key);
}

int ff_auth_verify(const unsigned char key[FF_KEY_LEN], const char *label,
                   const unsigned char a[FF_NONCE_LEN], const unsigned char b[FF_NONCE_LEN],
                   const unsigned char mac[FF_MAC_LEN]) {
    unsigned char in[16 + 2 * FF_NONCE_LEN];
    mac_input(in, label, a, b);
    return crypto_auth_hmacsha512256_verify(mac, in, sizeof in, key) == 0 ? 0 : FFLUA_EAUTH;
}

/* --- the handshake --------------------------------------------------------- */

static int hs_fail(ff_hs *h, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int hs_fail(ff_hs *h, int rc, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(h->why, sizeof h->why, fmt, ap);
    va_end(ap);
    h->state = FF_HS_FAILED;
    return rc;
}

/* The reason of a REFUSE, escaped (what the peer says is not ours to
 * print as it is). */
static const char *refuse_reason(const char *p, size_t n, char *out, size_t cap) {
    const char *s;
    size_t len;
    ff_msg_refuse_read(p, n, &s, &len);
    return ff_text_escape(out, cap, s, len);
}

void ff_hs_client(ff_hs *h, int role, const unsigned char *key, const char *peer) {
    memset(h, 0, sizeof *h);
    h->role = role;
    h->key = key;
    h->peer = peer;
    h->state = FF_HS_HELLO;
}

int ff_hs_server(ff_hs *h, const unsigned char *key, ff_buf *out) {
    memset(h, 0, sizeof *h);
    h->server = 1;
    h->key = key;
    h->state = FF_HS_AUTH;
    ff_nonce(h->my_nonce);
    return ff_msg_hello_write(out, h->my_nonce);
}

/* The server refuses: REFUSE(reason) into out, and the log says so. */
static int hs_refuse(ff_hs *h, ff_buf *out, int rc, const char *reason) {
    ff_msg_refuse_write(out, reason);
    return hs_fail(h, rc, "refused: %s", reason);
}

static int hs_server_step(ff_hs *h, int type, const char *p, size_t n, ff_buf *out) {
    char msg[400];
    if (type == FF_M_REFUSE)
        return hs_fail(h, -ECONNREFUSED, "the peer gave up: %s", refuse_reason(p, n, msg, 300));
    ff_msg_auth a;
    if (type != FF_M_AUTH || ff_msg_auth_read(p, n, &a) != 0)
        return hs_refuse(h, out, FFLUA_EPROTO, "protocol error: the first message must be AUTH");
    ff_versions mine;
    ff_versions_local(&mine);
    if (ff_versions_check(&mine, &a.v, msg, sizeof msg) != 0)
        return hs_refuse(h, out, FFLUA_EVERSION, msg);
    memcpy(h->peer_nonce, a.nonce, FF_NONCE_LEN);
    if (ff_auth_verify(h->key, "client", h->my_nonce, h->peer_nonce, a.mac) != 0)
        return hs_refuse(h, out, FFLUA_EAUTH,
                         "authentication failed: the peer does not know this cluster's token");
    unsigned char mac[FF_MAC_LEN];
    ff_auth_mac(h->key, "server", h->peer_nonce, h->my_nonce, mac);
    if (ff_msg_welcome_write(out, mac) != 0) {
        h->why[0] = '\0'; /* the peer sees the connection close */
        h->state = FF_HS_FAILED;
        return -ENOMEM;
    }
    h->role = a.role;
    h->state = FF_HS_DONE;
    return 1;
}

static int hs_client_step(ff_hs *h, int type, const char *p, size_t n, ff_buf *out) {
    char msg[400];
    if (type == FF_M_REFUSE)
        return hs_fail(h, -ECONNREFUSED, "the head at %s refused the connection: %s", h->peer,
                       refuse_reason(p, n, msg, 300));
    if (h->state == FF_HS_HELLO) {
        ff_msg_hello m;
        if (type != FF_M_HELLO || ff_msg_hello_read(p, n, &m) != 0)
            return hs_fail(h, FFLUA_EPROTO, "%s does not speak the fflua protocol", h->peer);
        ff_versions mine;
        ff_versions_local(&mine);
        if (ff_versions_check(&mine, &m.v, msg, sizeof msg) != 0) {
            ff_msg_refuse_write(out, msg);
            return hs_fail(h, FFLUA_EVERSION, "the head at %s: %s", h->peer, msg);
        }
        memcpy(h->peer_nonce, m.nonce, FF_NONCE_LEN);
        ff_nonce(h->my_nonce);
        unsigned char mac[FF_MAC_LEN];
        ff_auth_mac(h->key, "client", h->peer_nonce, h->my_nonce, mac);
        if (ff_msg_auth_write(out, h->role, h->my_nonce, mac) != 0)
            return hs_fail(h, -ENOMEM, "not enough memory for the handshake");
        h->state = FF_HS_WELCOME;
        return 0;
    }
    /* A server without the token cannot make the MAC: a client never talks
     * to an impostor. */
    unsigned char mac[FF_MAC_LEN];
    if (type != FF_M_WELCOME || ff_msg_welcome_read(p, n, mac) != 0 ||
        ff_auth_verify(h->key, "server", h->my_nonce, h->peer_nonce, mac) != 0)
        return hs_fail(h, FFLUA_EAUTH, "the head at %s failed to prove it knows the token",
                       h->peer);
    h->state = FF_HS_DONE;
    return 1;
}

int ff_hs_step(ff_hs *h, int type, const char *p, size_t n, ff_buf *out) {
    if (h->state == FF_HS_DONE || h->state == FF_HS_FAILED)
        return hs_fail(h, FFLUA_EPROTO, "protocol error: the handshake is over");
    return h->server ? hs_server_step(h, type, p, n, out) : hs_client_step(h, type, p, n, out);
}

/* --- tokens -------------------------------------------------------------- */

int ff_token_check(const char *tok, size_t n, char *why, size_t whylen) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)tok[i];
        if (c < 0x20 || c > 0x7e) {
            snprintf(why, whylen,
                     "holds an unprintable byte (0x%02x at offset %zu): a token is "
                     "printable ASCII text",
                     c, i);
            return FFLUA_EAUTH;
        }
    }
    return 0;
}

int ff_token_read(const char *path, char *out, size_t cap, size_t *len, char *err, size_t errlen) {
    /* O_NONBLOCK: opening a FIFO for reading would wait for a writer. The
     * flag means nothing to a regular file, the only kind accepted. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0) {
        int en = errno;
        snprintf(err, errlen, "cannot read the token file '%s': %s", path, strerror(en));
        return -en;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        snprintf(err, errlen, "the token file '%s' is not a regular file", path);
        return FFLUA_EAUTH;
    }
    if (st.st_mode & 077) {
        close(fd);
        snprintf(err, errlen, "the token file '%s' may be read by others (mode %03o): chmod 600 it",
                 path, (unsigned)(st.st_mode & 0777));
        return FFLUA_EAUTH;
    }
    size_t n = 0;
    ssize_t got = 1;
    while (n < cap && got > 0) {
        got = read(fd, out + n, cap - n);
        if (got < 0 && errno == EINTR)
            got = 1;
        else if (got > 0)
            n += (size_t)got;
    }
    close(fd);
    if (got < 0 || n >= cap) {
        snprintf(err, errlen, "cannot read the token file '%s' (or it is over %zu bytes)", path,
                 cap - 1);
        return FFLUA_EAUTH;
    }
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r'))
        n--;
    if (n < FF_TOKEN_MIN) {
        snprintf(err, errlen, "the token in '%s' is too short (at least %d bytes)", path,
                 FF_TOKEN_MIN);
        return FFLUA_EAUTH;
    }
    char why[128];
    if (ff_token_check(out, n, why, sizeof why) != 0) {
        snprintf(err, errlen, "the token in '%s' %s", path, why);
        return FFLUA_EAUTH;
    }
    out[n] = '\0';
    *len = n;
    return 0;
}

void ff_token_new(char out[65]) {
    unsigned char raw[32];
    if (sodium_init() < 0)
        memset(raw, 0, sizeof raw);
    randombytes_buf(raw, sizeof raw);
    sodium_bin2hex(out, 65, raw, sizeof raw);
}
