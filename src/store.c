/*
 * store.c: results on disk, in LMDB (see store.h for the record layout).
 *
 * Threads and locks. An environment (struct env) is shared by every handle
 * on one directory in a process: LMDB's locks are per process, so a second
 * mdb_env_open of the same files would break them. The table of open
 * environments (envs below) is therefore the one process-wide piece of
 * mutable state in fflua; it is guarded by its mutex and keyed by the
 * directory's device and inode.
 *
 * In an environment:
 *   mu        guards the queue and the committer's state;
 *   dbimu     guards the DBI cache and serializes mdb_dbi_open (LMDB allows
 *             one transaction opening handles at a time);
 *   resize    a rwlock: read transactions hold it shared, growing the map
 *             (mdb_env_set_mapsize needs no transaction active in the
 *             process) holds it exclusive;
 *   committer a thread started by the first put: it waits for queued
 *             records, lets them gather for up to FF_COMMIT_MS after the
 *             previous commit (or less when flushed or when the queue is
 *             large), and writes them in one transaction.
 * Rule that keeps this free of deadlocks: a thread never waits for the
 * committer while it holds a read transaction (put, flush, del and drop end
 * the handle's read transaction first).
 */
#include <errno.h>
#include <fnmatch.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <lmdb.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t */
#include <xxhash.h>

#include "fflua.h"
#include "store.h"

#define INITIAL_MAP (64u << 20)
#define QUEUE_HIGH ((size_t)256 << 20) /* puts wait above this many bytes */
#define QUEUE_EAGER ((size_t)32 << 20) /* commit without waiting above this */
#define MAX_DBS 4096
#define WF_PREFIX "wf:"

struct dbi {
    char *name; /* without the prefix */
    size_t len;
    MDB_dbi dbi;
};

typedef struct env {
    struct env *next; /* in the process table */
    dev_t dev;
    ino_t ino;
    pid_t pid; /* the process that opened it */
    unsigned gen; /* fork_gen then */
    int refs;
    char *path;
    MDB_env *mdb;
    pthread_mutex_t mu, dbimu;
    pthread_rwlock_t resize;
    pthread_cond_t wake, done;
    pthread_t thread;
    int running, stop, flushing;
    char *q;           /* queued records (see qrec) */
    size_t qn, qcap;
    uint64_t put_seq, committed_seq;
    uint64_t last_commit_ns;
    int commit_err;
    char commit_msg[512];
    struct dbi *dbis;
    size_t ndbis, dbis_cap;
} env;

/* A queued record: this header, then wf, task, record bytes, padded to 8. */
struct qrec {
    uint32_t wflen, tlen;
    uint64_t len; /* record bytes: header + payload */
    uint64_t dbi; /* set by the committer */
};

struct ff_store {
    env *e;
    MDB_txn *rtxn; /* read transaction: active, reset, or NULL */
    int ractive;
    /* A workflow found absent in the active read transaction: it stays
     * absent until the transaction ends (a run looks up every node). */
    char absent[128];
    size_t absent_len;
    char err[512];
};

static struct {
    pthread_mutex_t mu;
    env *list;
} envs = {PTHREAD_MUTEX_INITIALIZER, NULL};

/* Counts fork()s in this process's ancestry (a pthread_atfork child
 * handler), so that handles can tell cheaply that they were inherited
 * without a getpid() system call on every read and write. */
static volatile unsigned fork_gen;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;

static void on_fork_child(void) {
    fork_gen++;
}

static void install_fork_handler(void) {
    pthread_atfork(NULL, NULL, on_fork_child);
}

static uint64_t now_ns(int clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int seterr(ff_store *s, int rc, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err, sizeof s->err, fmt, ap);
    va_end(ap);
    return rc;
}

/* LMDB and errno codes as fflua codes (negated errno, MDB_* kept). */
static int mdb_code(int rc) {
    if (rc > 0)
        return -rc;
    if (rc == MDB_NOTFOUND)
        return FFLUA_ENOTFOUND;
    if (rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND || rc == MDB_INVALID ||
        rc == MDB_VERSION_MISMATCH)
        return FFLUA_ECORRUPT;
    return rc;
}

