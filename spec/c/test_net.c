/*
 * test_net.c: the protocol's bytes without sockets: frames, fields, the
 * version check, the MACs, the handshake's two sides, token files.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conn.h"
#include "fflua.h"
#include "msg.h"
#include "net.h"
#include "test.h"

static void test_frames(void) {
    ff_buf b = {0};
    size_t at;
    ASSERT_EQ(ff_frame_begin(&b, FF_M_STATUS, &at), 0);
    ASSERT_EQ(ff_wr_varint(&b, 300), 0);
    ASSERT_EQ(ff_wr_str(&b, "abc", 3), 0);
    ff_frame_end(&b, at);
    int type;
    const char *p;
    size_t n, total;
    for (size_t cut = 0; cut < b.n; cut++) /* every prefix: need more */
        ASSERT_EQ(ff_frame_parse(b.p, cut, FF_FRAME_MAX, &type, &p, &n, &total), FFLUA_EINCOMPLETE);
    ASSERT_EQ(ff_frame_parse(b.p, b.n, FF_FRAME_MAX, &type, &p, &n, &total), 0);
    ASSERT_EQ(type, FF_M_STATUS);
    ASSERT_EQ(total, b.n);
    ff_rd r;
    ff_rd_init(&r, p, n);
    ASSERT_EQ(ff_rd_varint(&r), 300);
    size_t len;
    const char *s = ff_rd_str(&r, &len);
    ASSERT(len == 3 && memcmp(s, "abc", 3) == 0);
    ASSERT_EQ(ff_rd_done(&r), 0);
    /* Too large, and an unknown type, are protocol errors. */
    ASSERT_EQ(ff_frame_parse(b.p, b.n, 2, &type, &p, &n, &total), FFLUA_EPROTO);
    b.p[4] = (char)FF_M_LAST;
    ASSERT_EQ(ff_frame_parse(b.p, b.n, FF_FRAME_MAX, &type, &p, &n, &total), FFLUA_EPROTO);
    ff_buf_free(&b);
    /* Reading past the end is sticky, never an overread. */
    ff_rd_init(&r, "\x85", 1);
    ff_rd_varint(&r);
    ASSERT_EQ(r.err, FFLUA_EPROTO);
    ff_rd_init(&r,
               "\x05"
               "ab",
               3);
    ff_rd_str(&r, &len);
    ASSERT_EQ(ff_rd_done(&r), FFLUA_EPROTO);
    ASSERT_EQ(len, 0);
}

static void test_versions(void) {
    ff_versions mine, other;
    ff_versions_local(&mine);
    other = mine;
    char msg[512];
    ASSERT_EQ(ff_versions_check(&mine, &other, msg, sizeof msg), 0);
    other.fflua = "9.9.9";
    other.fflua_len = 5;
    ASSERT_EQ(ff_versions_check(&mine, &other, msg, sizeof msg), FFLUA_EVERSION);
    ASSERT(strstr(msg, FFLUA_VERSION) != NULL);
    ASSERT(strstr(msg, "9.9.9") != NULL);
    other = mine;
    other.proto = FF_PROTO_VERSION + 1;
    ASSERT_EQ(ff_versions_check(&mine, &other, msg, sizeof msg), FFLUA_EVERSION);
}

