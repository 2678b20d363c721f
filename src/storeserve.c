/*
 * storeserve.c: the storages a worker holds for its cluster (see
 * storeserve.h; the calls and their replies are in msg.h and
 * docs/protocol.md).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fflua.h"
#include "store.h"
#include "storeserve.h"
#include "text.h"

typedef struct held {
    struct held *next;
    char *path; /* as the calls give it */
    ff_store *st;
    int dirty;  /* written since the last commit this file asked for */
    char *lost; /* why a save failed since the last FLUSH (told by it), or NULL */
} held;

struct ff_storeserve {
    char *base, *who;
    held *stores;
    ff_msg_str *args; /* scratch: a call's arguments */
    size_t args_cap;
    ff_buf scratch; /* a reply's bytes */
    size_t *offs;   /* offsets of a reply's strs in scratch */
    size_t offs_cap;
    ff_msg_str *outs; /* a reply's strs */
    size_t outs_cap;
};

int ff_storeserve_create(ff_storeserve **out, const char *base, const char *who) {
    ff_storeserve *s = calloc(1, sizeof *s);
    if (s == NULL || (s->base = strdup(base)) == NULL || (s->who = strdup(who)) == NULL) {
        if (s != NULL)
            free(s->base);
        free(s);
        *out = NULL;
        return -ENOMEM;
    }
    *out = s;
    return 0;
}

void ff_storeserve_destroy(ff_storeserve *s) {
    if (s == NULL)
        return;
    while (s->stores != NULL) {
        held *h = s->stores;
        s->stores = h->next;
        ff_store_close(h->st);
        free(h->path);
        free(h->lost);
        free(h);
    }
    free(s->base);
    free(s->who);
    free(s->args);
    free(s->offs);
    free(s->outs);
    ff_buf_free(&s->scratch);
    free(s);
}

static int grow(void **p, size_t *cap, size_t n, size_t size) {
    if (n <= *cap)
        return 0;
    size_t c = *cap ? *cap : 16;
    while (c < n)
        c *= 2;
    void *q = realloc(*p, c * size);
    if (q == NULL)
        return -ENOMEM;
    *p = q;
    *cap = c;
    return 0;
}

static int reply_fail(ff_storeserve *s, uint64_t req, ff_buf *out, const char *fmt, const char *a) {
    (void)s;
    char msg[1200];
    snprintf(msg, sizeof msg, fmt, a);
    ff_msg_str m = {msg, strlen(msg)};
    return ff_msg_store_reply_write(out, req, 0, &m, 1);
}

/* A failure of the storage at path: "storage 'path' on who: why". */
static int reply_store_fail(ff_storeserve *s, uint64_t req, ff_buf *out, const char *path,
                            const char *why) {
    char msg[1200], esc[400];
    snprintf(msg, sizeof msg, "storage '%s' on the worker %s: %s",
             ff_text_escape(esc, sizeof esc, path, strlen(path)), s->who, why);
    ff_msg_str m = {msg, strlen(msg)};
    return ff_msg_store_reply_write(out, req, 0, &m, 1);
}

/* The handle of the storage at path (opened, made when missing, the first
 * time); NULL with why in err. */
static held *store_get(ff_storeserve *s, const char *path, char *err, size_t errlen) {
    for (held *h = s->stores; h; h = h->next)
        if (strcmp(h->path, path) == 0)
            return h;
    char full[8192];
    int len = path[0] == '/' ? snprintf(full, sizeof full, "%s", path)
                             : snprintf(full, sizeof full, "%s/%s", s->base, path);
    if (len < 0 || (size_t)len >= sizeof full) {
        snprintf(err, errlen, "the path is too long");
        return NULL;
    }
    ff_store *st;
    if (ff_store_open(&st, full, 1, err, errlen) != 0)
        return NULL;
    held *h = malloc(sizeof *h);
    if (h == NULL || (h->path = strdup(path)) == NULL) {
        free(h);
        ff_store_close(st);
        snprintf(err, errlen, "not enough memory");
        return NULL;
    }
    h->st = st;
    h->dirty = 0;
    h->lost = NULL;
    h->next = s->stores;
    s->stores = h;
    return h;
}