static const char *mdb_text(int rc) {
    return mdb_strerror(rc);
}

const char *ff_store_path(const ff_store *s) {
    return s->e->path;
}

const char *ff_store_errmsg(const ff_store *s) {
    return s->err;
}

static int usable(ff_store *s) {
    if (s->e->gen != fork_gen)
        return seterr(s, FFLUA_ECLOSED,
                      "storage '%s' was opened by another process (inherited through fork); "
                      "open it again in this one", s->e->path);
    return 0;
}

/* --- the map ------------------------------------------------------------- */

/* Grows the map to at least twice its size (or adopts another process's
 * larger size when grow is 0). Needs no read transaction of this process
 * active: takes the resize lock exclusive. */
static int remap(env *e, int grow) {
    pthread_rwlock_wrlock(&e->resize);
    int rc;
    if (grow) {
        MDB_envinfo info;
        mdb_env_info(e->mdb, &info);
        rc = mdb_env_set_mapsize(e->mdb, info.me_mapsize * 2);
    } else {
        rc = mdb_env_set_mapsize(e->mdb, 0);
    }
    pthread_rwlock_unlock(&e->resize);
    return rc;
}

size_t ff_store_mapsize(ff_store *s) {
    MDB_envinfo info;
    mdb_env_info(s->e->mdb, &info);
    return info.me_mapsize;
}

/* --- DBIs ---------------------------------------------------------------- */

static int wf_dbname(const char *wf, size_t len, char *buf, size_t cap) {
    if (len == 0 || len + sizeof WF_PREFIX > cap || memchr(wf, '\0', len) != NULL)
        return -1;
    memcpy(buf, WF_PREFIX, sizeof WF_PREFIX - 1);
    memcpy(buf + sizeof WF_PREFIX - 1, wf, len);
    buf[sizeof WF_PREFIX - 1 + len] = '\0';
    return 0;
}

/* The cached handle of workflow wf, or NULL. Under e->dbimu. */
static struct dbi *dbi_find(env *e, const char *wf, size_t len) {
    for (size_t i = 0; i < e->ndbis; i++)
        if (e->dbis[i].len == len && memcmp(e->dbis[i].name, wf, len) == 0)
            return &e->dbis[i];
    return NULL;
}

static void dbi_forget(env *e, const char *wf, size_t len) {
    struct dbi *d = dbi_find(e, wf, len);
    if (d == NULL)
        return;
    free(d->name);
    *d = e->dbis[--e->ndbis];
}

/* Opens the database of wf in its own transaction (a write one when create
 * is set) and caches the handle. Under e->dbimu. */
static int dbi_open(env *e, const char *wf, size_t len, int create, MDB_dbi *out) {
    struct dbi *d = dbi_find(e, wf, len);
    if (d != NULL) {
        *out = d->dbi;
        return 0;
    }
    char name[1024];
    if (wf_dbname(wf, len, name, sizeof name) != 0)
        return EINVAL;
    MDB_txn *txn;
    int rc;
    for (;;) {
        if (!create)
            pthread_rwlock_rdlock(&e->resize);
        rc = mdb_txn_begin(e->mdb, NULL, create ? 0 : MDB_RDONLY, &txn);
        if (!create)
            pthread_rwlock_unlock(&e->resize);
        if (rc != MDB_MAP_RESIZED)
            break;
        remap(e, 0);
    }
    if (rc != 0)
        return rc;
    MDB_dbi dbi;
    rc = mdb_dbi_open(txn, name, create ? MDB_CREATE : 0, &dbi);
    if (rc != 0) {
        mdb_txn_abort(txn);
        return rc;
    }
    if ((rc = mdb_txn_commit(txn)) != 0)
        return rc;
    if (e->ndbis == e->dbis_cap) {
        size_t cap = e->dbis_cap ? e->dbis_cap * 2 : 8;
        struct dbi *nd = realloc(e->dbis, cap * sizeof *nd);
        if (nd == NULL)
            return ENOMEM;
        e->dbis = nd;
        e->dbis_cap = cap;
    }
    char *copy = malloc(len);
    if (copy == NULL)
        return ENOMEM;
    memcpy(copy, wf, len);
    e->dbis[e->ndbis++] = (struct dbi){copy, len, dbi};
    *out = dbi;
    return 0;
}

