/*
 * fuzz_verify.c: the checker of LMDB's file format (src/verify.c) on any
 * bytes. Each input is a whole data.mdb: the meta pages, the main tree and
 * the trees it names, then the free list, as `fflua store check` and the
 * store's check before a write read them. The checker must read only
 * inside the input and always end.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "verify.h"

struct roots {
    ff_vdb db[16];
    int n;
};

static const char *collect(void *ud, const unsigned char *key, size_t klen,
                           const unsigned char *data, size_t dlen) {
    struct roots *r = ud;
    (void)key;
    (void)klen;
    if (r->n < 16 && ff_verify_db(data, dlen, &r->db[r->n]) == 0)
        r->n++;
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
    /* A copy of exactly n bytes, so that a read past the end is seen. */
    unsigned char *p = malloc(n ? n : 1);
    if (p == NULL)
        return 0;
    memcpy(p, data, n);
    ff_vfile f;
    char why[256];
    if (ff_verify_meta(&f, p, n, 0, why, sizeof why) == 0) {
        f.seen = calloc(f.file_pages / 8 + 1, 1);
        if (f.seen != NULL) {
            struct roots r = {.n = 0};
            ff_verify_tree(&f, &f.main_db, FF_VTREE_MAIN, collect, &r, why, sizeof why);
            for (int i = 0; i < r.n; i++)
                ff_verify_tree(&f, &r.db[i], FF_VTREE_RECORDS, NULL, NULL, why, sizeof why);
            ff_verify_free(&f, why, sizeof why);
            free(f.seen);
        }
    }
    free(p);
    return 0;
}