static void test_macs(void) {
    unsigned char k1[FF_KEY_LEN], k2[FF_KEY_LEN], a[FF_NONCE_LEN], b[FF_NONCE_LEN];
    unsigned char mac[FF_MAC_LEN];
    ASSERT_EQ(ff_auth_key("the right token..", 16, k1), 0);
    ASSERT_EQ(ff_auth_key("the wrong token..", 17, k2), 0);
    ff_nonce(a);
    ff_nonce(b);
    ASSERT(memcmp(a, b, FF_NONCE_LEN) != 0);
    ff_auth_mac(k1, "client", a, b, mac);
    ASSERT_EQ(ff_auth_verify(k1, "client", a, b, mac), 0);
    ASSERT_EQ(ff_auth_verify(k2, "client", a, b, mac), FFLUA_EAUTH);
    ASSERT_EQ(ff_auth_verify(k1, "server", a, b, mac), FFLUA_EAUTH); /* no reflection */
    ASSERT_EQ(ff_auth_verify(k1, "client", b, a, mac), FFLUA_EAUTH);
    ff_buf w = {0};
    ASSERT_EQ(ff_msg_auth_write(&w, FF_ROLE_DRIVER, a, mac), 0);
    ff_msg_auth am;
    ASSERT_EQ(ff_msg_auth_read(w.p + FF_FRAME_HDR, w.n - FF_FRAME_HDR, &am), 0);
    ASSERT_EQ(am.role, FF_ROLE_DRIVER);
    ASSERT(memcmp(am.mac, mac, FF_MAC_LEN) == 0);
    ff_buf_free(&w);
}

static void test_token_file(void) {
    char path[] = "/tmp/fflua-test-token.XXXXXX";
    int fd = mkstemp(path);
    ASSERT(fd >= 0);
    ASSERT(write(fd, "0123456789abcdef0123\n", 21) == 21);
    close(fd);
    char tok[128], err[256];
    size_t len;
    ASSERT_EQ(ff_token_read(path, tok, sizeof tok, &len, err, sizeof err), 0); /* 0600 */
    ASSERT_EQ(len, 20);
    ASSERT_STR_EQ(tok, "0123456789abcdef0123");
    chmod(path, 0644);
    ASSERT_EQ(ff_token_read(path, tok, sizeof tok, &len, err, sizeof err), FFLUA_EAUTH);
    ASSERT(strstr(err, "chmod 600") != NULL);
    chmod(path, 0600);
    fd = open(path, O_WRONLY | O_TRUNC);
    ASSERT(write(fd, "short", 5) == 5);
    close(fd);
    ASSERT_EQ(ff_token_read(path, tok, sizeof tok, &len, err, sizeof err), FFLUA_EAUTH);
    unlink(path);
    ASSERT(ff_token_read(path, tok, sizeof tok, &len, err, sizeof err) < 0);
}

/* A frame whose writes failed, or that is over FF_FRAME_MAX, is removed
 * whole: the frames before it stay, nothing cut short remains. */
static void test_frame_end_drops(void) {
    ff_buf b = {0};
    size_t at;
    ASSERT_EQ(ff_frame_begin(&b, FF_M_BYE, &at), 0);
    ASSERT_EQ(ff_frame_end(&b, at), 0);
    size_t kept = b.n;
    ASSERT_EQ(ff_frame_begin(&b, FF_M_RESULT, &at), 0);
    ASSERT_EQ(at, kept);
    ASSERT_EQ(ff_wr_varint(&b, 7), 0);
    b.err = -ENOMEM; /* as a failed reservation leaves it */
    ASSERT_EQ(ff_wr_str(&b, "abc", 3), 0);
    ASSERT_EQ(ff_frame_end(&b, at), -ENOMEM);
    ASSERT_EQ(b.n, kept);
    ASSERT_EQ(b.err, 0);
    ASSERT_EQ(ff_frame_begin(&b, FF_M_RESULT, &at), 0);
    b.n = at + 4 + FF_FRAME_MAX + 1; /* the length only: frame_end reads no payload */
    ASSERT_EQ(ff_frame_end(&b, at), -EMSGSIZE);
    ASSERT_EQ(b.n, kept);
    ASSERT_EQ(ff_varint_size(127), 1);
    ASSERT_EQ(ff_varint_size(128), 2);
    ASSERT_EQ(ff_str_size(300), 302);
    ff_buf_free(&b);
}

