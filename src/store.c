/*
 * store.c: results on disk, in LMDB (see store.h for the record layout).
 *
 * Threads and locks. An environment (struct env) is shared by every handle
 * on one directory in a process: LMDB's locks are per process, so a second
 * mdb_env_open of the same files would break them. The table of open
 * environments (envs below) is therefore one of the two process-wide pieces
 * of mutable state in fflua (the other is guard.c's signal handlers); it is
 * guarded by its mutex and keyed by the directory's device and inode. An
 * environment stays in the table while it is being closed (an open of the
 * same directory waits for that to finish), and for good once LMDB can no
 * longer close it (below).
 *
 * In an environment:
 *   mu        guards the queue, the pending operation, the error state and
 *             the committer's state;
 *   openmu    serializes mdb_dbi_open (LMDB allows one transaction opening
 *             handles at a time, until it ends) and mdb_dbi_close;
 *   dbimu     guards the handle cache (held briefly);
 *   resize    a rwlock: every transaction of the process holds it shared
 *             (readers for as long as their read transaction is active, the
 *             committer for each write transaction); growing the map
 *             (mdb_env_set_mapsize needs no transaction active in the
 *             process) and closing a handle (no thread may be using it)
 *             hold it exclusive;
 *   committer a thread started by the first write, with every signal
 *             blocked: it waits for queued records, lets them gather for
 *             up to FF_COMMIT_MS after the previous commit (or less when
 *             flushed, when an operation is waiting or when the queue is
 *             large), and writes them, and the waiting delete or drop, in
 *             one transaction. It is the only thread that writes.
 * Lock order: resize, openmu, dbimu. Rules that keep this free of
 * deadlocks: a thread never waits for the committer while it holds a read
 * transaction (put, flush, del and drop end the handle's read transaction
 * first), and no Lua code runs while a read transaction is active (callers
 * copy what they read and end the transaction before they decode, since
 * any Lua allocation may run a finalizer that uses a storage).
 *
 * Handles and transactions. A handle opened after a transaction began is
 * not valid in it (LMDB), so every use of a cached handle is checked with
 * mdb_dbi_flags first: a reader renews its transaction, the committer
 * retries. Other processes: a workflow's database may be dropped (and made
 * again) by another process at any time. LMDB refreshes a cached handle
 * from the database's record in each new transaction, but when that record
 * is gone it keeps the old root and a write would go into freed pages; so
 * every write transaction checks that the database of each cached handle it
 * writes through still exists, and a stale handle is closed and opened
 * again.
 *
 * Damage. See store.h: sizes are bounded by the file, page reads run under
 * guards, and a read that LMDB fails or a fault cuts short ends the read
 * transaction (LMDB refuses to go on with it) and reports damage. Before
 * the process first writes to a tree, verify.c checks it. An environment
 * whose write transaction faulted ("broken"), or whose map could not be
 * made again ("dead"), is never handed to LMDB again for what could go
 * wrong: a broken one still reads; a dead one does nothing. Neither can be
 * closed (LMDB would free what the abandoned transaction still links), so
 * both stay in the table until the process ends.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <lmdb.h>
#include <xxhash.h>

#include "fflua.h"
#include "guard.h"
#include "store.h"
#include "text.h"
#include "verify.h"

#define INITIAL_MAP (64u << 20)
#define QUEUE_HIGH ((size_t)256 << 20) /* puts wait above this many bytes */
#define QUEUE_EAGER ((size_t)32 << 20) /* commit without waiting above this */
#define MAX_DBS 4096
#define WF_PREFIX "wf:"
#define WF_PREFIX_LEN (sizeof WF_PREFIX - 1)
#define MAX_ATTEMPTS 64 /* write attempts of one batch (stale handles, growth) */
#define MAX_REMAPS 8    /* a read transaction's attempts to follow the map */
#define MAX_VALUE (UINT32_MAX - FF_REC_HDR) /* LMDB 0.9 keeps data sizes in 32 bits */

/* Internal results of guarded calls and write attempts, clear of LMDB's
 * codes (-30800..-30780), errno values and fflua's. */
#define FF_FAULT (-30600)   /* a guarded call faulted; the reason is in the fault */
#define FF_STALE (-30601)   /* a cached handle's database is gone: reopen, retry */
#define FF_BROKEN (-30602)  /* a write transaction faulted: no more writes */
#define FF_DAMAGED (-30603) /* a tree to write to failed its check (verify.h) */
#define FF_RETRY (-30604)   /* a handle newer than the transaction: retry */
#define FF_DEAD (-30605)    /* the map is gone: the environment does nothing */

struct dbi {
    char *name; /* without the prefix */
    size_t len;
    MDB_dbi dbi;
    int verified; /* its tree passed verify.h's check in this process */
};

/* A workflow this process will not write: its tree failed the check. */
struct refused {
    char *name;
    size_t len;
    char why[256];
};

/* A delete, drop or poke, run by the committer after the records queued
 * before it, in the same transaction. */
enum { OP_DEL, OP_DEL_MANY, OP_DROP, OP_POKE };
struct wop {
    int kind;
    const char *wf;
    size_t wflen;
    const ff_key *keys; /* OP_DEL: one; OP_DEL_MANY: n; OP_POKE: one */
    size_t n;
    size_t offset; /* OP_POKE */
    uint8_t mask;
    int rc, done; /* rc: 0, FFLUA_ENOTFOUND or a failure (message in msg) */
    char msg[512];
};

typedef struct env {
    struct env *next; /* in the process table */
    dev_t dev;
    ino_t ino;
    pid_t pid;    /* the process that opened it */
    unsigned gen; /* fork_gen then */
    int refs;
    int closing; /* its last handle is closing it */
    char *path;
    MDB_env *mdb;
    int fd; /* data.mdb */
    unsigned psize;
    int rdonly; /* 0, or the errno that made it read-only */
    pthread_mutex_t mu, openmu, dbimu;
    pthread_rwlock_t resize;
    pthread_cond_t wake, done;
    pthread_t thread;
    int running, stop, flushing;
    /* Under mu. broken: a write transaction faulted, no more writes. dead:
     * the map is gone, nothing works. nowrite: nothing can be written
     * (broken, dead, or the free list or main tree failed their check),
     * with the reason in nowrite_msg. */
    int broken, dead, nowrite;
    char nowrite_msg[512];
    char *q; /* queued records (see qrec) */
    size_t qn, qcap;
    struct wop *op; /* waiting for the committer */
    uint64_t put_seq, committed_seq;
    uint64_t last_commit_ns;
    /* Commit failures, numbered so that every handle hears of each once;
     * the message is the last one's. */
    uint64_t err_seq;
    int commit_err;
    char commit_msg[512];
    /* The committer's own: a read-only mapping of data.mdb for verify.h,
     * whether the free list and main tree passed, refused workflows. */
    const unsigned char *fmap;
    size_t fmap_len;
    int core_checked;
    struct refused *refused;
    size_t nrefused;
    /* Under dbimu. */
    struct dbi *dbis;
    size_t ndbis, dbis_cap;
    /* Under openmu: handles opened so far. A transaction may open one only
     * if none was opened since it began: LMDB takes the slot for a new
     * handle from the count the transaction saw when it began, which
     * would be another's. */
    uint64_t opens;
} env;

/* A queued record: this header, then wf, task, record bytes, padded to 8. */
struct qrec {
    uint32_t wflen, tlen;
    uint64_t len; /* record bytes: header + payload */
};

struct ff_store {
    env *e;
    MDB_txn *rtxn; /* read transaction: active, reset, or NULL */
    int ractive;
    /* The largest size of a value while rtxn is active (see read_span). */
    size_t span;
    /* A workflow found absent in the active read transaction: it stays
     * absent until the transaction ends (a run looks up every node). */
    char absent[128];
    size_t absent_len;
    uint64_t err_seen; /* the commit failures this handle has reported */
    char why[320];     /* a damaged record's reason, when not static */
    char fault[256];   /* what the last guarded call that faulted hit */
    char err[512];
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t closed; /* an environment left the table */
    env *list;
} envs = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL};

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
        rc == MDB_VERSION_MISMATCH || rc == FF_FAULT || rc == FF_BROKEN || rc == FF_DAMAGED)
        return FFLUA_ECORRUPT;
    if (rc == FF_STALE || rc == FF_RETRY)
        return -EBUSY;
    if (rc == FF_DEAD)
        return FFLUA_ECLOSED;
    return rc;
}

/* Whether an LMDB result while reading means that the file is damaged
 * there (rather than that the storage cannot be read just now). */
static int is_damage(int rc) {
    return rc == FF_FAULT || rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND ||
           rc == MDB_INCOMPATIBLE || rc == MDB_CURSOR_FULL || rc == MDB_PAGE_FULL ||
           rc == MDB_BAD_VALSIZE || rc == MDB_BAD_TXN;
}

const char *ff_store_path(const ff_store *s) {
    return s->e->path;
}

const char *ff_store_errmsg(const ff_store *s) {
    return s->err;
}

int ff_store_readonly(const ff_store *s) {
    return s->e->rdonly != 0;
}

static int usable(ff_store *s) {
    env *e = s->e;
    if (e->gen != fork_gen)
        return seterr(s, FFLUA_ECLOSED,
                      "storage '%s' was opened by another process (inherited through fork); "
                      "open it again in this one",
                      e->path);
    pthread_mutex_lock(&e->mu);
    int dead = e->dead;
    if (dead)
        seterr(s, FFLUA_ECLOSED, "%s", e->nowrite_msg);
    pthread_mutex_unlock(&e->mu);
    return dead ? FFLUA_ECLOSED : 0;
}

/* Under e->mu: why nothing can be written, or 0. */
static int refuse_write(ff_store *s) {
    env *e = s->e;
    if (e->rdonly)
        return seterr(s, -e->rdonly, "it is read-only here (%s): nothing can be saved in it",
                      strerror(e->rdonly));
    if (e->nowrite)
        return seterr(s, FFLUA_ECORRUPT, "%s", e->nowrite_msg);
    return 0;
}

/* Under e->mu: nothing can be written any more, for the reason given. */
static void set_nowrite(env *e, const char *msg) {
    if (!e->nowrite)
        snprintf(e->nowrite_msg, sizeof e->nowrite_msg, "%s", msg);
    e->nowrite = 1;
}

/* --- guarded LMDB calls -------------------------------------------------- */

/* What a fault hit, for messages: the guard's text and LMDB's assertion. */
static void fault_note(char *buf, size_t len, const ff_guard *g) {
    if (g->msg[0] != '\0')
        snprintf(buf, len, "%s: %s", ff_guard_what(g), g->msg);
    else
        snprintf(buf, len, "%s", ff_guard_what(g));
}

static void on_assert(MDB_env *mdb, const char *msg) {
    (void)mdb;
    ff_guard_assert(msg);
}

/* Each runs one LMDB call that reads pages under a guard: FF_FAULT, with
 * the reason in why, when it faulted. None holds a lock of ours. */
static int g_cursor_open(MDB_txn *txn, MDB_dbi dbi, MDB_cursor **c, char *why, size_t wl) {
    ff_guard g;
    ff_guard_push(&g);
    if (sigsetjmp(g.jb, 0) != 0) {
        fault_note(why, wl, &g);
        return FF_FAULT;
    }
    int rc = mdb_cursor_open(txn, dbi, c);
    ff_guard_pop(&g);
    return rc;
}

