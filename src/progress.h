/*
 * progress.h: a run's progress on a terminal or in a log.
 *
 * The thread that runs the workflow only counts (the ff_progress_count
 * fields, one writer, relaxed atomics: a few ns per node); a thread of the
 * display's own reads the counts and writes to a file descriptor:
 *   tty:   one line redrawn in place ("\r" and erase-to-end) at most five
 *          times a second, cut to the terminal's width, and erased when
 *          the display stops;
 *   plain: one line every `interval` seconds (and none for a run that ends
 *          sooner).
 * The line: done / total, running, loaded, failed, elapsed and, once some
 * nodes have run, an estimate of the time left from the rate so far.
 * Knows nothing of Lua.
 */
#ifndef FFLUA_PROGRESS_H
#define FFLUA_PROGRESS_H

#include <stdatomic.h>
#include <stdint.h>

typedef struct ff_progress_count {
    atomic_uint_fast64_t total;   /* nodes the run has to account for */
    atomic_uint_fast64_t started; /* nodes started */
    atomic_uint_fast64_t done;    /* nodes that ran to the end */
    atomic_uint_fast64_t loaded;  /* nodes read from a storage */
    atomic_uint_fast64_t failed;  /* nodes that failed, or did not run because one did */
} ff_progress_count;

typedef struct ff_progress ff_progress;

/* Starts a display of a run of title on fd. tty: redraw in place; else
 * plain lines every interval seconds. Returns 0, or a negated errno
 * (nothing started). */
int ff_progress_start(ff_progress **out, int fd, int tty, double interval, const char *title);

/* The counts the run updates. */
ff_progress_count *ff_progress_counts(ff_progress *p);

/* Adds k to a count (the run's thread only). */
static inline void ff_progress_add(atomic_uint_fast64_t *c, uint64_t k) {
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + k,
                          memory_order_relaxed);
}

/* Erases the line (tty) and keeps the display from drawing until
 * ff_progress_release, so that other output can be written (the display
 * draws the line again at its next tick after). Any thread; hold and
 * release in the same thread, never twice. */
void ff_progress_hold(ff_progress *p);
void ff_progress_release(ff_progress *p);

/* Stops the display: the thread ends, the line is erased, p is freed.
 * NULL is fine. */
void ff_progress_stop(ff_progress *p);

/* Writes the line for counts c after elapsed ns into buf (cap bytes, cut
 * to fit), the estimate of the time left when it can make one. Exposed for
 * tests. Returns the length. */
size_t ff_progress_line(char *buf, size_t cap, const char *title, const ff_progress_count *c,
                        uint64_t elapsed_ns);

#endif
