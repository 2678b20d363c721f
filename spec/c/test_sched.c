/* The scheduler: fixed-point accounting, feasibility, placement, order,
 * anti-starvation, places coming and going, and a million queued tasks. */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "fflua.h"
#include "sched.h"
#include "test.h"

#define U FF_RES_SCALE /* one whole unit */

static ff_sched *mk(void) {
    ff_sched *s = NULL;
    ASSERT_EQ(ff_sched_create(&s), 0);
    ASSERT(s != NULL);
    return s;
}

static int res(ff_sched *s, const char *name) {
    int id = ff_sched_resource(s, name, strlen(name));
    ASSERT(id >= 0);
    return id;
}

static int64_t amt(double v) {
    int64_t a = -1;
    ASSERT_EQ(ff_sched_amount(v, &a), 0);
    return a;
}

/* A place with cpus CPUs and, when name is set, v of that resource. */
static int place(ff_sched *s, double cpus, const char *name, double v) {
    ff_res cap[2] = {{FF_RES_CPU, amt(cpus)}, {0, 0}};
    size_t n = 1;
    if (name != NULL) {
        cap[1].id = res(s, name);
        cap[1].amount = amt(v);
        n = 2;
    }
    int p = ff_sched_add_place(s, cap, n);
    ASSERT(p >= 0);
    return p;
}

/* Submits a task asking cpus CPUs (< 0: the default) and v of name. */
static int submit(ff_sched *s, uint64_t id, double cpus, const char *name, double v, int affinity) {
    ff_res req[2];
    size_t n = 0;
    if (cpus >= 0)
        req[n++] = (ff_res){FF_RES_CPU, amt(cpus)};
    if (name != NULL)
        req[n++] = (ff_res){res(s, name), amt(v)};
    return ff_sched_submit(s, id, req, n, affinity, 0, NULL);
}

/* The next task, which must exist. */
static uint64_t next(ff_sched *s, int *place) {
    uint64_t id = UINT64_MAX;
    int p = -2;
    ASSERT_EQ(ff_sched_next(s, &id, &p), 0);
    ASSERT(p >= 0);
    if (place != NULL)
        *place = p;
    return id;
}

static void none(ff_sched *s) {
    uint64_t id;
    int p;
    ASSERT_EQ(ff_sched_next(s, &id, &p), -EAGAIN);
}

static int64_t free_of(ff_sched *s, int p, int r) {
    int64_t t, f;
    ASSERT_EQ(ff_sched_place_get(s, p, r, &t, &f), 0);
    return f;
}

static void test_amounts(void) {
    int64_t a = 7;
    ASSERT_EQ(amt(0), 0);
    ASSERT_EQ(amt(1), U);
    ASSERT_EQ(amt(0.1), 1000);
    ASSERT_EQ(amt(0.0001), 1);
    ASSERT_EQ(amt(0.3333), 3333);
    ASSERT_EQ(amt(2.5), 25000);
    ASSERT_EQ(amt(0.1 + 0.2), 3000); /* 0.30000000000000004: within 1e-9 relative */
    ASSERT_EQ(amt(1e6), 1000000LL * U);
    ASSERT_EQ(amt(-0.0), 0);
    ASSERT_EQ(ff_sched_amount(1.0 / 3, &a), -EINVAL); /* finer than 1/10000 */
    ASSERT_EQ(ff_sched_amount(0.33333, &a), -EINVAL);
    ASSERT_EQ(ff_sched_amount(0.00001, &a), -EINVAL);
    ASSERT_EQ(ff_sched_amount(0.00005, &a), -EINVAL);
    ASSERT_EQ(ff_sched_amount(-1, &a), -EINVAL);
    ASSERT_EQ(ff_sched_amount(-0.1, &a), -EINVAL);
    ASSERT_EQ(ff_sched_amount(0.0 / 0.0, &a), -EINVAL);
    ASSERT_EQ(ff_sched_amount(1.0 / 0.0, &a), -EINVAL);
    ASSERT_EQ(ff_sched_amount(-1.0 / 0.0, &a), -EINVAL);
    ASSERT_EQ(ff_sched_amount(1e12, &a), -ERANGE);
    ASSERT_EQ(a, 7); /* untouched on failure */
    ASSERT_EQ(ff_sched_amount((double)FF_RES_MAX / U, &a), 0);
    ASSERT_EQ(a, FF_RES_MAX);
}

static void test_resources(void) {
    ff_sched *s = mk();
    ASSERT_EQ(ff_sched_nresources(s), 1);
    ASSERT_STR_EQ(ff_sched_resource_name(s, FF_RES_CPU), "CPU");
    ASSERT_EQ(ff_sched_resource(s, "CPU", 3), FF_RES_CPU);
    int gpu = res(s, "gpu");
    ASSERT_EQ(gpu, 1);
    ASSERT_EQ(res(s, "_disk"), 2);
    ASSERT_EQ(res(s, "gpu"), gpu);                   /* interned */
    ASSERT_EQ(ff_sched_resource(s, "gpux", 3), gpu); /* len counts */
    ASSERT_EQ(ff_sched_resource_find(s, "_disk", 5), 2);
    ASSERT_EQ(ff_sched_resource_find(s, "tpu", 3), -ENOENT);
    ASSERT_EQ(ff_sched_nresources(s), 3);
    ASSERT_EQ(ff_sched_resource(s, "", 0), -EINVAL);
    ASSERT_EQ(ff_sched_resource(s, "a\0b", 3), -EINVAL);
    ASSERT_EQ(ff_sched_resource(s, NULL, 1), -EINVAL);
    ASSERT(ff_sched_resource_name(s, 3) == NULL);
    ASSERT(ff_sched_resource_name(s, -1) == NULL);
    /* Enough names to grow every table, places' rows included. */
    int p = place(s, 1, "gpu", 2);
    char name[16];
    for (int i = 0; i < 300; i++) {
        snprintf(name, sizeof name, "r%d", i);
        ASSERT_EQ(res(s, name), 3 + i);
    }
    for (int i = 0; i < 300; i++) {
        snprintf(name, sizeof name, "r%d", i);
        ASSERT_EQ(ff_sched_resource_find(s, name, strlen(name)), 3 + i);
        ASSERT_STR_EQ(ff_sched_resource_name(s, 3 + i), name);
    }
    ASSERT_EQ(free_of(s, p, gpu), 2 * U); /* kept across the re-layout */
    ASSERT_EQ(free_of(s, p, FF_RES_CPU), U);
    ASSERT_EQ(free_of(s, p, 200), 0);
    ff_sched_destroy(s);
    ff_sched_destroy(NULL);
}

/* Ten tasks asking 0.1 of a capacity of 1 run at once; the eleventh waits
 * and runs after a release. No drift: free is exactly 0 after ten. */
