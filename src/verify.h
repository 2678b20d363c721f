/*
 * verify.h: a checker of LMDB's data file (format version 1: LMDB 0.9).
 *
 * LMDB trusts its file. Reading a damaged file can fault (the store's
 * guards catch that), but writing to a damaged tree is worse: LMDB copies
 * page contents by the sizes the page claims, frees overflow pages by the
 * count their header claims, and takes free pages from the free list as
 * listed, so a damaged page can overflow the heap or hand out a page that
 * is still in use. Nothing can catch that afterwards, so the store checks a
 * tree with this module before it first writes to it.
 *
 * The checker works on the bytes of the file alone (the store maps the file
 * for it), with no LMDB call: every page it reads is bounded by the file,
 * every offset inside a page by the page. It checks a tree completely:
 * page numbers inside the file and each page used once, page headers (the
 * number, the kind, the bounds of the free space), every node inside its
 * page, keys in order across the whole tree, leaves at one depth, overflow
 * pages that hold what their node says, and the counts of the tree's record
 * against what was found. It keeps no state and is safe to call from any
 * thread; on a file that changes under it, it may report damage that is not
 * there, never miss a crash's cause in what it read.
 */
#ifndef FFLUA_VERIFY_H
#define FFLUA_VERIFY_H

#include <stddef.h>
#include <stdint.h>

/* A tree's record (LMDB's MDB_db). */
typedef struct ff_vdb {
    unsigned flags, depth;
    uint64_t branch, leaf, overflow, entries, root;
} ff_vdb;

/* The file, as one of its meta pages describes it. */
typedef struct ff_vfile {
    const unsigned char *p; /* the file's bytes */
    size_t len;
    unsigned psize;
    /* The last page of the snapshot: pages up to it may lie past the end
     * of the file (LMDB never writes a page freed in the transaction that
     * allocated it), but only free ones. */
    uint64_t last_pg, txnid;
    uint64_t file_pages; /* len / psize */
    ff_vdb free_db, main_db;
    /* Optional: one bit per page of the file (file_pages bits), set for
     * every page a checked tree uses, so that a page used twice is found
     * across trees. NULL: per tree. */
    uint8_t *seen;
} ff_vfile;

/* The kinds of tree: LMDB's free list (integer keys, lists of pages), the
 * main tree (one record per named database), a workflow's records. */
enum { FF_VTREE_FREE, FF_VTREE_MAIN, FF_VTREE_RECORDS };

/* Called for each leaf entry of a checked tree, in key order: data points
 * into the file (for a value on overflow pages, to its first byte, already
 * checked to lie in the file). Returns NULL, or what is wrong with it. */
typedef const char *(*ff_vtree_fn)(void *ud, const unsigned char *key, size_t klen,
                                   const unsigned char *data, size_t dlen);

/* Reads the meta page of p[0..len) of transaction txnid (0: the newest
 * valid one). 0, or -1 with why. */
int ff_verify_meta(ff_vfile *f, const void *p, size_t len, uint64_t txnid, char *why,
                   size_t whylen);

/* Parses a tree's record (48 bytes). 0, or -1 when n is not 48. */
int ff_verify_db(const void *p, size_t n, ff_vdb *db);

/* Checks the tree db of the given kind completely; fn (may be NULL) sees
 * each entry. 0, or -1 with why ("page 12: ..."). */
int ff_verify_tree(const ff_vfile *f, const ff_vdb *db, int kind, ff_vtree_fn fn, void *ud,
                   char *why, size_t whylen);

/* Checks the free list's entries: each a list of pages of the snapshot, in
 * descending order, none used by a tree already marked in f->seen (when
 * set) and none listed twice. 0, or -1 with why. */
int ff_verify_free(const ff_vfile *f, char *why, size_t whylen);

#endif
