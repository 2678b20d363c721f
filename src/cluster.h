/*
 * cluster.h: the head and the worker programs, and what the head, the
 * worker and the driver share besides the protocol: the token, resource
 * specs. The messages they exchange are declared in msg.h (the codec of
 * each) and described in docs/protocol.md.
 */
#ifndef FFLUA_CLUSTER_H
#define FFLUA_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include "net.h"

#define FF_DEFAULT_PORT 6380
/* The most CPUs a worker may declare (it runs one thread per CPU). */
#define FF_MAX_CPUS 4096
/* The most worker processes a head starts on its own machine. */
#define FF_MAX_LOCAL_WORKERS 1024

typedef struct ff_head_opts {
    const char *host;
    int port;              /* 0: any free port (printed) */
    double num_cpus;       /* of each local worker; < 0: the number of cores */
    int workers;           /* local worker processes; < 0: 1, or 0 when num_cpus is 0 */
    const char *resources; /* JSON object or NULL */
    const char *token_file;
    const char *ready_file;   /* write "HOST:PORT\n" here once listening */
    int quiet;                /* only errors on stderr, nothing on stdout */
    int verbose;              /* -v: runs, working directories (quiet wins) */
    double handshake_timeout; /* seconds; 0: the default */
    double heartbeat_timeout; /* seconds; 0: FF_HEARTBEAT_MS */
} ff_head_opts;

typedef struct ff_worker_opts {
    const char *address;
    double num_cpus; /* < 0: the number of cores */
    const char *resources;
    const char *token_file;
    int own_machine;   /* a machine of its own: shares its resources with no other worker */
    int quiet;         /* only errors on stderr */
    int verbose;       /* -v: runs and working directories too (quiet wins) */
    double reconnect;  /* seconds it tries to reach a lost head; 0: it exits at once */
    double grace;      /* seconds its running tasks have to finish after SIGTERM */
    char *const *argv; /* the program's arguments: it replaces itself with them */
} ff_worker_opts;

/* The programs behind `fflua head` and `fflua worker` (exit statuses).
 * They write with libuv, whose writev has no per-call MSG_NOSIGNAL: the
 * caller must make SIGPIPE harmless first (the program does, in cli.c), so
 * that a peer that goes away mid-write is that peer's loss only. */
int ff_head_main(const ff_head_opts *o);
int ff_worker_main(const ff_worker_opts *o);

/* For the fuzz target (spec/fuzz/fuzz_net.c): a head without sockets fed
 * the frames in data (see head.c). */
int ff_head_fuzz(const char *data, size_t n);

/* The token: from the file, else $FFLUA_TOKEN (how a process that starts
 * cluster processes hands them its token without a file or an argv entry),
 * else NULL with *len 0. */
int ff_cluster_token(const char *file, char *out, size_t cap, size_t *len, char *err,
                     size_t errlen);

/* The longest resource name. */
#define FF_RES_NAME_MAX 128

/* 0 when name (len bytes) can name a resource: 1 to FF_RES_NAME_MAX bytes
 * that ff_text_escape (text.h) leaves as they are (they reach logs and
 * `fflua status`); else -EINVAL. */
int ff_res_name_check(const char *name, size_t len);

/* Parses a flat JSON object of names to non-negative numbers:
 * '{"_disk": 1, "gpu": 0.5}'. Calls fn per entry (nonzero stops). 0, or
 * -EINVAL with why in err. */
int ff_parse_resources(const char *json,
                       int (*fn)(void *ud, const char *name, size_t len, double v), void *ud,
                       char *err, size_t errlen);

/* The GPUs this machine shows a worker: with CUDA_VISIBLE_DEVICES set, the
 * entries of its comma-separated list (none when it is empty, "-1" or
 * "NoDevFiles", as CUDA reads it); otherwise the devices /dev/nvidiaN, N
 * a number, gaps allowed (NVIDIA's driver makes one per GPU). */
int ff_detect_gpus(void);

/* Checks a resources JSON as head and worker take it: every amount a whole
 * number of fixed-point units, every name given once, at most 256. 0, or
 * -EINVAL with why in err. */
int ff_check_resources(const char *json, char *err, size_t errlen);

/* This machine's identity (FF_MACHINE_LEN bytes, net.h), as workers report it to the head, which gives
 * the workers of one machine its resources to share: a hash of the
 * installation (/etc/machine-id), this boot of it (the kernel's boot_id)
 * and the network namespace, so that processes on one host agree, and a
 * container with a network of its own, another host or the same host
 * after a reboot are other machines. With neither file, the host name
 * stands for the first two. */
void ff_machine_id(unsigned char out[FF_MACHINE_LEN]);

/* An identity no other process has: this process's machine identity
 * mixed with its pid and a random nonce (a worker started with
 * --own-machine). */
void ff_machine_id_own(unsigned char out[FF_MACHINE_LEN]);

#endif
