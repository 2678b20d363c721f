/* The error code tables of fflua.h. */
#include <errno.h>

#include "fflua.h"
#include "test.h"

static void test_own_codes(void) {
    ASSERT_STR_EQ(fflua_err_name(FFLUA_ECYCLE), "FFLUA_ECYCLE");
    ASSERT_STR_EQ(fflua_strerror(FFLUA_ECYCLE), "the workflow graph has a cycle");
    ASSERT_STR_EQ(fflua_err_name(FFLUA_EPATTERN), "FFLUA_EPATTERN");
    /* Every code is in the reserved range, distinct and has text. */
    int codes[] = {
#define XX(name, code, text) code,
        FFLUA_ERRNO_MAP(XX)
#undef XX
    };
    size_t n = sizeof codes / sizeof codes[0];
    for (size_t i = 0; i < n; i++) {
        ASSERT(codes[i] <= FFLUA_ERRCODE_FIRST && codes[i] >= FFLUA_ERRCODE_LAST);
        ASSERT(strcmp(fflua_strerror(codes[i]), "unknown error") != 0);
        ASSERT(strncmp(fflua_err_name(codes[i]), "FFLUA_E", 7) == 0);
        for (size_t j = 0; j < i; j++)
            ASSERT(codes[i] != codes[j]);
    }
    /* LMDB's codes (-30800..-30780) must not fall in our range. */
    ASSERT(FFLUA_ERRCODE_FIRST < -30800 || FFLUA_ERRCODE_LAST > -30780);
}

static void test_errno_codes(void) {
    ASSERT_STR_EQ(fflua_err_name(-ENOENT), "ENOENT");
    ASSERT_STR_EQ(fflua_strerror(-ENOENT), "No such file or directory");
    ASSERT_STR_EQ(fflua_err_name(0), "OK");
    ASSERT_STR_EQ(fflua_strerror(0), "success");
}

static void test_unknown_codes(void) {
    ASSERT_STR_EQ(fflua_err_name(-31999), "UNKNOWN");
    ASSERT_STR_EQ(fflua_strerror(-31999), "unknown error");
    ASSERT_STR_EQ(fflua_strerror(12345), "unknown error");
    ASSERT_STR_EQ(fflua_err_name(-100000), "UNKNOWN");
}

static void test_version(void) {
    ASSERT_STR_EQ(fflua_version(), FFLUA_VERSION);
    char buf[32];
    snprintf(buf, sizeof buf, "%d.%d.%d", FFLUA_VERSION_NUM / 10000, FFLUA_VERSION_NUM / 100 % 100,
             FFLUA_VERSION_NUM % 100);
    ASSERT_STR_EQ(buf, FFLUA_VERSION);
}

int main(void) {
    RUN(test_own_codes);
    RUN(test_errno_codes);
    RUN(test_unknown_codes);
    RUN(test_version);
    return 0;
}
