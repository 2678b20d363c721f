/*
 * error.c: text and names for fflua's error codes.
 */
#include <string.h>

#include "fflua.h"

const char *fflua_strerror(int rc) {
    if (rc == 0)
        return "success";
    switch (rc) {
#define XX(name, code, text)                                                                       \
    case code:                                                                                     \
        return text;
        FFLUA_ERRNO_MAP(XX)
#undef XX
    }
    if (rc < 0 && rc > -4096) {
        /* glibc's description table is constant, unlike strerror()'s buffer. */
        const char *s = strerrordesc_np(-rc);
        if (s != NULL)
            return s;
    }
    return "unknown error";
}

const char *fflua_err_name(int rc) {
    if (rc == 0)
        return "OK";
    switch (rc) {
#define XX(name, code, text)                                                                       \
    case code:                                                                                     \
        return "FFLUA_" #name;
        FFLUA_ERRNO_MAP(XX)
#undef XX
    }
    if (rc < 0 && rc > -4096) {
        const char *s = strerrorname_np(-rc);
        if (s != NULL)
            return s;
    }
    return "UNKNOWN";
}

const char *fflua_version(void) {
    return FFLUA_VERSION;
}