static int g_dbi_open(MDB_txn *txn, const char *name, MDB_dbi *dbi, char *why, size_t wl) {
    ff_guard g;
    ff_guard_push(&g);
    if (sigsetjmp(g.jb, 0) != 0) {
        fault_note(why, wl, &g);
        return FF_FAULT;
    }
    int rc = mdb_dbi_open(txn, name, 0, dbi);
    ff_guard_pop(&g);
    return rc;
}

/* mdb_env_open under a guard: opening reads the meta pages, which may be
 * damaged too. */
static int g_env_open(MDB_env *mdb, const char *path, unsigned flags) {
    ff_guard g;
    ff_guard_push(&g);
    if (sigsetjmp(g.jb, 0) != 0)
        return MDB_CORRUPTED;
    int rc = mdb_env_open(mdb, path, flags, 0644);
    ff_guard_pop(&g);
    return rc;
}

/* The text of an LMDB code, or of a fault. */
static const char *lmdb_text(int rc, const char *fault) {
    return rc == FF_FAULT ? fault : mdb_strerror(rc);
}

/* --- the map ------------------------------------------------------------- */

/* Grows the map to at least twice its size (or adopts another process's
 * larger size when grow is 0). Needs no transaction of this process
 * active: takes the resize lock exclusive. LMDB unmaps the old map before
 * it maps the new one, so a failed mapping leaves the environment without
 * any: it is dead from then on (FF_DEAD). EINVAL: not now (a broken
 * environment's abandoned transaction), the map is unchanged. */
static int remap(env *e, int grow) {
    pthread_rwlock_wrlock(&e->resize);
    MDB_envinfo info;
    mdb_env_info(e->mdb, &info);
    size_t want = grow ? info.me_mapsize * 2 : 0;
    int rc;
    if (grow && want / 2 != info.me_mapsize)
        rc = ENOMEM; /* the map is as large as it gets; it is left as it is */
    else if ((rc = mdb_env_set_mapsize(e->mdb, want)) != 0 && rc != EINVAL) {
        char msg[300];
        snprintf(msg, sizeof msg,
                 "the storage '%s' cannot be used in this process any more: its file could "
                 "not be mapped again (%s); open it in a new process",
                 e->path, strerror(rc > 0 ? rc : ENOMEM));
        pthread_mutex_lock(&e->mu);
        e->dead = 1;
        e->nowrite = 0; /* the reason given is this one */
        set_nowrite(e, msg);
        pthread_mutex_unlock(&e->mu);
        rc = FF_DEAD;
    }
    pthread_rwlock_unlock(&e->resize);
    return rc;
}

size_t ff_store_mapsize(ff_store *s) {
    MDB_envinfo info;
    mdb_env_info(s->e->mdb, &info);
    return info.me_mapsize;
}

/* Sets the largest size a value can have in the active read transaction:
 * the pages of the newest meta page. (LMDB does not tell where its map is,
 * so pointers are not bounded, and a damaged meta page may claim more
 * pages than the file has: a read out of the file faults, and the fault is
 * caught.) */
static void read_span(ff_store *s) {
    env *e = s->e;
    MDB_envinfo info;
    mdb_env_info(e->mdb, &info);
    size_t used = ((size_t)info.me_last_pgno + 1) * e->psize;
    s->span = used < info.me_mapsize ? used : info.me_mapsize;
}

/* --- handles ------------------------------------------------------------- */

static int wf_dbname(const char *wf, size_t len, char *buf, size_t cap) {
    if (len == 0 || len + WF_PREFIX_LEN + 1 > cap || memchr(wf, '\0', len) != NULL)
        return -1;
    memcpy(buf, WF_PREFIX, WF_PREFIX_LEN);
    memcpy(buf + WF_PREFIX_LEN, wf, len);
    buf[WF_PREFIX_LEN + len] = '\0';
    return 0;
}

/* The cached handle of workflow wf, or NULL. Under e->dbimu. */
static struct dbi *dbi_find(env *e, const char *wf, size_t len) {
    for (size_t i = 0; i < e->ndbis; i++)
        if (e->dbis[i].len == len && memcmp(e->dbis[i].name, wf, len) == 0)
            return &e->dbis[i];
    return NULL;
}

/* Looks up the cached handle of wf: 1 and *dbi (and *verified) when there
 * is one. Takes dbimu. */
static int dbi_lookup(env *e, const char *wf, size_t len, MDB_dbi *dbi, int *verified) {
    pthread_mutex_lock(&e->dbimu);
    struct dbi *d = dbi_find(e, wf, len);
    if (d != NULL) {
        *dbi = d->dbi;
        if (verified != NULL)
            *verified = d->verified;
    }
    pthread_mutex_unlock(&e->dbimu);
    return d != NULL;
}

/* Takes dbimu. */
static void dbi_forget(env *e, const char *wf, size_t len) {
    pthread_mutex_lock(&e->dbimu);
    struct dbi *d = dbi_find(e, wf, len);
    if (d != NULL) {
        free(d->name);
        *d = e->dbis[--e->ndbis];
    }
    pthread_mutex_unlock(&e->dbimu);
}

/* Takes dbimu. */
static void dbi_set_verified(env *e, const char *wf, size_t len, int verified) {
    pthread_mutex_lock(&e->dbimu);
    struct dbi *d = dbi_find(e, wf, len);
    if (d != NULL)
        d->verified = verified;
    pthread_mutex_unlock(&e->dbimu);
}

/* Takes dbimu. */
static int dbi_add(env *e, const char *wf, size_t len, MDB_dbi dbi, int verified) {
    int rc = 0;
    pthread_mutex_lock(&e->dbimu);
    if (dbi_find(e, wf, len) != NULL)
        goto done;
    if (e->ndbis == e->dbis_cap) {
        size_t cap = e->dbis_cap ? e->dbis_cap * 2 : 8;
        struct dbi *nd = realloc(e->dbis, cap * sizeof *nd);
        if (nd == NULL) {
            rc = ENOMEM;
            goto done;
        }
        e->dbis = nd;
        e->dbis_cap = cap;
    }
    char *copy = malloc(len);
    if (copy == NULL) {
        rc = ENOMEM;
        goto done;
    }
    memcpy(copy, wf, len);
    e->dbis[e->ndbis++] = (struct dbi){copy, len, dbi, verified};
done:
    pthread_mutex_unlock(&e->dbimu);
    return rc;
}

/* Opens an existing workflow's database in a read transaction of its own
 * and caches the handle. The caller holds resize shared. */
static int dbi_open_read(env *e, const char *wf, size_t len, MDB_dbi *out, char *why, size_t wl) {
    char name[FF_STORE_WF_MAX + WF_PREFIX_LEN + 1];
    if (wf_dbname(wf, len, name, sizeof name) != 0)
        return EINVAL;
    pthread_mutex_lock(&e->openmu);
    int rc = 0;
    if (dbi_lookup(e, wf, len, out, NULL))
        goto done; /* opened meanwhile */
    MDB_txn *txn;
    if ((rc = mdb_txn_begin(e->mdb, NULL, MDB_RDONLY, &txn)) != 0)
        goto done;
    MDB_dbi dbi;
    rc = g_dbi_open(txn, name, &dbi, why, wl);
    if (rc != 0) {
        mdb_txn_abort(txn);
        goto done;
    }
    if ((rc = mdb_txn_commit(txn)) == 0) {
        e->opens++;
        if ((rc = dbi_add(e, wf, len, dbi, 0)) == 0)
            *out = dbi;
    }
done:
    pthread_mutex_unlock(&e->openmu);
    return rc;
}

/* --- records ------------------------------------------------------------- */

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

/* The checksum of a record: a chain of XXH3-64 hashes, each seeded by the
 * one before: of the two names' lengths, the workflow's name, the task's
 * name, header bytes 0..40, the payload. One-shot hashes: for small records
 * they cost far less than a streaming state. */
static uint64_t rec_checksum(const char *wf, size_t wflen, const char *task, size_t tlen,
                             const char *hdr, const char *val, size_t len) {
    uint64_t h = (uint64_t)wflen << 32 | (uint32_t)tlen;
    h = XXH3_64bits_withSeed(wf, wflen, h);
    h = XXH3_64bits_withSeed(task, tlen, h);
    h = XXH3_64bits_withSeed(hdr, 40, h);
    return XXH3_64bits_withSeed(val, len, h);
}

/* Writes a record's header for payload val (already at hdr + FF_REC_HDR). */
static void rec_header(char *hdr, const char *wf, size_t wflen, const char *task, size_t tlen,
                       const uint8_t fp[FF_FP_LEN], uint64_t stored_ns, uint64_t compute_ns,
                       size_t len) {
    memcpy(hdr, "ffr2", 4);
    put_u32(hdr + 4, 0);
    memcpy(hdr + 8, fp, FF_FP_LEN);
    put_u64(hdr + 24, stored_ns);
    put_u64(hdr + 32, compute_ns);
    put_u64(hdr + 40, rec_checksum(wf, wflen, task, tlen, hdr, hdr + FF_REC_HDR, len));
}

/* Checks the record v of key (wf, task) read in the active transaction.
 * Reads every byte of it: run it under a guard. */
static int check_rec(const ff_store *s, const char *wf, size_t wflen, const char *task, size_t tlen,
                     const MDB_val *v, ff_rec *rec) {
    const char *h = v->mv_data;
    memset(rec, 0, sizeof *rec);
    rec->len = SIZE_MAX;
    if (v->mv_size > s->span) {
        rec->why = "its size is larger than the file";
        return FFLUA_ECORRUPT;
    }
    int v1 = v->mv_size >= FF_REC_HDR && memcmp(h, "ffr1", 4) == 0;
    if (v->mv_size < FF_REC_HDR || (memcmp(h, "ffr2", 4) != 0 && !v1)) {
        rec->why = "bad record header";
        return FFLUA_ECORRUPT;
    }
    memcpy(rec->fp, h + 8, FF_FP_LEN);
    rec->stored_ns = get_u64(h + 24);
    rec->compute_ns = get_u64(h + 32);
    rec->val = h + FF_REC_HDR;
    rec->len = v->mv_size - FF_REC_HDR;
    if (v1) {
        rec->why = "written by an older fflua (record format 1), whose checksum does not cover "
                   "the task's name";
        return FFLUA_ECORRUPT;
    }
    if (get_u64(h + 40) != rec_checksum(wf, wflen, task, tlen, h, rec->val, rec->len)) {
        rec->why = "checksum mismatch";
        return FFLUA_ECHECKSUM;
    }
    rec->ok = 1;
    return 0;
}

/* --- writing: the committer ---------------------------------------------- */

static size_t qrec_size(const struct qrec *r) {
    size_t n = sizeof *r + r->wflen + r->tlen + r->len;
    return (n + 7) & ~(size_t)7;
}

/* A handle opened in a write transaction. */
struct opened {
    const char *wf;
    size_t len;
    MDB_dbi dbi;
};