/* Appends one reply str to scratch (its offset kept). */
static int out_add(ff_storeserve *s, size_t *n, const void *p1, size_t n1, const void *p2,
                   size_t n2) {
    if (grow((void **)&s->offs, &s->offs_cap, *n + 2, sizeof *s->offs) != 0 ||
        ff_buf_reserve(&s->scratch, n1 + n2) != 0)
        return -ENOMEM;
    s->offs[*n] = s->scratch.n;
    if (n1)
        memcpy(s->scratch.p + s->scratch.n, p1, n1);
    if (n2)
        memcpy(s->scratch.p + s->scratch.n + n1, p2, n2);
    s->scratch.n += n1 + n2;
    s->offs[++*n] = s->scratch.n;
    return 0;
}

/* The reply of the n strs in scratch. */
static int reply_outs(ff_storeserve *s, uint64_t req, ff_buf *out, size_t n) {
    if (grow((void **)&s->outs, &s->outs_cap, n + 1, sizeof *s->outs) != 0)
        return reply_fail(s, req, out, "%s", "the worker has not enough memory for the reply");
    for (size_t i = 0; i < n; i++)
        s->outs[i] = (ff_msg_str){s->scratch.p + s->offs[i], s->offs[i + 1] - s->offs[i]};
    int rc = ff_msg_store_reply_write(out, req, 1, s->outs, n);
    if (rc == -EMSGSIZE)
        return reply_fail(s, req, out, "%s",
                          "the reply does not fit in a message (256 MiB): ask for less at once");
    return rc;
}

struct list_ud {
    ff_storeserve *s;
    size_t n;
    const char *glob;
    int oom;
};

static int list_cb(void *ud, const char *name, size_t len, const ff_rec *rec) {
    struct list_ud *l = ud;
    (void)rec;
    if (l->glob != NULL && !ff_text_glob(l->glob, name, len))
        return 0;
    if (FF_STORE_INTERNAL(name, len))
        return 0;
    if (out_add(l->s, &l->n, name, len, NULL, 0) != 0) {
        l->oom = 1;
        return 1;
    }
    return 0;
}

static int wf_ok(const ff_msg_str *a) {
    return a->len > 0 && a->len <= FF_STORE_WF_MAX && memchr(a->p, 0, a->len) == NULL;
}

/* Gathers the keys of run records, which sort first (a zero byte before
 * every name), and stops after them. */
static int runs_cb(void *ud, const char *name, size_t len, const ff_rec *rec) {
    struct list_ud *l = ud;
    (void)rec;
    if (len <= FF_STORE_RUN_PREFIX_LEN ||
        memcmp(name, FF_STORE_RUN_PREFIX, FF_STORE_RUN_PREFIX_LEN) != 0)
        return FF_STORE_INTERNAL(name, len) ? 0 : 1;
    if (out_add(l->s, &l->n, name, len, NULL, 0) != 0) {
        l->oom = 1;
        return 1;
    }
    return 0;
}

static int task_ok(const ff_msg_str *a) {
    return a->len > 0 && a->len <= FF_STORE_TASK_MAX;
}