/* --- the committer ------------------------------------------------------- */

static size_t qrec_size(const struct qrec *r) {
    size_t n = sizeof *r + r->wflen + r->tlen + r->len;
    return (n + 7) & ~(size_t)7;
}

/* Writes the records q[0..n) in one transaction, growing the map as needed. */
static int commit_batch(env *e, char *q, size_t n, char *msg, size_t msglen) {
    /* Handles first: creating a database is its own small transaction. */
    pthread_mutex_lock(&e->dbimu);
    int rc = 0;
    for (size_t off = 0; off < n && rc == 0; off += qrec_size((struct qrec *)(q + off))) {
        struct qrec *r = (struct qrec *)(q + off);
        MDB_dbi dbi;
        rc = dbi_open(e, (const char *)(r + 1), r->wflen, 1, &dbi);
        r->dbi = dbi;
    }
    pthread_mutex_unlock(&e->dbimu);
    if (rc != 0) {
        snprintf(msg, msglen, "cannot create a workflow database in '%s': %s", e->path,
                 mdb_text(rc));
        return rc;
    }
    for (;;) {
        MDB_txn *txn;
        rc = mdb_txn_begin(e->mdb, NULL, 0, &txn);
        if (rc == MDB_MAP_RESIZED) {
            remap(e, 0);
            continue;
        }
        if (rc != 0)
            break;
        for (size_t off = 0; off < n && rc == 0;) {
            const struct qrec *r = (const struct qrec *)(q + off);
            const char *wf = (const char *)(r + 1);
            MDB_val k = {r->tlen, (void *)(wf + r->wflen)};
            MDB_val v = {r->len, NULL};
            rc = mdb_put(txn, (MDB_dbi)r->dbi, &k, &v, MDB_RESERVE);
            if (rc == 0)
                memcpy(v.mv_data, wf + r->wflen + r->tlen, r->len);
            off += qrec_size(r);
        }
        if (rc == 0)
            rc = mdb_txn_commit(txn);
        else
            mdb_txn_abort(txn);
        if (rc == MDB_MAP_FULL) {
            /* Grow, then write the whole batch again: the aborted
             * transaction left nothing behind. */
            if ((rc = remap(e, 1)) != 0)
                break;
            continue;
        }
        break;
    }
    if (rc != 0)
        snprintf(msg, msglen, "cannot commit results to '%s': %s", e->path, mdb_text(rc));
    return rc;
}

static void *committer(void *arg) {
    env *e = arg;
    char *spare = NULL;
    size_t spare_cap = 0;
    pthread_mutex_lock(&e->mu);
    for (;;) {
        while (!e->stop && e->qn == 0)
            pthread_cond_wait(&e->wake, &e->mu);
        if (e->qn == 0)
            break; /* stopped with nothing queued */
        /* Let records gather until FF_COMMIT_MS after the last commit. */
        uint64_t due = e->last_commit_ns + (uint64_t)FF_COMMIT_MS * 1000000u;
        while (!e->stop && !e->flushing && e->qn < QUEUE_EAGER) {
            uint64_t now = now_ns(CLOCK_MONOTONIC);
            if (now >= due)
                break;
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            uint64_t wait = due - now;
            ts.tv_sec += (time_t)(wait / 1000000000u);
            ts.tv_nsec += (long)(wait % 1000000000u);
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&e->wake, &e->mu, &ts);
        }
        /* Take the queue; leave the spare buffer for the next records. */
        char *q = e->q;
        size_t n = e->qn, cap = e->qcap;
        uint64_t seq = e->put_seq;
        e->q = spare;
        e->qcap = spare_cap;
        e->qn = 0;
        pthread_cond_broadcast(&e->done); /* room in the queue again */
        pthread_mutex_unlock(&e->mu);
        char msg[sizeof e->commit_msg];
        int rc = commit_batch(e, q, n, msg, sizeof msg);
        pthread_mutex_lock(&e->mu);
        spare = q;
        spare_cap = cap;
        e->committed_seq = seq;
        e->last_commit_ns = now_ns(CLOCK_MONOTONIC);
        if (rc != 0 && e->commit_err == 0) {
            e->commit_err = mdb_code(rc);
            memcpy(e->commit_msg, msg, sizeof msg);
        }
        pthread_cond_broadcast(&e->done);
    }
    pthread_mutex_unlock(&e->mu);
    free(spare);
    return NULL;
}

