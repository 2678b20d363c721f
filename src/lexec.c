/*
 * lexec.c: a cluster worker's task executor (exec.h): one Lua state that
 * runs tasks whose function, pre-run function and arguments arrive as
 * codec bytes (FFC_CODE: only from the authenticated head).
 *
 * Registry of the state: "fflua.worker.funcs" maps a run to its functions
 * decoded so far, by function id; "fflua.worker.node" is the name of the
 * node running, for os.exit's error; "fflua.worker.saved" holds, while a
 * run's working directory is in place, package.path and package.cpath as
 * they were; "fflua.worker.base" the names package.loaded had when the
 * state was made (the rest is dropped when the working directory
 * changes). A dependency's result is decoded
 * where the arguments name it (a node tag), from a copy the worker makes.
 * "fflua.worker.actors" maps a run to its actors here, by the task index
 * of their constructor: a method call's arguments get the instance where
 * they name that constructor.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "codec.h"
#include "exec.h"
#include "fflua.h"
#include "lcmd.h"
#include "lutil.h"
#include "msg.h"
#include "net.h"

#define FUNCS_KEY "fflua.worker.funcs"
#define NODE_KEY FF_EXEC_NODE_KEY
#define ACTORS_KEY "fflua.worker.actors"
#define SAVED_KEY "fflua.worker.saved" /* { path, cpath } outside a working dir */
#define BASE_KEY "fflua.worker.base"   /* the modules the state was made with (a set) */

struct ff_exec {
    lua_State *L;
    ff_exec_store store;
    const char *home; /* the worker's startup directory (borrowed) */
    int own_fs;
    char cwd[4096];        /* the thread's current directory, as last set; "": home */
    char wd[4096];         /* the working dir whose package paths are in place; "": none */
    const ff_exec_task *t; /* the task running, and where its result goes */
    ff_buf *out;
    /* Stopping (ff_exec_interrupt, from another thread): the serial of
     * the task to stop and why. The rest is the executor thread's own. */
    _Atomic uint64_t stop_serial;
    _Atomic int stop_why;
    uint64_t serial; /* the task running, 0 between tasks */
    int stopped;     /* the hook stopped it: FF_EXEC_* */
    int gc_base;     /* KiB in use after the last full collection */
};

/* The state's extra space holds its ff_exec, for the hook (coroutines
 * made in the state get a copy). */
static ff_exec *exec_of(lua_State *L) {
    ff_exec *x;
    memcpy(&x, lua_getextraspace(L), sizeof x);
    return x;
}

#define STOP_MASK (LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT)

/* The hook of ff_exec_interrupt: raises the stop at the task's next
 * instruction and stays armed, so that a pcall in the node cannot swallow
 * it (the error unwinds to ff_exec_run, which disarms it). A hook left
 * from a task that ended disarms itself; one that a new interrupt armed
 * meanwhile is armed again. */
static void stop_hook(lua_State *L, lua_Debug *ar) {
    ff_exec *x = exec_of(L);
    (void)ar;
    if (x->serial == 0 || atomic_load(&x->stop_serial) != x->serial) {
        lua_sethook(L, NULL, 0, 0);
        if (x->serial == 0 || atomic_load(&x->stop_serial) != x->serial)
            return;
    }
    lua_sethook(L, stop_hook, STOP_MASK, 1);
    x->stopped = atomic_load(&x->stop_why);
    const char *name = x->t != NULL ? x->t->name : "?";
    if (x->stopped == FF_EXEC_TIMEOUT) {
        char secs[32];
        snprintf(secs, sizeof secs, "%g", (double)(x->t != NULL ? x->t->timeout_ms : 0) / 1000);
        lua_pushfstring(L, "node '%s' ran longer than its timeout of %s s: stopped", name, secs);
    } else {
        lua_pushfstring(L, "node '%s' was cancelled: its run ended", name);
    }
    lua_error(L);
}

/* Pushes the actors table of run (made when create), or nil. */
static void push_actors(lua_State *L, uint64_t run, int create) {
    lua_getfield(L, LUA_REGISTRYINDEX, ACTORS_KEY); /* [all] */
    if (lua_rawgeti(L, -1, (lua_Integer)run) == LUA_TNIL && create) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_rawseti(L, -3, (lua_Integer)run);
    }
    lua_remove(L, -2); /* [actors or nil] */
}