static void test_fractional(void) {
    ff_sched *s = mk();
    int p = place(s, 64, "custom_resource", 1);
    int cr = res(s, "custom_resource");
    for (uint64_t i = 1; i <= 11; i++)
        ASSERT_EQ(submit(s, i, -1, "custom_resource", 0.1, -1), 0);
    for (uint64_t i = 1; i <= 10; i++)
        ASSERT_EQ(next(s, NULL), i);
    none(s);
    ASSERT_EQ(free_of(s, p, cr), 0);
    ASSERT_EQ(free_of(s, p, FF_RES_CPU), 54 * U); /* the default: 1 CPU each */
    ASSERT_EQ(ff_sched_task_state(s, 11, NULL), FF_SCHED_QUEUED);
    ASSERT_EQ(ff_sched_release(s, 4), 0);
    ASSERT_EQ(free_of(s, p, cr), 1000);
    ASSERT_EQ(next(s, NULL), 11);
    none(s);
    for (uint64_t i = 1; i <= 11; i++)
        if (i != 4)
            ASSERT_EQ(ff_sched_release(s, i), 0);
    ASSERT_EQ(free_of(s, p, cr), U);
    ASSERT_EQ(free_of(s, p, FF_RES_CPU), 64 * U);

    /* 3 x 0.3333 fill 0.9999 of 1: a fourth waits, 0.0001 still fits. */
    int r3 = res(s, "r3");
    ff_res cap[] = {{FF_RES_CPU, 8 * U}, {r3, U}};
    int q = ff_sched_add_place(s, cap, 2);
    for (uint64_t i = 20; i < 24; i++)
        ASSERT_EQ(submit(s, i, 0, "r3", 0.3333, -1), 0);
    ASSERT_EQ(submit(s, 24, 0, "r3", 0.0001, -1), 0);
    for (uint64_t i = 20; i < 23; i++)
        ASSERT_EQ(next(s, NULL), i);
    ASSERT_EQ(free_of(s, q, r3), 1);
    int where;
    ASSERT_EQ(next(s, &where), 24); /* 23 cannot fit, 24 can */
    ASSERT_EQ(where, q);
    ASSERT_EQ(free_of(s, q, r3), 0);
    none(s);
    ASSERT_EQ(ff_sched_release(s, 21), 0);
    ASSERT_EQ(next(s, NULL), 23);
    ASSERT_EQ(free_of(s, q, r3), 0);
    ff_sched_destroy(s);
}

static int failed_res;
static void failed_note(void *ud, uint64_t task, int why, int bad_res) {
    (void)ud;
    (void)task;
    (void)why;
    failed_res = bad_res;
}

/* What no place could ever hold fails at submission, naming the resource. */
static void test_infeasible(void) {
    ff_sched *s = mk();
    int gpu = res(s, "gpu"), disk = res(s, "_disk");
    int bad = 99;
    /* No place at all: nothing can run. */
    ASSERT_EQ(ff_sched_submit(s, 1, NULL, 0, -1, 0, &bad), FFLUA_ERESOURCE);
    ASSERT_EQ(bad, -1);
    place(s, 4, "gpu", 1);
    ff_res cap[] = {{FF_RES_CPU, 2 * U}, {disk, U}};
    ASSERT_EQ(ff_sched_add_place(s, cap, 2), 1);

    ff_res two_gpus[] = {{gpu, 2 * U}};
    ASSERT_EQ(ff_sched_submit(s, 1, two_gpus, 1, -1, 0, &bad), FFLUA_ERESOURCE);
    ASSERT_EQ(bad, gpu);
    ASSERT_STR_EQ(ff_sched_resource_name(s, bad), "gpu");
    ASSERT_EQ(ff_sched_max_capacity(s, bad), U);         /* "no worker has more than 1" */
    ASSERT_EQ(ff_sched_task_state(s, 1, NULL), -ENOENT); /* nothing queued */

    ff_res five_cpus[] = {{FF_RES_CPU, 5 * U}};
    ASSERT_EQ(ff_sched_submit(s, 1, five_cpus, 1, -1, 0, &bad), FFLUA_ERESOURCE);
    ASSERT_EQ(bad, FF_RES_CPU);
    ASSERT_EQ(ff_sched_max_capacity(s, FF_RES_CPU), 4 * U);

    /* Each fits somewhere, never both on one place. */
    ff_res both[] = {{disk, U}, {gpu, U}};
    ASSERT_EQ(ff_sched_submit(s, 1, both, 2, -1, 0, &bad), FFLUA_ERESOURCE);
    ASSERT_EQ(bad, -1);

    /* A resource no place declares. */
    int tpu = res(s, "tpu");
    ff_res one_tpu[] = {{tpu, amt(0.5)}};
    ASSERT_EQ(ff_sched_submit(s, 1, one_tpu, 1, -1, 0, &bad), FFLUA_ERESOURCE);
    ASSERT_EQ(bad, tpu);
    ASSERT_EQ(ff_sched_max_capacity(s, tpu), 0);

    /* The same id is free to use; feasible requests queue. */
    ASSERT_EQ(ff_sched_submit(s, 1, NULL, 0, -1, 0, &bad), 0);
    ASSERT_EQ(bad, -1);
    ff_sched_stats st;
    ff_sched_get_stats(s, &st);
    ASSERT_EQ(st.queued, 1);
    ASSERT_EQ(st.places, 2);
    /* The cached feasibility follows places: remove the gpu place and a
     * gpu request fails; add one and it queues. */
    ASSERT_EQ(ff_sched_remove_place(s, 0, failed_note, NULL), 0);
    ff_res one_gpu[] = {{gpu, U}};
    ASSERT_EQ(ff_sched_submit(s, 2, one_gpu, 1, -1, 0, &bad), FFLUA_ERESOURCE);
    ASSERT_EQ(bad, gpu);
    place(s, 1, "gpu", 1);
    ASSERT_EQ(ff_sched_submit(s, 2, one_gpu, 1, -1, 0, &bad), 0);
    ff_sched_destroy(s);
}

static void test_cpu_counting(void) {
    ff_sched *s = mk();
    int p = place(s, 4, NULL, 0);
    ASSERT_EQ(submit(s, 1, 2, NULL, 0, -1), 0);
    ASSERT_EQ(submit(s, 2, -1, NULL, 0, -1), 0); /* default: 1 */
    ASSERT_EQ(submit(s, 3, 0.5, NULL, 0, -1), 0);
    ASSERT_EQ(submit(s, 4, 0.5, NULL, 0, -1), 0);
    ASSERT_EQ(submit(s, 5, 0.5, NULL, 0, -1), 0);
    for (uint64_t i = 1; i <= 4; i++)
        ASSERT_EQ(next(s, NULL), i);
    ASSERT_EQ(free_of(s, p, FF_RES_CPU), 0);
    none(s);
    ASSERT_EQ(ff_sched_place_running(s, p), 4);
    ASSERT_EQ(ff_sched_release(s, 3), 0);
    ASSERT_EQ(free_of(s, p, FF_RES_CPU), amt(0.5));
    ASSERT_EQ(next(s, NULL), 5);
    ASSERT_EQ(ff_sched_release(s, 1), 0);
    ASSERT_EQ(ff_sched_release(s, 2), 0);
    ASSERT_EQ(ff_sched_release(s, 4), 0);
    ASSERT_EQ(ff_sched_release(s, 5), 0);
    ASSERT_EQ(ff_sched_release(s, 5), -ENOENT);
    ASSERT_EQ(free_of(s, p, FF_RES_CPU), 4 * U);
    ff_sched_stats st;
    ff_sched_get_stats(s, &st);
    ASSERT_EQ(st.running, 0);
    ASSERT_EQ(st.queued, 0);
    ff_sched_destroy(s);
}

/* A resource only one place has: its tasks go there only, and wait for it
 * while the other places are idle. */
static void test_custom_one_place(void) {
    ff_sched *s = mk();
    place(s, 8, NULL, 0);
    int b = place(s, 2, "special", 1);
    place(s, 8, NULL, 0);
    for (uint64_t i = 1; i <= 3; i++)
        ASSERT_EQ(submit(s, i, 0, "special", 0.5, -1), 0);
    int where;
    ASSERT_EQ(next(s, &where), 1);
    ASSERT_EQ(where, b);
    ASSERT_EQ(next(s, &where), 2);
    ASSERT_EQ(where, b);
    none(s);
    ASSERT_EQ(submit(s, 4, -1, NULL, 0, -1), 0); /* plain: goes elsewhere */
    ASSERT_EQ(next(s, &where), 4);
    ASSERT(where != b);
    ASSERT_EQ(ff_sched_release(s, 1), 0);
    ASSERT_EQ(next(s, &where), 3);
    ASSERT_EQ(where, b);
    ff_sched_destroy(s);
}

