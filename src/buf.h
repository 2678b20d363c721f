/*
 * buf.h: a growable byte buffer (malloc'd), for encodings and frames.
 */
#ifndef FFLUA_BUF_H
#define FFLUA_BUF_H

#include <stddef.h>

typedef struct ff_buf {
    char *p;
    size_t n, cap;
} ff_buf;

/* Makes room for more bytes after n: 0 or -ENOMEM (b unchanged). */
int ff_buf_reserve(ff_buf *b, size_t more);
void ff_buf_free(ff_buf *b);

#endif