/* Decode hook: a dependency's result, by its slot in the task's list; the
 * instance itself for a method call's constructor. */
static int push_dep(void *ud, lua_State *L, uint64_t slot) {
    ff_exec *x = ud;
    if (slot >= x->t->ndeps) {
        lua_pushliteral(L, "a task argument refers to a dependency it does not have");
        return 1;
    }
    if (x->t->actor == FF_ACTOR_METHOD && x->t->deps[slot] == x->t->ctor) {
        push_actors(L, x->t->run, 0);
        if (lua_isnil(L, -1) || lua_rawgeti(L, -1, (lua_Integer)x->t->ctor) == LUA_TNIL) {
            lua_pushliteral(L, "its actor is not in the Lua state running it");
            return 1;
        }
        lua_remove(L, -2);
        return 0;
    }
    size_t n;
    char *p = x->store.result(x->store.ud, x->t->run, x->t->deps[slot], &n);
    if (p == NULL) {
        lua_pushliteral(L, "a dependency's result is not on this worker");
        return 1;
    }
    int rc = ffc_decode_code(L, p, n, NULL, NULL);
    free(p);
    return rc != 0;
}

/* Pushes the task's function, from this state's cache or decoded. */
static int push_function(ff_exec *x) {
    lua_State *L = x->L;
    const ff_exec_task *t = x->t;
    lua_getfield(L, LUA_REGISTRYINDEX, FUNCS_KEY); /* [cache] */
    lua_rawgeti(L, -1, (lua_Integer)t->run);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_rawseti(L, -3, (lua_Integer)t->run);
    }
    lua_remove(L, -2); /* [run cache] */
    if (lua_rawgeti(L, -1, (lua_Integer)t->fid) != LUA_TNIL) {
        lua_remove(L, -2);
        return 0;
    }
    lua_pop(L, 1);
    size_t n;
    char *p = x->store.func(x->store.ud, t->run, t->fid, &n);
    if (p == NULL) {
        lua_pop(L, 1);
        lua_pushfstring(L, "function %d of the run never arrived", (int)t->fid);
        return 1;
    }
    int rc = ffc_decode_code(L, p, n, NULL, NULL);
    free(p);
    if (rc != 0) {
        lua_remove(L, -2);
        return 1;
    }
    lua_pushvalue(L, -1);
    lua_rawseti(L, -3, (lua_Integer)t->fid);
    lua_remove(L, -2);
    return 0;
}

/* os.exit in a task's state: a node ending its worker's process would
 * take the other tasks there with it and leave its run to learn only that
 * the worker left. The node fails instead, with a clear error. */
static int l_os_exit(lua_State *L) {
    lua_getfield(L, LUA_REGISTRYINDEX, NODE_KEY);
    const char *name = lua_tostring(L, -1);
    return luaL_error(L, "os.exit called in node '%s': a node cannot end its worker's process",
                      name != NULL ? name : "?");
}

/* Drops from package.loaded every module the state did not have when it
 * was made (BASE_KEY), so that the next require finds the copy on the
 * path now in place; fflua's own package stays (it is built in: no
 * working directory has another copy of it, and its core holds the
 * state's engine). */
static void drop_modules(lua_State *L) {
    lua_getfield(L, LUA_REGISTRYINDEX, BASE_KEY);         /* [base] */
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE); /* [base, loaded] */
    lua_newtable(L);                                      /* [base, loaded, drop] */
    lua_Integer n = 0;
    lua_pushnil(L);
    while (lua_next(L, -3) != 0) {
        lua_pop(L, 1);
        size_t len;
        const char *nm = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
        if (nm != NULL && strncmp(nm, "functionfuse", 12) == 0 && (nm[12] == '\0' || nm[12] == '.'))
            continue;
        lua_pushvalue(L, -1); /* [.., drop, name, name] */
        if (lua_rawget(L, -5) == LUA_TNIL) {
            lua_pushvalue(L, -2);
            lua_rawseti(L, -4, ++n);
        }
        lua_pop(L, 1);
    }
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, -1, i);
        lua_pushnil(L);
        lua_rawset(L, -4);
    }
    lua_pop(L, 3);
}

