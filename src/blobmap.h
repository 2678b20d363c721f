/*
 * blobmap.h: a small open-addressing map from uint64 keys to owned byte
 * strings, for the head and the worker (functions by id, results by task).
 */
#ifndef FFLUA_BLOBMAP_H
#define FFLUA_BLOBMAP_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct blob {
    uint64_t key;
    char *p; /* NULL: empty slot */
    size_t n;
} blob;

typedef struct blobmap {
    blob *slots;
    size_t cap, len;
} blobmap;

static inline uint64_t bm_mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

static inline blob *bm_find(blobmap *m, uint64_t key) {
    if (m->cap == 0)
        return NULL;
    for (size_t i = bm_mix(key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (m->slots[i].p == NULL)
            return NULL;
        if (m->slots[i].key == key)
            return &m->slots[i];
    }
}

/* Stores a copy of p[0..n) under key (replacing). 0 or -ENOMEM. */
static inline int bm_put(blobmap *m, uint64_t key, const char *p, size_t n) {
    if ((m->len + 1) * 2 > m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 64;
        blob *ns = calloc(cap, sizeof *ns);
        if (ns == NULL)
            return -ENOMEM;
        for (size_t i = 0; i < m->cap; i++) {
            if (m->slots[i].p == NULL)
                continue;
            size_t j = bm_mix(m->slots[i].key) & (cap - 1);
            while (ns[j].p != NULL)
                j = (j + 1) & (cap - 1);
            ns[j] = m->slots[i];
        }
        free(m->slots);
        m->slots = ns;
        m->cap = cap;
    }
    char *copy = malloc(n ? n : 1);
    if (copy == NULL)
        return -ENOMEM;
    memcpy(copy, p, n);
    blob *b = bm_find(m, key);
    if (b != NULL) {
        free(b->p);
    } else {
        size_t i = bm_mix(key) & (m->cap - 1);
        while (m->slots[i].p != NULL)
            i = (i + 1) & (m->cap - 1);
        b = &m->slots[i];
        b->key = key;
        m->len++;
    }
    b->p = copy;
    b->n = n;
    return 0;
}

/* Removes key (if present), shifting later entries of its probe run back
 * so that lookups never stop at a hole. */
static inline void bm_del(blobmap *m, uint64_t key) {
    blob *b = bm_find(m, key);
    if (b == NULL)
        return;
    size_t mask = m->cap - 1, i = (size_t)(b - m->slots);
    free(b->p);
    for (size_t j = i;;) {
        j = (j + 1) & mask;
        if (m->slots[j].p == NULL)
            break;
        size_t k = bm_mix(m->slots[j].key) & mask; /* its home slot */
        /* Leave it when its home lies cyclically in (i, j]. */
        if (i <= j ? (i < k && k <= j) : (i < k || k <= j))
            continue;
        m->slots[i] = m->slots[j];
        i = j;
    }
    m->slots[i].p = NULL;
    m->slots[i].n = 0;
    m->len--;
}

static inline void bm_free(blobmap *m) {
    for (size_t i = 0; i < m->cap; i++)
        free(m->slots[i].p);
    free(m->slots);
    memset(m, 0, sizeof *m);
}

#endif
