/*
 * text.c: bytes made safe to print (see text.h).
 */
#include <string.h>

#include "text.h"

/* The length of the well-formed UTF-8 sequence at s (n bytes left), or 0. */
static size_t utf8_len(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    size_t len;
    unsigned lo = 0x80, hi = 0xBF; /* the second byte's range */
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0; /* no overlong forms */
        else if (c == 0xED)
            hi = 0x9F; /* no surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F; /* nothing above U+10FFFF */
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if ((s[i] & 0xC0) != 0x80)
            return 0;
    /* C1 controls (U+0080..U+009F) act on terminals too. */
    if (c == 0xC2 && s[1] < 0xA0)
        return 0;
    return len;
}

/* The escaped form of the character at s[i] (n bytes in all): its bytes
 * in piece, its length returned, the bytes it takes in *step. */
static size_t piece_at(const unsigned char *p, size_t i, size_t n, char piece[4], size_t *step) {
    static const char hex[] = "0123456789abcdef";
    *step = 1;
    if (p[i] >= 0x20 && p[i] < 0x7F) {
        piece[0] = (char)p[i];
        return 1;
    }
    size_t u = utf8_len(p + i, n - i);
    if (u > 0) {
        memcpy(piece, p + i, u);
        *step = u;
        return u;
    }
    piece[0] = '\\';
    if (p[i] == '\n' || p[i] == '\r' || p[i] == '\t') {
        piece[1] = p[i] == '\n' ? 'n' : p[i] == '\r' ? 'r' : 't';
        return 2;
    }
    piece[1] = 'x';
    piece[2] = hex[p[i] >> 4];
    piece[3] = hex[p[i] & 15];
    return 4;
}

size_t ff_text_escape_check(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        if (p[i] >= 0x20 && p[i] < 0x7F) {
            i++;
            continue;
        }
        size_t u = utf8_len(p + i, n - i);
        if (u == 0)
            return i;
        i += u;
    }
    return n;
}

size_t ff_text_escaped_len(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    char piece[4];
    size_t step, total = 0;
    for (size_t i = 0; i < n; i += step)
        total += piece_at(p, i, n, piece, &step);
    return total;
}

const char *ff_text_escape(char *out, size_t cap, const char *s, size_t n) {
    if (cap == 0)
        return out;
    const unsigned char *p = (const unsigned char *)s;
    char piece[4];
    size_t step, total = 0;
    for (size_t i = 0; i < n && total < cap; i += step)
        total += piece_at(p, i, n, piece, &step);
    /* Everything fits, or stop where "..." still does. */
    size_t room = total < cap ? cap - 1 : (cap > 4 ? cap - 4 : 0);
    size_t o = 0;
    for (size_t i = 0; i < n; i += step) {
        size_t len = piece_at(p, i, n, piece, &step);
        if (o + len > room)
            break;
        memcpy(out + o, piece, len);
        o += len;
    }
    if (total >= cap && cap > 4) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
    return out;
}

/* The end of the set that starts after '[' at p, or NULL when unclosed. */
static const char *set_end(const char *p) {
    if (*p == '!' || *p == '^')
        p++;
    if (*p == ']')
        p++; /* a ']' first is a member */
    while (*p != '\0' && *p != ']')
        p++;
    return *p == ']' ? p : NULL;
}

static int set_has(const char *p, const char *end, unsigned char c) {
    int neg = *p == '!' || *p == '^';
    if (neg)
        p++;
    int in = 0;
    for (const char *q = p; q < end; q++) {
        if (q + 2 < end && q[1] == '-') {
            in |= c >= (unsigned char)q[0] && c <= (unsigned char)q[2];
            q += 2;
        } else {
            in |= c == (unsigned char)*q;
        }
    }
    return in != neg;
}

int ff_text_glob(const char *pat, const char *name, size_t n) {
    if (n > 0 && name[0] == '.' && pat[0] != '.')
        return 0;
    /* Iterative, with one backtrack point for the last '*': linear in
     * practice, never exponential. */
    const char *p = pat, *star = NULL;
    size_t i = 0, star_i = 0;
    while (i < n) {
        const char *end;
        if (*p == '*') {
            star = ++p;
            star_i = i;
            continue;
        }
        if (*p == '?') {
            p++;
            i++;
            continue;
        }
        if (*p == '[' && (end = set_end(p + 1)) != NULL) {
            if (set_has(p + 1, end, (unsigned char)name[i])) {
                p = end + 1;
                i++;
                continue;
            }
        } else if (*p != '\0' && (unsigned char)*p == (unsigned char)name[i]) {
            p++;
            i++;
            continue;
        }
        if (star == NULL)
            return 0;
        p = star;
        i = ++star_i;
    }
    while (*p == '*')
        p++;
    return *p == '\0';
}
