/*
 * test.h: assertions for the C unit tests. A failed assertion prints
 * file:line, both values and exits non-zero; ctest runs each test binary in
 * its own process.
 */
#ifndef FFLUA_TEST_H
#define FFLUA_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAIL_(...)                                                                                 \
    do {                                                                                           \
        fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);                                            \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fputc('\n', stderr);                                                                       \
        exit(1);                                                                                   \
    } while (0)

#define ASSERT(c)                                                                                  \
    do {                                                                                           \
        if (!(c))                                                                                  \
            FAIL_("assertion failed: %s", #c);                                                     \
    } while (0)

#define ASSERT_EQ(a, b)                                                                            \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ != b_)                                                                              \
            FAIL_("%s == %s: %lld != %lld", #a, #b, a_, b_);                                       \
    } while (0)

#define ASSERT_STR_EQ(a, b)                                                                        \
    do {                                                                                           \
        const char *a_ = (a), *b_ = (b);                                                           \
        if (a_ == NULL || b_ == NULL || strcmp(a_, b_) != 0)                                       \
            FAIL_("%s == %s: \"%s\" != \"%s\"", #a, #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)");   \
    } while (0)

#define RUN(t)                                                                                     \
    do {                                                                                           \
        t();                                                                                       \
        printf("ok - %s\n", #t);                                                                   \
    } while (0)

#endif