/* The state of one write transaction. */
struct wtx {
    env *e;
    MDB_txn *txn;
    MDB_dbi main;
    volatile int *held; /* openmu is held (a handle was opened in txn) */
    uint64_t opens;     /* e->opens when the transaction began */
    /* Handles opened in txn: cached only once it commits (LMDB closes them
     * if it aborts, and they are not valid in other transactions before).
     * Names point into the batch or the operation. */
    struct opened *opened;
    size_t nopened, capopened;
    /* With FF_STALE or FF_DAMAGED: the workflow (NULL with FF_DAMAGED: the
     * free list or the main tree), and with FF_DAMAGED why. */
    const char *stale;
    size_t stale_len;
    char why[256];
    /* Records of this refused workflow (the first) were left out. */
    const char *skipped;
    size_t skipped_len;
};

/* --- writing: checking a tree first (verify.h) --------------------------- */

/* Maps data.mdb (again, when it grew) for the checker. Committer only. */
static int fmap_refresh(env *e) {
    struct stat st;
    if (fstat(e->fd, &st) != 0)
        return errno;
    size_t len = (size_t)st.st_size;
    if (e->fmap != NULL && len == e->fmap_len)
        return 0;
    if (e->fmap != NULL)
        munmap((void *)e->fmap, e->fmap_len);
    e->fmap = NULL;
    void *p = mmap(NULL, len, PROT_READ, MAP_SHARED, e->fd, 0);
    if (p == MAP_FAILED)
        return errno;
    e->fmap = p;
    e->fmap_len = len;
    return 0;
}

/* Checks one tree of the snapshot txnid of the file mapped at e->fmap (the
 * free list when db is NULL, then also the main tree), under a guard of its
 * own: a file cut short under the check is damage, not a fault of the
 * write. 0, or -1 with why. */
static int check_tree(env *e, const ff_vdb *db, uint64_t txnid, char *why, size_t wl) {
    int rc = fmap_refresh(e);
    if (rc != 0) {
        snprintf(why, wl, "cannot map the file to check it: %s", strerror(rc));
        return -1;
    }
    ff_guard g;
    ff_guard_push(&g);
    if (sigsetjmp(g.jb, 0) != 0) {
        fault_note(why, wl, &g);
        return -1;
    }
    ff_vfile f;
    rc = ff_verify_meta(&f, e->fmap, e->fmap_len, txnid, why, wl);
    if (rc == 0 && db == NULL) {
        rc = ff_verify_free(&f, why, wl);
        if (rc == 0)
            rc = ff_verify_tree(&f, &f.main_db, FF_VTREE_MAIN, NULL, NULL, why, wl);
    } else if (rc == 0) {
        rc = ff_verify_tree(&f, db, FF_VTREE_RECORDS, NULL, NULL, why, wl);
    }
    ff_guard_pop(&g);
    return rc;
}

static struct refused *find_refused(env *e, const char *wf, size_t len) {
    for (size_t i = 0; i < e->nrefused; i++)
        if (e->refused[i].len == len && memcmp(e->refused[i].name, wf, len) == 0)
            return &e->refused[i];
    return NULL;
}

/* Remembers that workflow wf is not to be written (committer only). */
static void refuse(env *e, const char *wf, size_t len, const char *why) {
    if (find_refused(e, wf, len) != NULL)
        return;
    struct refused *nr = realloc(e->refused, (e->nrefused + 1) * sizeof *nr);
    char *name = malloc(len);
    if (nr != NULL)
        e->refused = nr;
    if (nr == NULL || name == NULL) {
        free(name);
        return; /* it is checked again next time */
    }
    memcpy(name, wf, len);
    struct refused *r = &e->refused[e->nrefused++];
    r->name = name;
    r->len = len;
    snprintf(r->why, sizeof r->why, "%s", why);
}

/* The message for records of a refused workflow. */
static void refused_msg(env *e, const struct refused *r, char *msg, size_t msglen) {
    char name[100];
    snprintf(msg, msglen,
             "cannot save results of workflow '%s' in '%s': its part of the file is damaged (%s): "
             "repair the storage with 'fflua store repair %s'",
             ff_text_escape(name, sizeof name, r->name, r->len), e->path, r->why, e->path);
}

/* Takes openmu for the rest of the transaction, once; FF_RETRY when a
 * handle was opened since the transaction began (see env.opens). */
static int hold_open(struct wtx *w) {
    if (!*w->held) {
        pthread_mutex_lock(&w->e->openmu);
        *w->held = 1;
    }
    return w->e->opens == w->opens ? 0 : FF_RETRY;
}

/* The handle of workflow wf's database in the transaction, made when
 * create is set (else MDB_NOTFOUND). A cached handle is used only when it
 * is valid in this transaction (else FF_RETRY) and its database still
 * exists (see the top of the file; else FF_STALE). An existing tree is
 * checked (verify.h) before this process first writes to it; FF_DAMAGED
 * when it fails. A handle opened here is cached at once, with openmu held
 * until the transaction ends. */
static int wdbi(struct wtx *w, const char *wf, size_t len, int create, MDB_dbi *out) {
    env *e = w->e;
    char name[FF_STORE_WF_MAX + WF_PREFIX_LEN + 1];
    if (wf_dbname(wf, len, name, sizeof name) != 0)
        return EINVAL;
    w->stale = wf;
    w->stale_len = len;
    struct refused *r = find_refused(e, wf, len);
    if (r != NULL) {
        snprintf(w->why, sizeof w->why, "%s", r->why);
        return FF_DAMAGED;
    }
    for (size_t i = 0; i < w->nopened; i++)
        if (w->opened[i].len == len && memcmp(w->opened[i].wf, wf, len) == 0) {
            *out = w->opened[i].dbi; /* opened in this transaction */
            return 0;
        }
    MDB_dbi dbi = 0;
    int verified = 0, cached = dbi_lookup(e, wf, len, &dbi, &verified);
    unsigned flags;
    if (cached && mdb_dbi_flags(w->txn, dbi, &flags) != 0)
        return FF_RETRY; /* opened after this transaction began */
    MDB_val k = {WF_PREFIX_LEN + len, name}, v;
    int rc = mdb_get(w->txn, w->main, &k, &v);
    if (rc == MDB_NOTFOUND && cached)
        return FF_STALE;
    if (rc == MDB_NOTFOUND && !create)
        return MDB_NOTFOUND;
    if (rc != 0 && rc != MDB_NOTFOUND)
        return rc;
    if (rc == 0 && !verified) {
        ff_vdb db;
        if (ff_verify_db(v.mv_data, v.mv_size, &db) != 0) {
            snprintf(w->why, sizeof w->why, "its record in the main tree is %zu bytes", v.mv_size);
            return FF_DAMAGED;
        }
        if (check_tree(e, &db, mdb_txn_id(w->txn) - 1, w->why, sizeof w->why) != 0)
            return FF_DAMAGED;
        if (cached)
            dbi_set_verified(e, wf, len, 1);
    }
    if (cached) {
        *out = dbi;
        return 0;
    }
    /* Not cached: open it in this transaction. */
    if ((rc = hold_open(w)) != 0)
        return rc;
    if (w->nopened == w->capopened) {
        size_t cap = w->capopened ? w->capopened * 2 : 8;
        struct opened *no = realloc(w->opened, cap * sizeof *no);
        if (no == NULL)
            return ENOMEM;
        w->opened = no;
        w->capopened = cap;
    }
    if ((rc = mdb_dbi_open(w->txn, name, create ? MDB_CREATE : 0, &dbi)) != 0)
        return rc;
    w->e->opens++; /* this transaction's own: it knows of it */
    w->opens++;
    w->opened[w->nopened++] = (struct opened){wf, len, dbi};
    *out = dbi;
    return 0;
}

/* Checks the free list and the main tree before this process first
 * writes: LMDB takes pages from the one and adds records to the other. */
static int check_core(struct wtx *w) {
    env *e = w->e;
    w->stale = NULL;
    if (e->core_checked)
        return 0;
    if (check_tree(e, NULL, mdb_txn_id(w->txn) - 1, w->why, sizeof w->why) != 0)
        return FF_DAMAGED;
    e->core_checked = 1;
    return 0;
}

/* Runs operation o in the transaction. A missing task or workflow is o's
 * answer (FFLUA_ENOTFOUND), not a failure of the transaction; so is a
 * damaged workflow. */
static int run_op(struct wtx *w, struct wop *o) {
    MDB_dbi dbi;
    int rc = wdbi(w, o->wf, o->wflen, 0, &dbi);
    if (rc == MDB_NOTFOUND || rc == EINVAL) {
        o->rc = FFLUA_ENOTFOUND;
        return 0;
    }
    if (rc == FF_DAMAGED && w->stale != NULL) {
        char name[100];
        o->rc = FFLUA_ECORRUPT;
        snprintf(o->msg, sizeof o->msg,
                 "workflow '%s' is damaged in the file (%s): repair the storage first with "
                 "'fflua store repair %s'",
                 ff_text_escape(name, sizeof name, o->wf, o->wflen), w->why, w->e->path);
        return 0;
    }
    if (rc != 0)
        return rc;
    o->rc = 0;
    switch (o->kind) {
    case OP_DEL:
    case OP_DEL_MANY:
        for (size_t i = 0; i < o->n; i++) {
            MDB_val k = {o->keys[i].len, (void *)o->keys[i].p};
            rc = mdb_del(w->txn, dbi, &k, NULL);
            if (rc == MDB_NOTFOUND) {
                if (o->kind == OP_DEL)
                    o->rc = FFLUA_ENOTFOUND;
                rc = 0;
            }
            if (rc != 0)
                return rc;
        }
        return 0;
    case OP_DROP:
        /* mdb_drop closes the handle at once, committed or not. */
        if ((rc = hold_open(w)) != 0)
            return rc;
        rc = mdb_drop(w->txn, dbi, 1);
        w->e->opens++; /* its slot is free */
        w->opens++;
        dbi_forget(w->e, o->wf, o->wflen);
        for (size_t i = 0; i < w->nopened; i++)
            if (w->opened[i].len == o->wflen && memcmp(w->opened[i].wf, o->wf, o->wflen) == 0)
                w->opened[i] = w->opened[--w->nopened];
        return rc;
    default: { /* OP_POKE */
        MDB_val k = {o->keys[0].len, (void *)o->keys[0].p}, v;
        rc = mdb_get(w->txn, dbi, &k, &v);
        if (rc == MDB_NOTFOUND || (rc == 0 && o->offset + FF_REC_HDR >= v.mv_size)) {
            o->rc = FFLUA_ENOTFOUND;
            return 0;
        }
        if (rc != 0)
            return rc;
        /* Rewrite the record with one byte changed (pages reached through
         * get are read-only). */
        char *copy = malloc(v.mv_size);
        if (copy == NULL)
            return ENOMEM;
        memcpy(copy, v.mv_data, v.mv_size);
        copy[FF_REC_HDR + o->offset] ^= (char)o->mask;
        MDB_val nv = {v.mv_size, copy};
        rc = mdb_put(w->txn, dbi, &k, &nv, 0);
        free(copy);
        return rc;
    }
    }
}

