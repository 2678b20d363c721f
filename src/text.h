/*
 * text.h: bytes made safe to print. Names of tasks and workflows, and what
 * a peer sends, are arbitrary bytes: printed raw, a control character can
 * move the cursor, forge a line of a log or run a terminal's escape
 * sequence. Everything fflua prints that it did not write itself goes
 * through ff_text_escape.
 */
#ifndef FFLUA_TEXT_H
#define FFLUA_TEXT_H

#include <stddef.h>

/* Writes s[0..n) to out (cap bytes, always NUL-terminated when cap > 0):
 * printable ASCII and well-formed UTF-8 as they are, newline, carriage
 * return and tab as \n, \r, \t, every other byte (controls, DEL, C1
 * controls, malformed UTF-8, NUL) as \xHH. A backslash is left as it is:
 * the text is for people, and patterns are full of them. When out
 * is too small the text is cut at a character boundary and ends in "...".
 * Returns out. Thread-safe; keeps no state. */
const char *ff_text_escape(char *out, size_t cap, const char *s, size_t n);

/* The offset of the first byte of s[0..n) that ff_text_escape would
 * change, or n when there is none. */
size_t ff_text_escape_check(const char *s, size_t n);

/* The length of s[0..n) escaped in full (without the NUL). */
size_t ff_text_escaped_len(const char *s, size_t n);

/* Whether name[0..n) matches the glob pat (a C string): "*" any bytes,
 * "?" one byte, "[...]" one of a set ("a-z" ranges, "!" or "^" first
 * negates), anything else itself (no escapes; NUL and every other byte in
 * the name are plain bytes). As Python's glob, a name that starts with "."
 * matches only a pattern that starts with one. */
int ff_text_glob(const char *pat, const char *name, size_t n);

#endif
