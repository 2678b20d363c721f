/*
 * exec.h: a cluster worker's task executor, a Lua state that runs tasks
 * (lexec.c). The worker program (worker.c) has no Lua: it receives tasks,
 * keeps functions and results, and calls an executor through this
 * interface only.
 *
 * An executor owns one Lua state with the standard libraries and the
 * functionfuse package, in which os.exit fails the node instead of ending
 * the process. It decodes a run's functions when a task first needs them
 * and keeps them until told to forget; it decodes a task's arguments,
 * calls its pre-run function and its function, and encodes the result.
 *
 * Actors: a constructor task's result (a class instance) stays in the
 * executor's state, by run and task index, and its result on the wire is
 * the marker `true`; a method call task gets that instance wherever its
 * arguments name the constructor. The worker runs every call of an actor
 * on the executor that made it. ff_exec_sweep drops the instances the
 * store says are gone.
 *
 * Threads: an executor is used by one thread at a time (each of a
 * worker's executor threads has one; its loop thread runs no task).
 * Executors share nothing: several run at once in their threads. The
 * store's functions are called from the thread running the task, during
 * ff_exec_run. ff_exec_interrupt alone may be called from another thread,
 * while the executor runs.
 *
 * Stopping a task: ff_exec_interrupt sets a Lua hook on the executor's
 * state (lua_sethook, which lua.c calls from a signal handler for Ctrl-C:
 * it only stores a few fields) that raises an error at the task's next
 * Lua instruction and arms itself again, so that a pcall in the node
 * cannot swallow it. A task stuck in a C call does not reach a hook: the
 * worker then gives up its process (worker.c).
 *
 * Memory: after each task, the state's garbage is collected when the
 * state grew well past its size after the previous full collection, so
 * that a task's large values do not outlive it (nor starve the next
 * task) while tiny tasks pay nothing.
 */
#ifndef FFLUA_EXEC_H
#define FFLUA_EXEC_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* The registry field of an executor's Lua state that holds the name of
 * the node running (core.node_name() reads it). */
#define FF_EXEC_NODE_KEY "fflua.worker.node"

typedef struct ff_exec ff_exec;

/* Where an executor gets the bytes of a run's functions and of finished
 * tasks' results: a malloc'd copy (the executor frees it) and its size,
 * or NULL when there is none. */
typedef struct ff_exec_store {
    char *(*func)(void *ud, uint64_t run, uint64_t fid, size_t *n);
    char *(*result)(void *ud, uint64_t run, uint64_t index, size_t *n);
    /* Whether the actor made by task (run, index) is still wanted. */
    int (*actor_live)(void *ud, uint64_t run, uint64_t index);
    void *ud;
} ff_exec_store;

/* A task to run; everything is borrowed for the call. */
typedef struct ff_exec_task {
    uint64_t run, fid;
    const char *name;     /* the node's name, NUL-terminated */
    const uint64_t *deps; /* the dependencies' task indices, in slot order */
    size_t ndeps;
    const char *args; /* FFC_CODE bytes of { n = N, ... } with node tags */
    size_t nargs;
    const char *pre; /* FFC_CODE bytes of the pre-run function; npre 0: none */
    size_t npre;
    int actor;           /* FF_ACTOR_* (msg.h) */
    uint64_t ctor;       /* FF_ACTOR_METHOD: the task index of its constructor */
    uint64_t index;      /* the task's own index (where a constructor keeps its actor) */
    const char *dir;     /* the run's working directory (absolute), or NULL: none */
    uint64_t serial;     /* nonzero, distinct per task: what ff_exec_interrupt names */
    uint64_t timeout_ms; /* for the message of a task stopped after its timeout */
} ff_exec_task;

/* Why a task is stopped (ff_exec_interrupt). */
enum { FF_EXEC_CANCEL = 1, FF_EXEC_TIMEOUT = 2 };

/* Makes an executor that gets bytes from store (copied). 0, or -ENOMEM
 * when no Lua state can be made. */
int ff_exec_create(ff_exec **x, const ff_exec_store *store);

/* Where x runs tasks: home (absolute, borrowed for x's life) is the
 * worker's startup directory, the current directory of tasks of runs
 * without a working directory, and own_fs says whether chdir in x's
 * thread affects that thread only (unshare(CLONE_FS) succeeded, or the
 * thread is the process's one that runs tasks). Without own_fs, tasks of
 * runs with a working directory fail. Called once, before the first task. */
void ff_exec_set_home(ff_exec *x, const char *home, int own_fs);

/* Forgets the functions decoded so far (their runs are over). */
void ff_exec_forget(ff_exec *x);

/* Drops the actors (instances) for which the store's actor_live says 0. */
void ff_exec_sweep(ff_exec *x);

/* Runs task t, in t->dir when it has one (then also first on package.path
 * and package.cpath, and with the modules loaded from it dropped from
 * package.loaded once a task of another directory comes), else in home.
 * 0: its result's bytes (FFC_CODE) replace out's content.
 * FFLUA_ELUA: the task failed (its error, a result that cannot be
 * encoded or is too large for a message, a function that never
 * arrived); ff_exec_error says why. -ECANCELED or -ETIMEDOUT: it was
 * stopped by ff_exec_interrupt (FF_EXEC_CANCEL, FF_EXEC_TIMEOUT);
 * ff_exec_error says so ("node 'x' ran longer than its timeout of 2 s:
 * stopped"). */
int ff_exec_run(ff_exec *x, const ff_exec_task *t, ff_buf *out);

/* From any thread: stops the task whose serial is given, if x runs it
 * (now, or from now on: a task not started yet is stopped at its first
 * instruction), with why (FF_EXEC_CANCEL or FF_EXEC_TIMEOUT). Any other
 * task is left alone. The caller makes sure x is not destroyed meanwhile. */
void ff_exec_interrupt(ff_exec *x, uint64_t serial, int why);

/* Why the last ff_exec_run failed, with its traceback: owned by x, valid
 * until its next call. */
const char *ff_exec_error(ff_exec *x, size_t *len);

/* Closes the Lua state and frees x (NULL: nothing). */
void ff_exec_destroy(ff_exec *x);

#endif
