/*
 * guard.h: surviving a fault inside a library that trusts its input.
 *
 * LMDB trusts the bytes of its file. A damaged page can make it read
 * outside its map (SIGSEGV), past the end of the file (SIGBUS), or fail one
 * of its assertions (which calls abort()). The store runs every LMDB call
 * that reads pages under a guard: a recovery point of the calling thread.
 * A fault inside a guarded region jumps back to it instead of killing the
 * process, and the store then treats what it was reading as damaged.
 *
 *     ff_guard g;
 *     ff_guard_push(&g);
 *     if (sigsetjmp(g.jb, 0) == 0) {
 *         rc = mdb_get(...);          // may fault
 *         ff_guard_pop(&g);
 *     } else {
 *         // g.sig says why; the guard is already popped
 *     }
 *
 * Rules for a guarded region: it calls only code that holds no lock and
 * owns no memory a jump would strand (LMDB's read path qualifies; a write
 * transaction does not, see store.c), and the caller reads only volatile
 * locals or g itself after a jump.
 *
 * Process-wide state: the handlers for SIGSEGV and SIGBUS are installed
 * once, on the first push, and the previous handlers are kept to chain to:
 * a fault outside every guard goes to the handler that was there before
 * (the default one kills the process as usual, a sanitizer's reports). The
 * current guard is a thread-local pointer, so threads never see each
 * other's guards. A host that installs its own SIGSEGV or SIGBUS handler
 * after fflua's first storage was opened takes this protection away.
 */
#ifndef FFLUA_GUARD_H
#define FFLUA_GUARD_H

#include <setjmp.h>

typedef struct ff_guard {
    sigjmp_buf jb;
    struct ff_guard *prev;
    int sig;       /* after a jump: SIGSEGV, SIGBUS, or 0 for an assertion */
    char msg[200]; /* after a jump from an assertion: its text */
} ff_guard;

/* Makes g the calling thread's innermost guard (installing the signal
 * handlers on first use). Follow it with sigsetjmp(g->jb, 0). */
void ff_guard_push(ff_guard *g);
/* Ends the innermost guard, g, on the normal path. */
void ff_guard_pop(ff_guard *g);

/* For LMDB's assertion callback (mdb_env_set_assert): inside a guard, jumps
 * to it; outside, returns (and LMDB aborts). */
void ff_guard_assert(const char *msg);

/* What a jump means, for messages: "a read outside the file", ... */
const char *ff_guard_what(const ff_guard *g);

#endif