int ff_storeserve_call(ff_storeserve *s, uint64_t req, uint64_t op, ff_msg_list *args,
                       ff_buf *out) {
    size_t n = (size_t)args->n;
    if (grow((void **)&s->args, &s->args_cap, n + 1, sizeof *s->args) != 0)
        return reply_fail(s, req, out, "%s", "the worker has not enough memory for the call");
    for (size_t i = 0; i < n; i++)
        ff_msg_next_str(args, &s->args[i]);
    ff_msg_str *a = s->args;
    /* Counts: path first; then a workflow name for the calls on one. */
    int wf = op != FF_STORE_FLUSH && op != FF_STORE_WORKFLOWS;
    int ok = n >= 1 + (size_t)wf && a[0].len > 0 && a[0].len < 4000 &&
             memchr(a[0].p, 0, a[0].len) == NULL && (!wf || wf_ok(&a[1]));
    switch (op) {
    case FF_STORE_LOOKUP:
        ok = ok && (n - 2) % 2 == 0;
        for (size_t i = 2; ok && i < n; i += 2)
            ok = task_ok(&a[i]) && a[i + 1].len == FF_FP_LEN;
        break;
    case FF_STORE_GET:
        ok = ok && (n - 2) % 2 == 0;
        for (size_t i = 2; ok && i < n; i += 2)
            ok = task_ok(&a[i]) && (a[i + 1].len == 0 || a[i + 1].len == FF_FP_LEN);
        break;
    case FF_STORE_DEL_MANY:
        for (size_t i = 2; ok && i < n; i++)
            ok = task_ok(&a[i]);
        break;
    case FF_STORE_PUT:
        ok = ok && n == 6 && task_ok(&a[2]) && a[3].len == FF_FP_LEN && a[4].len == 8;
        break;
    case FF_STORE_LIST:
        ok = ok && (n == 2 || (n == 3 && memchr(a[2].p, 0, a[2].len) == NULL));
        break;
    case FF_STORE_DEL:
        ok = ok && n == 3 && task_ok(&a[2]);
        break;
    case FF_STORE_FLUSH:
    case FF_STORE_WORKFLOWS:
        ok = ok && n == 1;
        break;
    default:
        ok = ok && n == 2;
        break;
    }
    if (!ok)
        return reply_fail(s, req, out, "%s", "a malformed storage call");
    char path[4000], err[600];
    memcpy(path, a[0].p, a[0].len);
    path[a[0].len] = '\0';
    held *hd = store_get(s, path, err, sizeof err);
    if (hd == NULL)
        return reply_store_fail(s, req, out, path, err);
    ff_store *st = hd->st;
    /* A driver's call sees what was saved before it (the head's own reads,
     * of a run's loaded tasks, never need results saved in that run). */
    if (op == FF_STORE_PUT)
        hd->dirty = 1;
    else if (hd->dirty && req < FF_STORE_REQ_QUIET) {
        hd->dirty = 0;
        if (ff_store_flush(st) != 0)
            return reply_store_fail(s, req, out, path, ff_store_errmsg(st));
    }
    const char *w = n > 1 ? a[1].p : NULL;
    size_t wl = n > 1 ? a[1].len : 0;
    size_t nout = 0;
    s->scratch.n = 0;
    int rc = 0;
    switch (op) {
    case FF_STORE_LOOKUP: {
        if (out_add(s, &nout, NULL, 0, NULL, 0) != 0 || ff_buf_reserve(&s->scratch, n / 2) != 0)
            return reply_fail(s, req, out, "%s", "the worker has not enough memory");
        for (size_t i = 2; i < n; i += 2) {
            ff_rec rec;
            int r = ff_store_get(st, w, wl, a[i].p, a[i].len, &rec);
            uint8_t b = FF_STORED_NONE;
            if (r == FFLUA_ECHECKSUM || r == FFLUA_ECORRUPT)
                b = FF_STORED_DAMAGED;
            else if (r == 0)
                b = memcmp(rec.fp, a[i + 1].p, FF_FP_LEN) == 0 ? FF_STORED_SAME : FF_STORED_OTHER;
            else if (r != FFLUA_ENOTFOUND) {
                ff_store_read_end(st);
                return reply_store_fail(s, req, out, path, ff_store_errmsg(st));
            }
            s->scratch.p[s->scratch.n++] = (char)b;
        }
        ff_store_read_end(st);
        s->offs[1] = s->scratch.n;
        return reply_outs(s, req, out, nout);
    }
    case FF_STORE_GET:
        /* A fingerprint given must be the stored one: a result that
         * another run saved since the caller looked is not served. */
        for (size_t i = 2; i < n; i += 2) {
            ff_rec rec;
            int r = ff_store_get(st, w, wl, a[i].p, a[i].len, &rec);
            uint8_t b = r == 0                 ? FF_STORED_SAME
                        : r == FFLUA_ENOTFOUND ? FF_STORED_NONE
                                               : FF_STORED_DAMAGED;
            if (r != 0 && r != FFLUA_ENOTFOUND && r != FFLUA_ECHECKSUM && r != FFLUA_ECORRUPT) {
                ff_store_read_end(st);
                return reply_store_fail(s, req, out, path, ff_store_errmsg(st));
            }
            if (r == 0 && a[i + 1].len > 0 && memcmp(rec.fp, a[i + 1].p, FF_FP_LEN) != 0)
                b = FF_STORED_OTHER;
            int val = b == FF_STORED_SAME;
            const char *why = b == FF_STORED_DAMAGED && rec.why ? rec.why : "";
            if (out_add(s, &nout, &b, 1, val ? rec.val : why, val ? rec.len : strlen(why)) != 0) {
                ff_store_read_end(st);
                return reply_fail(s, req, out, "%s", "the worker has not enough memory");
            }
        }
        ff_store_read_end(st);
        return reply_outs(s, req, out, nout);
    case FF_STORE_PUT: {
        uint64_t ns = 0;
        for (int k = 7; k >= 0; k--)
            ns = ns << 8 | (uint8_t)a[4].p[k];
        if (ff_store_put(st, w, wl, a[2].p, a[2].len, (const uint8_t *)a[3].p, ns, a[5].p,
                         a[5].len) != 0) {
            /* Kept for the run's FLUSH too: the head may hear of this
             * failure only after the run ended. */
            if (hd->lost == NULL)
                hd->lost = strdup(ff_store_errmsg(st));
            return reply_store_fail(s, req, out, path, ff_store_errmsg(st));
        }
        return req >= FF_STORE_REQ_QUIET ? 0 : reply_outs(s, req, out, 0);
    }
    case FF_STORE_FLUSH:
        hd->dirty = 0;
        if (hd->lost != NULL) {
            char why[700];
            snprintf(why, sizeof why, "a result could not be saved: %s", hd->lost);
            free(hd->lost);
            hd->lost = NULL;
            ff_store_flush(st);
            return reply_store_fail(s, req, out, path, why);
        }
        rc = ff_store_flush(st);
        break;
    case FF_STORE_RUNS: {
        struct list_ud l = {s, 0, NULL, 0};
        rc = ff_store_each(st, w, wl, runs_cb, &l);
        if (l.oom)
            return reply_fail(s, req, out, "%s", "the worker has not enough memory");
        if (rc == FFLUA_ENOTFOUND || rc == 0 || rc == FFLUA_ECORRUPT)
            return reply_outs(s, req, out, l.n);
        break;
    }
    case FF_STORE_LIST:
    case FF_STORE_WORKFLOWS: {
        char glob[1024];
        struct list_ud l = {s, 0, NULL, 0};
        if (n == 3) {
            if (a[2].len >= sizeof glob)
                return reply_fail(s, req, out, "%s", "a pattern of more than 1023 bytes");
            memcpy(glob, a[2].p, a[2].len);
            glob[a[2].len] = '\0';
            l.glob = glob;
        }
        rc = op == FF_STORE_LIST ? ff_store_each(st, w, wl, list_cb, &l)
                                 : ff_store_workflows(st, list_cb, &l);
        if (l.oom)
            return reply_fail(s, req, out, "%s", "the worker has not enough memory");
        if (rc == FFLUA_ENOTFOUND || rc == 0 || rc == FFLUA_ECORRUPT)
            return reply_outs(s, req, out, l.n);
        break;
    }
    case FF_STORE_DEL:
        rc = ff_store_del(st, w, wl, a[2].p, a[2].len);
        if (rc == 0 || rc == FFLUA_ENOTFOUND) {
            if (out_add(s, &nout, rc == 0 ? "1" : "0", 1, NULL, 0) != 0)
                return reply_fail(s, req, out, "%s", "the worker has not enough memory");
            return reply_outs(s, req, out, nout);
        }
        break;
    case FF_STORE_DEL_MANY: {
        ff_key *keys = malloc((n - 2 + 1) * sizeof *keys);
        if (keys == NULL)
            return reply_fail(s, req, out, "%s", "the worker has not enough memory");
        for (size_t i = 2; i < n; i++)
            keys[i - 2] = (ff_key){a[i].p, a[i].len};
        rc = ff_store_del_many(st, w, wl, keys, n - 2);
        free(keys);
        break;
    }
    case FF_STORE_DROP:
        rc = ff_store_drop(st, w, wl);
        if (rc == FFLUA_ENOTFOUND)
            rc = 0;
        break;
    }
    if (rc != 0)
        return reply_store_fail(s, req, out, path, ff_store_errmsg(st));
    return reply_outs(s, req, out, 0);
}