/* The body of one write attempt (see write_attempt), run under its guard. */
static int write_body(struct wtx *w, const char *q, size_t n, struct wop *o) {
    env *e = w->e;
    pthread_mutex_lock(&e->openmu);
    w->opens = e->opens;
    pthread_mutex_unlock(&e->openmu);
    int rc = mdb_txn_begin(e->mdb, NULL, 0, &w->txn);
    if (rc != 0)
        return rc;
    if ((rc = mdb_dbi_open(w->txn, NULL, 0, &w->main)) != 0 || (rc = check_core(w)) != 0)
        goto abort;
    const char *lastwf = NULL;
    size_t lastlen = 0;
    MDB_dbi dbi = 0;
    int skip = 0;
    for (size_t off = 0; off < n;) {
        const struct qrec *r = (const struct qrec *)(q + off);
        const char *wf = (const char *)(r + 1);
        if (lastwf == NULL || r->wflen != lastlen || memcmp(wf, lastwf, lastlen) != 0) {
            lastwf = wf;
            lastlen = r->wflen;
            skip = find_refused(e, wf, r->wflen) != NULL;
            if (!skip && (rc = wdbi(w, wf, r->wflen, 1, &dbi)) != 0)
                goto abort;
        }
        if (skip) {
            if (w->skipped == NULL) {
                w->skipped = wf;
                w->skipped_len = r->wflen;
            }
            off += qrec_size(r);
            continue;
        }
        MDB_val k = {r->tlen, (void *)(wf + r->wflen)};
        MDB_val v = {r->len, NULL};
        if ((rc = mdb_put(w->txn, dbi, &k, &v, MDB_RESERVE)) != 0)
            goto abort;
        memcpy(v.mv_data, wf + r->wflen + r->tlen, r->len);
        off += qrec_size(r);
    }
    if (o != NULL && (rc = run_op(w, o)) != 0)
        goto abort;
    rc = mdb_txn_commit(w->txn);
    for (size_t i = 0; rc == 0 && i < w->nopened; i++) /* committed: they stay */
        if ((rc = dbi_add(e, w->opened[i].wf, w->opened[i].len, w->opened[i].dbi, 1)) != 0)
            rc = 0; /* not cached: opened again next time */
    w->nopened = 0;
    return rc; /* a failed commit has closed them, as an abort does */
abort:
    mdb_txn_abort(w->txn);
    w->nopened = 0;
    return rc;
}

/* One write transaction: the records q[0..n), then o (may be NULL). 0, an
 * LMDB code (the transaction was aborted), FF_STALE (w->stale names the
 * workflow), FF_RETRY, FF_DAMAGED, or FF_BROKEN: a fault cut the
 * transaction short, and LMDB cannot undo one (its cursors on this
 * thread's stack are still linked into the transaction), so the
 * environment must never write again; the reason is in msg. */
static int write_attempt(env *e, struct wtx *w, const char *q, size_t n, struct wop *o, char *msg,
                         size_t msglen) {
    volatile int held = 0;
    w->e = e;
    w->held = &held;
    w->nopened = 0;
    w->stale = NULL;
    w->skipped = NULL;
    int exclusive = o != NULL && o->kind == OP_DROP; /* mdb_drop closes a handle */
    if (exclusive)
        pthread_rwlock_wrlock(&e->resize);
    else
        pthread_rwlock_rdlock(&e->resize);
    ff_guard g;
    ff_guard_push(&g);
    if (sigsetjmp(g.jb, 0) != 0) {
        if (held)
            pthread_mutex_unlock(&e->openmu);
        pthread_rwlock_unlock(&e->resize);
        char what[256];
        fault_note(what, sizeof what, &g);
        snprintf(msg, msglen,
                 "the storage file is damaged (%s, while writing); this process writes nothing "
                 "more to it: check it with 'fflua store check %s' and repair it with 'fflua "
                 "store repair %s'",
                 what, e->path, e->path);
        return FF_BROKEN;
    }
    int rc = write_body(w, q, n, o);
    ff_guard_pop(&g);
    if (held)
        pthread_mutex_unlock(&e->openmu);
    pthread_rwlock_unlock(&e->resize);
    return rc;
}

/* Closes a stale handle, so that the next attempt opens it again. */
static void close_stale(env *e, const char *wf, size_t len) {
    pthread_rwlock_wrlock(&e->resize); /* no transaction is using it */
    pthread_mutex_lock(&e->openmu);
    MDB_dbi dbi;
    if (dbi_lookup(e, wf, len, &dbi, NULL)) {
        mdb_dbi_close(e->mdb, dbi);
        dbi_forget(e, wf, len);
        e->opens++;
    }
    pthread_mutex_unlock(&e->openmu);
    pthread_rwlock_unlock(&e->resize);
}

/* Why a commit failed, in words. LMDB reports a write cut short by a full
 * disk as EIO: the free space tells which it was. */
static void commit_msg(env *e, int rc, char *msg, size_t msglen) {
    struct statvfs vfs;
    if (rc == EIO && statvfs(e->path, &vfs) == 0 &&
        (uint64_t)vfs.f_bavail * vfs.f_frsize < ((uint64_t)16 << 20)) {
        snprintf(msg, msglen, "cannot commit results to '%s': %s (%llu KiB free)", e->path,
                 strerror(ENOSPC),
                 (unsigned long long)((uint64_t)vfs.f_bavail * vfs.f_frsize / 1024));
        return;
    }
    if (rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND || rc == MDB_PAGE_FULL ||
        rc == MDB_BAD_TXN || rc == MDB_INCOMPATIBLE) {
        snprintf(msg, msglen,
                 "cannot commit results to '%s': the storage file is damaged (%s): check it "
                 "with 'fflua store check %s' and repair it with 'fflua store repair %s'",
                 e->path, mdb_strerror(rc), e->path, e->path);
        return;
    }
    if (rc == FF_DEAD) {
        pthread_mutex_lock(&e->mu);
        snprintf(msg, msglen, "%s", e->nowrite_msg);
        pthread_mutex_unlock(&e->mu);
        return;
    }
    snprintf(msg, msglen, "cannot commit results to '%s': %s", e->path, mdb_strerror(rc));
}

/* Writes a batch (and o) in one transaction, growing the map, adopting
 * another process's map size and reopening stale handles as needed. The
 * records of a workflow whose tree fails its check are left out, the rest
 * is written, and *partial says so (with the reason in msg). */
static int commit(env *e, const char *q, size_t n, struct wop *o, char *msg, size_t msglen,
                  int *partial) {
    struct wtx w = {0};
    int rc = 0;
    *partial = 0;
    for (int attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
        rc = write_attempt(e, &w, q, n, o, msg, msglen);
        if (rc == MDB_MAP_RESIZED || rc == MDB_MAP_FULL) {
            /* Grow (or follow another process's growth), then write the
             * whole batch again: the aborted transaction left nothing. */
            if ((rc = remap(e, rc == MDB_MAP_FULL)) != 0)
                break;
        } else if (rc == FF_STALE) {
            close_stale(e, w.stale, w.stale_len);
        } else if (rc == FF_DAMAGED && w.stale != NULL) {
            refuse(e, w.stale, w.stale_len, w.why); /* its records are left out */
        } else if (rc != FF_RETRY) {
            break;
        }
    }
    free(w.opened);
    struct refused *r;
    if (rc == 0 && w.skipped != NULL && (r = find_refused(e, w.skipped, w.skipped_len)) != NULL) {
        refused_msg(e, r, msg, msglen);
        *partial = 1;
    } else if (rc == FF_STALE || rc == FF_RETRY) {
        snprintf(msg, msglen,
                 "cannot commit results to '%s': another process keeps removing the "
                 "workflow being written",
                 e->path);
    } else if (rc == FF_DAMAGED) {
        snprintf(msg, msglen,
                 "cannot commit results to '%s': the storage file is damaged (%s): nothing more "
                 "can be saved in it; repair it with 'fflua store repair %s'",
                 e->path, w.why, e->path);
    } else if (rc != 0 && rc != FF_BROKEN) {
        commit_msg(e, rc, msg, msglen);
    }
    return rc;
}

static void *committer(void *arg) {
    env *e = arg;
    char *spare = NULL;
    size_t spare_cap = 0;
    pthread_mutex_lock(&e->mu);
    for (;;) {
        while (!e->stop && e->qn == 0 && e->op == NULL)
            pthread_cond_wait(&e->wake, &e->mu);
        if (e->qn == 0 && e->op == NULL)
            break; /* stopped with nothing to do */
        /* Let records gather until FF_COMMIT_MS after the last commit. */
        uint64_t due = e->last_commit_ns + (uint64_t)FF_COMMIT_MS * 1000000u;
        while (!e->stop && !e->flushing && e->op == NULL && e->qn < QUEUE_EAGER) {
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
        /* Take the queue and the operation; leave the spare buffer for the
         * next records. */
        char *q = e->q;
        size_t n = e->qn, cap = e->qcap;
        uint64_t seq = e->put_seq;
        struct wop *o = e->op;
        e->q = spare;
        e->qcap = spare_cap;
        e->qn = 0;
        pthread_cond_broadcast(&e->done); /* room in the queue again */
        int nowrite = e->nowrite;
        pthread_mutex_unlock(&e->mu);
        char msg[sizeof e->commit_msg];
        int partial = 0, rc;
        if (nowrite)
            rc = FF_DEAD; /* reported below with the reason */
        else
            rc = commit(e, q, n, o, msg, sizeof msg, &partial);
        pthread_mutex_lock(&e->mu);
        if (nowrite)
            snprintf(msg, sizeof msg, "%s", e->nowrite_msg);
        spare = q;
        spare_cap = cap;
        e->committed_seq = seq;
        e->last_commit_ns = now_ns(CLOCK_MONOTONIC);
        if ((rc != 0 && n > 0) || partial) {
            e->err_seq++;
            e->commit_err = rc == 0 ? FFLUA_ECORRUPT : mdb_code(rc);
            memcpy(e->commit_msg, msg, sizeof msg);
        }
        if (o != NULL) {
            if (rc != 0) {
                o->rc = mdb_code(rc);
                memcpy(o->msg, msg, sizeof o->msg);
            }
            o->done = 1;
            e->op = NULL;
        }
        if (rc == FF_DAMAGED && !partial && !e->nowrite) /* the free list or main tree */
            set_nowrite(e, msg);
        if (rc == FF_BROKEN || rc == FF_DEAD || e->dead) {
            /* Leave: LMDB may not be called again for writing. The
             * thread's end releases LMDB's write lock (a robust mutex) for
             * the other processes. Nothing queued can be written. */
            if (rc == FF_BROKEN)
                e->broken = 1;
            set_nowrite(e, msg);
            e->committed_seq = e->put_seq;
            e->qn = 0;
            pthread_cond_broadcast(&e->done);
            break;
        }
        pthread_cond_broadcast(&e->done);
    }
    pthread_mutex_unlock(&e->mu);
    free(spare);
    return NULL;
}

/* Under e->mu. The committer runs with every signal blocked, so that a
 * signal meant for the program reaches another thread. */
static int start_committer(ff_store *s) {
    env *e = s->e;
    if (e->running)
        return 0;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&e->thread, NULL, committer, e);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        return seterr(s, -EAGAIN, "cannot start the storage's committer thread");
    e->running = 1;
    return 0;
}

/* --- open and close ------------------------------------------------------ */

static void env_free(env *e) {
    for (size_t i = 0; i < e->ndbis; i++)
        free(e->dbis[i].name);
    free(e->dbis);
    for (size_t i = 0; i < e->nrefused; i++)
        free(e->refused[i].name);
    free(e->refused);
    if (e->fmap != NULL)
        munmap((void *)e->fmap, e->fmap_len);
    free(e->q);
    free(e->path);
    pthread_mutex_destroy(&e->mu);
    pthread_mutex_destroy(&e->openmu);
    pthread_mutex_destroy(&e->dbimu);
    pthread_rwlock_destroy(&e->resize);
    pthread_cond_destroy(&e->wake);
    pthread_cond_destroy(&e->done);
    free(e);
}

