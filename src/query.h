/*
 * query.h: regular expressions over node names.
 *
 * A pattern is compiled once with PCRE2 (JIT-compiled where the platform
 * allows) and matches a name the way Python's re.fullmatch does: the whole
 * name or nothing. Patterns are UTF-8; names that are not valid UTF-8 are
 * never matched by anything (and never an error). Python's `re` syntax works
 * (PCRE2 accepts `(?P<name>...)`, `\d`, `(?i)`, lookarounds).
 *
 * A match may use up to FF_QUERY_MEMORY_MAX bytes for backtracking and take
 * up to FF_QUERY_STEPS_MAX steps; past either it is an error, never "no
 * match". A JIT stack that size is made the first time a match outgrows
 * PCRE2's default one (32 KiB): a name of 100,000 bytes under `(a|aa)+!`
 * needs about 8 MiB.
 *
 * A compiled query owns its match data, match context and JIT stack, so one
 * query is used by one thread at a time; distinct queries are independent.
 */
#ifndef FFLUA_QUERY_H
#define FFLUA_QUERY_H

#include <stddef.h>

/* The memory one match may use for backtracking (JIT stack or heap). */
#define FF_QUERY_MEMORY_MAX ((size_t)64 << 20)
/* The steps one match may take (PCRE2's match and depth limits). */
#define FF_QUERY_STEPS_MAX 10000000

typedef struct ff_query ff_query;

/* Compiles pattern (len bytes). On failure returns FFLUA_EPATTERN with
 * PCRE2's message in errbuf (NUL-terminated, cap bytes) and the offset in
 * *erroffset, or -ENOMEM. */
int ff_query_compile(const char *pattern, size_t len, ff_query **out, char *errbuf, size_t cap,
                     size_t *erroffset);

/* 1 when the whole of name matches, 0 when it does not, -ENOMEM, or
 * FFLUA_EPATTERN when the match failed (a limit was reached): then
 * ff_query_errmsg says why. */
int ff_query_match(ff_query *q, const char *name, size_t len);

/* Why the last ff_query_match returned FFLUA_EPATTERN: "the match takes
 * more than 10000000 steps", "the match needs more than 64 MiB of memory"
 * or PCRE2's message. The string belongs to q and changes with the next
 * match. */
const char *ff_query_errmsg(const ff_query *q);

/* 1 when the pattern was JIT-compiled. */
int ff_query_is_jit(const ff_query *q);

/* Frees q and all it owns. q may be NULL. */
void ff_query_free(ff_query *q);

#endif