static void test_affinity(void) {
    ff_sched *s = mk();
    int a = place(s, 2, NULL, 0), b = place(s, 2, NULL, 0);
    int where;
    ASSERT_EQ(submit(s, 1, -1, NULL, 0, -1), 0);
    ASSERT_EQ(next(s, &where), 1);
    ASSERT_EQ(where, a); /* a tie: the lowest index */
    /* b has more free CPU, but 2's parent ran on a and 2 fits there. */
    ASSERT_EQ(submit(s, 2, -1, NULL, 0, a), 0);
    ASSERT_EQ(next(s, &where), 2);
    ASSERT_EQ(where, a);
    /* a is full now: 3 goes where it fits. */
    ASSERT_EQ(submit(s, 3, -1, NULL, 0, a), 0);
    ASSERT_EQ(next(s, &where), 3);
    ASSERT_EQ(where, b);
    ASSERT_EQ(submit(s, 4, -1, NULL, 0, b), 0);
    ASSERT_EQ(next(s, &where), 4);
    ASSERT_EQ(where, b);
    /* An affinity to a removed place is only a stale hint. */
    int c = place(s, 1, NULL, 0);
    ASSERT_EQ(ff_sched_remove_place(s, c, NULL, NULL), 0);
    ASSERT_EQ(ff_sched_release(s, 1), 0);
    ASSERT_EQ(submit(s, 5, -1, NULL, 0, c), 0);
    ASSERT_EQ(next(s, &where), 5);
    ASSERT_EQ(where, a);
    /* Not a place index at all. */
    ASSERT_EQ(submit(s, 6, -1, NULL, 0, 3), -EINVAL);
    ASSERT_EQ(submit(s, 6, -1, NULL, 0, -2), -EINVAL);
    ff_sched_destroy(s);
}

/* Without affinity, the place with the most free CPU (ties: lowest). */
static void test_spread(void) {
    ff_sched *s = mk();
    place(s, 2, NULL, 0);
    place(s, 4, NULL, 0);
    place(s, 4, NULL, 0);
    place(s, 1, NULL, 0);
    const int want[] = {1, 2, 1, 2, 0, 1, 2, 0, 1, 2, 3};
    for (uint64_t i = 0; i < 11; i++)
        ASSERT_EQ(submit(s, i, -1, NULL, 0, -1), 0);
    for (uint64_t i = 0; i < 11; i++) {
        int where;
        ASSERT_EQ(next(s, &where), i);
        ASSERT_EQ(where, want[i]);
    }
    none(s);
    ff_sched_destroy(s);
}

/* A big task that cannot fit now does not hold back small ones that can;
 * those keep their order among themselves. */
static void test_no_hol_blocking(void) {
    ff_sched *s = mk();
    int p = place(s, 4, NULL, 0);
    ASSERT_EQ(submit(s, 1, 2, NULL, 0, -1), 0);
    ASSERT_EQ(next(s, NULL), 1);
    ASSERT_EQ(submit(s, 2, 4, NULL, 0, -1), 0); /* big: waits for all 4 */
    ASSERT_EQ(submit(s, 3, 1, NULL, 0, -1), 0);
    ASSERT_EQ(submit(s, 4, 1, NULL, 0, -1), 0);
    ASSERT_EQ(submit(s, 5, 1, NULL, 0, -1), 0);
    ASSERT_EQ(next(s, NULL), 3);
    ASSERT_EQ(next(s, NULL), 4);
    none(s);
    ASSERT_EQ(free_of(s, p, FF_RES_CPU), 0);
    /* Once everything is free the big one, the oldest, goes first. */
    ASSERT_EQ(ff_sched_release(s, 1), 0);
    ASSERT_EQ(ff_sched_release(s, 3), 0);
    ASSERT_EQ(ff_sched_release(s, 4), 0);
    ASSERT_EQ(next(s, NULL), 2);
    none(s);
    ASSERT_EQ(ff_sched_release(s, 2), 0);
    ASSERT_EQ(next(s, NULL), 5);
    ff_sched_destroy(s);
}

/* After `patience` passes the oldest task gets its place reserved: it
 * drains and the big task runs, though small ones kept coming. */
static void test_starvation_one_place(void) {
    ff_sched *s = mk();
    ASSERT_EQ(ff_sched_set_patience(s, 0), -EINVAL);
    ASSERT_EQ(ff_sched_set_patience(s, 3), 0);
    place(s, 4, NULL, 0);
    for (uint64_t i = 1; i <= 3; i++) {
        ASSERT_EQ(submit(s, i, 1, NULL, 0, -1), 0);
        ASSERT_EQ(next(s, NULL), i);
    }
    ASSERT_EQ(submit(s, 100, 4, NULL, 0, -1), 0); /* big */
    for (uint64_t i = 10; i < 20; i++)
        ASSERT_EQ(submit(s, i, 1, NULL, 0, -1), 0);
    ff_sched_stats st;
    /* Three passes: 10 starts, then 11 and 12 each after a release. */
    ASSERT_EQ(next(s, NULL), 10);
    ff_sched_get_stats(s, &st);
    ASSERT_EQ(st.reserved_place, -1);
    ASSERT_EQ(ff_sched_release(s, 1), 0);
    ASSERT_EQ(next(s, NULL), 11);
    ASSERT_EQ(ff_sched_release(s, 2), 0);
    ASSERT_EQ(next(s, NULL), 12);
    ff_sched_get_stats(s, &st);
    ASSERT_EQ(st.reserved_place, 0);
    ASSERT_EQ(st.reserved_task, 100);
    /* Reserved: small tasks no longer start there, though one would fit. */
    ASSERT_EQ(ff_sched_release(s, 3), 0);
    none(s);
    ASSERT_EQ(ff_sched_release(s, 10), 0);
    ASSERT_EQ(ff_sched_release(s, 11), 0);
    none(s);
    ASSERT_EQ(ff_sched_release(s, 12), 0);
    ASSERT_EQ(next(s, NULL), 100);
    ff_sched_get_stats(s, &st);
    ASSERT_EQ(st.reserved_place, -1);
    none(s);
    ASSERT_EQ(ff_sched_release(s, 100), 0);
    for (uint64_t i = 13; i < 17; i++)
        ASSERT_EQ(next(s, NULL), i);
    ff_sched_destroy(s);
}

/* With two places, the reservation holds one; small tasks keep running on
 * the other. Cancelling the starving task drops the reservation. */