/* Puts the package paths of working directory dir (NULL: none) in place,
 * after undoing those of the last one. On every change, in either
 * direction, the modules loaded since the state was made are dropped: a
 * module loaded in one directory (or in none) never stands in for
 * another's copy. */
static void enter_workdir(lua_State *L, ff_exec *x, const char *dir) {
    if (dir == NULL ? x->wd[0] == '\0' : strcmp(x->wd, dir) == 0)
        return;
    if (dir != NULL && strlen(dir) >= sizeof x->wd)
        luaL_error(L, "the path of the working directory is too long");
    lua_getglobal(L, "package"); /* [package] */
    if (x->wd[0] != '\0') {
        lua_getfield(L, LUA_REGISTRYINDEX, SAVED_KEY); /* [package, saved] */
        lua_getfield(L, -1, "path");
        lua_setfield(L, -3, "path");
        lua_getfield(L, -1, "cpath");
        lua_setfield(L, -3, "cpath");
        lua_pop(L, 1);
        lua_pushnil(L);
        lua_setfield(L, LUA_REGISTRYINDEX, SAVED_KEY);
        x->wd[0] = '\0';
    }
    drop_modules(L);
    if (dir != NULL) {
        lua_createtable(L, 0, 2); /* [package, saved] */
        lua_getfield(L, -2, "path");
        lua_setfield(L, -2, "path");
        lua_getfield(L, -2, "cpath");
        lua_setfield(L, -2, "cpath");
        lua_getfield(L, -1, "path");
        lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", dir, dir, lua_tostring(L, -1));
        lua_setfield(L, -4, "path");
        lua_pop(L, 1);
        lua_getfield(L, -1, "cpath");
        lua_pushfstring(L, "%s/?.so;%s", dir, lua_tostring(L, -1));
        lua_setfield(L, -4, "cpath");
        lua_pop(L, 1);
        lua_setfield(L, LUA_REGISTRYINDEX, SAVED_KEY); /* [package] */
        snprintf(x->wd, sizeof x->wd, "%s", dir);
    }
    lua_pop(L, 1);
}

/* Enters the task's directory when the thread is elsewhere (raises when
 * it cannot). */
static void enter_dir(lua_State *L, ff_exec *x, const ff_exec_task *t) {
    const char *want = t->dir != NULL ? t->dir : x->home;
    const char *now = x->cwd[0] != '\0' ? x->cwd : x->home;
    if (want == NULL || (now != NULL && strcmp(now, want) == 0))
        return;
    if (!x->own_fs)
        luaL_error(L,
                   "node '%s' cannot run in its working directory: this worker's threads "
                   "cannot have a current directory of their own (unshare(CLONE_FS) failed)",
                   t->name);
    if (strlen(want) >= sizeof x->cwd || chdir(want) != 0)
        luaL_error(L, "node '%s' cannot enter its directory %s: %s", t->name, want,
                   strlen(want) >= sizeof x->cwd ? "its path is too long" : strerror(errno));
    snprintf(x->cwd, sizeof x->cwd, "%s", want);
}

/* Protected: runs the task of the ff_exec that is the light userdata at 1;
 * leaves the encoded result in its out. */
