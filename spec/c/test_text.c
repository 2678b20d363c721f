/*
 * test_text.c: escaping bytes for printing, and the glob of task names.
 */
#include <string.h>

#include "test.h"
#include "text.h"

static const char *esc(const char *s, size_t n, size_t cap) {
    static char buf[256];
    return ff_text_escape(buf, cap, s, n);
}

static void test_escape(void) {
    ASSERT_STR_EQ(esc("plain", 5, 64), "plain");
    ASSERT_STR_EQ(esc("a\0b", 3, 64), "a\\x00b");
    ASSERT_STR_EQ(esc("\x1b[31mred\n", 9, 64), "\\x1b[31mred\\n");
    ASSERT_STR_EQ(esc("caf\xc3\xa9", 5, 64), "caf\xc3\xa9");      /* UTF-8 kept */
    ASSERT_STR_EQ(esc("\xff\xc3", 2, 64), "\\xff\\xc3");          /* malformed */
    ASSERT_STR_EQ(esc("\xc2\x9b", 2, 64), "\\xc2\\x9b");          /* a C1 control */
    ASSERT_STR_EQ(esc("\xed\xa0\x80", 3, 64), "\\xed\\xa0\\x80"); /* a surrogate */
    ASSERT_STR_EQ(esc("\xe0\x80\xaf", 3, 64), "\\xe0\\x80\\xaf"); /* overlong */
    ASSERT_STR_EQ(esc("a\\b", 3, 64), "a\\b");                    /* for people */
    /* Cut to the room there is, at a character boundary, with "...". */
    ASSERT_STR_EQ(esc("abcdefghij", 10, 11), "abcdefghij");
    ASSERT_STR_EQ(esc("abcdefghijk", 11, 11), "abcdefg...");
    ASSERT_STR_EQ(esc("ab\x01", 3, 8), "ab\\x01");
    ASSERT_STR_EQ(esc("abcd\x01", 5, 8), "abcd...");
    ASSERT_STR_EQ(esc("\xc3\xa9\xc3\xa9\xc3\xa9", 6, 6), "\xc3\xa9...");
    ASSERT_EQ(ff_text_escaped_len("a\0b", 3), 6);
    /* What a peer sends cannot forge a line of a log or drive a terminal. */
    static const char forged[] = "x\nfflua head: worker evil:1 joined\r\t\x1b[2J\\\x7f";
    ASSERT_STR_EQ(esc(forged, sizeof forged - 1, 64),
                  "x\\nfflua head: worker evil:1 joined\\r\\t\\x1b[2J\\\\x7f");
    static const char utf[] = "\xc3\xa9\xe2\x82\xac \xc2\x9b \xed\xa0\x80 \xff\x00!";
    ASSERT_STR_EQ(esc(utf, sizeof utf - 1, 64),
                  "\xc3\xa9\xe2\x82\xac \\xc2\\x9b \\xed\\xa0\\x80 \\xff\\x00!");
    ASSERT_EQ(ff_text_escape_check(utf, 5), 5);
    ASSERT_EQ(ff_text_escape_check(utf, sizeof utf - 1), 6);
    ASSERT_EQ(ff_text_escape_check("plain", 5), 5);
    char tiny[1];
    ASSERT_STR_EQ(ff_text_escape(tiny, 1, "abc", 3), "");
}

static int glob(const char *pat, const char *name) {
    return ff_text_glob(pat, name, strlen(name));
}

static void test_glob(void) {
    ASSERT(glob("*", "anything"));
    ASSERT(glob("node*", "node12"));
    ASSERT(!glob("node*", "xnode"));
    ASSERT(glob("n?de[0-9]", "node7"));
    ASSERT(!glob("n?de[0-9]", "nodex"));
    ASSERT(glob("[!a-c]x", "dx"));
    ASSERT(!glob("[^a-c]x", "bx"));
    ASSERT(glob("[]]", "]"));
    ASSERT(glob("a*b*c", "aXXbYYc"));
    ASSERT(!glob("a*b*c", "aXXbYY"));
    ASSERT(glob("*.*", "x.y"));
    /* A leading dot only for a pattern that starts with one. */
    ASSERT(!glob("*", ".hidden"));
    ASSERT(glob(".*", ".hidden"));
    /* Every byte of a name is a byte: NUL too. */
    ASSERT(ff_text_glob("a?b", "a\0b", 3));
    ASSERT(ff_text_glob("*b", "a\0b", 3));
    ASSERT(!ff_text_glob("a", "a\0b", 3));
    /* An unclosed set is a plain '['. */
    ASSERT(glob("[ab", "[ab"));
    /* No exponential backtracking. */
    char name[4001];
    memset(name, 'a', 4000);
    name[4000] = '\0';
    ASSERT(!glob("*a*a*a*a*a*a*a*a*a*b", name));
}

int main(void) {
    RUN(test_escape);
    RUN(test_glob);
    return 0;
}
