/*
 * test_blobmap.c: the head's and worker's map from task ids to bytes,
 * against a plain array, through many random puts and deletes (deletes
 * shift probe runs back: every key must stay findable).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blobmap.h"
#include "test.h"

#define KEYS 512

static void test_random_ops(void) {
    blobmap m = {0};
    int present[KEYS] = {0};
    uint32_t rng = 12345;
    for (int step = 0; step < 200000; step++) {
        rng = rng * 1103515245u + 12345u;
        uint64_t key = (rng >> 8) % KEYS;
        char val[16];
        snprintf(val, sizeof val, "v%llu", (unsigned long long)key);
        if ((rng >> 4) & 1) {
            ASSERT_EQ(bm_put(&m, key, val, strlen(val)), 0);
            present[key] = 1;
        } else {
            bm_del(&m, key);
            present[key] = 0;
        }
        if (step % 997 == 0) {
            size_t n = 0;
            for (uint64_t k = 0; k < KEYS; k++) {
                blob *b = bm_find(&m, k);
                ASSERT_EQ(b != NULL, present[k]);
                if (b != NULL) {
                    snprintf(val, sizeof val, "v%llu", (unsigned long long)k);
                    ASSERT(b->n == strlen(val) && memcmp(b->p, val, b->n) == 0);
                    n++;
                }
            }
            ASSERT_EQ(n, m.len);
        }
    }
    bm_free(&m);
}

static void test_empty_and_missing(void) {
    blobmap m = {0};
    ASSERT(bm_find(&m, 7) == NULL);
    bm_del(&m, 7);
    ASSERT_EQ(bm_put(&m, 7, "", 0), 0);
    ASSERT(bm_find(&m, 7) != NULL);
    ASSERT_EQ(bm_find(&m, 7)->n, 0);
    bm_del(&m, 8);
    ASSERT_EQ(m.len, 1);
    bm_del(&m, 7);
    ASSERT_EQ(m.len, 0);
    bm_free(&m);
}

int main(void) {
    RUN(test_random_ops);
    RUN(test_empty_and_missing);
    return 0;
}
