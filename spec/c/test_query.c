/* Regular expressions over names: re.fullmatch semantics, errors. */
#include <stdlib.h>
#include <string.h>

#include "fflua.h"
#include "query.h"
#include "test.h"

static int match(const char *pat, const char *name) {
    ff_query *q;
    char err[128];
    size_t off;
    ASSERT_EQ(ff_query_compile(pat, strlen(pat), &q, err, sizeof err, &off), 0);
    int m = ff_query_match(q, name, strlen(name));
    ff_query_free(q);
    return m;
}

static void test_fullmatch(void) {
    ASSERT_EQ(match("sum_\\d+", "sum_0001"), 1);
    ASSERT_EQ(match("sum", "sum_0001"), 0); /* not a prefix search */
    ASSERT_EQ(match("um_0001", "sum_0001"), 0);
    ASSERT_EQ(match("^.*node1.*$", "my node1 x"), 1);
    ASSERT_EQ(match("a|ab", "ab"), 1); /* backtracks into the alternative */
    ASSERT_EQ(match("(?i)SUM_.*", "sum_1"), 1);
    ASSERT_EQ(match("(?P<n>x)(?P=n)", "xx"), 1);
    ASSERT_EQ(match("a(?=b)b", "ab"), 1);
    ASSERT_EQ(match(".", "\xc3\xa9"), 1);  /* one UTF-8 character */
    ASSERT_EQ(match(".*", "\xff\xfe"), 0); /* invalid UTF-8 never matches, no error */
    ASSERT_EQ(match("a.*", "a\xff"), 0);
    ASSERT_EQ(match("x", ""), 0);
}

static void test_errors(void) {
    ff_query *q = NULL;
    char err[128] = "";
    size_t off = 0;
    ASSERT_EQ(ff_query_compile("(ab", 3, &q, err, sizeof err, &off), FFLUA_EPATTERN);
    ASSERT_STR_EQ(err, "missing closing parenthesis");
    ASSERT_EQ(off, 3);
    ASSERT(q == NULL);
    ASSERT_EQ(ff_query_compile("a**", 3, &q, err, sizeof err, &off), FFLUA_EPATTERN);
    ASSERT_STR_EQ(err, "quantifier does not follow a repeatable item");
    ASSERT_EQ(off, 2);
    ASSERT(q == NULL);
    ff_query_free(NULL);
}

static void test_jit(void) {
    ff_query *q;
    ASSERT_EQ(ff_query_compile("a+", 2, &q, NULL, 0, NULL), 0);
    printf("# JIT: %s\n", ff_query_is_jit(q) ? "yes" : "no");
    ASSERT_EQ(ff_query_match(q, "aaa", 3), 1);
    ff_query_free(q);
}

/* A limit reached is an error with a reason, never "no match". */
static void test_limits(void) {
    size_t n = 100001;
    char *name = malloc(n + 1);
    ASSERT(name != NULL);
    memset(name, 'a', n - 1);
    name[n - 1] = '!';
    name[n] = '\0';
    static const char *const pats[] = {"(a|aa)+!", "(.)*!", "(a|b|ab)*!"};
    for (size_t i = 0; i < sizeof pats / sizeof *pats; i++) {
        ff_query *q;
        ASSERT_EQ(ff_query_compile(pats[i], strlen(pats[i]), &q, NULL, 0, NULL), 0);
        ASSERT_EQ(ff_query_match(q, name, n), 1); /* the bigger JIT stack */
        ASSERT_EQ(ff_query_match(q, "aa!", 3), 1);
        ASSERT_EQ(ff_query_match(q, "aa", 2), 0);
        ff_query_free(q);
    }
    ff_query *q;
    ASSERT_EQ(ff_query_compile("(a|aa)+\\d", 9, &q, NULL, 0, NULL), 0);
    ASSERT_EQ(ff_query_match(q, name + n - 61, 61), FFLUA_EPATTERN);
    ASSERT_STR_EQ(ff_query_errmsg(q), "the match takes more than 10000000 steps");
    ASSERT_EQ(ff_query_match(q, "a1", 2), 1); /* the query still works */
    ff_query_free(q);
    free(name);
    n = 4000001;
    name = malloc(n);
    ASSERT(name != NULL);
    memset(name, 'a', n - 1);
    name[n - 1] = '!';
    ASSERT_EQ(ff_query_compile("(a|aa)+!", 8, &q, NULL, 0, NULL), 0);
    ASSERT_EQ(ff_query_match(q, name, n), FFLUA_EPATTERN);
    ASSERT_STR_EQ(ff_query_errmsg(q), "the match needs more than 64 MiB of memory");
    ff_query_free(q);
    free(name);
}

int main(void) {
    RUN(test_fullmatch);
    RUN(test_errors);
    RUN(test_jit);
    RUN(test_limits);
    return 0;
}
