/*
 * store.h: results on disk, in LMDB. Works on bytes; knows nothing of Lua.
 *
 * One LMDB environment per storage directory, one named database per
 * workflow ("wf:<name>"), one record per task:
 *
 *   0  "ffr2"        magic (format 2)
 *   4  u32 flags     0
 *   8  16 bytes      fingerprint
 *   24 u64           stored at (ns since the epoch)
 *   32 u64           compute time (ns)
 *   40 u64           checksum of the key and the record (see below)
 *   48 payload       the codec's bytes
 *
 * The checksum is a chain of XXH3-64 hashes, each seeded by the one
 * before, starting from wflen << 32 | tlen: of the workflow's name, the
 * task's name, bytes 0..40 and the payload. It covers the key, so a record
 * proves which key it belongs to: a damaged key is a checksum mismatch,
 * never another task's value. Records of format 1 ("ffr1", whose
 * checksum left the key out) are reported as unusable.
 *
 * Writes are queued and committed in groups by a committer thread (one per
 * environment): at most 100 ms after a result was queued, at once on
 * ff_store_flush, and never one transaction per record. Deletes and drops
 * run on the committer thread too, so every write transaction of a process
 * is made by that one thread. Reads see committed data only. The map grows
 * when full. An environment is shared by every handle on the same directory
 * in a process (LMDB forbids opening one twice); it is never used in a
 * process it was inherited by through fork().
 *
 * Damaged files. LMDB trusts its file; the store does not: every size LMDB
 * returns is checked against the part of the map the file holds, every
 * LMDB call that reads pages runs under a guard (guard.h), and an LMDB error
 * or fault while reading makes that record (or the rest of a scan) damaged,
 * never the process dead. A fault inside a write transaction leaves LMDB in
 * a state that cannot be undone, so that environment refuses every later
 * write in the process (reads go on) and ff_store_check/ff_store_repair are
 * the way back.
 *
 * A directory, or files, this process may not write are opened read-only
 * (without LMDB's lock file when that cannot be written either); writes to
 * it fail at once.
 *
 * A handle is used by one thread at a time; distinct handles may be used by
 * distinct threads.
 */
#ifndef FFLUA_STORE_H
#define FFLUA_STORE_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#define FF_REC_HDR 48
#define FF_FP_LEN 16
#define FF_COMMIT_MS 100
/* The longest names: a task's name is an LMDB key and a workflow's is the
 * name of a database ("wf:" + name), and LMDB's keys have at most 511
 * bytes (mdb_env_get_maxkeysize). Names hold no NUL (workflows) and are
 * never empty. */
#define FF_STORE_TASK_MAX 511
#define FF_STORE_WF_MAX 508
/* Tasks whose name starts with a zero byte are fflua's own, not results:
 * the records of a workflow's runs ("\0run\0" + 20 digits: the run's start,
 * ns since the epoch). Node names never hold a zero byte, and listings
 * leave these out. */
#define FF_STORE_INTERNAL(task, tlen) ((tlen) > 0 && (task)[0] == '\0')
#define FF_STORE_RUN_PREFIX "\0run\0"
#define FF_STORE_RUN_PREFIX_LEN 5

typedef struct ff_store ff_store;

typedef struct ff_rec {
    uint8_t fp[FF_FP_LEN];
    uint64_t stored_ns, compute_ns;
    const char *val; /* the payload: valid until ff_store_read_end */
    size_t len;      /* SIZE_MAX when the record is damaged */
    int ok;          /* header and checksum verified */
    /* When not ok: why, e.g. "checksum mismatch" (static or in the handle,
     * valid until the next call on it). */
    const char *why;
} ff_rec;

/* Opens the storage at path; when create is set, a missing directory is
 * made (0755) with its missing parents (0777), both less the umask.
 * On failure *out is NULL and the return value an error code; the message
 * is in err. */
int ff_store_open(ff_store **out, const char *path, int create, char *err, size_t errlen);
/* Commits what is queued, then closes. Returns the commit's result. */
int ff_store_close(ff_store *s);

const char *ff_store_path(const ff_store *s);
/* The message of the last failure on this handle. */
const char *ff_store_errmsg(const ff_store *s);
/* Whether the storage was opened read-only (see above). */
int ff_store_readonly(const ff_store *s);

