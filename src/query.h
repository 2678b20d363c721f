/*
 * query.h: regular expressions over node names.
 *
 * A pattern is compiled once with PCRE2 (JIT-compiled where the platform
 * allows) and matches a name the way Python's re.fullmatch does: the whole
 * name or nothing. Patterns are UTF-8; names that are not valid UTF-8 are
 * never matched by anything (and never an error). Python's `re` syntax works (PCRE2 accepts
 * `(?P<name>...)`, `\d`, `(?i)`, lookarounds).
 *
 * A compiled query owns its match data, so one query is used by one thread
 * at a time; distinct queries are independent.
 */
#ifndef FF_QUERY_H
#define FF_QUERY_H

#include <stddef.h>

typedef struct ff_query ff_query;

/// Compiles pattern (len bytes). On failure returns FFLUA_EPATTERN with
/// PCRE2's message in errbuf (NUL-terminated, cap bytes) and the offset in
/// *erroffset, or -ENOMEM.
int ff_query_compile(const char *pattern, size_t len, ff_query **out, char *errbuf, size_t cap,
                     size_t *erroffset);

/// 1 when the whole of name matches, 0 when it does not, or a negative
/// code (FFLUA_EPATTERN for a match-time limit).
int ff_query_match(ff_query *q, const char *name, size_t len);

/// 1 when the pattern was JIT-compiled.
int ff_query_is_jit(const ff_query *q);

void ff_query_free(ff_query *q);

#endif