static void test_starvation_two_places(void) {
    ff_sched *s = mk();
    ASSERT_EQ(ff_sched_set_patience(s, 2), 0);
    int a = place(s, 2, NULL, 0), b = place(s, 2, NULL, 0);
    for (uint64_t i = 1; i <= 3; i++) {
        ASSERT_EQ(submit(s, i, 1, NULL, 0, -1), 0);
        next(s, NULL); /* 1 on a, 2 on b, 3 on a */
    }
    ASSERT_EQ(ff_sched_task_state(s, 3, NULL), FF_SCHED_RUNNING);
    ASSERT_EQ(submit(s, 100, 2, NULL, 0, -1), 0);
    for (uint64_t i = 10; i < 30; i++)
        ASSERT_EQ(submit(s, i, 1, NULL, 0, -1), 0);
    int where;
    ASSERT_EQ(next(s, &where), 10); /* pass 1 */
    ASSERT_EQ(where, b);
    ASSERT_EQ(ff_sched_release(s, 2), 0);
    ASSERT_EQ(next(s, &where), 11); /* pass 2: reserve */
    ff_sched_stats st;
    ff_sched_get_stats(s, &st);
    int r = st.reserved_place;
    ASSERT(r == a || r == b);
    int other = r == a ? b : a;
    /* Small tasks run on the other place only. */
    for (uint64_t i = 12; i < 20; i++) {
        /* free one CPU on the other place by releasing what runs there */
        uint64_t victim = UINT64_MAX;
        for (uint64_t j = 1; j < i && victim == UINT64_MAX; j++) {
            int pl = -1;
            if (ff_sched_task_state(s, j, &pl) == FF_SCHED_RUNNING && pl == other)
                victim = j;
        }
        ASSERT(victim != UINT64_MAX);
        ASSERT_EQ(ff_sched_release(s, victim), 0);
        ASSERT_EQ(next(s, &where), i);
        ASSERT_EQ(where, other);
        none(s);
    }
    /* The reserved place has a free CPU now, and still takes nothing. */
    ASSERT_EQ(ff_sched_place_running(s, r), 2);
    uint64_t on_r = UINT64_MAX;
    for (uint64_t j = 1; j < 20 && on_r == UINT64_MAX; j++) {
        int pl = -1;
        if (ff_sched_task_state(s, j, &pl) == FF_SCHED_RUNNING && pl == r)
            on_r = j;
    }
    ASSERT_EQ(ff_sched_release(s, on_r), 0);
    none(s);
    /* Cancel the big task: the reserved place takes small tasks again. */
    ASSERT_EQ(ff_sched_release(s, 100), 0);
    ff_sched_get_stats(s, &st);
    ASSERT_EQ(st.reserved_place, -1);
    ASSERT_EQ(next(s, &where), 20);
    ASSERT_EQ(where, r);
    none(s);
    ff_sched_destroy(s);
}

struct dropped {
    uint64_t task[16];
    int why[16], bad[16];
    int n;
};

static void note_drop(void *ud, uint64_t task, int why, int bad_res) {
    struct dropped *d = ud;
    ASSERT(d->n < 16);
    d->task[d->n] = task;
    d->why[d->n] = why;
    d->bad[d->n++] = bad_res;
}

static int dropped_as(const struct dropped *d, uint64_t task) {
    for (int i = 0; i < d->n; i++)
        if (d->task[i] == task)
            return d->why[i];
    return 0;
}

static void test_remove_place(void) {
    ff_sched *s = mk();
    int gpu = res(s, "gpu");
    int a = place(s, 2, "gpu", 1), b = place(s, 2, NULL, 0);
    ff_res one_gpu[] = {{gpu, U}, {FF_RES_CPU, 0}};
    ASSERT_EQ(ff_sched_submit(s, 1, one_gpu, 2, -1, 0, NULL), 0);
    ASSERT_EQ(submit(s, 2, 1, NULL, 0, a), 0);
    ASSERT_EQ(submit(s, 3, 1, NULL, 0, -1), 0);
    int where;
    ASSERT_EQ(next(s, &where), 1);
    ASSERT_EQ(where, a);
    ASSERT_EQ(next(s, &where), 2);
    ASSERT_EQ(where, a);
    ASSERT_EQ(next(s, &where), 3);
    ASSERT_EQ(where, b);
    /* Queued: two gpu tasks (one may wait for a place), cpu tasks. */
    ASSERT_EQ(ff_sched_submit(s, 4, one_gpu, 2, -1, 0, NULL), 0);
    ASSERT_EQ(ff_sched_submit(s, 9, one_gpu, 2, -1, 0, NULL), 0);
    ASSERT_EQ(ff_sched_submit(s, 5, one_gpu, 2, -1, FF_SCHED_WAIT, NULL), 0);
    ASSERT_EQ(submit(s, 6, 1, NULL, 0, -1), 0);
    ASSERT_EQ(submit(s, 7, 1, NULL, 0, -1), 0);
    ASSERT_EQ(ff_sched_release(s, 9), 0); /* a tombstone inside the gpu ring */

    struct dropped d = {0};
    ASSERT_EQ(ff_sched_remove_place(s, a, note_drop, &d), 0);
    ASSERT_EQ(d.n, 3);
    ASSERT_EQ(dropped_as(&d, 1), FF_SCHED_LOST);
    ASSERT_EQ(dropped_as(&d, 2), FF_SCHED_LOST);
    ASSERT_EQ(dropped_as(&d, 4), FF_SCHED_INFEASIBLE);
    ASSERT_EQ(d.bad[2], gpu);
    ASSERT_EQ(ff_sched_task_state(s, 1, NULL), -ENOENT);
    ASSERT_EQ(ff_sched_task_state(s, 4, NULL), -ENOENT);
    ASSERT_EQ(ff_sched_task_state(s, 5, NULL), FF_SCHED_PARKED);
    ASSERT_EQ(ff_sched_remove_place(s, a, note_drop, &d), -EINVAL);
    ASSERT_EQ(d.n, 3);
    ASSERT_EQ(ff_sched_place_live(s, a), 0);
    ASSERT_EQ(ff_sched_place_get(s, a, 0, NULL, NULL), -EINVAL);
    ff_sched_stats st;
    ff_sched_get_stats(s, &st);
    ASSERT_EQ(st.places, 1);
    ASSERT_EQ(st.running, 1);
    ASSERT_EQ(st.queued, 2);
    ASSERT_EQ(st.parked, 1);
    ASSERT_EQ(next(s, &where), 6);
    ASSERT_EQ(where, b);
    none(s);
    /* A gpu place joins: 5 is queued again and runs there. */
    int c = place(s, 1, "gpu", 1);
    ASSERT_EQ(c, 2); /* indices are not reused */
    ASSERT_EQ(ff_sched_task_state(s, 5, NULL), FF_SCHED_QUEUED);
    ASSERT_EQ(next(s, &where), 5);
    ASSERT_EQ(where, c);
    ASSERT_EQ(next(s, &where), 7); /* c's CPU is free: 5 asked none */
    ASSERT_EQ(where, c);
    ff_sched_get_stats(s, &st);
    ASSERT_EQ(st.running, 4);
    ASSERT_EQ(st.queued + st.parked, 0);
    ff_sched_destroy(s);
}

