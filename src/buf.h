/*
 * buf.h: a growable byte buffer (malloc'd), for encodings and frames.
 *
 * A failed reservation is remembered in err, so that a series of writes
 * can be checked once at its end (ff_frame_end does, for frames): writes
 * after a failure may succeed and leave the content cut short, but err
 * stays set until the owner clears it.
 */
#ifndef FFLUA_BUF_H
#define FFLUA_BUF_H

#include <stddef.h>

typedef struct ff_buf {
    char *p;
    size_t n, cap;
    int err; /* sticky: -ENOMEM once a reservation failed; 0 otherwise */
} ff_buf;

/* Makes room for more bytes after n: 0, or -ENOMEM (b unchanged but for
 * err, which is set). */
int ff_buf_reserve(ff_buf *b, size_t more);
/* Frees the memory; b is empty and without error afterwards. */
void ff_buf_free(ff_buf *b);

#endif
