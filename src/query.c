/*
 * query.c: regular expressions over node names (see query.h).
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <errno.h>
#include <pcre2.h>
#include <stdlib.h>

#include "fflua.h"
#include "query.h"

struct ff_query {
    pcre2_code *code;
    pcre2_match_data *md;
    int jit;
};

int ff_query_compile(const char *pattern, size_t len, ff_query **out, char *errbuf, size_t cap,
                     size_t *erroffset) {
    int err;
    PCRE2_SIZE off = 0;
    /* Anchored at both ends at compile time: the engine backtracks into
     * alternatives until one spans the whole name, as re.fullmatch does. */
    uint32_t opts = PCRE2_ANCHORED | PCRE2_ENDANCHORED | PCRE2_UTF | PCRE2_MATCH_INVALID_UTF;
    pcre2_code *code = pcre2_compile((PCRE2_SPTR)pattern, len, opts, &err, &off, NULL);
    if (code == NULL) {
        if (cap > 0)
            pcre2_get_error_message(err, (PCRE2_UCHAR *)errbuf, cap);
        if (erroffset != NULL)
            *erroffset = off;
        return FFLUA_EPATTERN;
    }
    ff_query *q = calloc(1, sizeof *q);
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(code, NULL);
    if (q == NULL || md == NULL) {
        pcre2_code_free(code);
        pcre2_match_data_free(md);
        free(q);
        return -ENOMEM;
    }
    q->code = code;
    q->md = md;
    q->jit = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
    *out = q;
    return 0;
}

int ff_query_match(ff_query *q, const char *name, size_t len) {
    int rc = pcre2_match(q->code, (PCRE2_SPTR)name, len, 0, 0, q->md, NULL);
    if (rc >= 0)
        return 1;
    if (rc == PCRE2_ERROR_NOMATCH)
        return 0;
    return FFLUA_EPATTERN;
}

int ff_query_is_jit(const ff_query *q) {
    return q->jit;
}

void ff_query_free(ff_query *q) {
    if (q == NULL)
        return;
    pcre2_match_data_free(q->md);
    pcre2_code_free(q->code);
    free(q);
}