/* out = dir "/" name; -1 (out empty) when it is too long for a path. */
static int path_in(char out[PATH_MAX], const char *dir, const char *name) {
    size_t d = strlen(dir), n = strlen(name);
    if (d + 1 + n >= PATH_MAX) {
        out[0] = '\0';
        return -1;
    }
    memcpy(out, dir, d);
    out[d] = '/';
    memcpy(out + d + 1, name, n + 1);
    return 0;
}

/* 0 when this process may write f, else the errno that says why not. */
static int no_write(const char *f) {
    return access(f, W_OK) == 0 ? 0 : errno;
}

/* How to open: read-only when the directory or data.mdb cannot be written,
 * and without the lock file when that cannot be written either (LMDB's
 * readers write their slot in it). */
static unsigned open_flags(const char *path, int *rdonly) {
    char f[PATH_MAX];
    unsigned flags = MDB_NOTLS;
    int en = no_write(path);
    if (en == 0 && path_in(f, path, "data.mdb") == 0 && access(f, F_OK) == 0)
        en = no_write(f);
    *rdonly = en == ENOENT ? 0 : en;
    if (*rdonly) {
        flags |= MDB_RDONLY;
        if (path_in(f, path, "lock.mdb") != 0 ||
            (access(f, F_OK) == 0 ? no_write(f) != 0 : no_write(path) != 0))
            flags |= MDB_NOLOCK;
    }
    return flags;
}

static int env_open(env **out, const char *path, struct stat *st, char *err, size_t errlen) {
    env *e = calloc(1, sizeof *e);
    if (e == NULL || (e->path = strdup(path)) == NULL) {
        free(e);
        snprintf(err, errlen, "not enough memory");
        return -ENOMEM;
    }
    pthread_mutex_init(&e->mu, NULL);
    pthread_mutex_init(&e->openmu, NULL);
    pthread_mutex_init(&e->dbimu, NULL);
    pthread_rwlock_init(&e->resize, NULL);
    pthread_cond_init(&e->wake, NULL);
    pthread_cond_init(&e->done, NULL);
    e->dev = st->st_dev;
    e->ino = st->st_ino;
    e->pid = getpid();
    e->gen = fork_gen;
    e->refs = 1;
    unsigned flags = open_flags(path, &e->rdonly);
    int rc = mdb_env_create(&e->mdb);
    if (rc == 0)
        rc = mdb_env_set_maxdbs(e->mdb, MAX_DBS);
    if (rc == 0)
        rc = mdb_env_set_maxreaders(e->mdb, 510);
    if (rc == 0)
        rc = mdb_env_set_mapsize(e->mdb, INITIAL_MAP);
    if (rc == 0)
        rc = mdb_env_set_assert(e->mdb, on_assert);
    if (rc == 0)
        rc = g_env_open(e->mdb, path, flags);
    MDB_stat ms;
    if (rc == 0)
        rc = mdb_env_stat(e->mdb, &ms);
    if (rc == 0)
        rc = mdb_env_get_fd(e->mdb, &e->fd);
    if (rc != 0) {
        if (rc == MDB_INVALID || rc == MDB_CORRUPTED || rc == MDB_VERSION_MISMATCH)
            snprintf(err, errlen,
                     "cannot open the storage '%s': %s (is it damaged? 'fflua store "
                     "repair' cannot help when the file's header is unreadable)",
                     path, mdb_strerror(rc));
        else
            snprintf(err, errlen, "cannot open the storage '%s': %s", path, mdb_strerror(rc));
        if (e->mdb != NULL)
            mdb_env_close(e->mdb);
        env_free(e);
        return mdb_code(rc);
    }
    e->psize = ms.ms_psize;
    if (!(flags & MDB_NOLOCK)) {
        int dead = 0;
        mdb_reader_check(e->mdb, &dead); /* readers left by killed processes */
    }
    e->last_commit_ns = now_ns(CLOCK_MONOTONIC);
    *out = e;
    return 0;
}

/* Makes directory path (mode 0755) and its missing parents (0777, both
 * less the umask), as mkdir -p; a directory another process makes at the
 * same time is fine. Returns 0, or -errno with err saying which directory
 * could not be made and why. */
static int make_dirs(const char *path, char *err, size_t errlen) {
    size_t n = strlen(path);
    char *p = malloc(n + 1);
    if (p == NULL) {
        snprintf(err, errlen, "not enough memory");
        return -ENOMEM;
    }
    memcpy(p, path, n + 1);
    while (n > 1 && p[n - 1] == '/') /* "a/b/" is "a/b" */
        p[--n] = '\0';
    int rc = 0;
    for (size_t i = 1; i <= n && rc == 0; i++) {
        if (i < n && (p[i] != '/' || p[i - 1] == '/'))
            continue;
        char c = p[i];
        p[i] = '\0';
        struct stat st;
        if (mkdir(p, i == n ? 0755 : 0777) != 0 && errno != EEXIST) {
            rc = -errno;
        } else if (stat(p, &st) != 0) {
            rc = -errno;
        } else if (!S_ISDIR(st.st_mode)) {
            rc = -ENOTDIR;
        }
        if (rc != 0)
            snprintf(err, errlen, "cannot make the directory '%s' for the storage '%s': %s", p,
                     path, strerror(-rc));
        p[i] = c;
    }
    free(p);
    return rc;
}