/* FF_SCHED_WAIT: with no place yet (a head whose workers connect later). */
static void test_wait_for_places(void) {
    ff_sched *s = mk();
    int gpu = res(s, "gpu");
    int bad;
    ASSERT_EQ(ff_sched_submit(s, 1, NULL, 0, -1, FF_SCHED_WAIT, &bad), FF_SCHED_WAITING);
    ASSERT_EQ(bad, -1);
    ff_res g[] = {{gpu, U}};
    ASSERT_EQ(ff_sched_submit(s, 2, g, 1, -1, FF_SCHED_WAIT, &bad), FF_SCHED_WAITING);
    ASSERT_EQ(bad, -1); /* no place at all: no resource to blame */
    ASSERT_EQ(ff_sched_submit(s, 3, NULL, 0, -1, FF_SCHED_WAIT, NULL), FF_SCHED_WAITING);
    ASSERT_EQ(ff_sched_submit(s, 4, NULL, 0, -1, 0, NULL), FFLUA_ERESOURCE);
    ASSERT_EQ(ff_sched_submit(s, 4, NULL, 0, -1, 2, NULL), -EINVAL);
    ASSERT_EQ(ff_sched_release(s, 3), 0); /* cancel a parked task */
    ff_sched_stats st;
    ff_sched_get_stats(s, &st);
    ASSERT_EQ(st.parked, 2);
    ASSERT_EQ(st.queued, 0);
    none(s);
    int p = place(s, 2, NULL, 0);
    ff_sched_get_stats(s, &st);
    ASSERT_EQ(st.parked, 1);
    ASSERT_EQ(st.queued, 1);
    int where;
    ASSERT_EQ(next(s, &where), 1);
    ASSERT_EQ(where, p);
    none(s);
    struct dropped d = {0};
    ASSERT_EQ(ff_sched_drop_waiting(s, note_drop, &d), 1);
    ASSERT_EQ(d.n, 1);
    ASSERT_EQ(d.task[0], 2);
    ASSERT_EQ(d.why[0], FF_SCHED_INFEASIBLE);
    ASSERT_EQ(d.bad[0], gpu);
    ASSERT_EQ(ff_sched_task_state(s, 2, NULL), -ENOENT);
    ASSERT_EQ(ff_sched_drop_waiting(s, NULL, NULL), 0);
    ff_sched_get_stats(s, &st);
    ASSERT_EQ(st.parked, 0);
    ASSERT_EQ(st.shapes, 0);
    ff_sched_destroy(s);
}

static void test_zero_cpu(void) {
    ff_sched *s = mk();
    int p = place(s, 1, NULL, 0);
    ASSERT_EQ(submit(s, 1, 1, NULL, 0, -1), 0);
    ASSERT_EQ(next(s, NULL), 1);
    for (uint64_t i = 2; i < 100; i++)
        ASSERT_EQ(submit(s, i, 0, NULL, 0, -1), 0);
    for (uint64_t i = 2; i < 100; i++)
        ASSERT_EQ(next(s, NULL), i);
    ASSERT_EQ(ff_sched_place_running(s, p), 99);
    ASSERT_EQ(free_of(s, p, FF_RES_CPU), 0);
    /* A place with no CPU takes only tasks asking none. */
    int q = place(s, 0, "io", 1);
    ASSERT_EQ(submit(s, 200, 0, "io", 0.5, -1), 0);
    ASSERT_EQ(submit(s, 201, 1, NULL, 0, -1), 0);
    int where;
    ASSERT_EQ(next(s, &where), 200);
    ASSERT_EQ(where, q);
    none(s);
    ASSERT_EQ(ff_sched_release(s, 1), 0);
    ASSERT_EQ(next(s, &where), 201);
    ASSERT_EQ(where, p);
    ff_sched_destroy(s);
}

/* Requests over many resources (longer than the stack buffer). */
static void test_many_resources(void) {
    ff_sched *s = mk();
    enum { NR = 40 };
    ff_res cap[NR + 1], req[NR];
    char name[16];
    cap[0] = (ff_res){FF_RES_CPU, 100 * U};
    for (int i = 0; i < NR; i++) {
        snprintf(name, sizeof name, "res%d", i);
        cap[i + 1] = (ff_res){res(s, name), U};
        /* listed in reverse order: the scheduler sorts */
        req[NR - 1 - i] = (ff_res){cap[i + 1].id, amt(0.5)};
    }
    int p = ff_sched_add_place(s, cap, NR + 1);
    ASSERT(p >= 0);
    for (uint64_t i = 1; i <= 3; i++)
        ASSERT_EQ(ff_sched_submit(s, i, req, NR, -1, 0, NULL), 0);
    ASSERT_EQ(next(s, NULL), 1);
    ASSERT_EQ(next(s, NULL), 2);
    none(s);
    for (int i = 0; i < NR; i++)
        ASSERT_EQ(free_of(s, p, cap[i + 1].id), 0);
    /* One resource short is enough to wait. */
    req[7].amount = amt(0.25);
    ASSERT_EQ(ff_sched_submit(s, 4, req, NR, -1, 0, NULL), 0);
    none(s);
    ASSERT_EQ(ff_sched_release(s, 1), 0);
    ASSERT_EQ(next(s, NULL), 3);
    none(s);
    /* Duplicates and unknown ids are refused. */
    req[8] = req[9];
    ASSERT_EQ(ff_sched_submit(s, 5, req, NR, -1, 0, NULL), -EINVAL);
    ff_res unknown[] = {{NR + 5, U}};
    ASSERT_EQ(ff_sched_submit(s, 5, unknown, 1, -1, 0, NULL), -EINVAL);
    ff_sched_destroy(s);
}

/* Two workers of one machine share its "_disk"; CPU stays each one's. */
static void test_machines(void) {
    ff_sched *s = mk();
    int disk = res(s, "_disk"), gpu = res(s, "gpu"), bad = -2;
    ff_res a[] = {{FF_RES_CPU, 2 * U}, {disk, 1 * U}};
    ff_res b[] = {{FF_RES_CPU, 2 * U}, {gpu, 2 * U}};
    ASSERT_EQ(ff_sched_add_place_on(s, 7, a, 2, &bad), 0);
    ASSERT_EQ(bad, -1);
    ASSERT_EQ(ff_sched_add_place_on(s, 7, b, 2, &bad), 1); /* gpu joins the machine */
    int64_t total = 0, avail = 0;
    ASSERT_EQ(ff_sched_place_get(s, 0, gpu, &total, &avail), 0);
    ASSERT_EQ(total, 2 * U);
    ASSERT_EQ(ff_sched_place_get(s, 1, disk, &total, &avail), 0);
    ASSERT_EQ(total, 1 * U);
    ASSERT_EQ(ff_sched_place_machine(s, 1), 7);
    ASSERT_EQ(place(s, 1, "_disk", 1), 2); /* a machine of its own */
    ASSERT_EQ(ff_sched_place_machine(s, 2), -1);
    /* Disagreeing on an amount is refused, naming the resource. */
    ff_res c[] = {{FF_RES_CPU, U}, {disk, 2 * U}};
    ASSERT_EQ(ff_sched_add_place_on(s, 7, c, 2, &bad), -EEXIST);
    ASSERT_EQ(bad, disk);
    /* Machine 7 runs one task holding its disk at a time; place 2 another. */
    ASSERT_EQ(submit(s, 1, 1, "_disk", 1, 0), 0);
    ASSERT_EQ(submit(s, 2, 1, "_disk", 1, 1), 0);
    ASSERT_EQ(submit(s, 3, 1, "_disk", 1, 1), 0);
    int p = -1;
    ASSERT_EQ(next(s, &p), 1u);
    ASSERT_EQ(p, 0);
    ASSERT_EQ(next(s, &p), 2u); /* not on place 1: the machine's disk is taken */
    ASSERT_EQ(p, 2);
    none(s);
    ASSERT_EQ(ff_sched_place_get(s, 1, disk, NULL, &avail), 0);
    ASSERT_EQ(avail, 0);
    /* A place leaving gives back what its lost tasks held to the machine. */
    ASSERT_EQ(ff_sched_remove_place(s, 0, NULL, NULL), 0);
    ASSERT_EQ(ff_sched_place_get(s, 1, disk, NULL, &avail), 0);
    ASSERT_EQ(avail, 1 * U);
    ASSERT_EQ(next(s, &p), 3u);
    ASSERT_EQ(p, 1);
    ff_sched_destroy(s);

    /* A resource made a place's own is not the machine's: workers of one
     * host given 2 and 1 GPUs each run a 2-GPU and a 1-GPU task at once. */
    s = mk();
    int g = res(s, "GPU");
    ASSERT_EQ(ff_sched_resource_own(s, g), 0);
    ff_res two[] = {{FF_RES_CPU, U}, {g, 2 * U}}, one[] = {{FF_RES_CPU, U}, {g, 1 * U}};
    ASSERT_EQ(ff_sched_add_place_on(s, 3, two, 2, &bad), 0);
    ASSERT_EQ(ff_sched_add_place_on(s, 3, one, 2, &bad), 1);
    ASSERT_EQ(ff_sched_resource_own(s, g), -EINVAL); /* places exist */
    ASSERT_EQ(submit(s, 1, 1, "GPU", 2, -1), 0);
    ASSERT_EQ(submit(s, 2, 1, "GPU", 1, -1), 0);
    ASSERT_EQ(next(s, &p), 1u);
    ASSERT_EQ(p, 0);
    ASSERT_EQ(next(s, &p), 2u);
    ASSERT_EQ(p, 1);
    ASSERT_EQ(ff_sched_place_get(s, 1, g, &total, &avail), 0);
    ASSERT_EQ(total, 1 * U);
    ASSERT_EQ(avail, 0);
    ff_sched_destroy(s);
}