/* Queues a record (copies everything). */
int ff_store_put(ff_store *s, const char *wf, size_t wflen, const char *task, size_t tlen,
                 const uint8_t fp[FF_FP_LEN], uint64_t compute_ns, const char *val, size_t len);
/* Commits every queued record now and waits for it. */
int ff_store_flush(ff_store *s);

/* Reads a record. 0: found and intact; FFLUA_ENOTFOUND; FFLUA_ECHECKSUM or
 * FFLUA_ECORRUPT: the record, or the part of the file that holds it, is
 * damaged (rec->why says how; rec->fp filled when the header is readable).
 * Other codes are failures of the storage itself (message in errmsg).
 * Keeps a read transaction open until ff_store_read_end, so that
 * consecutive reads are cheap and rec->val stays valid; never hold one
 * across anything that may wait for a commit. */
int ff_store_get(ff_store *s, const char *wf, size_t wflen, const char *task, size_t tlen,
                 ff_rec *rec);
void ff_store_read_end(ff_store *s);

/* Deletes a task (FFLUA_ENOTFOUND if absent); drops a workflow. Both
 * commit queued records first and are committed when they return. */
int ff_store_del(ff_store *s, const char *wf, size_t wflen, const char *task, size_t tlen);
int ff_store_drop(ff_store *s, const char *wf, size_t wflen);
/* Deletes several tasks in one transaction (absent ones are ignored). */
typedef struct ff_key {
    const char *p;
    size_t len;
} ff_key;
int ff_store_del_many(ff_store *s, const char *wf, size_t wflen, const ff_key *keys, size_t n);

/* Calls fn for every readable task of workflow wf in key order
 * (FFLUA_ENOTFOUND when the workflow does not exist). rec->val is valid
 * during the call; a damaged record has ok == 0 and why set. fn returns
 * nonzero to stop. When part of the workflow's tree is damaged, the tasks
 * on both sides of the damage are still delivered, and the return value is
 * FFLUA_ECORRUPT with the damage described in errmsg. */
typedef int (*ff_store_each_fn)(void *ud, const char *task, size_t tlen, const ff_rec *rec);
int ff_store_each(ff_store *s, const char *wf, size_t wflen, ff_store_each_fn fn, void *ud);
/* Calls fn(ud, name, len, NULL) for every workflow, in the same way. */
int ff_store_workflows(ff_store *s, ff_store_each_fn fn, void *ud);

/* Checks the structure of the whole file (verify.h): the free list, the
 * main tree and every workflow's tree, each page used once. Then calls fn
 * for each problem found (wf NULL: the free list, the main tree or the
 * file itself). Returns 0 when the file is sound, FFLUA_ECORRUPT when a
 * problem was found, other codes when it could not check. Records'
 * checksums are not read: ff_store_each does that. */
typedef void (*ff_store_problem_fn)(void *ud, const char *wf, size_t wflen, const char *why);
int ff_store_verify(ff_store *s, ff_store_problem_fn fn, void *ud);

/* Copies every readable, intact record of the storage at path into a new
 * file and puts it in place of the old one, which is kept beside it as
 * data.mdb.damaged-<time>. Refuses while another process has the storage
 * open. lost is called for each record left behind (wf, task, why; task is
 * NULL when a part of a workflow could not be read at all). */
typedef struct ff_repair_stats {
    size_t workflows, kept, lost;
    char kept_as[PATH_MAX]; /* where the old file is now */
} ff_repair_stats;
typedef void (*ff_repair_lost_fn)(void *ud, const char *wf, size_t wflen, const char *task,
                                  size_t tlen, const char *why);
int ff_store_repair(const char *path, ff_repair_lost_fn lost, void *ud, ff_repair_stats *st,
                    char *err, size_t errlen);

/* For tests: overwrite one byte of a stored payload in place (committed). */
int ff_store_poke(ff_store *s, const char *wf, size_t wflen, const char *task, size_t tlen,
                  size_t offset, uint8_t xor_mask);

/* The map size now (grows by itself). */
size_t ff_store_mapsize(ff_store *s);

#endif
