/*
 * sched.h: the scheduler. Which queued task runs next, and where.
 *
 * A pure data structure and policy: places (the local state, or the workers
 * of a cluster) declare capacities of named resources, tasks ask for
 * amounts of them, and the scheduler decides what runs where and when. It
 * does no I/O, starts no threads, never blocks and knows nothing of Lua. It
 * is meant for the local executor (one place, this state) and the cluster
 * head (one place per worker).
 *
 * Amounts. Every amount is a fixed-point integer: FF_RES_SCALE units make
 * 1.0, so 0.1 of a resource is 1000 units and accounting is exact (ten
 * tasks asking 0.1 of a capacity of 1 fill it to exactly 0; an eleventh
 * waits). ff_sched_amount converts a double, and rejects one that is not a
 * whole number of units.
 *
 * Resources are interned names with small dense ids; "CPU" is always id
 * FF_RES_CPU. A place declares each resource's capacity (a resource it does
 * not name has capacity 0). A task's request names the amounts it needs
 * (FF_RES_CPU omitted means 1 CPU, the product's default num_cpus; pass
 * {FF_RES_CPU, 0} for a task that needs none).
 *
 * Machines. A place may belong to a machine (a key the caller chooses):
 * the places of one machine (a host's workers) share every resource but
 * CPU and those made a place's own (ff_sched_resource_own). A machine's resources are those its places declared (they must
 * agree on the amounts of what they both name); a task holding 1 of
 * "_disk" on one place of a machine leaves 1 less of it on all of them.
 * CPU is each place's own. A place added without a machine is a machine
 * of its own, as every place was before machines.
 *
 * Policy.
 *  - Fit: a task runs on one place, and only where every amount it asks for
 *    is free at once; running tasks hold their amounts until released.
 *  - Feasibility: a request that no present place could hold even when
 *    idle fails at submission (FFLUA_ERESOURCE) and names the resource,
 *    unless submitted with FF_SCHED_WAIT, which parks it until a place that
 *    can hold it is added. Removing a place fails the queued tasks it made
 *    infeasible (those with FF_SCHED_WAIT are parked instead) and hands
 *    back the tasks that were running there.
 *  - Placement: on the task's affinity place (where its parent ran) when it
 *    fits there, saving a round trip for dependent successors; otherwise on
 *    the place where it fits with the most free CPU, ties to the lowest
 *    index, which spreads independent tasks across places.
 *  - Order: tasks asking for exactly the same amounts share a "shape" and
 *    one FIFO queue. ff_sched_next gives the oldest queued task that fits
 *    somewhere now: a big task that cannot fit does not block younger small
 *    ones (no head-of-line blocking), and among tasks that fit, submission
 *    order is kept.
 *  - Anti-starvation: each time a younger task is started while the oldest
 *    queued task cannot fit, the oldest is "passed over". After `patience`
 *    passes (FF_SCHED_PATIENCE unless set with ff_sched_set_patience) the
 *    scheduler reserves one place for it: of the places able to hold it,
 *    the one where the least is missing (summed over its resources,
 *    relative to what it asks; ties: the most free CPU, then the lowest
 *    index). No other task starts there (nor, if it asks for more than
 *    CPU, on the other places of its machine), so the place drains as its
 *    running tasks finish and the oldest task starts there (or anywhere it
 *    fits first). Tasks keep starting on every other place meanwhile. One
 *    reservation at a time, for the oldest task; it ends when that task
 *    starts or is released, and moves if its place is removed.
 *
 * Cost. Submit, next and release are O(1) in the number of queued tasks:
 * a hash map from task id, one FIFO per shape, and a list of non-empty
 * shapes in the order of their oldest task. ff_sched_next looks at shapes
 * oldest first and stops at the first that fits; a shape known not to fit
 * since resources were last freed, or asking more than any place has free,
 * is skipped in O(1). A task asking only CPU is placed in O(1) from a
 * tournament tree of the places by free CPU (O(log places) to update on
 * start and release); other requests scan the places. So a call costs
 * O(shapes + places) at worst, independent of the queue's length, and
 * workflows have few distinct shapes. bench/sched.c measures it.
 *
 * Places and tasks. Place indices are small integers given by
 * ff_sched_add_place, never reused after ff_sched_remove_place. Tasks are
 * the caller's uint64 ids, unique among the tasks the scheduler holds (an
 * id may be reused once its task was released or dropped).
 *
 * Errors: 0 or a negative code (fflua.h): -EINVAL for bad arguments,
 * -ENOMEM, -ERANGE, -EEXIST, -ENOENT, -EAGAIN, FFLUA_ERESOURCE.
 * After a failed call the scheduler is unchanged (apart from capacity it
 * may have grown).
 *
 * A scheduler has no global state and is not thread-safe: one thread uses
 * it at a time; distinct schedulers are independent. The only call back
 * into the caller is a drop callback, called during ff_sched_remove_place
 * and ff_sched_drop_waiting, which must not call into the same scheduler.
 */

