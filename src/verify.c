/*
 * verify.c: a checker of LMDB's data file (see verify.h).
 *
 * The layout read here is LMDB 0.9's, data format version 1, on a 64-bit
 * little-endian machine (the store refuses a file of another version, as
 * LMDB itself does):
 *
 *   page    u64 number, u16 pad, u16 flags, u16 lower, u16 upper (or u32
 *           count of pages for an overflow page), then u16 offsets of the
 *           nodes (from the page's start), growing up to lower; the nodes
 *           sit between upper and the page's end.
 *   node    u16 lo, u16 hi, u16 flags, u16 key size, key, data. In a leaf,
 *           lo | hi << 16 is the data's size, and the data is the value, or
 *           with F_BIGDATA the u64 number of its first overflow page. In a
 *           branch, lo | hi << 16 | flags << 32 is the child page, and the
 *           first node's key is ignored.
 *   meta    pages 0 and 1 after their header: u32 magic, u32 version, u64
 *           address, u64 map size, the free and main trees' records, u64
 *           last page, u64 transaction id; the one with the higher id is
 *           current.
 *   record  of a tree (48 bytes): u32 pad (the page size, in the free
 *           tree's), u16 flags, u16 depth, u64 branch, leaf and overflow
 *           page counts, u64 entries, u64 root (all ones: empty).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "verify.h"

#define PAGEHDR 16u
#define NODEHDR 8u
#define P_BRANCH 0x01u
#define P_LEAF 0x02u
#define P_OVERFLOW 0x04u
#define P_META 0x08u
#define F_BIGDATA 0x01u
#define F_SUBDATA 0x02u
#define MDB_MAGIC 0xBEEFC0DEu
#define DATA_VERSION 1u
#define P_INVALID UINT64_MAX
#define MAX_DEPTH 32u /* LMDB's cursor stack */
#define MAX_KEY 511u
#define DB_SIZE 48u