static void test_bad_args(void) {
    ff_sched *s = mk();
    ff_res neg[] = {{FF_RES_CPU, -1}};
    ASSERT_EQ(ff_sched_add_place(s, neg, 1), -EINVAL);
    ff_res big[] = {{FF_RES_CPU, FF_RES_MAX + 1}};
    ASSERT_EQ(ff_sched_add_place(s, big, 1), -EINVAL);
    ff_res dup[] = {{FF_RES_CPU, U}, {FF_RES_CPU, U}};
    ASSERT_EQ(ff_sched_add_place(s, dup, 2), -EINVAL);
    ASSERT_EQ(ff_sched_add_place(s, NULL, 1), -EINVAL);
    ASSERT_EQ(ff_sched_nplaces(s), 0);
    ASSERT_EQ(ff_sched_add_place(s, NULL, 0), 0); /* a place with nothing */
    place(s, 2, NULL, 0);
    ASSERT_EQ(ff_sched_submit(s, 1, neg, 1, -1, 0, NULL), -EINVAL);
    ASSERT_EQ(ff_sched_submit(s, 1, big, 1, -1, 0, NULL), -EINVAL);
    ASSERT_EQ(ff_sched_submit(s, 1, dup, 2, -1, 0, NULL), -EINVAL);
    ASSERT_EQ(ff_sched_submit(s, 1, NULL, 1, -1, 0, NULL), -EINVAL);
    ASSERT_EQ(ff_sched_submit(s, 1, NULL, 0, -1, 0, NULL), 0);
    ASSERT_EQ(ff_sched_submit(s, 1, NULL, 0, -1, 0, NULL), -EEXIST);
    ASSERT_EQ(next(s, NULL), 1);
    ASSERT_EQ(ff_sched_submit(s, 1, NULL, 0, -1, 0, NULL), -EEXIST); /* running */
    ASSERT_EQ(ff_sched_release(s, 2), -ENOENT);
    ASSERT_EQ(ff_sched_remove_place(s, 5, NULL, NULL), -EINVAL);
    ASSERT_EQ(ff_sched_remove_place(s, -1, NULL, NULL), -EINVAL);
    ASSERT_EQ(ff_sched_place_get(s, 1, 7, NULL, NULL), -EINVAL);
    ASSERT_EQ(ff_sched_task_state(s, 9, NULL), -ENOENT);
    int where;
    ASSERT_EQ(ff_sched_task_state(s, 1, &where), FF_SCHED_RUNNING);
    ASSERT_EQ(where, 1); /* place 0 has no CPU */
    ff_sched_destroy(s);
}

/* Cancelling queued tasks anywhere in a ring keeps the order of the rest. */
static void test_release_queued(void) {
    ff_sched *s = mk();
    place(s, 1, NULL, 0);
    for (uint64_t i = 1; i <= 10; i++)
        ASSERT_EQ(submit(s, i, 1, NULL, 0, -1), 0);
    ASSERT_EQ(next(s, NULL), 1);
    ASSERT_EQ(ff_sched_release(s, 2), 0); /* the head */
    ASSERT_EQ(ff_sched_release(s, 5), 0); /* the middle */
    ASSERT_EQ(ff_sched_release(s, 6), 0);
    ASSERT_EQ(ff_sched_release(s, 10), 0);      /* the tail */
    ASSERT_EQ(submit(s, 5, 1, NULL, 0, -1), 0); /* the id again, at the back */
    ff_sched_stats st;
    ff_sched_get_stats(s, &st);
    ASSERT_EQ(st.queued, 6);
    const uint64_t want[] = {3, 4, 7, 8, 9, 5};
    for (int i = 0; i < 6; i++) {
        none(s);
        ASSERT_EQ(ff_sched_release(s, i == 0 ? 1 : want[i - 1]), 0);
        ASSERT_EQ(next(s, NULL), want[i]);
    }
    ASSERT_EQ(ff_sched_release(s, 5), 0);
    none(s);
    /* All of a ring cancelled, head last. */
    for (uint64_t i = 20; i < 30; i++)
        ASSERT_EQ(submit(s, i, 1, NULL, 0, -1), 0);
    for (uint64_t i = 29; i >= 20; i--)
        ASSERT_EQ(ff_sched_release(s, i), 0);
    ff_sched_get_stats(s, &st);
    ASSERT_EQ(st.queued, 0);
    ASSERT_EQ(st.shapes, 0);
    none(s);
    ASSERT_EQ(submit(s, 20, 1, NULL, 0, -1), 0);
    ASSERT_EQ(next(s, NULL), 20);
    ff_sched_destroy(s);
}

/* Shapes come and go: thousands of distinct requests, collected when
 * unused, and still correct. */
static void test_many_shapes(void) {
    ff_sched *s = mk();
    int p = place(s, 1000, NULL, 0);
    for (int round = 0; round < 5; round++) {
        for (uint64_t i = 0; i < 3000; i++) {
            ff_res r[] = {{FF_RES_CPU, (int64_t)(i % 2000) + 1 + round}};
            ASSERT_EQ(ff_sched_submit(s, i, r, 1, -1, 0, NULL), 0);
        }
        for (uint64_t i = 0; i < 3000; i++)
            ASSERT_EQ(next(s, NULL), i); /* all fit: submission order */
        for (uint64_t i = 0; i < 3000; i++)
            ASSERT_EQ(ff_sched_release(s, i), 0);
        ASSERT_EQ(free_of(s, p, FF_RES_CPU), 1000 * U);
    }
    ff_sched_destroy(s);
}

/* A million queued tasks (two shapes), then drained: each once, in
 * submission order within a shape, with exact accounting at the end. */