#ifndef FFLUA_SCHED_H
#define FFLUA_SCHED_H

/* Named like the C library's <sched.h>: include it with quotes, and put src/
 * on the quote path only (-iquote, as CMakeLists.txt does), never -I. */

#include <stddef.h>
#include <stdint.h>

typedef struct ff_sched ff_sched;

/* Units per 1.0 of a resource. */
#define FF_RES_SCALE 10000
/* The largest amount, in units (about 1.1e11 whole units): sums stay far
 * from overflow. */
#define FF_RES_MAX ((int64_t)1 << 50)
/* The resource id of "CPU", present in every scheduler. */
#define FF_RES_CPU 0
/* Passes over the oldest task before a place is reserved for it. */
#define FF_SCHED_PATIENCE 64

/* One resource amount: a resource id and an amount in units. */
typedef struct ff_res {
    int id;
    int64_t amount;
} ff_res;

/* Creates an empty scheduler: no places, the one resource "CPU". Returns 0
 * or -ENOMEM; *out is set only on success and owned by the caller. */
int ff_sched_create(ff_sched **out);

/* Frees the scheduler and everything it holds. s may be NULL. */
void ff_sched_destroy(ff_sched *s);

/* --- resources and amounts ------------------------------------------------ */

/* The id of the resource called name (len bytes, no NUL byte, not empty),
 * interned on first use: a non-negative id, or -EINVAL, -ENOMEM. */
int ff_sched_resource(ff_sched *s, const char *name, size_t len);

/* The id of name if it was interned, else -ENOENT. Never interns. */
int ff_sched_resource_find(const ff_sched *s, const char *name, size_t len);

/* The NUL-terminated name of resource id, owned by s and valid until
 * ff_sched_destroy; NULL when id is not a resource. */
const char *ff_sched_resource_name(const ff_sched *s, int id);

/* The number of interned resources; ids are 0 .. n - 1. */
int ff_sched_nresources(const ff_sched *s);

/* Converts v (whole units of a resource, as a Lua number gives it) to
 * fixed point: *out = v * FF_RES_SCALE rounded to the nearest unit.
 * Returns 0; -EINVAL when v is negative, NaN or infinite, or not a whole
 * number of units (|v * FF_RES_SCALE - units| above 1e-9 relative, at
 * least 1e-9 absolute: 0.3333 and 0.1 + 0.2 pass, 1/3 and 0.00001 do not);
 * -ERANGE above FF_RES_MAX units. *out is set only on success. */
int ff_sched_amount(double v, int64_t *out);

/* --- places --------------------------------------------------------------- */

/* Adds a place with the capacities cap[0 .. n-1] (interned ids, amounts in
 * 0 .. FF_RES_MAX, each id at most once; CPU omitted means 0 CPUs). Parked
 * tasks (FF_SCHED_WAIT) that the place can hold become queued. Returns the
 * new place's index (>= 0), or -EINVAL, -ENOMEM. */
int ff_sched_add_place(ff_sched *s, const ff_res *cap, size_t n);

/* As ff_sched_add_place, on machine (a key >= 0 the caller chooses, or -1
 * for a machine of its own). On a machine with live places, the new place
 * gets the machine's resources as they stand (free amounts included), and
 * what cap names that the machine lacks is added to every place of it;
 * a resource both name with different amounts fails with -EEXIST and
 * *bad_res (may be NULL; -1 otherwise) set to it. CPU is never shared. */
int ff_sched_add_place_on(ff_sched *s, int64_t machine, const ff_res *cap, size_t n, int *bad_res);

/* Makes resource id each place's own, as CPU is, rather than shared by
 * the places of a machine (GPUs: each worker is given its devices). Only
 * before the first place is added: 0, or -EINVAL. */
int ff_sched_resource_own(ff_sched *s, int id);

/* The machine of a live place: its key, or -1 (a machine of its own, or
 * not a live place). */
int64_t ff_sched_place_machine(const ff_sched *s, int place);

/* Closes a live place (its worker is stopping): no task starts there
 * any more, the tasks running there go on until released, and the place
 * stays live (its resources count for feasibility) until removed.
 * Returns 0, or -EINVAL (not a live place). Never allocates. */
int ff_sched_close_place(ff_sched *s, int place);

/* Why a task is handed back by a drop callback. */
enum ff_sched_drop {
    FF_SCHED_LOST = 1,       /* was running on a removed place */
    FF_SCHED_INFEASIBLE = 2, /* queued or parked, and no place can hold it */
};

/* Called with each task the scheduler drops, which it holds no longer
 * (its id may be submitted again). bad_res is, for FF_SCHED_INFEASIBLE,
 * as ff_sched_submit's *bad_res; -1 for FF_SCHED_LOST. */
typedef void (*ff_sched_drop_fn)(void *ud, uint64_t task, int why, int bad_res);