static int run_task(lua_State *L) {
    ff_exec *x = lua_touserdata(L, 1);
    const ff_exec_task *t = x->t;
    lua_settop(L, 0);
    enter_dir(L, x, t);
    enter_workdir(L, x, t->dir); /* before decoding: functions may name its modules */
    lua_pushstring(L, t->name);
    lua_setfield(L, LUA_REGISTRYINDEX, NODE_KEY);
    ffl_cmd_node_start(L); /* no EnvPlugin overlay from an earlier node */
    if (push_function(x) != 0)
        return lua_error(L);
    int fn = lua_gettop(L);
    if (t->npre > 0) {
        if (ffc_decode_code(L, t->pre, t->npre, NULL, NULL) != 0)
            return lua_error(L);
        lua_call(L, 0, 0);
    }
    if (ffc_decode_code(L, t->args, t->nargs, push_dep, x) != 0)
        return lua_error(L);
    int at = lua_gettop(L);
    lua_getfield(L, at, "n");
    lua_Integer nargs = lua_tointeger(L, -1);
    lua_pop(L, 1);
    luaL_checkstack(L, (int)nargs + LUA_MINSTACK, "too many arguments");
    lua_pushvalue(L, fn);
    for (lua_Integer i = 1; i <= nargs; i++)
        lua_rawgeti(L, at, i);
    lua_call(L, (int)nargs, LUA_MULTRET);
    ffl_one_result(L, at);
    if (t->actor == FF_ACTOR_CTOR) { /* the instance stays here; a marker goes */
        push_actors(L, t->run, 1);
        lua_insert(L, -2);
        lua_rawseti(L, -2, (lua_Integer)t->index);
        lua_pop(L, 1);
        lua_pushboolean(L, 1);
    }
    x->out->n = 0;
    ffc_opts o = {FFC_CODE, NULL, NULL, 0};
    if (ffc_encode(L, -1, &o, x->out) != 0) {
        const char *msg = lua_tostring(L, -1);
        lua_pushfstring(L, "result of node '%s'%s%s", t->name,
                        strncmp(msg, "at ", 3) == 0 ? " " : ": ", msg);
        return lua_error(L);
    }
    if (x->out->n > FF_FRAME_MAX - 1024)
        return luaL_error(L,
                          "result of node '%s': %d MiB, more than one message may carry "
                          "(%d MiB)",
                          t->name, (int)(x->out->n >> 20), (int)(FF_FRAME_MAX >> 20));
    return 0;
}

int ff_exec_create(ff_exec **xp, const ff_exec_store *store) {
    ff_exec *x = calloc(1, sizeof *x);
    lua_State *L = x != NULL ? luaL_newstate() : NULL;
    if (L == NULL) {
        free(x);
        return -ENOMEM;
    }
    luaL_openlibs(L);
    fflua_open(L);
    lua_newtable(L); /* [base]: the names in package.loaded now */
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_pushnil(L);
    while (lua_next(L, -2) != 0) {
        lua_pop(L, 1);
        lua_pushvalue(L, -1);
        lua_pushboolean(L, 1);
        lua_rawset(L, -5);
    }
    lua_pop(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, BASE_KEY);
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, FUNCS_KEY);
    lua_newtable(L);
    lua_setfield(L, LUA_REGISTRYINDEX, ACTORS_KEY);
    lua_getglobal(L, "os"); /* [os] */
    lua_pushcfunction(L, l_os_exit);
    lua_setfield(L, -2, "exit");
    lua_pop(L, 1);
    x->L = L;
    x->store = *store;
    memcpy(lua_getextraspace(L), &x, sizeof x);
    lua_gc(L, LUA_GCCOLLECT);
    x->gc_base = lua_gc(L, LUA_GCCOUNT);
    *xp = x;
    return 0;
}

void ff_exec_set_home(ff_exec *x, const char *home, int own_fs) {
    x->home = home;
    x->own_fs = own_fs;
}

void ff_exec_forget(ff_exec *x) {
    lua_newtable(x->L);
    lua_setfield(x->L, LUA_REGISTRYINDEX, FUNCS_KEY);
}

void ff_exec_sweep(ff_exec *x) {
    lua_State *L = x->L;
    int top = lua_gettop(L), dropped = 0;
    lua_getfield(L, LUA_REGISTRYINDEX, ACTORS_KEY); /* [all] */
    lua_pushnil(L);
    while (lua_next(L, -2)) { /* [all, run, actors] */
        uint64_t run = (uint64_t)lua_tointeger(L, -2);
        int left = 0, had = 0;
        lua_pushnil(L);
        while (lua_next(L, -2)) { /* [all, run, actors, index, instance] */
            lua_pop(L, 1);
            uint64_t index = (uint64_t)lua_tointeger(L, -1);
            if (x->store.actor_live(x->store.ud, run, index)) {
                left = 1;
            } else {
                had = 1; /* clearing a field during the traversal is allowed */
                lua_pushvalue(L, -1);
                lua_pushnil(L);
                lua_rawset(L, -4);
            }
        }
        lua_pop(L, 1); /* [all, run] */
        if (!left) {
            lua_pushvalue(L, -1);
            lua_pushnil(L);
            lua_rawset(L, -4);
        }
        dropped |= had;
    }
    lua_settop(L, top);
    /* An instance may hold much (a model): its memory goes now, not at
     * this state's next task (finalizers run protected). */
    if (dropped)
        lua_gc(L, LUA_GCCOLLECT);
}

