/*
 * buf.c: growable byte buffers.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "buf.h"

int ff_buf_reserve(ff_buf *b, size_t more) {
    if (b->cap - b->n >= more)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->n < more) {
        if (cap > SIZE_MAX / 2)
            return b->err = -ENOMEM;
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (p == NULL)
        return b->err = -ENOMEM;
    b->p = p;
    b->cap = cap;
    return 0;
}

void ff_buf_free(ff_buf *b) {
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
    b->err = 0;
}