/* Removes a live place (a worker left). Every task running there is
 * dropped with FF_SCHED_LOST (its CPU vanishes with the place; what it
 * held of its machine's other resources goes back to the machine), then
 * every queued task that no remaining place can hold is dropped with
 * FF_SCHED_INFEASIBLE, except tasks submitted with FF_SCHED_WAIT, which
 * are parked. fn may be NULL. Returns 0, or -EINVAL (not a live place;
 * fn is then never called). Never allocates. */
int ff_sched_remove_place(ff_sched *s, int place, ff_sched_drop_fn fn, void *ud);

/* The number of place indices ever given: places are 0 .. n - 1, some of
 * them removed. */
int ff_sched_nplaces(const ff_sched *s);

/* 1 if place is a live place, else 0. */
int ff_sched_place_live(const ff_sched *s, int place);

/* The total and free (*avail) amounts of resource res on a live place
 * (either pointer may be NULL). Returns 0 or -EINVAL. */
int ff_sched_place_get(const ff_sched *s, int place, int res, int64_t *total, int64_t *avail);

/* The number of tasks running on place (0 for a removed place). */
size_t ff_sched_place_running(const ff_sched *s, int place);

/* The largest capacity of resource res on any live place (0 when none),
 * for messages such as "no worker has more than 1 of 'gpu'". */
int64_t ff_sched_max_capacity(const ff_sched *s, int res);

/* --- tasks ---------------------------------------------------------------- */

/* Submission flag: park a request no present place can hold, instead of
 * failing it, until ff_sched_add_place adds one that can. */
#define FF_SCHED_WAIT 1u
/* ff_sched_submit's result for a task parked under FF_SCHED_WAIT. */
#define FF_SCHED_WAITING 1

/* Queues task (an id not held by s) asking for req[0 .. n-1] (interned
 * ids, amounts in 0 .. FF_RES_MAX, each id at most once; copied). affinity
 * is a place index (live or removed) or -1. bad_res may be NULL.
 * Returns 0 (queued), FF_SCHED_WAITING (parked, with FF_SCHED_WAIT),
 * FFLUA_ERESOURCE (no live place could ever hold it: nothing is queued),
 * -EEXIST (task is held), -EINVAL or -ENOMEM. When no place could hold
 * it, *bad_res is a resource that the request wants more of than any live
 * place has (the lowest such id), or -1 when each amount fits on some
 * place but no place has them all (or there is no live place); otherwise
 * *bad_res is -1. */
int ff_sched_submit(ff_sched *s, uint64_t task, const ff_res *req, size_t n, int affinity,
                    unsigned flags, int *bad_res);

/* Starts the next task: the oldest queued task that fits on some place now
 * (see "Policy"), with its amounts taken from the place chosen. Sets
 * *task and *place and returns 0, or returns -EAGAIN when no queued
 * task fits now (or none is queued). Call it again until -EAGAIN after
 * a release or a new place. */
int ff_sched_next(ff_sched *s, uint64_t *task, int *place);

/* Releases task: a running task finished (its amounts are free again), or
 * a queued or parked task is cancelled. Returns 0 or -ENOENT (task is not
 * held). */
int ff_sched_release(ff_sched *s, uint64_t task);

/* Drops every parked task (FF_SCHED_WAIT, and no place can hold it),
 * calling fn (may be NULL) with FF_SCHED_INFEASIBLE for each. Returns the
 * number dropped. Never allocates. */
size_t ff_sched_drop_waiting(ff_sched *s, ff_sched_drop_fn fn, void *ud);

/* Sets how many times the oldest task may be passed over before a place
 * is reserved for it (see "Policy"): n >= 1, UINT32_MAX for never.
 * Returns 0 or -EINVAL. */
int ff_sched_set_patience(ff_sched *s, uint32_t n);

/* What the scheduler knows of a task. */
enum ff_sched_state {
    FF_SCHED_QUEUED = 1,  /* waits for resources */
    FF_SCHED_PARKED = 2,  /* waits for a place that can hold it */
    FF_SCHED_RUNNING = 3, /* started by ff_sched_next, not yet released */
};

/* The state of task (an enum ff_sched_state), with its place in *place
 * (may be NULL; -1 unless running); -ENOENT when task is not held. */
int ff_sched_task_state(const ff_sched *s, uint64_t task, int *place);

/* Counts for `fflua status` and tests. */
typedef struct ff_sched_stats {
    size_t places;          /* live places */
    size_t queued;          /* tasks waiting for resources */
    size_t parked;          /* tasks waiting for a place (FF_SCHED_WAIT) */
    size_t running;         /* tasks started and not released */
    size_t shapes;          /* distinct requests with queued tasks */
    int reserved_place;     /* the place reserved for the oldest task, or -1 */
    uint64_t reserved_task; /* that task, when reserved_place >= 0 */
} ff_sched_stats;

/* Fills *st. */
void ff_sched_get_stats(const ff_sched *s, ff_sched_stats *st);

#endif
