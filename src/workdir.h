/*
 * workdir.h: a run's working directory as bytes (runtime_env.working_dir).
 * The driver packs a directory into one blob, identified by the XXH3-128
 * of its bytes; the head forwards the blob to workers, which check it and
 * unpack it into a directory of their own for each run. No Lua, no
 * sockets: everything here can be tested and fuzzed alone. docs/cluster.md
 * ("Working directory") says what is packed; docs/protocol.md gives the
 * format, which is:
 *
 *   4 bytes  "FFWD"
 *   varint   version                  1
 *   varint   n                        entries, at most FF_WD_MAX_FILES
 *   entry x n, in the order they are made:
 *     varint  kind                    1 directory, 2 file, 3 executable file
 *     str     path                    relative, '/'-separated; every component
 *                                     non-empty and not "." or ".."; its parent
 *                                     is an earlier directory entry (or the top)
 *     str     content                 files only; all of them FF_WD_MAX_BYTES at most
 *
 * A packer writes entries sorted by name within each directory, depth
 * first, so the same tree gives the same bytes and the same hash.
 * Functions here may be called from any thread on their own arguments.
 */
#ifndef FFLUA_WORKDIR_H
#define FFLUA_WORKDIR_H

#include <stddef.h>

#include "buf.h"

#define FF_WD_MAX_BYTES ((size_t)100 << 20) /* the files' content, in all */
#define FF_WD_MAX_FILES 10000               /* files and directories */
#define FF_WD_HASH_LEN 16

/* Packs directory dir into out (appended). Left out: directories named
 * .git, CMakeFiles, build or build-* at any depth; the directories of
 * exclude (nexclude paths, which need not exist; compared by device and
 * inode); sockets, FIFOs and devices. A symbolic link whose target lies
 * inside dir and is a regular file is packed as a copy of that file; any
 * other link is refused. 0, or an error code with a sentence in err naming
 * what: -ENOENT/-ENOTDIR and the like (dir itself), -EFBIG (over a cap:
 * the size or count found and the cap), -EINVAL (a link refused),
 * -ENOMEM, or another -errno from reading a file. */
int ff_wd_pack(const char *dir, const char *const *exclude, size_t nexclude, ff_buf *out, char *err,
               size_t errlen);

/* The identity of a blob: XXH3-128 of its bytes, canonical (big-endian). */
void ff_wd_hash(const char *p, size_t n, unsigned char out[FF_WD_HASH_LEN]);

/* Checks a blob without writing anything: 0, or FFLUA_EPROTO with why in
 * err (a bad magic or version, a path that is absolute or has "..", an
 * entry whose parent did not come first, a count or size over a cap,
 * bytes cut short or left over). */
int ff_wd_check(const char *p, size_t n, char *err, size_t errlen);

/* Unpacks a blob into dir, which must not exist (it is made, mode 0700).
 * The blob is checked as it goes, as ff_wd_check does; nothing is written
 * outside dir (only directories and regular files are made, none over an
 * existing one). 0, or FFLUA_EPROTO or -errno with why in err; dir may
 * then hold part of the blob (the caller removes it). */
int ff_wd_unpack(const char *p, size_t n, const char *dir, char *err, size_t errlen);

/* Removes path and, when it is a directory, all under it (symbolic links
 * are removed, never followed). 0, or the first -errno met. */
int ff_wd_remove(const char *path);

#endif