/* Protected: the error message at 1 with a line saying where it happened
 * (this worker and its working directory) before its traceback. */
static int place_error(lua_State *L) {
    size_t len;
    const char *m = lua_tolstring(L, 1, &len);
    char host[256] = "?", cwd[4096] = "?";
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = '\0';
    if (getcwd(cwd, sizeof cwd) == NULL)
        snprintf(cwd, sizeof cwd, "(unknown: %s)", strerror(errno));
    const char *tb = strstr(m, "\nstack traceback:");
    size_t head = tb != NULL ? (size_t)(tb - m) : len;
    lua_pushlstring(L, m, head);
    lua_pushfstring(L, "\n(on worker %s:%d, working directory %s)", host, (int)getpid(), cwd);
    lua_pushlstring(L, m + head, len - head);
    lua_concat(L, 3);
    return 1;
}

/* Collects the state's garbage when it grew by half its size after the
 * last full collection and by 8 MiB: a task's large values go with it,
 * and tiny tasks, which leave a few KiB each, pay one collection of a
 * small heap per thousands of them. */
static void collect(ff_exec *x) {
    int kb = lua_gc(x->L, LUA_GCCOUNT);
    if (kb > x->gc_base + x->gc_base / 2 + 8192) {
        lua_gc(x->L, LUA_GCCOLLECT);
        x->gc_base = lua_gc(x->L, LUA_GCCOUNT);
    }
}

int ff_exec_run(ff_exec *x, const ff_exec_task *t, ff_buf *out) {
    lua_State *L = x->L;
    lua_settop(L, 0); /* the last run's error */
    x->t = t;
    x->out = out;
    x->stopped = 0;
    x->serial = t->serial;
    lua_pushcfunction(L, run_task);
    lua_pushlightuserdata(L, x);
    int status = ffl_pcall(L, 1, 0);
    x->serial = 0;
    /* An interrupt that comes now finds no task of its serial: the hook
     * it may leave disarms itself. */
    lua_sethook(L, NULL, 0, 0);
    int stopped = status != LUA_OK ? x->stopped : 0;
    /* The hook stayed armed as the stop unwound: the <close> handlers of
     * the node's commands (shell.run) failed with it. Kill them now. */
    if (stopped)
        ffl_cmd_close_all(L);
    ffl_cmd_node_start(L); /* the task's EnvPlugin overlay ends with it */
    x->t = NULL;
    x->out = NULL;
    if (status != LUA_OK && lua_type(L, -1) == LUA_TSTRING) {
        lua_pushcfunction(L, place_error);
        lua_insert(L, -2);
        if (lua_pcall(L, 1, 1, 0) != LUA_OK)
            lua_settop(L, 0); /* no memory: ff_exec_error says so */
    }
    collect(x);
    if (stopped)
        return stopped == FF_EXEC_TIMEOUT ? -ETIMEDOUT : -ECANCELED;
    return status == LUA_OK ? 0 : FFLUA_ELUA;
}

void ff_exec_interrupt(ff_exec *x, uint64_t serial, int why) {
    atomic_store(&x->stop_why, why);
    atomic_store(&x->stop_serial, serial);
    lua_sethook(x->L, stop_hook, STOP_MASK, 1);
}

const char *ff_exec_error(ff_exec *x, size_t *len) {
    const char *m = lua_gettop(x->L) > 0 ? lua_tolstring(x->L, -1, len) : NULL;
    if (m == NULL) {
        m = lua_gettop(x->L) > 0 ? "(error object is not a string)" : "not enough memory";
        *len = strlen(m);
    }
    return m;
}

void ff_exec_destroy(ff_exec *x) {
    if (x == NULL)
        return;
    lua_close(x->L);
    free(x);
}
