/*
 * fflua.h: the public embedding API of fflua.
 *
 * fflua is a workflow engine that embeds Lua 5.4. A C application links
 * one library, libfflua (shared or static; `pkg-config --cflags --libs
 * fflua`, or find_package(fflua) and fflua::fflua in CMake), and makes an
 * engine: a Lua state of its own (fflua_new) or one it has (fflua_attach)
 * in which `require "functionfuse"` works as in a script run by the fflua
 * program; the Lua package is compiled into the library, so no files need
 * to be installed beside the application. With an engine it runs code
 * (fflua_dostring, fflua_dofile), offers C functions as workflow functions
 * (fflua_register), watches nodes run (fflua_set_hooks), runs workflows and
 * reads their results off the Lua stack (fflua_run), and reads what went
 * wrong and on which node (fflua_errmsg, fflua_errnode). docs/embedding.md
 * has a complete program; examples/embed/ another.
 *
 * Errors: every fallible function returns an int, 0 on success, a negated
 * errno value, or one of the FFLUA_E* codes below. The FFLUA_E* codes occupy
 * the range [FFLUA_ERRCODE_LAST, FFLUA_ERRCODE_FIRST], chosen to stay clear of
 * errno values and of LMDB's codes (-30800 to -30780). A Lua error is
 * FFLUA_ELUA; fflua_errmsg then tells it.
 *
 * Threads: an engine, and its Lua state, belong to one thread at a time;
 * nothing here locks. Separate engines (separate states) may run in
 * separate threads at the same time. The process shares only what cannot
 * be had twice: the table of open storages, one LMDB environment per
 * storage directory and process (every state that opens a storage on one
 * directory shares it; the table is locked), and, from the first storage
 * opened on, handlers for SIGSEGV and SIGBUS that recover from faults in a
 * damaged storage file and chain to those installed before them. Nothing
 * else: no global Lua state, no other signal handler, no environment
 * changes.
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
 * searcher for the embedded Lua modules after the preload searcher (once:
 * calling it again on L changes nothing). Call it after luaL_openlibs(L)
 * (at least the package library must be open). fflua_attach calls it; a
 * host that wants only the package, no engine, may call it alone. Leaves
 * the stack as it found it. Returns 0, or FFLUA_EINTERNAL when L has no
 * package library. */
int fflua_open(struct lua_State *L);

/* An engine: a Lua state with the functionfuse package, and the last
 * error. Opaque; made by fflua_new or fflua_attach, freed by fflua_close. */
typedef struct fflua_engine fflua_engine;

/* Makes an engine with a Lua state of its own, the standard libraries open
 * and the functionfuse package loadable. *ep gets the engine (NULL on
 * failure). Returns 0, or -ENOMEM. */
int fflua_new(fflua_engine **ep);

/* Makes an engine on the host's state L, whose package library must be
 * open (luaL_openlibs): installs the package loader (fflua_open) and marks
 * L as the engine's. The host keeps L: fflua_close leaves it open, and the
 * host must not close L before it has closed the engine. *ep gets the
 * engine (NULL on failure). Returns 0, -EEXIST when L has an engine
 * already, FFLUA_EINTERNAL when L has no package library, or -ENOMEM. The
 * stack is as it was. */
int fflua_attach(struct lua_State *L, fflua_engine **ep);

/* Frees the engine: closes its own state (which commits and closes the
 * storages it opened), or, attached, removes its hooks and mark from the
 * host's state and leaves the state open (what Lua holds there, such as
 * functionfuse.c, stays until the state goes). e may be NULL. */
void fflua_close(fflua_engine *e);

/* The engine's Lua state, to push values and read results with the Lua C
 * API. Owned by the engine (or the host, attached); valid until
 * fflua_close. */
struct lua_State *fflua_state(const fflua_engine *e);

/* Runs the Lua code in the string code (text or bytecode), as
 * luaL_dostring does, chunkname naming it in messages (as lua_load's:
 * "=name" or "@file"; NULL: the code itself). On success the chunk's
 * return values are pushed (lua_gettop tells how many) and 0 is returned;
 * on failure nothing is pushed and the result is FFLUA_ELUA, or -EINVAL
 * when code is NULL. */