int ff_store_open(ff_store **out, const char *path, int create, char *err, size_t errlen) {
    *out = NULL;
    struct stat st;
    if (stat(path, &st) != 0) {
        int en = errno;
        if ((en == ENOENT || en == ENOTDIR) && create) { /* make_dirs names what is in the way */
            int rc = make_dirs(path, err, errlen);
            if (rc != 0)
                return rc;
            if (stat(path, &st) != 0) {
                en = errno;
                snprintf(err, errlen, "cannot open the storage '%s': %s", path, strerror(en));
                return -en;
            }
        } else {
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
    env *e;
    pid_t pid = getpid();
    for (;;) {
        env **pp = &envs.list;
        for (e = envs.list; e != NULL; e = e->next) {
            if (e->pid != pid || e->gen != fork_gen) { /* inherited: forget, never touch */
                *pp = e->next;
                continue;
            }
            if (e->dev == st.st_dev && e->ino == st.st_ino)
                break;
            pp = &e->next;
        }
        if (e == NULL || !e->closing)
            break;
        pthread_cond_wait(&envs.closed, &envs.mu); /* LMDB allows one env per file */
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
    pthread_mutex_lock(&e->mu);
    s->err_seen = e->err_seq; /* failures before this handle are not its own */
    pthread_mutex_unlock(&e->mu);
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

/* Ends a read transaction that LMDB failed in or a fault cut short: LMDB
 * refuses to go on with one, so it is aborted, not kept for renewal. */
static void read_kill(ff_store *s) {
    s->absent_len = 0;
    if (s->rtxn != NULL) {
        mdb_txn_abort(s->rtxn);
        s->rtxn = NULL;
    }
    if (s->ractive) {
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
    read_kill(s);
    int rc = e->rdonly ? 0 : ff_store_flush(s);
    pthread_mutex_lock(&envs.mu);
    int last = --e->refs == 0;
    if (last)
        e->closing = 1;
    pthread_mutex_unlock(&envs.mu);
    if (last) {
        pthread_mutex_lock(&e->mu);
        int running = e->running;
        e->stop = 1;
        pthread_cond_broadcast(&e->wake);
        pthread_mutex_unlock(&e->mu);
        if (running)
            pthread_join(e->thread, NULL);
        int keep = e->broken || e->dead; /* LMDB could not close it safely */
        pthread_mutex_lock(&envs.mu);
        if (keep) {
            e->closing = 0; /* stays, for good: a later open reuses it */
            e->running = 0;
            e->stop = 0;
        } else {
            env **pp = &envs.list;
            while (*pp != e)
                pp = &(*pp)->next;
            *pp = e->next;
        }
        pthread_cond_broadcast(&envs.closed);
        pthread_mutex_unlock(&envs.mu);
        if (!keep) {
            mdb_env_close(e->mdb);
            env_free(e);
        }
    }
    free(s);
    return rc;
}

/* --- writes -------------------------------------------------------------- */

static int check_key(ff_store *s, const char *wf, size_t wflen, const char *task, size_t tlen) {
    if (wflen == 0 || wflen > FF_STORE_WF_MAX || memchr(wf, '\0', wflen) != NULL)
        return seterr(s, -EINVAL, "bad workflow name (1 to %d bytes, no NUL)", FF_STORE_WF_MAX);
    char name[80];
    if (tlen == 0 || tlen > FF_STORE_TASK_MAX)
        return seterr(s, -EINVAL, "bad task name '%s' (%zu bytes; 1 to %d allowed)",
                      ff_text_escape(name, sizeof name, task, tlen), tlen, FF_STORE_TASK_MAX);
    return 0;
}

/* Queues a record with the given header fields. */
static int put_record(ff_store *s, const char *wf, size_t wflen, const char *task, size_t tlen,
                      const uint8_t fp[FF_FP_LEN], uint64_t stored_ns, uint64_t compute_ns,
                      const char *val, size_t len) {
    int rc = usable(s);
    if (rc == 0)
        rc = check_key(s, wf, wflen, task, tlen);
    if (rc != 0)
        return rc;
    if (len > MAX_VALUE)
        return seterr(s, -EFBIG,
                      "a result of %zu bytes is larger than a storage can hold "
                      "(4 GiB less %d bytes)",
                      len, FF_REC_HDR);
    ff_store_read_end(s);
    env *e = s->e;
    struct qrec r = {(uint32_t)wflen, (uint32_t)tlen, FF_REC_HDR + (uint64_t)len};
    size_t need = qrec_size(&r);
    pthread_mutex_lock(&e->mu);
    while (e->qn >= QUEUE_HIGH && !e->nowrite)
        pthread_cond_wait(&e->done, &e->mu); /* let the committer catch up */
    if ((rc = refuse_write(s)) != 0 || (rc = start_committer(s)) != 0) {
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
    if (len > 0)
        memcpy(h + FF_REC_HDR, val, len);
    rec_header(h, wf, wflen, task, tlen, fp, stored_ns, compute_ns, len);
    if (e->qn == 0 || e->qn + need >= QUEUE_EAGER)
        pthread_cond_signal(&e->wake);
    e->qn += need;
    e->put_seq++;
    pthread_mutex_unlock(&e->mu);
    return 0;
}

int ff_store_put(ff_store *s, const char *wf, size_t wflen, const char *task, size_t tlen,
                 const uint8_t fp[FF_FP_LEN], uint64_t compute_ns, const char *val, size_t len) {
    return put_record(s, wf, wflen, task, tlen, fp, now_ns(CLOCK_REALTIME), compute_ns, val, len);
}

int ff_store_flush(ff_store *s) {
    if (s->e->gen != fork_gen)
        return usable(s);
    ff_store_read_end(s);
    env *e = s->e;
    pthread_mutex_lock(&e->mu);
    uint64_t target = e->put_seq;
    if (e->committed_seq < target && e->running) {
        e->flushing++;
        pthread_cond_signal(&e->wake);
        while (e->committed_seq < target)
            pthread_cond_wait(&e->done, &e->mu);
        e->flushing--;
    }
    int rc = 0;
    if (e->err_seq > s->err_seen) { /* a failure this handle has not reported */
        s->err_seen = e->err_seq;
        rc = seterr(s, e->commit_err, "%s", e->commit_msg);
    } else if (e->nowrite && !e->rdonly && e->committed_seq < e->put_seq) {
        rc = seterr(s, FFLUA_ECORRUPT, "%s", e->nowrite_msg);
    }
    pthread_mutex_unlock(&e->mu);
    return rc;
}

/* Hands o to the committer and waits for it. */
static int write_op(ff_store *s, struct wop *o) {
    int rc = usable(s);
    if (rc != 0)
        return rc;
    ff_store_read_end(s);
    env *e = s->e;
    pthread_mutex_lock(&e->mu);
    while (e->op != NULL && !e->nowrite)
        pthread_cond_wait(&e->done, &e->mu); /* one operation at a time */
    if ((rc = refuse_write(s)) == 0 && (rc = start_committer(s)) == 0) {
        o->done = 0;
        e->op = o;
        pthread_cond_signal(&e->wake);
        while (!o->done)
            pthread_cond_wait(&e->done, &e->mu);
        rc = o->rc;
        if (rc != 0 && rc != FFLUA_ENOTFOUND)
            seterr(s, rc, "%s", o->msg);
    }
    pthread_mutex_unlock(&e->mu);
    return rc;
}

int ff_store_del(ff_store *s, const char *wf, size_t wflen, const char *task, size_t tlen) {
    ff_key k = {task, tlen};
    struct wop o = {.kind = OP_DEL, .wf = wf, .wflen = wflen, .keys = &k, .n = 1};
    return write_op(s, &o);
}

int ff_store_drop(ff_store *s, const char *wf, size_t wflen) {
    struct wop o = {.kind = OP_DROP, .wf = wf, .wflen = wflen};
    return write_op(s, &o);
}

int ff_store_del_many(ff_store *s, const char *wf, size_t wflen, const ff_key *keys, size_t n) {
    if (n == 0)
        return usable(s);
    struct wop o = {.kind = OP_DEL_MANY, .wf = wf, .wflen = wflen, .keys = keys, .n = n};
    return write_op(s, &o);
}

int ff_store_poke(ff_store *s, const char *wf, size_t wflen, const char *task, size_t tlen,
                  size_t offset, uint8_t mask) {
    ff_key k = {task, tlen};
    struct wop o = {.kind = OP_POKE,
                    .wf = wf,
                    .wflen = wflen,
                    .keys = &k,
                    .n = 1,
                    .offset = offset,
                    .mask = mask};
    return write_op(s, &o);
}

/* --- reads --------------------------------------------------------------- */

/* Begins (renews) the handle's read transaction, following another
 * process's growth of the map a few times at most. */
static int read_begin(ff_store *s) {
    if (s->ractive)
        return 0;
    env *e = s->e;
    for (int tries = 0;; tries++) {
        pthread_rwlock_rdlock(&e->resize);
        int rc =
            s->rtxn ? mdb_txn_renew(s->rtxn) : mdb_txn_begin(e->mdb, NULL, MDB_RDONLY, &s->rtxn);
        if (rc == 0) {
            s->ractive = 1;
            read_span(s);
            return 0;
        }
        pthread_rwlock_unlock(&e->resize);
        if (s->rtxn != NULL) {
            mdb_txn_abort(s->rtxn);
            s->rtxn = NULL;
        }
        if (rc != MDB_MAP_RESIZED || tries == MAX_REMAPS)
            return rc;
        if ((rc = remap(e, 0)) != 0)
            return rc == EINVAL ? MDB_MAP_RESIZED : rc;
    }
}

/* A read that could not be done: the text for errmsg. */
static int read_fail(ff_store *s, int rc) {
    if (rc == FF_DEAD)
        return usable(s);
    return seterr(s, mdb_code(rc), "cannot read '%s': %s", s->e->path,
                  rc == MDB_MAP_RESIZED ? "another process grew its file, and this process "
                                          "cannot follow: open it again"
                                        : mdb_strerror(rc));
}

/* The handle of an existing workflow database, valid in the active read
 * transaction: a handle opened after the transaction began (by this call,
 * another thread or the committer) is not, so the transaction is renewed
 * and the handle looked up again (earlier records' pointers go stale,
 * which callers allow for). */
static int dbi_get(ff_store *s, const char *wf, size_t wflen, MDB_dbi *out) {
    env *e = s->e;
    if (s->absent_len == wflen && memcmp(s->absent, wf, wflen) == 0)
        return MDB_NOTFOUND;
    for (int tries = 0;; tries++) {
        MDB_dbi dbi;
        int rc = 0;
        if (!dbi_lookup(e, wf, wflen, &dbi, NULL)) {
            rc = dbi_open_read(e, wf, wflen, &dbi, s->fault, sizeof s->fault);
            if (rc == MDB_NOTFOUND && wflen <= sizeof s->absent) {
                memcpy(s->absent, wf, wflen);
                s->absent_len = wflen;
            }
            if (rc != 0)
                return rc;
        }
        unsigned flags;
        if (mdb_dbi_flags(s->rtxn, dbi, &flags) == 0) {
            *out = dbi;
            return 0;
        }
        if (tries == 3)
            return FF_RETRY;
        ff_store_read_end(s);
        if ((rc = read_begin(s)) != 0)
            return rc;
    }
}

/* An entry read from a database so that nothing read from it later can
 * fault: the key copied, and a record checked (its checksum reads every
 * byte of it). */
struct entry {
    char key[FF_STORE_TASK_MAX];
    size_t klen;
    ff_rec rec;
    int rc_rec; /* check_rec's result */
};

/* One read under a guard: mdb_get of en->key when c is NULL, else a cursor
 * step; then the key copied and, when wf is given, the record checked.
 * Returns 0, MDB_NOTFOUND, an LMDB code (MDB_CORRUPTED for a key no
 * record can have), or FF_FAULT with the reason in s->fault. */
static int g_read(ff_store *s, MDB_dbi dbi, MDB_cursor *c, MDB_cursor_op op, const char *wf,
                  size_t wflen, struct entry *en) {
    ff_guard g;
    ff_guard_push(&g);
    if (sigsetjmp(g.jb, 0) != 0) {
        fault_note(s->fault, sizeof s->fault, &g);
        return FF_FAULT;
    }
    MDB_val k = {en->klen, en->key}, v;
    int rc = c != NULL ? mdb_cursor_get(c, &k, &v, op) : mdb_get(s->rtxn, dbi, &k, &v);
    if (rc == 0 && (k.mv_size == 0 || k.mv_size > FF_STORE_TASK_MAX))
        rc = MDB_CORRUPTED;
    if (rc == 0) {
        memmove(en->key, k.mv_data, k.mv_size);
        en->klen = k.mv_size;
        if (wf != NULL)
            en->rc_rec = check_rec(s, wf, wflen, en->key, en->klen, &v, &en->rec);
    }
    ff_guard_pop(&g);
    return rc;
}

/* A read that LMDB failed or a fault cut short: the transaction ends, and
 * the record is damaged, with the reason in rec->why. */
static int read_damage(ff_store *s, ff_rec *rec, int rc, const char *where) {
    read_kill(s);
    snprintf(s->why, sizeof s->why, "the file is damaged where %s is kept (%s)", where,
             lmdb_text(rc, s->fault));
    rec->why = s->why;
    seterr(s, FFLUA_ECORRUPT, "%s", s->why);
    return FFLUA_ECORRUPT;
}

int ff_store_get(ff_store *s, const char *wf, size_t wflen, const char *task, size_t tlen,
                 ff_rec *rec) {
    int rc = usable(s);
    if (rc != 0)
        return rc;
    memset(rec, 0, sizeof *rec);
    rec->len = SIZE_MAX;
    if (tlen == 0 || tlen > FF_STORE_TASK_MAX)
        return FFLUA_ENOTFOUND;
    if ((rc = read_begin(s)) != 0)
        return read_fail(s, rc);
    MDB_dbi dbi;
    rc = dbi_get(s, wf, wflen, &dbi);
    if (rc == MDB_NOTFOUND || rc == EINVAL)
        return FFLUA_ENOTFOUND;
    if (is_damage(rc))
        return read_damage(s, rec, rc, "the workflow");
    if (rc != 0) {
        read_kill(s);
        return read_fail(s, rc);
    }
    struct entry en;
    memcpy(en.key, task, tlen);
    en.klen = tlen;
    rc = g_read(s, dbi, NULL, 0, wf, wflen, &en);
    if (rc == MDB_NOTFOUND)
        return FFLUA_ENOTFOUND;
    if (is_damage(rc)) {
        dbi_set_verified(s->e, wf, wflen, 0); /* checked again before a write */
        return read_damage(s, rec, rc, "it");
    }
    if (rc != 0) {
        read_kill(s);
        return read_fail(s, rc);
    }
    *rec = en.rec;
    return en.rc_rec;
}

/* --- scans --------------------------------------------------------------- */

/* A scan of one database: every readable entry in key order, around any
 * damage. A forward pass reads until the end or until LMDB fails or a
 * fault stops it; then a backward pass from the last entry reads what lies
 * after the damage. Keys must keep their order, or the pass stops there
 * too (a damaged tree could otherwise lead a cursor in circles). */
struct scan {
    ff_store *s;
    MDB_dbi dbi;
    const char *wf; /* the workflow, to check records; NULL: the main db */
    size_t wflen;
    ff_store_each_fn fn;
    void *ud;
    int stopped;                  /* fn asked to stop */
    int damaged;                  /* the first damage's code, 0 when none */
    int failed;                   /* an error that is not damage */
    char last[FF_STORE_TASK_MAX]; /* the last key delivered */
    size_t last_len;
    int have_last;
};

static int key_cmp(const char *a, size_t al, const char *b, size_t bl) {
    int c = memcmp(a, b, al < bl ? al : bl);
    return c != 0 ? c : (al > bl) - (al < bl);
}

/* Delivers an entry (outside every guard). */
static void scan_deliver(struct scan *sc, const struct entry *en) {
    if (sc->wf != NULL) {
        sc->stopped = sc->fn(sc->ud, en->key, en->klen, &en->rec) != 0;
    } else if (en->klen > WF_PREFIX_LEN && memcmp(en->key, WF_PREFIX, WF_PREFIX_LEN) == 0) {
        /* the main db: workflow databases only */
        sc->stopped = sc->fn(sc->ud, en->key + WF_PREFIX_LEN, en->klen - WF_PREFIX_LEN, NULL) != 0;
    }
}

/* What stopped a pass: damage is noted (the first), other errors too. */
static void scan_note(struct scan *sc, int rc) {
    if (!is_damage(rc)) {
        if (sc->failed == 0)
            sc->failed = rc;
        return;
    }
    if (sc->damaged == 0) {
        sc->damaged = rc;
        snprintf(sc->s->why, sizeof sc->s->why, "a part of the file cannot be read (%s)",
                 rc == MDB_CORRUPTED ? "keys out of order, or a key of a wrong size"
                                     : lmdb_text(rc, sc->s->fault));
    }
}

/* The handle to scan in a (re)begun transaction: the main db's, or the
 * workflow's looked up again (a handle may have been closed and its number
 * reused while no transaction was active). */
static int scan_dbi(struct scan *sc) {
    if (sc->wf == NULL)
        return mdb_dbi_open(sc->s->rtxn, NULL, 0, &sc->dbi);
    return dbi_get(sc->s, sc->wf, sc->wflen, &sc->dbi);
}

/* The forward pass. */
static void scan_forward(struct scan *sc) {
    ff_store *s = sc->s;
    MDB_cursor *c = NULL;
    struct entry en;
    int rc = g_cursor_open(s->rtxn, sc->dbi, &c, s->fault, sizeof s->fault);
    for (MDB_cursor_op op = MDB_FIRST; rc == 0 && !sc->stopped; op = MDB_NEXT) {
        en.klen = 0;
        rc = g_read(s, sc->dbi, c, op, sc->wf, sc->wflen, &en);
        if (rc != 0)
            break;
        if (sc->have_last && key_cmp(en.key, en.klen, sc->last, sc->last_len) <= 0) {
            rc = MDB_CORRUPTED;
            break;
        }
        memcpy(sc->last, en.key, en.klen);
        sc->last_len = en.klen;
        sc->have_last = 1;
        scan_deliver(sc, &en);
    }
    if (c != NULL)
        mdb_cursor_close(c);
    if (rc != 0 && rc != MDB_NOTFOUND) {
        scan_note(sc, rc);
        read_kill(s);
    }
}

/* The backward pass, after damage: collects the keys after the last one
 * delivered, from the end down, then reads and delivers them in order. */
static void scan_backward(struct scan *sc) {
    ff_store *s = sc->s;
    int rc = read_begin(s);
    if (rc == 0)
        rc = scan_dbi(sc);
    if (rc != 0) {
        scan_note(sc, rc);
        return;
    }
    MDB_cursor *c = NULL;
    char *keys = NULL; /* each key's length (a size_t), then its bytes */
    size_t nkeys = 0, used = 0, cap = 0;
    size_t prev = SIZE_MAX, prev_len = 0; /* the previous key, in keys */
    struct entry en;
    rc = g_cursor_open(s->rtxn, sc->dbi, &c, s->fault, sizeof s->fault);
    for (MDB_cursor_op op = MDB_LAST; rc == 0; op = MDB_PREV) {
        en.klen = 0;
        if ((rc = g_read(s, sc->dbi, c, op, NULL, 0, &en)) != 0)
            break;
        if (sc->have_last && key_cmp(en.key, en.klen, sc->last, sc->last_len) <= 0)
            break; /* reached what the forward pass read */
        if (prev != SIZE_MAX && key_cmp(en.key, en.klen, keys + prev, prev_len) >= 0)
            break;
        if (cap - used < sizeof(size_t) + en.klen) {
            size_t ncap = cap ? cap * 2 : 4096;
            char *nk = realloc(keys, ncap);
            if (nk == NULL) {
                sc->failed = ENOMEM;
                break;
            }
            keys = nk;
            cap = ncap;
        }
        memcpy(keys + used, &en.klen, sizeof(size_t));
        memcpy(keys + used + sizeof(size_t), en.key, en.klen);
        prev = used + sizeof(size_t);
        prev_len = en.klen;
        used += sizeof(size_t) + en.klen;
        nkeys++;
    }
    if (c != NULL)
        mdb_cursor_close(c);
    if (rc != 0 && rc != MDB_NOTFOUND && !is_damage(rc))
        scan_note(sc, rc);
    /* Deliver in ascending order: the collected keys from the last. */
    size_t *offs = nkeys ? malloc(nkeys * sizeof *offs) : NULL;
    if (nkeys > 0 && offs == NULL)
        sc->failed = ENOMEM;
    for (size_t i = 0, o = 0; offs != NULL && i < nkeys; i++) {
        offs[i] = o;
        size_t len;
        memcpy(&len, keys + o, sizeof len);
        o += sizeof(size_t) + len;
    }
    for (size_t i = nkeys; offs != NULL && i-- > 0 && !sc->stopped && s->ractive;) {
        memcpy(&en.klen, keys + offs[i], sizeof(size_t));
        memcpy(en.key, keys + offs[i] + sizeof(size_t), en.klen);
        rc = g_read(s, sc->dbi, NULL, 0, sc->wf, sc->wflen, &en);
        if (rc == 0)
            scan_deliver(sc, &en);
        else if (rc != MDB_NOTFOUND)
            read_kill(s);
    }
    free(offs);
    free(keys);
}

static int scan_run(struct scan *sc, const char *what) {
    ff_store *s = sc->s;
    scan_forward(sc);
    if (sc->damaged && !sc->stopped && !sc->failed)
        scan_backward(sc);
    ff_store_read_end(s);
    if (sc->failed)
        return read_fail(s, sc->failed);
    if (!sc->damaged)
        return 0;
    if (sc->wf != NULL)
        dbi_set_verified(s->e, sc->wf, sc->wflen, 0);
    if (sc->have_last) {
        char key[128];
        const char *k = sc->last;
        size_t kl = sc->last_len;
        if (sc->wf == NULL && kl > WF_PREFIX_LEN) { /* the main db: the workflow's name */
            k += WF_PREFIX_LEN;
            kl -= WF_PREFIX_LEN;
        }
        return seterr(s, FFLUA_ECORRUPT, "%s is damaged after '%s': %s", what,
                      ff_text_escape(key, sizeof key, k, kl), s->why);
    }
    return seterr(s, FFLUA_ECORRUPT, "%s is damaged: %s", what, s->why);
}

int ff_store_each(ff_store *s, const char *wf, size_t wflen, ff_store_each_fn fn, void *ud) {
    int rc = usable(s);
    if (rc != 0)
        return rc;
    if ((rc = read_begin(s)) != 0)
        return read_fail(s, rc);
    struct scan sc = {.s = s, .wf = wf, .wflen = wflen, .fn = fn, .ud = ud};
    rc = scan_dbi(&sc);
    if (rc == MDB_NOTFOUND || rc == EINVAL) {
        ff_store_read_end(s);
        return FFLUA_ENOTFOUND;
    }
    if (rc != 0) {
        read_kill(s);
        if (!is_damage(rc))
            return read_fail(s, rc);
        return seterr(s, FFLUA_ECORRUPT, "the list of workflows is damaged (%s)",
                      lmdb_text(rc, s->fault));
    }
    char what[128], name[100];
    snprintf(what, sizeof what, "workflow '%s'", ff_text_escape(name, sizeof name, wf, wflen));
    return scan_run(&sc, what);
}

int ff_store_workflows(ff_store *s, ff_store_each_fn fn, void *ud) {
    int rc = usable(s);
    if (rc != 0)
        return rc;
    if ((rc = read_begin(s)) != 0)
        return read_fail(s, rc);
    struct scan sc = {.s = s, .fn = fn, .ud = ud};
    scan_dbi(&sc);
    return scan_run(&sc, "the list of workflows");
}

/* --- checking the whole file --------------------------------------------- */

struct problem {
    char *wf; /* NULL: not a workflow's */
    size_t wflen;
    char why[256];
};

struct vwf {
    const unsigned char *name;
    size_t len;
    ff_vdb db;
};

struct vcheck {
    ff_vfile f;
    uint64_t txnid;
    struct problem *v;
    size_t n, cap;
    /* The workflows' trees, from the main tree: names point into the
     * mapping. */
    struct vwf *wfs;
    size_t nwfs, capwfs;
    int oom;
};

static void add_problem(struct vcheck *c, const unsigned char *wf, size_t wflen, const char *why) {
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 8;
        struct problem *v = realloc(c->v, cap * sizeof *v);
        if (v == NULL) {
            c->oom = 1;
            return;
        }
        c->v = v;
        c->cap = cap;
    }
    struct problem *p = &c->v[c->n];
    p->wf = NULL;
    p->wflen = wflen;
    if (wf != NULL && (p->wf = malloc(wflen ? wflen : 1)) == NULL) {
        c->oom = 1;
        return;
    }
    if (wf != NULL)
        memcpy(p->wf, wf, wflen);
    snprintf(p->why, sizeof p->why, "%s", why);
    c->n++;
}

static const char *main_entry(void *ud, const unsigned char *key, size_t klen,
                              const unsigned char *data, size_t dlen) {
    struct vcheck *c = ud;
    if (klen <= WF_PREFIX_LEN || memcmp(key, WF_PREFIX, WF_PREFIX_LEN) != 0)
        return NULL; /* not a workflow: not ours, left alone */
    ff_vdb db;
    if (ff_verify_db(data, dlen, &db) != 0)
        return "a workflow's record of the wrong size";
    if (c->nwfs == c->capwfs) {
        size_t cap = c->capwfs ? c->capwfs * 2 : 16;
        struct vwf *v = realloc(c->wfs, cap * sizeof *v);
        if (v == NULL) {
            c->oom = 1;
            return NULL;
        }
        c->wfs = v;
        c->capwfs = cap;
    }
    c->wfs[c->nwfs++] = (struct vwf){key + WF_PREFIX_LEN, klen - WF_PREFIX_LEN, db};
    return NULL;
}

/* One step of the check (0: the meta pages, 1: the main tree, 2: the free
 * list, 3 + i: workflow i) under a guard of its own. 0, or -1 with why. */
static int vcheck_step(struct vcheck *c, size_t step, char *why, size_t wl) {
    ff_guard g;
    ff_guard_push(&g);
    if (sigsetjmp(g.jb, 0) != 0) {
        fault_note(why, wl, &g);
        return -1;
    }
    int rc;
    if (step == 0)
        rc = ff_verify_meta(&c->f, c->f.p, c->f.len, c->txnid, why, wl);
    else if (step == 1)
        rc = ff_verify_tree(&c->f, &c->f.main_db, FF_VTREE_MAIN, main_entry, c, why, wl);
    else if (step == 2)
        rc = ff_verify_free(&c->f, why, wl);
    else
        rc = ff_verify_tree(&c->f, &c->wfs[step - 3].db, FF_VTREE_RECORDS, NULL, NULL, why, wl);
    ff_guard_pop(&g);
    return rc;
}

int ff_store_verify(ff_store *s, ff_store_problem_fn fn, void *ud) {
    int rc = usable(s);
    if (rc != 0)
        return rc;
    /* A read transaction keeps the pages of its snapshot from being reused
     * while they are read, and says which snapshot LMDB reads. */
    if ((rc = read_begin(s)) != 0)
        return read_fail(s, rc);
    struct stat st;
    if (fstat(s->e->fd, &st) != 0) {
        rc = -errno;
        ff_store_read_end(s);
        return seterr(s, rc, "cannot check '%s': %s", s->e->path, strerror(-rc));
    }
    size_t len = (size_t)st.st_size;
    void *map = len > 0 ? mmap(NULL, len, PROT_READ, MAP_SHARED, s->e->fd, 0) : MAP_FAILED;
    if (map == MAP_FAILED) {
        rc = len > 0 ? -errno : -EINVAL;
        ff_store_read_end(s);
        return seterr(s, rc, "cannot check '%s': %s", s->e->path, strerror(-rc));
    }
    struct vcheck c = {0};
    c.f.p = map;
    c.f.len = len;
    c.txnid = mdb_txn_id(s->rtxn);
    char why[256];
    if (vcheck_step(&c, 0, why, sizeof why) != 0) {
        add_problem(&c, NULL, 0, why);
    } else if ((c.f.seen = calloc(c.f.file_pages / 8 + 1, 1)) == NULL) {
        c.oom = 1;
    } else {
        /* The trees first, so that the free list's check sees their pages. */
        if (vcheck_step(&c, 1, why, sizeof why) != 0)
            add_problem(&c, NULL, 0, why);
        for (size_t i = 0; i < c.nwfs; i++)
            if (vcheck_step(&c, 3 + i, why, sizeof why) != 0)
                add_problem(&c, c.wfs[i].name, c.wfs[i].len, why);
        if (vcheck_step(&c, 2, why, sizeof why) != 0) {
            char free_why[sizeof why + 20];
            snprintf(free_why, sizeof free_why, "the free list: %s", why);
            add_problem(&c, NULL, 0, free_why);
        }
    }
    free(c.f.seen);
    free(c.wfs);
    munmap(map, len);
    ff_store_read_end(s);
    for (size_t i = 0; i < c.n; i++) {
        if (fn != NULL)
            fn(ud, c.v[i].wf, c.v[i].wflen, c.v[i].why);
        free(c.v[i].wf);
    }
    free(c.v);
    if (c.oom)
        return seterr(s, -ENOMEM, "not enough memory to check '%s'", s->e->path);
    return c.n > 0 ? seterr(s, FFLUA_ECORRUPT, "the file is damaged") : 0;
}

/* --- repair -------------------------------------------------------------- */

/* The lock LMDB's processes hold while they have a storage open: a read
 * lock on the first byte of lock.mdb. */
static struct flock first_byte(short type) {
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = 0;
    fl.l_len = 1;
    return fl;
}

/* Another process that has the storage at path open, or 0. */
static pid_t lock_holder(const char *path) {
    char f[PATH_MAX];
    if (path_in(f, path, "lock.mdb") != 0)
        return 0;
    int fd = open(f, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    struct flock fl = first_byte(F_WRLCK);
    pid_t pid = 0;
    if (fcntl(fd, F_GETLK, &fl) == 0 && fl.l_type != F_UNLCK)
        pid = fl.l_pid > 0 ? fl.l_pid : 1;
    close(fd);
    return pid;
}

/* The transaction id of the newest meta page of the file at path, or 0. */
static uint64_t file_txnid(const char *path) {
    char f[PATH_MAX];
    uint64_t id = 0;
    if (path_in(f, path, "data.mdb") != 0)
        return 0;
    int fd = open(f, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    unsigned char buf[2 * 65536];
    ssize_t n = pread(fd, buf, sizeof buf, 0);
    close(fd);
    ff_vfile vf;
    char why[128];
    if (n > 0 && ff_verify_meta(&vf, buf, (size_t)n, 0, why, sizeof why) == 0)
        id = vf.txnid;
    return id;
}

struct names {
    char **v;
    size_t *len, n, cap;
};

static int names_add(void *ud, const char *name, size_t len, const ff_rec *rec) {
    struct names *ns = ud;
    (void)rec;
    if (ns->n == ns->cap) {
        size_t cap = ns->cap ? ns->cap * 2 : 16;
        char **v = realloc(ns->v, cap * sizeof *v);
        if (v != NULL)
            ns->v = v;
        size_t *l = realloc(ns->len, cap * sizeof *l);
        if (l != NULL)
            ns->len = l;
        if (v == NULL || l == NULL)
            return 1;
        ns->cap = cap;
    }
    if ((ns->v[ns->n] = malloc(len)) == NULL)
        return 1;
    memcpy(ns->v[ns->n], name, len);
    ns->len[ns->n++] = len;
    return 0;
}

struct copy {
    ff_store *dst;
    const char *wf;
    size_t wflen;
    ff_repair_lost_fn lost;
    void *ud;
    ff_repair_stats *st;
    int rc;
};

static int copy_one(void *ud, const char *task, size_t tlen, const ff_rec *rec) {
    struct copy *c = ud;
    if (!rec->ok) {
        c->st->lost++;
        if (c->lost)
            c->lost(c->ud, c->wf, c->wflen, task, tlen, rec->why);
        return 0;
    }
    c->rc = put_record(c->dst, c->wf, c->wflen, task, tlen, rec->fp, rec->stored_ns,
                       rec->compute_ns, rec->val, rec->len);
    if (c->rc != 0)
        return 1;
    c->st->kept++;
    return 0;
}

/* Puts the file made in tmp in place of path's, keeping the old one, then
 * has LMDB make its lock file anew for the new file. txnid: the old file's
 * newest transaction when the copy began; when it changed, another process
 * wrote meanwhile and the copy would lose that. */
static int repair_swap(const char *path, const char *tmp, uint64_t txnid, ff_repair_stats *st,
                       char *err, size_t errlen) {
    char old[PATH_MAX], fresh[PATH_MAX], lock[PATH_MAX], f[PATH_MAX];
    path_in(old, path, "data.mdb");
    path_in(fresh, tmp, "data.mdb");
    path_in(lock, path, "lock.mdb");
    /* Hold the lock every user of the storage holds a part of: no other
     * process may have it open from here to the end. */
    int lfd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    struct flock fl = first_byte(F_WRLCK);
    if (lfd < 0 || fcntl(lfd, F_SETLK, &fl) != 0) {
        pid_t holder = lock_holder(path);
        if (lfd >= 0)
            close(lfd);
        snprintf(err, errlen,
                 "the storage '%s' was opened by process %ld during the repair: "
                 "stop it and repair again",
                 path, (long)holder);
        return -EBUSY;
    }
    int rc = 0;
    if (file_txnid(path) != txnid) {
        snprintf(err, errlen,
                 "the storage '%s' was written to during the repair: stop every "
                 "process that uses it and repair again",
                 path);
        rc = -EBUSY;
        goto done;
    }
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    char stamp[32];
    strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", &tm);
    for (int i = 0;; i++) {
        if (i == 0)
            snprintf(st->kept_as, sizeof st->kept_as, "%s/data.mdb.damaged-%s", path, stamp);
        else
            snprintf(st->kept_as, sizeof st->kept_as, "%s/data.mdb.damaged-%s-%d", path, stamp, i);
        if (link(old, st->kept_as) == 0)
            break;
        if (errno != EEXIST || i == 100) {
            rc = -errno;
            snprintf(err, errlen, "cannot keep the damaged file as '%s': %s", st->kept_as,
                     strerror(-rc));
            goto done;
        }
    }
    /* The rename replaces the old file in one step: a reader sees the old
     * file or the new one, never none. */
    if (rename(fresh, old) != 0) {
        rc = -errno;
        snprintf(err, errlen, "cannot put the repaired file in place: %s", strerror(-rc));
        goto done;
    }
    path_in(f, tmp, "lock.mdb");
    unlink(f);
    rmdir(tmp);
    /* The lock file holds the old file's transaction id, which LMDB's
     * readers use to pick a meta page. Opening the new file while this
     * process holds the lock makes LMDB initialize it for the new file;
     * an open waiting meanwhile then finds it ready. */
    MDB_env *mdb;
    if (mdb_env_create(&mdb) == 0) {
        mdb_env_set_maxdbs(mdb, MAX_DBS);
        mdb_env_set_mapsize(mdb, INITIAL_MAP);
        g_env_open(mdb, path, MDB_NOTLS);
        mdb_env_close(mdb); /* also drops this process's locks on lock.mdb */
    }
done:
    close(lfd);
    return rc;
}

int ff_store_repair(const char *path, ff_repair_lost_fn lost, void *ud, ff_repair_stats *st,
                    char *err, size_t errlen) {
    memset(st, 0, sizeof *st);
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        snprintf(err, errlen, "'%s' is not a storage directory", path);
        return -ENOTDIR;
    }
    pid_t holder = lock_holder(path);
    if (holder != 0) {
        snprintf(err, errlen, "the storage '%s' is in use by process %ld: stop it first", path,
                 (long)holder);
        return -EBUSY;
    }
    pthread_mutex_lock(&envs.mu);
    int mine = 0;
    for (env *e = envs.list; e != NULL; e = e->next)
        mine |= e->dev == sb.st_dev && e->ino == sb.st_ino && e->pid == getpid();
    pthread_mutex_unlock(&envs.mu);
    if (mine) {
        snprintf(err, errlen, "the storage '%s' is open in this process: close it first", path);
        return -EBUSY;
    }
    char tmp[PATH_MAX], f[PATH_MAX];
    if (path_in(tmp, path, "repair.tmp") != 0 ||
        path_in(f, tmp, "data.mdb.damaged-YYYYmmdd-HHMMSS-NNN") != 0) {
        snprintf(err, errlen, "the path '%s' is too long to repair in place", path);
        return -ENAMETOOLONG;
    }
    uint64_t txnid = file_txnid(path);
    ff_store *src, *dst;
    int rc = ff_store_open(&src, path, 0, err, errlen);
    if (rc != 0)
        return rc;
    path_in(f, tmp, "data.mdb");
    unlink(f); /* left by an interrupted repair */
    path_in(f, tmp, "lock.mdb");
    unlink(f);
    if ((rc = ff_store_open(&dst, tmp, 1, err, errlen)) != 0) {
        ff_store_close(src);
        return rc;
    }
    struct names wfs = {0};
    int wrc = ff_store_workflows(src, names_add, &wfs);
    if (wrc == FFLUA_ECORRUPT && lost) {
        lost(ud, NULL, 0, NULL, 0, ff_store_errmsg(src));
    } else if (wrc != 0) {
        rc = wrc;
        snprintf(err, errlen, "cannot list the workflows of '%s': %s", path,
                 wrc == FFLUA_ENOTFOUND ? "not enough memory" : ff_store_errmsg(src));
    }
    for (size_t i = 0; i < wfs.n && rc == 0; i++) {
        struct copy c = {dst, wfs.v[i], wfs.len[i], lost, ud, st, 0};
        int erc = ff_store_each(src, wfs.v[i], wfs.len[i], copy_one, &c);
        if (c.rc != 0) {
            rc = c.rc;
            snprintf(err, errlen, "cannot write the repaired copy in '%s': %s", tmp,
                     ff_store_errmsg(dst));
        } else if (erc == FFLUA_ECORRUPT || erc == FFLUA_ENOTFOUND) {
            /* Damaged, or named in a damaged list but not there. */
            if (lost)
                lost(ud, wfs.v[i], wfs.len[i], NULL, 0,
                     erc == FFLUA_ECORRUPT ? ff_store_errmsg(src)
                                           : "its records cannot be found (a damaged name?)");
        } else if (erc != 0) {
            rc = erc;
            snprintf(err, errlen, "cannot read '%s': %s", path, ff_store_errmsg(src));
        }
        st->workflows++;
    }
    for (size_t i = 0; i < wfs.n; i++)
        free(wfs.v[i]);
    free(wfs.v);
    free(wfs.len);
    int frc = ff_store_flush(dst);
    if (rc == 0 && frc != 0) {
        rc = frc;
        snprintf(err, errlen, "cannot write the repaired copy in '%s': %s", tmp,
                 ff_store_errmsg(dst));
    }
    ff_store_close(dst);
    ff_store_close(src);
    if (rc == 0)
        rc = repair_swap(path, tmp, txnid, st, err, errlen);
    return rc;
}