/* --- open and close ------------------------------------------------------ */

static void env_free(env *e) {
    for (size_t i = 0; i < e->ndbis; i++)
        free(e->dbis[i].name);
    free(e->dbis);
    free(e->q);
    free(e->path);
    pthread_mutex_destroy(&e->mu);
    pthread_mutex_destroy(&e->dbimu);
    pthread_rwlock_destroy(&e->resize);
    pthread_cond_destroy(&e->wake);
    pthread_cond_destroy(&e->done);
    free(e);
}

static int env_open(env **out, const char *path, struct stat *st, char *err, size_t errlen) {
    env *e = calloc(1, sizeof *e);
    if (e == NULL || (e->path = strdup(path)) == NULL) {
        free(e);
        snprintf(err, errlen, "not enough memory");
        return -ENOMEM;
    }
    pthread_mutex_init(&e->mu, NULL);
    pthread_mutex_init(&e->dbimu, NULL);
    pthread_rwlock_init(&e->resize, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_cond_init(&e->wake, &ca);
    pthread_cond_init(&e->done, &ca);
    pthread_condattr_destroy(&ca);
    e->dev = st->st_dev;
    e->ino = st->st_ino;
    e->pid = getpid();
    e->gen = fork_gen;
    e->refs = 1;
    int rc = mdb_env_create(&e->mdb);
    if (rc == 0)
        rc = mdb_env_set_maxdbs(e->mdb, MAX_DBS);
    if (rc == 0)
        rc = mdb_env_set_maxreaders(e->mdb, 510);
    if (rc == 0)
        rc = mdb_env_set_mapsize(e->mdb, INITIAL_MAP);
    if (rc == 0)
        rc = mdb_env_open(e->mdb, path, MDB_NOTLS, 0644);
    if (rc != 0) {
        snprintf(err, errlen, "cannot open the storage '%s': %s", path, mdb_text(rc));
        if (e->mdb != NULL)
            mdb_env_close(e->mdb);
        env_free(e);
        return mdb_code(rc);
    }
    int dead = 0;
    mdb_reader_check(e->mdb, &dead); /* readers left by killed processes */
    e->last_commit_ns = now_ns(CLOCK_MONOTONIC);
    *out = e;
    return 0;
}

int ff_store_open(ff_store **out, const char *path, int create, char *err, size_t errlen) {
    *out = NULL;
    struct stat st;
    if (stat(path, &st) != 0) {
        if (errno == ENOENT && create && (mkdir(path, 0755) == 0 || errno == EEXIST) &&
            stat(path, &st) == 0) {
            /* made it, or another process did */
        } else {
            int en = errno;
            snprintf(err, errlen, "cannot open the storage '%s': %s", path, strerror(en));
            return -en;
        }
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "cannot open the storage '%s': not a directory", path);
        return -ENOTDIR;
    }
    ff_store *s = calloc(1, sizeof *s);
    if (s == NULL) {
        snprintf(err, errlen, "not enough memory");
        return -ENOMEM;
    }
    pthread_once(&fork_once, install_fork_handler);
    pthread_mutex_lock(&envs.mu);
    env *e, **pp = &envs.list;
    pid_t pid = getpid();
    for (e = envs.list; e != NULL; e = e->next) {
        if (e->pid != pid || e->gen != fork_gen) { /* inherited: forget, never touch */
            *pp = e->next;
            continue;
        }
        if (e->dev == st.st_dev && e->ino == st.st_ino)
            break;
        pp = &e->next;
    }
    int rc = 0;
    if (e != NULL) {
        e->refs++;
    } else if ((rc = env_open(&e, path, &st, err, errlen)) == 0) {
        e->next = envs.list;
        envs.list = e;
    }
    pthread_mutex_unlock(&envs.mu);
    if (rc != 0) {
        free(s);
        return rc;
    }
    s->e = e;
    *out = s;
    return 0;
}

