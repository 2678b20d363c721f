/*
 * query.c: regular expressions over node names (see query.h).
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <errno.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>

#include "fflua.h"
#include "query.h"

struct ff_query {
    pcre2_code *code;
    pcre2_match_data *md;
    pcre2_match_context *mc; /* the limits, and the JIT stack once made */
    pcre2_jit_stack *stack;  /* NULL until a match outgrows PCRE2's default */
    int jit;
    char errmsg[128];
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
    pcre2_match_context *mc = pcre2_match_context_create(NULL);
    if (q == NULL || md == NULL || mc == NULL) {
        pcre2_code_free(code);
        pcre2_match_data_free(md);
        pcre2_match_context_free(mc);
        free(q);
        return -ENOMEM;
    }
    /* Set here rather than left to how PCRE2 was built, so every machine
     * gives the same answers. The heap limit (in KiB) bounds the
     * interpreter; the JIT stack's size bounds JIT-compiled matches. */
    pcre2_set_match_limit(mc, FF_QUERY_STEPS_MAX);
    pcre2_set_depth_limit(mc, FF_QUERY_STEPS_MAX);
    pcre2_set_heap_limit(mc, (uint32_t)(FF_QUERY_MEMORY_MAX >> 10));
    q->code = code;
    q->md = md;
    q->mc = mc;
    q->jit = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
    *out = q;
    return 0;
}

static int match_error(ff_query *q, int rc) {
    switch (rc) {
    case PCRE2_ERROR_NOMEMORY:
        return -ENOMEM;
    case PCRE2_ERROR_MATCHLIMIT:
    case PCRE2_ERROR_DEPTHLIMIT:
        snprintf(q->errmsg, sizeof q->errmsg, "the match takes more than %d steps",
                 FF_QUERY_STEPS_MAX);
        break;
    case PCRE2_ERROR_JIT_STACKLIMIT:
    case PCRE2_ERROR_HEAPLIMIT:
        snprintf(q->errmsg, sizeof q->errmsg, "the match needs more than %zu MiB of memory",
                 FF_QUERY_MEMORY_MAX >> 20);
        break;
    default:
        pcre2_get_error_message(rc, (PCRE2_UCHAR *)q->errmsg, sizeof q->errmsg);
        break;
    }
    return FFLUA_EPATTERN;
}

int ff_query_match(ff_query *q, const char *name, size_t len) {
    int rc = pcre2_match(q->code, (PCRE2_SPTR)name, len, 0, 0, q->md, q->mc);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT && q->stack == NULL) {
        /* Most names fit PCRE2's default stack; a long one gets a stack of
         * the full size (address space: pages are touched only as used). */
        q->stack = pcre2_jit_stack_create(32 << 10, FF_QUERY_MEMORY_MAX, NULL);
        if (q->stack == NULL)
            return -ENOMEM;
        pcre2_jit_stack_assign(q->mc, NULL, q->stack);
        rc = pcre2_match(q->code, (PCRE2_SPTR)name, len, 0, 0, q->md, q->mc);
    }
    if (rc >= 0)
        return 1;
    if (rc == PCRE2_ERROR_NOMATCH)
        return 0;
    return match_error(q, rc);
}

const char *ff_query_errmsg(const ff_query *q) {
    return q->errmsg;
}

int ff_query_is_jit(const ff_query *q) {
    return q->jit;
}

void ff_query_free(ff_query *q) {
    if (q == NULL)
        return;
    if (q->stack != NULL)
        pcre2_jit_stack_free(q->stack);
    pcre2_match_context_free(q->mc);
    pcre2_match_data_free(q->md);
    pcre2_code_free(q->code);
    free(q);
}