static void test_million(void) {
    enum { N = 1000000, RING = 64 };
    ff_sched *s = mk();
    int cr = res(s, "custom_resource");
    int a = place(s, 4, "custom_resource", 1), b = place(s, 4, "custom_resource", 1);
    ff_res small[] = {{FF_RES_CPU, U}};
    ff_res frac[] = {{FF_RES_CPU, 0}, {cr, amt(0.1)}};
    for (uint64_t i = 0; i < N; i++) {
        if (i % 3 == 2)
            ASSERT_EQ(ff_sched_submit(s, i, frac, 2, -1, 0, NULL), 0);
        else
            ASSERT_EQ(ff_sched_submit(s, i, small, 1, -1, 0, NULL), 0);
    }
    ff_sched_stats st;
    ff_sched_get_stats(s, &st);
    ASSERT_EQ(st.queued, N);
    ASSERT_EQ(st.shapes, 2);
    uint8_t *seen = calloc(N, 1);
    ASSERT(seen != NULL);
    uint64_t ring[RING];
    size_t head = 0, nrun = 0, done = 0;
    uint64_t last[2] = {0, 0};
    int first[2] = {1, 1};
    while (done < N) {
        uint64_t id;
        int pl;
        while (nrun < RING && ff_sched_next(s, &id, &pl) == 0) {
            ASSERT(id < N);
            ASSERT(!seen[id]);
            seen[id] = 1;
            int k = id % 3 == 2;
            ASSERT(first[k] || id > last[k]);
            first[k] = 0;
            last[k] = id;
            ring[(head + nrun++) % RING] = id;
        }
        ASSERT(nrun > 0);
        ASSERT_EQ(ff_sched_release(s, ring[head]), 0);
        head = (head + 1) % RING;
        nrun--;
        done++;
    }
    for (size_t i = 0; i < N; i++)
        ASSERT(seen[i]);
    free(seen);
    ff_sched_get_stats(s, &st);
    ASSERT_EQ(st.queued + st.running + st.parked, 0);
    ASSERT_EQ(free_of(s, a, FF_RES_CPU), 4 * U);
    ASSERT_EQ(free_of(s, b, FF_RES_CPU), 4 * U);
    ASSERT_EQ(free_of(s, a, cr), U);
    ASSERT_EQ(free_of(s, b, cr), U);
    none(s);
    ff_sched_destroy(s);
}

/* Random operations against a model: free amounts always equal capacity
 * minus what the running tasks hold, never negative; next() gives the
 * oldest queued task that fits on a place it may use (any, for the reserved
 * task; any but the reserved one, for others), on its affinity place if it
 * fits there, else where the most CPU is free (ties: lowest index), and
 * fails only when there is none. */
static uint64_t rng_state = 0x12345678;
static uint32_t rnd(uint32_t n) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state % n);
}

enum { MT = 1024, MP = 6, MPX = 64, MR = 3 };
struct model {
    int state[MT]; /* 0 none, 1 queued or parked, 2 running */
    int place[MT], aff[MT], wait[MT];
    uint64_t seq[MT], nseq;
    int64_t req[MT][MR];
    int64_t cap[MPX][MR];
    int live[MPX], nlive;
    int mach[MPX]; /* the place's machine: 0, 1, or -1 (its own) */
};

/* Place q is live and on p's machine (p itself included). */
static int same_machine(const struct model *m, int p, int q) {
    return m->live[q] && (q == p || (m->mach[p] >= 0 && m->mach[q] == m->mach[p]));
}

/* Task t asks for more than CPU. */
static int asks_more_than_cpu(const struct model *m, int t) {
    for (int r = 1; r < MR; r++)
        if (m->req[t][r] > 0)
            return 1;
    return 0;
}

static int model_feasible(const struct model *m, ff_sched *s, int t) {
    int feasible = 0;
    for (int p = 0; p < ff_sched_nplaces(s); p++) {
        int ok = m->live[p];
        for (int r = 0; r < MR && ok; r++)
            ok = m->cap[p][r] >= m->req[t][r];
        feasible |= ok;
    }
    return feasible;
}

static void check_model(ff_sched *s, const struct model *m) {
    size_t queued = 0, parked = 0, running = 0;
    for (int t = 0; t < MT; t++) {
        int st = ff_sched_task_state(s, (uint64_t)t, NULL);
        if (m->state[t] == 0) {
            ASSERT_EQ(st, -ENOENT);
        } else if (m->state[t] == 2) {
            ASSERT_EQ(st, FF_SCHED_RUNNING);
            running++;
        } else if (model_feasible(m, s, t)) {
            ASSERT_EQ(st, FF_SCHED_QUEUED);
            queued++;
        } else {
            ASSERT(m->wait[t]);
            ASSERT_EQ(st, FF_SCHED_PARKED);
            parked++;
        }
    }
    ff_sched_stats st;
    ff_sched_get_stats(s, &st);
    ASSERT_EQ(st.queued, queued);
    ASSERT_EQ(st.parked, parked);
    ASSERT_EQ(st.running, running);
    for (int p = 0; p < ff_sched_nplaces(s); p++) {
        if (!m->live[p])
            continue;
        for (int r = 0; r < MR; r++) {
            /* CPU is the place's own; the rest its machine's. */
            int64_t used = 0;
            for (int t = 0; t < MT; t++)
                if (m->state[t] == 2 &&
                    (r == FF_RES_CPU ? m->place[t] == p : same_machine(m, p, m->place[t])))
                    used += m->req[t][r];
            int64_t f = free_of(s, p, r);
            ASSERT(f >= 0);
            ASSERT_EQ(f, m->cap[p][r] - used);
        }
    }
}

static int model_fits(const struct model *m, ff_sched *s, int t, int p) {
    for (int r = 0; r < MR; r++)
        if (free_of(s, p, r) < m->req[t][r])
            return 0;
    return 1;
}

static struct model *drop_model;
static void model_drop(void *ud, uint64_t task, int why, int bad_res) {
    (void)bad_res;
    ASSERT(task < MT);
    ASSERT_EQ(drop_model->state[task], why == FF_SCHED_LOST ? 2 : 1);
    if (why == FF_SCHED_INFEASIBLE)
        ASSERT_EQ(drop_model->wait[task], (int)(intptr_t)ud);
    drop_model->state[task] = 0;
}

