/*
 * bench/sched.c: the scheduler alone, ns per task for submit + next +
 * release (build/bench_sched [scale], scale 0.1 for a quick look).
 *
 * Each row runs N tasks through a fresh scheduler with 2, 8 or 64 places
 * of 8 CPUs:
 *   - "deep": all N are submitted first (the queue holds N), then drained:
 *     next() until FFLUA_ENOTFOUND, release the oldest running task, again.
 *   - "steady": the queue is kept at about 1,000 tasks: per task, one
 *     submit, one release of the oldest running task, then next() until
 *     FFLUA_ENOTFOUND, as a head dispatching as results come back.
 * Workloads: independent 1-CPU tasks; fractional (alternating {CPU 1} and
 * {CPU 0.5, custom_resource 0.1}, places with custom_resource 1); affinity
 * (each task asks for a place by hint); blocked (a task asking 2 gpus is
 * queued first and can never fit, since one gpu of every place is held all
 * along: after FF_SCHED_PATIENCE passes it holds a reserved place, and the
 * others keep running on the rest).
 * Target: total well under 1000 ns per task.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fflua.h"
#include "sched.h"

enum { INDEP, FRAC, AFFINITY, BLOCKED };
static const char *const kind_name[] = {"independent", "fractional", "affinity", "blocked"};

#define RING 8192 /* more than can ever run at once */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void check(int rc, const char *what) {
    if (rc < 0) {
        fprintf(stderr, "bench_sched: %s: %s\n", what, fflua_strerror(rc));
        exit(1);
    }
}

struct run {
    ff_sched *s;
    int kind, nplaces;
    ff_res small[1], frac[2];
    uint64_t ring[RING];
    size_t head, nrun;
};

static void setup(struct run *r, int kind, int nplaces) {
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->nplaces = nplaces;
    check(ff_sched_create(&r->s), "create");
    int cr = ff_sched_resource(r->s, "custom_resource", 15);
    int gpu = ff_sched_resource(r->s, "gpu", 3);
    check(cr, "resource");
    check(gpu, "resource");
    for (int p = 0; p < nplaces; p++) {
        ff_res cap[] = {{FF_RES_CPU, 8 * FF_RES_SCALE},
                        {cr, FF_RES_SCALE},
                        {gpu, 2 * FF_RES_SCALE}};
        check(ff_sched_add_place(r->s, cap, 3), "add_place");
    }
    r->small[0] = (ff_res){FF_RES_CPU, FF_RES_SCALE};
    r->frac[0] = (ff_res){FF_RES_CPU, FF_RES_SCALE / 2};
    r->frac[1] = (ff_res){cr, FF_RES_SCALE / 10};
    if (kind == BLOCKED) {
        /* One gpu of every place held for good, then the big task. */
        ff_res hold[] = {{FF_RES_CPU, 0}, {gpu, FF_RES_SCALE}};
        ff_res big[] = {{gpu, 2 * FF_RES_SCALE}};
        for (int p = 0; p < nplaces; p++) {
            uint64_t id;
            int where;
            check(ff_sched_submit(r->s, UINT64_MAX - 1 - (uint64_t)p, hold, 2, p, 0, NULL),
                  "submit");
            check(ff_sched_next(r->s, &id, &where), "next");
        }
        check(ff_sched_submit(r->s, UINT64_MAX, big, 1, -1, 0, NULL), "submit");
    }
}

static void submit(struct run *r, uint64_t i) {
    const ff_res *req = r->small;
    size_t n = 1;
    int aff = -1;
    if (r->kind == FRAC && (i & 1)) {
        req = r->frac;
        n = 2;
    } else if (r->kind == AFFINITY) {
        aff = (int)(i % (uint64_t)r->nplaces);
    }
    check(ff_sched_submit(r->s, i, req, n, aff, 0, NULL), "submit");
}

/* Starts what fits: next() until FFLUA_ENOTFOUND. */
static void dispatch(struct run *r) {
    uint64_t id;
    int where;
    while (r->nrun < RING && ff_sched_next(r->s, &id, &where) == 0)
        r->ring[(r->head + r->nrun++) % RING] = id;
}