static uint16_t u16(const unsigned char *p) {
    uint16_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static uint32_t u32(const unsigned char *p) {
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static uint64_t u64(const unsigned char *p) {
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

int ff_verify_db(const void *p, size_t n, ff_vdb *db) {
    const unsigned char *b = p;
    if (n != DB_SIZE)
        return -1;
    db->flags = u16(b + 4);
    db->depth = u16(b + 6);
    db->branch = u64(b + 8);
    db->leaf = u64(b + 16);
    db->overflow = u64(b + 24);
    db->entries = u64(b + 32);
    db->root = u64(b + 40);
    return 0;
}

static int say(char *why, size_t wl, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, wl, fmt, ap);
    va_end(ap);
    return -1;
}

/* --- meta pages ---------------------------------------------------------- */

/* Reads the meta page at off, with the page size it claims; 0 if valid. */
static int read_meta(const unsigned char *p, size_t len, size_t off, ff_vfile *m) {
    if (off + PAGEHDR + 152 > len)
        return -1;
    const unsigned char *h = p + off, *mm = h + PAGEHDR;
    if (!(u16(h + 10) & P_META) || u32(mm) != MDB_MAGIC || u32(mm + 4) != DATA_VERSION)
        return -1;
    unsigned psize = u32(mm + 24); /* the free tree's pad */
    if (psize < 512 || psize > 65536 || (psize & (psize - 1)) != 0)
        return -1;
    m->psize = psize;
    ff_verify_db(mm + 24, DB_SIZE, &m->free_db);
    ff_verify_db(mm + 72, DB_SIZE, &m->main_db);
    m->last_pg = u64(mm + 120);
    m->txnid = u64(mm + 128);
    return 0;
}

int ff_verify_meta(ff_vfile *f, const void *p, size_t len, uint64_t txnid, char *why,
                   size_t whylen) {
    memset(f, 0, sizeof *f);
    ff_vfile m[2];
    int ok0 = read_meta(p, len, 0, &m[0]) == 0;
    int ok1 = read_meta(p, len, ok0 ? m[0].psize : 4096, &m[1]) == 0;
    if (ok0 && ok1 && m[1].psize != m[0].psize)
        ok1 = 0;
    if (!ok0 && !ok1)
        return say(why, whylen, "neither meta page is readable");
    int pick;
    if (txnid != 0) { /* the snapshot LMDB uses */
        if (ok0 && m[0].txnid == txnid)
            pick = 0;
        else if (ok1 && m[1].txnid == txnid)
            pick = 1;
        else
            return say(why, whylen, "no meta page is of transaction %llu",
                       (unsigned long long)txnid);
    } else {
        pick = ok0 && ok1 ? m[1].txnid > m[0].txnid : ok1;
    }
    *f = m[pick];
    f->p = p;
    f->len = len;
    f->file_pages = len / f->psize;
    f->seen = NULL;
    if (f->last_pg < 1)
        return say(why, whylen, "the meta page says the file has no pages");
    return 0;
}

/* --- trees --------------------------------------------------------------- */

struct walk {
    const ff_vfile *f;
    const ff_vdb *db;
    int kind;
    ff_vtree_fn fn;
    void *ud;
    uint8_t *seen;
    uint64_t branch, leaf, overflow, entries;
    const unsigned char *prev; /* the last leaf key, in the file */
    size_t prev_len;
    char *why;
    size_t wl;
};

static int page_fail(struct walk *w, uint64_t pg, const char *fmt, ...) {
    char msg[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return say(w->why, w->wl, "page %llu: %s", (unsigned long long)pg, msg);
}

/* The pages pg..pg+n-1, when they lie in the snapshot and the file, after
 * the meta pages. */
static const unsigned char *page_at(const ff_vfile *f, uint64_t pg, uint64_t n) {
    if (pg < 2 || n == 0 || pg > f->last_pg || n > f->last_pg - pg + 1 || pg >= f->file_pages ||
        n > f->file_pages - pg)
        return NULL;
    return f->p + pg * f->psize;
}

static int mark(struct walk *w, uint64_t pg, uint64_t n) {
    for (uint64_t i = pg; i < pg + n; i++) {
        if (w->seen[i >> 3] & (1u << (i & 7)))
            return page_fail(w, i, "used twice");
        w->seen[i >> 3] |= (uint8_t)(1u << (i & 7));
    }
    return 0;
}

/* A key of the free list is a transaction id: 8 bytes. */
static int key_size_ok(int kind, size_t n) {
    return kind == FF_VTREE_FREE ? n == 8 : n > 0 && n <= MAX_KEY;
}

static int key_cmp(int kind, const unsigned char *a, size_t al, const unsigned char *b, size_t bl) {
    if (kind == FF_VTREE_FREE) { /* integer keys (transaction ids) */
        uint64_t x = u64(a), y = u64(b);
        return (x > y) - (x < y);
    }
    int c = memcmp(a, b, al < bl ? al : bl);
    return c != 0 ? c : (al > bl) - (al < bl);
}

/* Checks one leaf entry: its flags and data for the kind of tree, an
 * overflow value's pages, the key's order. */
static int leaf_entry(struct walk *w, uint64_t pg, const unsigned char *page, unsigned i,
                      const unsigned char *node, const unsigned char *lo, size_t lol,
                      const unsigned char *hi, size_t hil) {
    const ff_vfile *f = w->f;
    unsigned off = (unsigned)(node - page), flags = u16(node + 4), ksize = u16(node + 6);
    size_t dsize = u16(node) | (size_t)u16(node + 2) << 16;
    const unsigned char *key = node + NODEHDR, *data;
    if (!key_size_ok(w->kind, ksize))
        return page_fail(w, pg, "entry %u has a key of %u bytes", i, ksize);
    unsigned want = w->kind == FF_VTREE_MAIN ? F_SUBDATA : 0;
    if ((flags & ~F_BIGDATA) != want || (w->kind == FF_VTREE_MAIN && flags != F_SUBDATA))
        return page_fail(w, pg, "entry %u has flags 0x%x", i, flags);
    if (flags & F_BIGDATA) {
        if (off + NODEHDR + ksize + 8 > f->psize)
            return page_fail(w, pg, "entry %u lies outside the page", i);
        uint64_t opg = u64(key + ksize);
        uint64_t need = (PAGEHDR - 1 + (uint64_t)dsize) / f->psize + 1;
        const unsigned char *op = page_at(f, opg, 1);
        if (op == NULL)
            return page_fail(w, pg, "entry %u's value is on page %llu, outside the file", i,
                             (unsigned long long)opg);
        uint64_t n = u32(op + 12);
        if (u64(op) != opg || u16(op + 10) != P_OVERFLOW || n < need || page_at(f, opg, n) == NULL)
            return page_fail(w, pg, "entry %u's value (%zu bytes on page %llu) is damaged", i,
                             dsize, (unsigned long long)opg);
        if (mark(w, opg, n) != 0)
            return -1;
        w->overflow += n;
        data = op + PAGEHDR;
    } else {
        if (off + NODEHDR + ksize + dsize > f->psize)
            return page_fail(w, pg, "entry %u lies outside the page", i);
        if (w->kind == FF_VTREE_MAIN && dsize != DB_SIZE)
            return page_fail(w, pg, "entry %u is not a tree's record", i);
        data = key + ksize;
    }
    if ((w->prev != NULL && key_cmp(w->kind, key, ksize, w->prev, w->prev_len) <= 0) ||
        (lo != NULL && key_cmp(w->kind, key, ksize, lo, lol) < 0) ||
        (hi != NULL && key_cmp(w->kind, key, ksize, hi, hil) >= 0))
        return page_fail(w, pg, "entry %u is out of order", i);
    w->prev = key;
    w->prev_len = ksize;
    w->entries++;
    if (w->fn != NULL) {
        const char *bad = w->fn(w->ud, key, ksize, data, dsize);
        if (bad != NULL)
            return page_fail(w, pg, "entry %u: %s", i, bad);
    }
    return 0;
}

/* Checks page pg, at depth (1: the root), whose keys lie in [lo, hi) (NULL:
 * unbounded), and the pages below it. */
static int walk_page(struct walk *w, uint64_t pg, unsigned depth, const unsigned char *lo,
                     size_t lol, const unsigned char *hi, size_t hil) {
    const ff_vfile *f = w->f;
    const unsigned char *p = page_at(f, pg, 1);
    if (p == NULL)
        return page_fail(w, pg, "outside the file");
    if (depth > w->db->depth)
        return page_fail(w, pg, "deeper than its tree (%u levels)", w->db->depth);
    if (mark(w, pg, 1) != 0)
        return -1;
    if (u64(p) != pg)
        return page_fail(w, pg, "its header says page %llu", (unsigned long long)u64(p));
    unsigned kind = depth == w->db->depth ? P_LEAF : P_BRANCH, flags = u16(p + 10);
    if (flags != kind)
        return page_fail(w, pg, "a page of kind 0x%x where a %s page belongs", flags,
                         kind == P_LEAF ? "leaf" : "branch");
    unsigned lower = u16(p + 12), upper = u16(p + 14);
    if (lower < PAGEHDR + 2 || (lower & 1) || upper < lower || upper > f->psize)
        return page_fail(w, pg, "its free space is [%u, %u)", lower, upper);
    unsigned n = (lower - PAGEHDR) / 2;
    /* Every node's header and key inside the page first, so that a
     * branch can read its next key. */
    for (unsigned i = 0; i < n; i++) {
        unsigned off = u16(p + PAGEHDR + 2 * i);
        if (off < upper || off + NODEHDR > f->psize || off + NODEHDR + u16(p + off + 6) > f->psize)
            return page_fail(w, pg, "entry %u lies outside the page", i);
    }
    if (kind == P_LEAF) {
        w->leaf++;
        for (unsigned i = 0; i < n; i++)
            if (leaf_entry(w, pg, p, i, p + u16(p + PAGEHDR + 2 * i), lo, lol, hi, hil) != 0)
                return -1;
        return 0;
    }
    w->branch++;
    for (unsigned i = 0; i < n; i++) {
        const unsigned char *node = p + u16(p + PAGEHDR + 2 * i);
        const unsigned char *clo = lo, *chi = hi;
        size_t clol = lol, chil = hil;
        if (i > 0) {
            clo = node + NODEHDR;
            clol = u16(node + 6);
            if (!key_size_ok(w->kind, clol))
                return page_fail(w, pg, "entry %u has a key of %zu bytes", i, clol);
        }
        if (i + 1 < n) {
            const unsigned char *next = p + u16(p + PAGEHDR + 2 * (i + 1));
            chi = next + NODEHDR;
            chil = u16(next + 6);
            if (!key_size_ok(w->kind, chil))
                return page_fail(w, pg, "entry %u has a key of %zu bytes", i + 1, chil);
            if (clo != NULL && key_cmp(w->kind, chi, chil, clo, clol) <= 0)
                return page_fail(w, pg, "entry %u is out of order", i + 1);
        }
        uint64_t child = u16(node) | (uint64_t)u16(node + 2) << 16 | (uint64_t)u16(node + 4) << 32;
        if (walk_page(w, child, depth + 1, clo, clol, chi, chil) != 0)
            return -1;
    }
    return 0;
}

int ff_verify_tree(const ff_vfile *f, const ff_vdb *db, int kind, ff_vtree_fn fn, void *ud,
                   char *why, size_t whylen) {
    if (db->root == P_INVALID) {
        if (db->depth != 0 || db->branch != 0 || db->leaf != 0 || db->overflow != 0 ||
            db->entries != 0)
            return say(why, whylen, "an empty tree whose record counts pages or entries");
        return 0;
    }
    if (db->depth == 0 || db->depth > MAX_DEPTH)
        return say(why, whylen, "a tree of %u levels", db->depth);
    struct walk w = {.f = f,
                     .db = db,
                     .kind = kind,
                     .fn = fn,
                     .ud = ud,
                     .seen = f->seen,
                     .why = why,
                     .wl = whylen};
    if (w.seen == NULL && (w.seen = calloc(f->file_pages / 8 + 1, 1)) == NULL)
        return say(why, whylen, "not enough memory to check the file");
    int rc = walk_page(&w, db->root, 1, NULL, 0, NULL, 0);
    if (rc == 0 && (w.branch != db->branch || w.leaf != db->leaf || w.overflow != db->overflow ||
                    w.entries != db->entries))
        rc = say(why, whylen,
                 "its record counts %llu entries on %llu+%llu+%llu pages; the tree has %llu on "
                 "%llu+%llu+%llu",
                 (unsigned long long)db->entries, (unsigned long long)db->branch,
                 (unsigned long long)db->leaf, (unsigned long long)db->overflow,
                 (unsigned long long)w.entries, (unsigned long long)w.branch,
                 (unsigned long long)w.leaf, (unsigned long long)w.overflow);
    if (w.seen != f->seen)
        free(w.seen);
    return rc;
}

/* --- the free list ------------------------------------------------------- */

/* Pages past the file that a free list may name (LMDB never writes a page
 * freed in the transaction that allocated it) are checked for repeats only
 * this far past its end. */
#define FREE_PAST_FILE ((uint64_t)1 << 27)

struct freelist {
    const ff_vfile *f;
    uint8_t *listed;  /* pages seen in a list so far */
    uint64_t nlisted; /* bits in listed */
};

static const char *free_entry(void *ud, const unsigned char *key, size_t klen,
                              const unsigned char *data, size_t dlen) {
    struct freelist *fl = ud;
    const ff_vfile *f = fl->f;
    (void)key;
    (void)klen;
    /* A count, then the pages: LMDB may reserve more room than it fills. */
    if (dlen < 8 || dlen % 8 != 0 || u64(data) > dlen / 8 - 1)
        return "a list of pages of the wrong length";
    uint64_t n = u64(data), prev = UINT64_MAX;
    for (uint64_t i = 1; i <= n; i++) {
        uint64_t pg = u64(data + 8 * i);
        if (pg < 2 || pg > f->last_pg)
            return "it lists a page outside the file";
        if (pg >= prev)
            return "a list of pages out of order";
        prev = pg;
        if (f->seen != NULL && pg < f->file_pages && (f->seen[pg >> 3] & (1u << (pg & 7))))
            return "it lists a page that a tree uses";
        if (pg < fl->nlisted) {
            if (fl->listed[pg >> 3] & (1u << (pg & 7)))
                return "it lists a page twice";
            fl->listed[pg >> 3] |= (uint8_t)(1u << (pg & 7));
        }
    }
    return NULL;
}

int ff_verify_free(const ff_vfile *f, char *why, size_t whylen) {
    uint64_t nlisted = f->last_pg + 1;
    if (nlisted > f->file_pages + FREE_PAST_FILE)
        nlisted = f->file_pages + FREE_PAST_FILE;
    struct freelist fl = {f, calloc(nlisted / 8 + 1, 1), nlisted};
    if (fl.listed == NULL)
        return say(why, whylen, "not enough memory to check the file");
    int rc = ff_verify_tree(f, &f->free_db, FF_VTREE_FREE, free_entry, &fl, why, whylen);
    free(fl.listed);
    return rc;
}