void ff_store_read_end(ff_store *s) {
    s->absent_len = 0;
    if (s->ractive) {
        mdb_txn_reset(s->rtxn);
        s->ractive = 0;
        pthread_rwlock_unlock(&s->e->resize);
    }
}

int ff_store_close(ff_store *s) {
    if (s == NULL)
        return 0;
    env *e = s->e;
    if (e->gen != fork_gen) { /* a forked child: leave the parent's env be */
        free(s);
        return 0;
    }
    ff_store_read_end(s);
    if (s->rtxn != NULL)
        mdb_txn_abort(s->rtxn);
    int rc = ff_store_flush(s);
    pthread_mutex_lock(&envs.mu);
    int last = --e->refs == 0;
    if (last) {
        env **pp = &envs.list;
        while (*pp != e)
            pp = &(*pp)->next;
        *pp = e->next;
    }
    pthread_mutex_unlock(&envs.mu);
    if (last) {
        pthread_mutex_lock(&e->mu);
        int running = e->running;
        e->stop = 1;
        pthread_cond_broadcast(&e->wake);
        pthread_mutex_unlock(&e->mu);
        if (running)
            pthread_join(e->thread, NULL);
        mdb_env_close(e->mdb);
        env_free(e);
    }
    free(s);
    return rc;
}

/* --- writes -------------------------------------------------------------- */

static void put_u32(char *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (char)(v >> (8 * i));
}

static void put_u64(char *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (char)(v >> (8 * i));
}

static uint64_t get_u64(const char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)(unsigned char)p[i] << (8 * i);
    return v;
}

static uint64_t rec_checksum(const char *hdr, const char *val, size_t len) {
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    XXH3_64bits_update(&st, hdr, 40);
    XXH3_64bits_update(&st, val, len);
    return XXH3_64bits_digest(&st);
}

int ff_store_put(ff_store *s, const char *wf, size_t wflen, const char *task, size_t tlen,
                 const uint8_t fp[FF_FP_LEN], uint64_t compute_ns, const char *val, size_t len) {
    if (usable(s))
        return FFLUA_ECLOSED;
    if (wflen == 0 || wflen > FF_STORE_WF_MAX || memchr(wf, '\0', wflen) != NULL)
        return seterr(s, -EINVAL, "bad workflow name (1 to %d bytes, no NUL)", FF_STORE_WF_MAX);
    if (tlen == 0 || tlen > FF_STORE_TASK_MAX)
        return seterr(s, -EINVAL, "bad task name '%.*s' (1 to %d bytes)", (int)(tlen > 60 ? 60 : tlen),
                      task, FF_STORE_TASK_MAX);
    ff_store_read_end(s);
    env *e = s->e;
    struct qrec r = {(uint32_t)wflen, (uint32_t)tlen, FF_REC_HDR + (uint64_t)len, 0};
    size_t need = qrec_size(&r);
    pthread_mutex_lock(&e->mu);
    while (e->qn >= QUEUE_HIGH && e->commit_err == 0)
        pthread_cond_wait(&e->done, &e->mu); /* let the committer catch up */
    if (e->commit_err != 0) {
        int rc = e->commit_err;
        seterr(s, rc, "%s", e->commit_msg);
        pthread_mutex_unlock(&e->mu);
        return rc;
    }
    if (e->qcap - e->qn < need) {
        size_t cap = e->qcap ? e->qcap : 1 << 16;
        while (cap - e->qn < need)
            cap *= 2;
        char *nq = realloc(e->q, cap);
        if (nq == NULL) {
            pthread_mutex_unlock(&e->mu);
            return seterr(s, -ENOMEM, "not enough memory to queue a result");
        }
        e->q = nq;
        e->qcap = cap;
    }
    char *p = e->q + e->qn;
    memcpy(p, &r, sizeof r);
    p += sizeof r;
    memcpy(p, wf, wflen);
    memcpy(p + wflen, task, tlen);
    char *h = p + wflen + tlen;
    memcpy(h, "ffr1", 4);
    put_u32(h + 4, 0);
    memcpy(h + 8, fp, FF_FP_LEN);
    put_u64(h + 24, now_ns(CLOCK_REALTIME));
    put_u64(h + 32, compute_ns);
    if (len > 0)
        memcpy(h + FF_REC_HDR, val, len);
    put_u64(h + 40, rec_checksum(h, h + FF_REC_HDR, len));
    int was_empty = e->qn == 0;
    e->qn += need;
    e->put_seq++;
    int rc = 0;
    if (!e->running) {
        if (pthread_create(&e->thread, NULL, committer, e) == 0)
            e->running = 1;
        else
            rc = seterr(s, -EAGAIN, "cannot start the storage's committer thread");
    } else if (was_empty || e->qn >= QUEUE_EAGER) {
        pthread_cond_signal(&e->wake);
    }
    pthread_mutex_unlock(&e->mu);
    return rc;
}

