/*
 * storeserve.h: the storages a worker holds for its cluster (the STORE_CALL
 * messages of msg.h), on top of store.h. No Lua, no I/O of its own: a call
 * comes in as a message's arguments and its STORE_REPLY is appended to a
 * buffer.
 *
 * One store handle per path, opened at the first call that names it and
 * kept open until ff_storeserve_destroy (store.c shares one LMDB
 * environment per directory anyway). A relative path is taken relative to
 * the directory given at creation: the worker's startup directory, never
 * the current directory of a thread that runs nodes. Used by one thread
 * (the worker's loop thread).
 */
#ifndef FFLUA_STORESERVE_H
#define FFLUA_STORESERVE_H

#include <stdint.h>

#include "buf.h"
#include "msg.h"

typedef struct ff_storeserve ff_storeserve;

/* base: the directory relative paths start from; who: how errors name
 * this process ("host:pid in /dir"). Both copied. 0 or -ENOMEM. */
int ff_storeserve_create(ff_storeserve **out, const char *base, const char *who);
/* Commits and closes every storage. NULL is ignored. */
void ff_storeserve_destroy(ff_storeserve *s);

/* Carries out call op (FF_STORE_*) with its args (a checked list of strs,
 * msg.h; the first is the storage's path) and appends its STORE_REPLY with
 * req to out: always, except for a PUT that worked with a req of
 * FF_STORE_REQ_QUIET or more (the head's saves). A malformed call (a
 * wrong count of arguments, a bad fingerprint) is answered as a failure.
 * Returns 0, or the writer's error when the reply could not be written
 * (out of memory: the caller gives up the connection). */
int ff_storeserve_call(ff_storeserve *s, uint64_t req, uint64_t op, ff_msg_list *args, ff_buf *out);

#endif
