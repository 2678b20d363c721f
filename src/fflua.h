/*
 * fflua.h: the public embedding API of fflua.
 *
 * fflua is a workflow engine that embeds Lua 5.4. A C application that has
 * its own lua_State calls fflua_open() once, after luaL_openlibs(), and the
 * state can then `require "functionfuse"` exactly as a script run by the
 * fflua program does: the Lua package is compiled into the library, so no
 * files need to be installed beside the application.
 *
 * Errors: every fallible function returns an int, 0 on success, a negated
 * errno value, or one of the FFLUA_E* codes below. The FFLUA_E* codes occupy
 * the range [FFLUA_ERRCODE_LAST, FFLUA_ERRCODE_FIRST], chosen to stay clear of
 * errno values and of LMDB's codes (-30800 to -30780).
 *
 * Two Lua states, in one thread each, can use fflua at the same time. The
 * process shares only the table of open storages (LMDB allows one
 * environment per file and process) and, once a storage is opened, fault
 * handlers for SIGSEGV and SIGBUS that chain to those installed before
 * them (docs/embedding.md).
 */
#ifndef FFLUA_H
#define FFLUA_H

#ifdef __cplusplus
extern "C" {
#endif

#define FFLUA_VERSION_MAJOR 0
#define FFLUA_VERSION_MINOR 1
#define FFLUA_VERSION_PATCH 0
#define FFLUA_STRINGIFY_(x) #x
#define FFLUA_STRINGIFY(x) FFLUA_STRINGIFY_(x)
/* The version as "MAJOR.MINOR.PATCH". */
#define FFLUA_VERSION                                                                              \
    FFLUA_STRINGIFY(FFLUA_VERSION_MAJOR)                                                           \
    "." FFLUA_STRINGIFY(FFLUA_VERSION_MINOR) "." FFLUA_STRINGIFY(FFLUA_VERSION_PATCH)
/* The version as one number: MAJOR * 10000 + MINOR * 100 + PATCH. */
#define FFLUA_VERSION_NUM                                                                          \
    (FFLUA_VERSION_MAJOR * 10000 + FFLUA_VERSION_MINOR * 100 + FFLUA_VERSION_PATCH)

/*
 * Error codes. The X-macro keeps each code, its name and its text together;
 * new codes are appended, never renumbered.
 */
#define FFLUA_ERRCODE_FIRST (-31000)
#define FFLUA_ERRCODE_LAST (-31999)

#define FFLUA_ERRNO_MAP(XX)                                                                        \
    XX(EINTERNAL, -31000, "internal error")                                                        \
    XX(ELUA, -31001, "Lua error")                                                                  \
    XX(ECLOSED, -31002, "object is closed")                                                        \
    XX(ECYCLE, -31003, "the workflow graph has a cycle")                                           \
    XX(EPATTERN, -31004, "invalid regular expression")                                             \
    XX(ECORRUPT, -31005, "malformed or corrupted data")                                            \
    XX(ECHECKSUM, -31006, "checksum mismatch")                                                     \
    XX(ENOTFOUND, -31007, "no such stored result")                                                 \
    XX(EPROTO, -31008, "protocol error")                                                           \
    XX(EAUTH, -31009, "authentication failed")                                                     \
    XX(EVERSION, -31010, "version mismatch")                                                       \
    XX(ERESOURCE, -31011, "resource request cannot be satisfied")                                  \
    XX(EUNSUPPORTED, -31012, "not supported by this build")                                        \
    XX(ENOSERIAL, -31013, "value has no encoding")                                                 \
    XX(EINCOMPLETE, -31014, "incomplete: more bytes are needed")                                   \
    XX(ERESOLVE, -31015, "cannot resolve the host name")

enum {
#define FFLUA_ERR_ENUM_(name, code, text) FFLUA_##name = (code),
    FFLUA_ERRNO_MAP(FFLUA_ERR_ENUM_)
#undef FFLUA_ERR_ENUM_
};

/* A description of the error code rc: one of ours, a negated errno, or 0.
 * The returned string is static; the function is thread-safe. */
const char *fflua_strerror(int rc);

/* The symbolic name of rc ("FFLUA_ECYCLE", "ENOENT"), or "UNKNOWN".
 * The returned string is static; the function is thread-safe. */
const char *fflua_err_name(int rc);

/* The version string of the library, which may differ from FFLUA_VERSION
 * when an application was built against another header. */
const char *fflua_version(void);

struct lua_State;

/* Makes `require "functionfuse"` (and every module of the fflua Lua package)
 * work in L: registers functionfuse.core in package.preload and adds a
 * searcher for the embedded Lua modules after the preload searcher.
 * Call it after luaL_openlibs(L) (at least the package library must be
 * open). Leaves the stack as it found it. Returns 0, or FFLUA_EINTERNAL when
 * L has no package library. */
int fflua_open(struct lua_State *L);

/* Hook points around every node a backend runs, for C embedders: before is
 * called right before the node's function (after its plugins' pre-run
 * call), after right after it, with failed = 1 when it raised. Either may
 * be NULL. The name is valid only during the call. */
typedef struct fflua_hooks {
    void (*before)(void *ud, const char *node_name);
    void (*after)(void *ud, const char *node_name, int failed);
} fflua_hooks;

/* Installs hooks (copied; NULL removes them) for the functionfuse engine of
 * L. Returns 0. */
int fflua_set_hooks(struct lua_State *L, const fflua_hooks *hooks, void *ud);

/* The Lua C module entry point of functionfuse.core; pushes one table. */
int luaopen_functionfuse_core(struct lua_State *L);

#ifdef __cplusplus
}
#endif
#endif /* FFLUA_H */