int ff_store_flush(ff_store *s) {
    if (usable(s))
        return FFLUA_ECLOSED;
    ff_store_read_end(s);
    env *e = s->e;
    pthread_mutex_lock(&e->mu);
    uint64_t target = e->put_seq;
    if (e->committed_seq < target) {
        e->flushing++;
        pthread_cond_signal(&e->wake);
        while (e->committed_seq < target)
            pthread_cond_wait(&e->done, &e->mu);
        e->flushing--;
    }
    int rc = e->commit_err;
    if (rc != 0) {
        seterr(s, rc, "%s", e->commit_msg);
        e->commit_err = 0; /* reported */
    }
    pthread_mutex_unlock(&e->mu);
    return rc;
}

/* --- reads --------------------------------------------------------------- */

static int read_begin(ff_store *s) {
    if (s->ractive)
        return 0;
    env *e = s->e;
    for (;;) {
        pthread_rwlock_rdlock(&e->resize);
        int rc = s->rtxn ? mdb_txn_renew(s->rtxn)
                         : mdb_txn_begin(e->mdb, NULL, MDB_RDONLY, &s->rtxn);
        if (rc == 0) {
            s->ractive = 1;
            return 0;
        }
        pthread_rwlock_unlock(&e->resize);
        if (rc != MDB_MAP_RESIZED)
            return rc;
        if (s->rtxn != NULL) {
            mdb_txn_abort(s->rtxn);
            s->rtxn = NULL;
        }
        remap(e, 0);
    }
}

/* The handle of an existing workflow database. A handle opened after the
 * read transaction began is not valid in it: the transaction is renewed
 * (so earlier records' pointers go stale, which callers allow for). */
static int dbi_get(ff_store *s, const char *wf, size_t wflen, MDB_dbi *dbi) {
    env *e = s->e;
    if (s->ractive && s->absent_len == wflen && memcmp(s->absent, wf, wflen) == 0)
        return MDB_NOTFOUND;
    pthread_mutex_lock(&e->dbimu);
    int known = dbi_find(e, wf, wflen) != NULL;
    int rc = dbi_open(e, wf, wflen, 0, dbi);
    pthread_mutex_unlock(&e->dbimu);
    if (rc == 0 && !known && s->ractive) {
        ff_store_read_end(s);
        rc = read_begin(s);
    } else if (rc == MDB_NOTFOUND && s->ractive && wflen <= sizeof s->absent) {
        memcpy(s->absent, wf, wflen);
        s->absent_len = wflen;
    }
    return rc;
}