static void test_random(void) {
    ff_sched *s = mk();
    static struct model m;
    memset(&m, 0, sizeof m);
    drop_model = &m;
    ASSERT_EQ(res(s, "x"), 1);
    ASSERT_EQ(res(s, "y"), 2);
    ASSERT_EQ(ff_sched_set_patience(s, 5), 0);
    size_t started = 0, empty = 0, reserved = 0, removed = 0, parked = 0, shared = 0, conflicts = 0;
    for (int step = 0; step < 300000; step++) {
        uint32_t op = rnd(100);
        if (op < 2) { /* a place joins */
            int p = ff_sched_nplaces(s);
            if (p >= MPX || m.nlive >= MP)
                continue;
            int mach = (int)rnd(3) - 1, peer = -1;
            for (int q = 0; mach >= 0 && q < ff_sched_nplaces(s); q++)
                if (m.live[q] && m.mach[q] == mach)
                    peer = q;
            ff_res cap[MR];
            int conflict = -1;
            for (int r = 0; r < MR; r++) {
                int64_t have = peer >= 0 && r != FF_RES_CPU ? m.cap[peer][r] : 0;
                int64_t v = (int64_t)rnd(5) * U / 2;
                if (have > 0 && v != 0 && v != have && (conflict >= 0 || rnd(4) != 0))
                    v = rnd(2) ? have : 0; /* mostly: agree, or name it not */
                if (have > 0 && v != 0 && v != have)
                    conflict = r;
                cap[r] = (ff_res){r, v};
            }
            int bad = -2;
            int rc = ff_sched_add_place_on(s, mach, cap, MR, &bad);
            if (conflict >= 0) {
                ASSERT_EQ(rc, -EEXIST);
                ASSERT_EQ(bad, conflict);
                conflicts++;
                continue;
            }
            ASSERT_EQ(rc, p);
            ASSERT_EQ(bad, -1);
            ASSERT_EQ(ff_sched_place_machine(s, p), mach);
            m.live[p] = 1;
            m.mach[p] = mach;
            m.nlive++;
            for (int r = 0; r < MR; r++) {
                int64_t have = peer >= 0 && r != FF_RES_CPU ? m.cap[peer][r] : 0;
                m.cap[p][r] = have > 0 ? have : cap[r].amount;
                /* What the machine lacked, all its places now have. */
                for (int q = 0; r != FF_RES_CPU && have == 0 && q < p; q++)
                    if (same_machine(&m, p, q))
                        m.cap[q][r] = cap[r].amount;
            }
            shared += peer >= 0;
        } else if (op == 2 && rnd(20) == 0) { /* give up on parked tasks */
            ASSERT_EQ(ff_sched_set_patience(s, 1 + rnd(8)), 0);
            ff_sched_drop_waiting(s, model_drop, (void *)(intptr_t)1);
        } else if (op < 3) { /* a place leaves */
            int p = (int)rnd(MPX);
            if (!m.live[p] || m.nlive < 3)
                continue;
            ASSERT_EQ(ff_sched_remove_place(s, p, model_drop, (void *)(intptr_t)0), 0);
            m.live[p] = 0;
            m.nlive--;
            removed++;
            for (int t = 0; t < MT; t++)
                ASSERT(!(m.state[t] == 2 && m.place[t] == p));
        } else if (op < 45) { /* submit */
            int t = (int)rnd(MT);
            if (m.state[t] != 0)
                continue;
            ff_res req[MR];
            for (int r = 0; r < MR; r++) {
                m.req[t][r] = (int64_t)rnd(4) * U / 4;
                req[r] = (ff_res){r, m.req[t][r]};
            }
            int aff = (int)rnd((uint32_t)ff_sched_nplaces(s) + 1) - 1;
            int wait = rnd(5) == 0;
            int rc = ff_sched_submit(s, (uint64_t)t, req, MR, aff, wait ? FF_SCHED_WAIT : 0, NULL);
            int feasible = model_feasible(&m, s, t);
            ASSERT_EQ(rc, feasible ? 0 : wait ? FF_SCHED_WAITING : FFLUA_ERESOURCE);
            parked += rc == FF_SCHED_WAITING;
            if (rc >= 0) {
                m.state[t] = 1;
                m.aff[t] = aff;
                m.wait[t] = wait;
                m.seq[t] = ++m.nseq;
            }
        } else if (op < 75) { /* next: the oldest task that fits, placed by the rule */
            ff_sched_stats st;
            ff_sched_get_stats(s, &st);
            reserved += st.reserved_place >= 0;
            int want = -1, want_p = -1;
            for (int t = 0; t < MT; t++) {
                if (m.state[t] != 1 || (want >= 0 && m.seq[t] > m.seq[want]))
                    continue;
                int best = -1;
                int64_t bestc = -1;
                for (int q = 0; q < ff_sched_nplaces(s); q++) {
                    int rp = st.reserved_place;
                    if (!m.live[q] || !model_fits(&m, s, t, q) ||
                        (rp >= 0 && (uint64_t)t != st.reserved_task &&
                         (q == rp || (asks_more_than_cpu(&m, t) && m.mach[rp] >= 0 &&
                                      same_machine(&m, rp, q)))))
                        continue;
                    if (q == m.aff[t]) {
                        best = q;
                        break;
                    }
                    if (free_of(s, q, FF_RES_CPU) > bestc) {
                        best = q;
                        bestc = free_of(s, q, FF_RES_CPU);
                    }
                }
                if (best >= 0) {
                    want = t;
                    want_p = best;
                }
            }
            uint64_t id;
            int p;
            int rc = ff_sched_next(s, &id, &p);
            if (want < 0) {
                ASSERT_EQ(rc, -EAGAIN);
                empty++;
            } else {
                ASSERT_EQ(rc, 0);
                ASSERT_EQ(id, want);
                ASSERT_EQ(p, want_p);
                m.state[id] = 2;
                m.place[id] = p;
                started++;
            }
        } else { /* release a task: mostly a running one */
            int t = (int)rnd(MT);
            for (int k = 0; op < 95 && k < MT && m.state[t] != 2; k++)
                t = (t + 1) % MT;
            int rc = ff_sched_release(s, (uint64_t)t);
            ASSERT_EQ(rc, m.state[t] ? 0 : -ENOENT);
            m.state[t] = 0;
        }
        if (step % 997 == 0)
            check_model(s, &m);
    }
    check_model(s, &m);
    printf("# %zu started, %zu times nothing fit (%zu with a reservation), %zu places "
           "removed, %zu parked, %zu places joined a machine, %zu refused\n",
           started, empty, reserved, removed, parked, shared, conflicts);
    /* The comparisons above mean something only if the walk went through
     * every case: tasks placed, nothing fitting, reservations, places
     * leaving and tasks parked. */
    ASSERT(started > 1000);
    ASSERT(empty > 0);
    ASSERT(reserved > 0);
    ASSERT(removed > 0);
    ASSERT(parked > 0);
    ASSERT(shared > 0);
    ASSERT(conflicts > 0);
    ff_sched_destroy(s);
}

/* A closed place takes no new task, not even one with affinity for it,
 * while its running tasks go on; removing it later drops them as lost. */
static void test_close_place(void) {
    ff_sched *s = mk();
    int a = place(s, 1, NULL, 0), b = place(s, 1, NULL, 0);
    int where;
    ASSERT_EQ(submit(s, 1, 1, NULL, 0, a), 0);
    ASSERT_EQ(next(s, &where), 1);
    ASSERT_EQ(where, a);
    ASSERT_EQ(ff_sched_close_place(s, a), 0);
    ASSERT_EQ(ff_sched_close_place(s, 7), -EINVAL);
    ASSERT_EQ(submit(s, 2, 1, NULL, 0, a), 0);
    ASSERT_EQ(submit(s, 3, 1, NULL, 0, -1), 0);
    ASSERT_EQ(next(s, &where), 2);
    ASSERT_EQ(where, b);
    uint64_t id;
    ASSERT_EQ(ff_sched_next(s, &id, &where), -EAGAIN); /* 3 waits for b, not a */
    ASSERT_EQ(ff_sched_release(s, 1), 0);
    ASSERT_EQ(ff_sched_next(s, &id, &where), -EAGAIN);
    ASSERT_EQ(ff_sched_task_state(s, 3, NULL), FF_SCHED_QUEUED);
    ASSERT_EQ(ff_sched_release(s, 2), 0);
    ASSERT_EQ(next(s, &where), 3);
    ASSERT_EQ(where, b);
    struct dropped d = {0};
    ASSERT_EQ(ff_sched_remove_place(s, b, note_drop, &d), 0);
    ASSERT_EQ(d.n, 1);
    ASSERT_EQ(dropped_as(&d, 3), FF_SCHED_LOST);
    ASSERT_EQ(ff_sched_remove_place(s, a, NULL, NULL), 0);
    ff_sched_destroy(s);
}

int main(void) {
    RUN(test_amounts);
    RUN(test_resources);
    RUN(test_fractional);
    RUN(test_infeasible);
    RUN(test_cpu_counting);
    RUN(test_custom_one_place);
    RUN(test_affinity);
    RUN(test_spread);
    RUN(test_no_hol_blocking);
    RUN(test_starvation_one_place);
    RUN(test_starvation_two_places);
    RUN(test_remove_place);
    RUN(test_close_place);
    RUN(test_wait_for_places);
    RUN(test_zero_cpu);
    RUN(test_many_resources);
    RUN(test_machines);
    RUN(test_bad_args);
    RUN(test_release_queued);
    RUN(test_many_shapes);
    RUN(test_million);
    RUN(test_random);
    return 0;
}