static void test_token_rejects(void) {
    char dir[] = "/tmp/fflua-test-tokdir.XXXXXX";
    ASSERT(mkdtemp(dir) != NULL);
    char path[128], tok[128], err[256];
    size_t len;
    /* A FIFO: refused at once, not waited on. */
    snprintf(path, sizeof path, "%s/fifo", dir);
    ASSERT_EQ(mkfifo(path, 0600), 0);
    ASSERT_EQ(ff_token_read(path, tok, sizeof tok, &len, err, sizeof err), FFLUA_EAUTH);
    ASSERT(strstr(err, "is not a regular file") != NULL);
    unlink(path);
    /* A NUL byte, or any byte that is not printable ASCII. */
    snprintf(path, sizeof path, "%s/nul", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    ASSERT(fd >= 0);
    ASSERT(write(fd, "0123456789abcdef\0tail\n", 22) == 22);
    close(fd);
    ASSERT_EQ(ff_token_read(path, tok, sizeof tok, &len, err, sizeof err), FFLUA_EAUTH);
    ASSERT(strstr(err, "holds an unprintable byte (0x00 at offset 16)") != NULL);
    unlink(path);
    rmdir(dir);
    ASSERT_EQ(ff_token_check("a b~", 4, err, sizeof err), 0);
    ASSERT_EQ(ff_token_check("ab\x80", 3, err, sizeof err), FFLUA_EAUTH);
}

/* Delivers the frames in *from to h (cleared); returns the last step's
 * result. */
static int deliver(ff_buf *from, ff_hs *h, ff_buf *out) {
    int rc = 0;
    size_t off = 0;
    while (off < from->n) {
        int type;
        const char *p;
        size_t n, total;
        ASSERT_EQ(ff_frame_parse(from->p + off, from->n - off, FF_FRAME_MAX, &type, &p, &n, &total),
                  0);
        rc = ff_hs_step(h, type, p, n, out);
        off += total;
    }
    from->n = 0;
    return rc;
}

/* Both sides of the handshake against each other, without sockets. */
static void test_handshake(void) {
    unsigned char k1[FF_KEY_LEN], k2[FF_KEY_LEN];
    ASSERT_EQ(ff_auth_key("the right token..", 16, k1), 0);
    ASSERT_EQ(ff_auth_key("the wrong token..", 17, k2), 0);
    ff_hs srv, cli;
    ff_buf to_cli = {0}, to_srv = {0};
    /* Both know the token. */
    ASSERT_EQ(ff_hs_server(&srv, k1, &to_cli), 0);
    ff_hs_client(&cli, FF_ROLE_WORKER, k1, "h:1");
    ASSERT_EQ(deliver(&to_cli, &cli, &to_srv), 0); /* HELLO; AUTH goes back */
    ASSERT_EQ(deliver(&to_srv, &srv, &to_cli), 1); /* AUTH; WELCOME goes back */
    ASSERT_EQ(srv.role, FF_ROLE_WORKER);
    ASSERT_EQ(deliver(&to_cli, &cli, &to_srv), 1);
    ASSERT_EQ(to_srv.n, 0);
    ASSERT_EQ(ff_hs_step(&cli, FF_M_WELCOME, "", 0, &to_srv), FFLUA_EPROTO); /* it is over */
    /* The client does not know it: refused, and told why. */
    ASSERT_EQ(ff_hs_server(&srv, k1, &to_cli), 0);
    ff_hs_client(&cli, FF_ROLE_DRIVER, k2, "h:1");
    ASSERT_EQ(deliver(&to_cli, &cli, &to_srv), 0);
    ASSERT_EQ(deliver(&to_srv, &srv, &to_cli), FFLUA_EAUTH);
    ASSERT_STR_EQ(srv.why, "refused: authentication failed: the peer does not know this "
                           "cluster's token");
    ASSERT_EQ(deliver(&to_cli, &cli, &to_srv), -ECONNREFUSED);
    ASSERT_STR_EQ(cli.why, "the head at h:1 refused the connection: authentication failed: "
                           "the peer does not know this cluster's token");
    /* The server does not know it: the client never believes it. */
    ASSERT_EQ(ff_hs_server(&srv, k2, &to_cli), 0);
    ff_hs_client(&cli, FF_ROLE_DRIVER, k1, "h:1");
    ASSERT_EQ(deliver(&to_cli, &cli, &to_srv), 0);
    /* (an impostor answers WELCOME with a MAC it cannot make) */
    unsigned char mac[FF_MAC_LEN] = {0};
    to_srv.n = 0;
    ASSERT_EQ(ff_msg_welcome_write(&to_cli, mac), 0);
    ASSERT_EQ(deliver(&to_cli, &cli, &to_srv), FFLUA_EAUTH);
    ASSERT_STR_EQ(cli.why, "the head at h:1 failed to prove it knows the token");
    /* Not a server of ours, and one of another version, which is told. */
    ff_hs_client(&cli, FF_ROLE_STATUS, k1, "h:1");
    ASSERT_EQ(ff_msg_bye_write(&to_cli), 0);
    ASSERT_EQ(deliver(&to_cli, &cli, &to_srv), FFLUA_EPROTO);
    ASSERT_STR_EQ(cli.why, "h:1 does not speak the fflua protocol");
    ff_hs_client(&cli, FF_ROLE_STATUS, k1, "h:1");
    size_t at;
    ff_frame_begin(&to_cli, FF_M_HELLO, &at);
    ff_wr_str(&to_cli, FF_NET_MAGIC, sizeof FF_NET_MAGIC - 1);
    ff_wr_varint(&to_cli, FF_PROTO_VERSION + 1);
    ff_wr_str(&to_cli, "9.9.9", 5);
    ff_wr_str(&to_cli, "Lua 5.4.4", 9);
    ff_wr_fixed(&to_cli, mac, FF_NONCE_LEN);
    ASSERT_EQ(ff_frame_end(&to_cli, at), 0);
    ASSERT_EQ(deliver(&to_cli, &cli, &to_srv), FFLUA_EVERSION);
    ASSERT(strncmp(cli.why, "the head at h:1: version mismatch: ", 35) == 0);
    ASSERT_EQ(deliver(&to_srv, &srv, &to_cli), -ECONNREFUSED); /* the REFUSE it sent */
    ASSERT(strncmp(srv.why, "the peer gave up: version mismatch: ", 36) == 0);
    /* A server gets AUTH first, or refuses. */
    ASSERT_EQ(ff_hs_server(&srv, k1, &to_cli), 0);
    ASSERT_EQ(ff_msg_status_write(&to_srv), 0);
    ASSERT_EQ(deliver(&to_srv, &srv, &to_cli), FFLUA_EPROTO);
    ASSERT_STR_EQ(srv.why, "refused: protocol error: the first message must be AUTH");
    ff_buf_free(&to_cli);
    ff_buf_free(&to_srv);
}

/* An address that is not one is an invalid argument, not a protocol
 * error; one that parses is 0. */
static void test_addresses(void) {
    struct sockaddr_storage ss;
    char err[256];
    ASSERT_EQ(ff_parse_address("127.0.0.1:6380", &ss, err, sizeof err), 0);
    ASSERT_EQ(ff_parse_address("[::1]:6380", &ss, err, sizeof err), 0);
    ASSERT_EQ(ff_parse_address("no-port", &ss, err, sizeof err), -EINVAL);
    ASSERT(strstr(err, "HOST:PORT expected") != NULL);
    ASSERT_EQ(ff_parse_address("127.0.0.1:65536", &ss, err, sizeof err), -EINVAL);
    ASSERT_STR_EQ(fflua_err_name(FFLUA_EINCOMPLETE), "FFLUA_EINCOMPLETE");
    ASSERT_STR_EQ(fflua_err_name(FFLUA_ERESOLVE), "FFLUA_ERESOLVE");
}

int main(void) {
    RUN(test_frames);
    RUN(test_frame_end_drops);
    RUN(test_versions);
    RUN(test_macs);
    RUN(test_token_file);
    RUN(test_token_rejects);
    RUN(test_addresses);
    RUN(test_handshake);
    return 0;
}