static int check_rec(const MDB_val *v, ff_rec *rec) {
    const char *h = v->mv_data;
    memset(rec, 0, sizeof *rec);
    if (v->mv_size < FF_REC_HDR || memcmp(h, "ffr1", 4) != 0) {
        rec->len = SIZE_MAX;
        return FFLUA_ECORRUPT;
    }
    memcpy(rec->fp, h + 8, FF_FP_LEN);
    rec->stored_ns = get_u64(h + 24);
    rec->compute_ns = get_u64(h + 32);
    rec->val = h + FF_REC_HDR;
    rec->len = v->mv_size - FF_REC_HDR;
    if (get_u64(h + 40) != rec_checksum(h, rec->val, rec->len))
        return FFLUA_ECHECKSUM;
    rec->ok = 1;
    return 0;
}

int ff_store_get(ff_store *s, const char *wf, size_t wflen, const char *task, size_t tlen,
                 ff_rec *rec) {
    if (usable(s))
        return FFLUA_ECLOSED;
    memset(rec, 0, sizeof *rec);
    if (tlen == 0 || tlen > FF_STORE_TASK_MAX)
        return FFLUA_ENOTFOUND;
    MDB_dbi dbi;
    int rc = read_begin(s);
    if (rc == 0)
        rc = dbi_get(s, wf, wflen, &dbi);
    if (rc == MDB_NOTFOUND || rc == EINVAL)
        return FFLUA_ENOTFOUND;
    if (rc != 0)
        return seterr(s, mdb_code(rc), "cannot read '%s': %s", s->e->path, mdb_text(rc));
    MDB_val k = {tlen, (void *)task}, v;
    rc = mdb_get(s->rtxn, dbi, &k, &v);
    if (rc == MDB_NOTFOUND)
        return FFLUA_ENOTFOUND;
    if (rc != 0)
        return seterr(s, mdb_code(rc), "cannot read '%s': %s", s->e->path, mdb_text(rc));
    return check_rec(&v, rec);
}

/* Ends a cursor scan: MDB_NOTFOUND is its normal end. */
static int scan_end(ff_store *s, MDB_cursor *c, int rc) {
    if (c != NULL)
        mdb_cursor_close(c);
    ff_store_read_end(s);
    if (rc == MDB_NOTFOUND)
        rc = 0;
    if (rc != 0)
        return seterr(s, mdb_code(rc), "cannot read '%s': %s", s->e->path, mdb_text(rc));
    return 0;
}

int ff_store_each(ff_store *s, const char *wf, size_t wflen, ff_store_each_fn fn, void *ud) {
    if (usable(s))
        return FFLUA_ECLOSED;
    MDB_dbi dbi;
    int rc = read_begin(s);
    if (rc == 0)
        rc = dbi_get(s, wf, wflen, &dbi);
    if (rc == MDB_NOTFOUND || rc == EINVAL) {
        ff_store_read_end(s);
        return FFLUA_ENOTFOUND;
    }
    MDB_cursor *c = NULL;
    if (rc == 0)
        rc = mdb_cursor_open(s->rtxn, dbi, &c);
    MDB_val k, v;
    for (int op = MDB_FIRST; rc == 0; op = MDB_NEXT) {
        rc = mdb_cursor_get(c, &k, &v, op);
        if (rc != 0)
            break;
        ff_rec rec;
        check_rec(&v, &rec);
        if (fn(ud, k.mv_data, k.mv_size, &rec))
            break;
    }
    return scan_end(s, c, rc);
}

int ff_store_workflows(ff_store *s, ff_store_each_fn fn, void *ud) {
    if (usable(s))
        return FFLUA_ECLOSED;
    int rc = read_begin(s);
    MDB_dbi main;
    MDB_cursor *c = NULL;
    if (rc == 0)
        rc = mdb_dbi_open(s->rtxn, NULL, 0, &main);
    if (rc == 0)
        rc = mdb_cursor_open(s->rtxn, main, &c);
    MDB_val k = {sizeof WF_PREFIX - 1, WF_PREFIX}, v;
    for (int op = MDB_SET_RANGE; rc == 0; op = MDB_NEXT) {
        rc = mdb_cursor_get(c, &k, &v, op);
        if (rc != 0)
            break;
        if (k.mv_size < sizeof WF_PREFIX - 1 ||
            memcmp(k.mv_data, WF_PREFIX, sizeof WF_PREFIX - 1) != 0)
            break;
        if (fn(ud, (const char *)k.mv_data + 3, k.mv_size - 3, NULL))
            break;
    }
    return scan_end(s, c, rc);
}