int fflua_dostring(fflua_engine *e, const char *code, const char *chunkname);

/* As fflua_dostring, for the file at path (NULL: standard input). */
int fflua_dofile(fflua_engine *e, const char *path);

/* A C function with the signature of lua_CFunction. */
typedef int (*fflua_cfunction)(struct lua_State *L);

/* Makes fn a workflow function named name: in Lua, calling
 * require("functionfuse").c[name] (a node factory, as ff.workflow(name,
 * fn) makes) makes a node, and a run calls fn with the node's arguments
 * (parents' results in place) on the Lua stack. The node's result is what
 * fn returns: nothing is nil, one value itself, several a table
 * { v1, ..., n = N }; an error it raises (lua_error, luaL_error) fails the
 * node. Registering a name again replaces the factory. Such nodes run on
 * the local backend only: a C function cannot travel to a cluster worker.
 * Returns 0, -EINVAL (name or fn NULL), or FFLUA_ELUA (a name that is not
 * a valid function name; fflua_errmsg says why). */
int fflua_register(fflua_engine *e, const char *name, fflua_cfunction fn);

/* Hook points around every node the local backend runs: before is called
 * right before the node's function (after its plugins' pre-run call),
 * after right after it, with failed = 1 when it raised, and then, for a
 * failure, failure with the node's name and the error's message (as
 * fflua_errmsg gives it: "node 'NAME' (function ...) failed: ..." and a
 * traceback). A node whose function runs a workflow that fails fails as
 * well, after the node inside it. On a cluster (a ClusterWorkflow run
 * from the engine's state) the nodes run in worker processes: before and
 * after are not called, and failure is called when the driver hears of a
 * failed node. Any may be NULL. The strings are valid only during the
 * call. A hook must not raise a Lua error nor close the engine. */
typedef struct fflua_hooks {
    void (*before)(void *ud, const char *node_name);
    void (*after)(void *ud, const char *node_name, int failed);
    void (*failure)(void *ud, const char *node_name, const char *message);
} fflua_hooks;

/* Installs hooks for the engine (copied; NULL removes them) and the
 * pointer ud passed to them, which the host owns and keeps valid while
 * they are installed. Returns 0 or FFLUA_ELUA (no memory for the engine's
 * context). */
int fflua_set_hooks(fflua_engine *e, const fflua_hooks *hooks, void *ud);

/* Runs a workflow: pops the nargs values at the top of the stack, which
 * are either one workflow object (anything with a run method: a
 * LocalWorkflow, a ClusterWorkflow made in Lua; workflow_name must then be
 * NULL) or nodes, which run together on the local backend as the workflow
 * workflow_name (NULL: "fflua"). On success pushes the run's results, one
 * per leaf, sets *nresults (may be NULL) to their number and returns 0.
 * On failure pushes nothing and returns FFLUA_ELUA (fflua_errmsg and
 * fflua_errnode say what failed where), or -EINVAL when the stack has fewer
 * than nargs values (nothing is popped then). */
int fflua_run(fflua_engine *e, const char *workflow_name, int nargs, int *nresults);

/* The message of the engine's last failure, with a traceback, or NULL when
 * the last call that can fail succeeded. For a node's failure it starts
 * "node 'NAME' (function 'F' ...) failed: ". Owned by the engine; valid
 * until the next call on it. */
const char *fflua_errmsg(const fflua_engine *e);

/* The name of the node whose failure the last failure was (a node's
 * failure inside a script run by fflua_dostring counts too), or NULL. Owned
 * by the engine; valid until the next call on it. */
const char *fflua_errnode(const fflua_engine *e);

/* The Lua C module entry point of functionfuse.core; pushes one table. */
int luaopen_functionfuse_core(struct lua_State *L);

#ifdef __cplusplus
}
#endif
#endif /* FFLUA_H */
