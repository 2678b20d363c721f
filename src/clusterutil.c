/*
 * clusterutil.c: what the head, the worker and the driver share besides
 * the protocol: finding the token, reading resource specs, telling
 * machines apart, counting GPUs.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>
#include <xxhash.h>

#include "cluster.h"
#include "fflua.h"
#include "net.h"
#include "sched.h"
#include "text.h"

int ff_detect_gpus(void) {
    const char *v = getenv("CUDA_VISIBLE_DEVICES");
    if (v != NULL) {
        if (v[0] == '\0' || strcmp(v, "-1") == 0 || strcmp(v, "NoDevFiles") == 0)
            return 0;
        int n = 1;
        for (const char *p = v; *p != '\0'; p++)
            n += *p == ',';
        return n;
    }
    /* Every /dev/nvidiaN, not only 0, 1, ... up to the first gap: a
     * container may be given some devices only (/dev/nvidia2 alone). */
    DIR *d = opendir("/dev");
    if (d == NULL)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *s = e->d_name;
        if (strncmp(s, "nvidia", 6) != 0 || s[6] == '\0')
            continue;
        s += 6;
        while (isdigit((unsigned char)*s))
            s++;
        n += *s == '\0';
    }
    closedir(d);
    return n;
}

int ff_cluster_token(const char *file, char *out, size_t cap, size_t *len, char *err,
                     size_t errlen) {
    *len = 0;
    if (file != NULL)
        return ff_token_read(file, out, cap, len, err, errlen);
    const char *env = getenv("FFLUA_TOKEN");
    if (env == NULL || env[0] == '\0')
        return 0;
    size_t n = strlen(env);
    while (n > 0 && (env[n - 1] == '\n' || env[n - 1] == '\r'))
        n--; /* as in a token file */
    if (n < FF_TOKEN_MIN || n >= cap) {
        snprintf(err, errlen, "FFLUA_TOKEN must be %d to %zu bytes", FF_TOKEN_MIN, cap - 1);
        return FFLUA_EAUTH;
    }
    char why[128];
    if (ff_token_check(env, n, why, sizeof why) != 0) {
        snprintf(err, errlen, "FFLUA_TOKEN %s", why);
        return FFLUA_EAUTH;
    }
    memcpy(out, env, n);
    out[n] = '\0';
    *len = n;
    return 0;
}

int ff_res_name_check(const char *name, size_t len) {
    /* Printed as they are (logs, fflua status): nothing escaping would
     * change, and no backslash, which would look like an escape. */
    return len >= 1 && len <= FF_RES_NAME_MAX && ff_text_escape_check(name, len) == len &&
                   memchr(name, '\\', len) == NULL
               ? 0
               : -EINVAL;
}

static const char *skip(const char *p) {
    while (isspace((unsigned char)*p))
        p++;
    return p;
}

int ff_parse_resources(const char *json, int (*fn)(void *, const char *, size_t, double), void *ud,
                       char *err, size_t errlen) {
    const char *p = skip(json);
    if (*p++ != '{')
        goto bad;
    p = skip(p);
    if (*p == '}')
        return *skip(p + 1) == '\0' ? 0
                                    : (snprintf(err, errlen,
                                                "bad resources '%s': text "
                                                "after the object",
                                                json),
                                       -EINVAL);
    for (;;) {
        if (*p++ != '"')
            goto bad;
        const char *name = p;
        while (*p && *p != '"' && *p != '\\')
            p++;
        if (*p != '"' || p == name)
            goto bad;
        size_t len = (size_t)(p - name);
        if (ff_res_name_check(name, len) != 0) {
            snprintf(err, errlen,
                     "bad resources '%s': a resource name is 1 to %d bytes of text "
                     "without control characters or backslashes",
                     json, FF_RES_NAME_MAX);
            return -EINVAL;
        }
        p = skip(p + 1);
        if (*p++ != ':')
            goto bad;
        char *end;
        double v = strtod(skip(p), &end);
        if (end == skip(p) || !isfinite(v) || v < 0) {
            snprintf(err, errlen,
                     "bad resources '%s': the amount of '%.*s' must be a "
                     "non-negative number",
                     json, (int)len, name);
            return -EINVAL;
        }
        if (len == 3 && memcmp(name, "CPU", 3) == 0) {
            snprintf(err, errlen, "bad resources '%s': give CPUs with --num-cpus", json);
            return -EINVAL;
        }
        if (fn(ud, name, len, v) != 0) {
            snprintf(err, errlen, "bad resources '%s': bad amount for '%.*s'", json, (int)len,
                     name);
            return -EINVAL;
        }
        p = skip(end);
        if (*p == ',') {
            p = skip(p + 1);
            continue;
        }
        if (*p == '}' && *skip(p + 1) == '\0')
            return 0;
        goto bad;
    }
bad:
    snprintf(err, errlen,
             "bad resources '%s' (a JSON object of names to numbers expected, "
             "as '{\"_disk\": 1}')",
             json);
    return -EINVAL;
}

/* ff_check_resources: amounts the scheduler takes, names given once. */
struct check_ud {
    const char *names[256];
    size_t lens[256];
    int n;
};

static int check_one(void *ud, const char *name, size_t len, double v) {
    struct check_ud *c = ud;
    int64_t a;
    if (ff_sched_amount(v, &a) != 0 || c->n == 256)
        return 1;
    for (int i = 0; i < c->n; i++)
        if (c->lens[i] == len && memcmp(c->names[i], name, len) == 0)
            return 1;
    c->names[c->n] = name;
    c->lens[c->n++] = len;
    return 0;
}

int ff_check_resources(const char *json, char *err, size_t errlen) {
    struct check_ud c;
    c.n = 0;
    return ff_parse_resources(json, check_one, &c, err, errlen);
}

/* Appends up to cap bytes of file path to b at *n. */
static void add_file(char *b, size_t *n, size_t cap, const char *path) {
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return;
    *n += fread(b + *n, 1, cap - *n, f);
    fclose(f);
}

void ff_machine_id(unsigned char out[FF_MACHINE_LEN]) {
    char b[512];
    size_t n = 0;
    /* The installation, this boot of it, and the network namespace. */
    add_file(b, &n, 64, "/etc/machine-id");
    if (n == 0)
        add_file(b, &n, 64, "/var/lib/dbus/machine-id");
    size_t m = n;
    add_file(b, &n, 128, "/proc/sys/kernel/random/boot_id");
    if (m == 0 && n == 0 && gethostname(b, 256) == 0)
        n = strnlen(b, 256); /* neither: the host's name */
    struct stat st;
    if (stat("/proc/self/ns/net", &st) == 0) {
        uint64_t ns[2] = {(uint64_t)st.st_dev, (uint64_t)st.st_ino};
        memcpy(b + n, ns, sizeof ns);
        n += sizeof ns;
    }
    XXH128_hash_t h = XXH3_128bits(b, n);
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, h);
    memcpy(out, c.digest, FF_MACHINE_LEN);
}

void ff_machine_id_own(unsigned char out[FF_MACHINE_LEN]) {
    unsigned char b[FF_MACHINE_LEN + sizeof(pid_t) + 32];
    ff_machine_id(b);
    pid_t pid = getpid();
    memcpy(b + FF_MACHINE_LEN, &pid, sizeof pid);
    randombytes_buf(b + FF_MACHINE_LEN + sizeof pid, 32);
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits(b, sizeof b));
    memcpy(out, c.digest, FF_MACHINE_LEN);
}