static void release_oldest(struct run *r) {
    check(ff_sched_release(r->s, r->ring[r->head]), "release");
    r->head = (r->head + 1) % RING;
    r->nrun--;
}

/* All submitted, then drained. */
static void deep(int kind, int nplaces, uint64_t n, double *t_sub, double *t_run) {
    struct run *r = malloc(sizeof *r);
    if (r == NULL)
        exit(1);
    setup(r, kind, nplaces);
    double t0 = now();
    for (uint64_t i = 0; i < n; i++)
        submit(r, i);
    double t1 = now();
    uint64_t done = 0;
    while (done < n) {
        dispatch(r);
        if (r->nrun == 0) {
            fprintf(stderr, "bench_sched: nothing runs\n");
            exit(1);
        }
        release_oldest(r);
        done++;
    }
    double t2 = now();
    ff_sched_stats st;
    ff_sched_get_stats(r->s, &st);
    if (st.queued != (kind == BLOCKED) || st.running != (kind == BLOCKED ? (size_t)nplaces : 0)) {
        fprintf(stderr, "bench_sched: %zu queued, %zu running at the end\n", st.queued,
                st.running);
        exit(1);
    }
    ff_sched_destroy(r->s);
    free(r);
    *t_sub = t1 - t0;
    *t_run = t2 - t1;
}

/* A queue of `depth`, every task submitted, started and released once. */
static void steady(int kind, int nplaces, uint64_t n, uint64_t depth, double *t_all) {
    struct run *r = malloc(sizeof *r);
    if (r == NULL)
        exit(1);
    setup(r, kind, nplaces);
    uint64_t i = 0;
    for (; i < depth; i++)
        submit(r, i);
    dispatch(r); /* fill the places */
    double t0 = now();
    for (uint64_t k = 0; k < n; k++, i++) {
        submit(r, i);
        if (r->nrun > 0)
            release_oldest(r);
        dispatch(r);
    }
    double t1 = now();
    ff_sched_destroy(r->s);
    free(r);
    *t_all = t1 - t0;
}

int main(int argc, char **argv) {
    double scale = argc > 1 ? atof(argv[1]) : 1.0;
    if (!(scale > 0)) {
        fprintf(stderr, "usage: bench_sched [scale]\n");
        return 2;
    }
    static const int places[] = {2, 8, 64};
    printf("bench_sched: ns per task through ff_sched alone (places of 8 CPUs)\n");
    printf("  deep: N tasks submitted, then drained (next until none fits, release the oldest)\n");
    printf("  steady: queue kept near 1000; per task: submit, release the oldest, next until none fits\n\n");
    printf("%-12s %-7s %6s %9s %9s %10s %9s\n", "workload", "mode", "places", "tasks",
           "submit", "next+rel", "total");
    struct {
        int kind;
        uint64_t n;
    } rows[] = {{INDEP, 100000}, {INDEP, 1000000}, {FRAC, 1000000},
                {AFFINITY, 1000000}, {BLOCKED, 1000000}};
    for (size_t k = 0; k < sizeof rows / sizeof rows[0]; k++) {
        for (size_t j = 0; j < 3; j++) {
            uint64_t n = (uint64_t)(rows[k].n * scale);
            if (n < 1000)
                n = 1000;
            double ts, tr;
            deep(rows[k].kind, places[j], n, &ts, &tr);
            printf("%-12s %-7s %6d %9llu %9.1f %10.1f %9.1f\n", kind_name[rows[k].kind],
                   "deep", places[j], (unsigned long long)n, ts * 1e9 / n, tr * 1e9 / n,
                   (ts + tr) * 1e9 / n);
            fflush(stdout);
        }
    }
    for (int kind = INDEP; kind <= BLOCKED; kind++) {
        for (size_t j = 0; j < 3; j++) {
            uint64_t n = (uint64_t)(1000000 * scale);
            if (n < 1000)
                n = 1000;
            double ta;
            steady(kind, places[j], n, 1000, &ta);
            printf("%-12s %-7s %6d %9llu %9s %10s %9.1f\n", kind_name[kind], "steady",
                   places[j], (unsigned long long)n, "-", "-", ta * 1e9 / n);
            fflush(stdout);
        }
    }
    return 0;
}