/* --- deletes and the test hook ------------------------------------------ */

/* Runs one write transaction on workflow wf: op 0 delete task, 1 drop,
 * 2 poke. Queued records are committed first. */
static int write_op(ff_store *s, int op, const char *wf, size_t wflen, const char *task,
                    size_t tlen, size_t offset, uint8_t mask) {
    int rc = ff_store_flush(s);
    if (rc != 0)
        return rc;
    env *e = s->e;
    MDB_dbi dbi;
    pthread_mutex_lock(&e->dbimu); /* also keeps the committer's handles valid */
    rc = dbi_open(e, wf, wflen, 0, &dbi);
    MDB_txn *txn = NULL;
    while (rc == 0) {
        rc = mdb_txn_begin(e->mdb, NULL, 0, &txn);
        if (rc != MDB_MAP_RESIZED)
            break;
        remap(e, 0);
    }
    if (rc == 0) {
        MDB_val k = {tlen, (void *)task}, v;
        if (op == 0) {
            rc = mdb_del(txn, dbi, &k, NULL);
        } else if (op == 3) { /* task: an array of offset pairs (see del_many) */
            const ff_key *keys = (const ff_key *)task;
            for (size_t i = 0; i < tlen && rc == 0; i++) {
                MDB_val dk = {keys[i].len, (void *)keys[i].p};
                rc = mdb_del(txn, dbi, &dk, NULL);
                if (rc == MDB_NOTFOUND)
                    rc = 0;
            }
        } else if (op == 1) {
            rc = mdb_drop(txn, dbi, 1);
        } else if ((rc = mdb_get(txn, dbi, &k, &v)) == 0) {
            if (offset + FF_REC_HDR >= v.mv_size) {
                rc = EINVAL;
            } else {
                /* Rewrite the record with one byte changed (LMDB pages
                 * reached through get are read-only). */
                char *copy = malloc(v.mv_size);
                if (copy == NULL) {
                    rc = ENOMEM;
                } else {
                    memcpy(copy, v.mv_data, v.mv_size);
                    copy[FF_REC_HDR + offset] ^= (char)mask;
                    MDB_val nv = {v.mv_size, copy};
                    rc = mdb_put(txn, dbi, &k, &nv, 0);
                    free(copy);
                }
            }
        }
        if (rc == 0)
            rc = mdb_txn_commit(txn);
        else
            mdb_txn_abort(txn);
        if (rc == 0 && op == 1)
            dbi_forget(e, wf, wflen);
    }
    pthread_mutex_unlock(&e->dbimu);
    if (rc == MDB_NOTFOUND || rc == EINVAL)
        return FFLUA_ENOTFOUND;
    if (rc != 0)
        return seterr(s, mdb_code(rc), "cannot change '%s': %s", e->path, mdb_text(rc));
    return 0;
}

int ff_store_del(ff_store *s, const char *wf, size_t wflen, const char *task, size_t tlen) {
    if (usable(s))
        return FFLUA_ECLOSED;
    return write_op(s, 0, wf, wflen, task, tlen, 0, 0);
}

int ff_store_drop(ff_store *s, const char *wf, size_t wflen) {
    if (usable(s))
        return FFLUA_ECLOSED;
    return write_op(s, 1, wf, wflen, NULL, 0, 0, 0);
}

int ff_store_del_many(ff_store *s, const char *wf, size_t wflen, const ff_key *keys, size_t n) {
    if (usable(s))
        return FFLUA_ECLOSED;
    if (n == 0)
        return 0;
    return write_op(s, 3, wf, wflen, (const char *)keys, n, 0, 0);
}

int ff_store_poke(ff_store *s, const char *wf, size_t wflen, const char *task, size_t tlen,
                  size_t offset, uint8_t mask) {
    if (usable(s))
        return FFLUA_ECLOSED;
    return write_op(s, 2, wf, wflen, task, tlen, offset, mask);
}
