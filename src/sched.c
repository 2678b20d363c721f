/*
 * sched.c: the scheduler (see sched.h).
 *
 * Data structures:
 *  - resources: interned names (an open-addressing table of ids by name).
 *  - places: two matrices, total and free, one row of rstride amounts per
 *    place (rstride >= the number of resources). A removed place's rows are
 *    all -1, so a scan over rows never picks it. hi[r] is an upper bound of
 *    free[p][r] over all places, raised when amounts are freed and lowered
 *    to the exact maximum when a scan finds no place: a request above it is
 *    rejected without a scan. A tournament tree over the places keeps the
 *    live place with the most free CPU (ties: the lowest index) at its
 *    root, updated in O(log places) when a place's free CPU changes: a task
 *    that asks for nothing but CPU is placed from the root in O(1).
 *  - tasks: a slab of records, found by id through an open-addressing hash
 *    map (linear probing, backward-shift deletion). A running task is on
 *    its place's doubly-linked list, so removing a place finds its tasks.
 *  - shapes: one per distinct normalized request, interned in a hash table,
 *    each with a FIFO ring of task slots. A task released while queued
 *    stays in the ring as a tombstone until it reaches the head, so the
 *    head of a non-empty ring is always a live task.
 *  - active: the shapes with queued tasks, sorted by the submission number
 *    of their head. ff_sched_next walks it oldest first.
 *
 * Epochs: free_epoch grows whenever amounts become free (a release, a new
 * place) or the reservation changes; a shape that found no place is marked
 * with the epoch and skipped until it changes. place_epoch grows when
 * places come or go; a shape's feasibility is cached against it.
 */
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "fflua.h"
#include "sched.h"

#define NIL UINT32_MAX
#define INLINE_REQ 16 /* requests up to this long are normalized on the stack */

enum { T_FREE, T_QUEUED, T_RUNNING, T_DROPPED };

struct task {
    uint64_t id;
    uint64_t seq; /* submission number, from 1 */
    uint32_t shape;
    int32_t place; /* running: where; otherwise -1 */
    int32_t affinity;
    uint8_t state, flags;
    uint32_t prev, next; /* running: the place's list; free: next free slot */
};

struct shape {
    ff_res *req; /* n entries sorted by id, amounts > 0; owned; NULL when n == 0 */
    uint32_t n;
    uint32_t refs; /* ring entries (live or tombstones) + running tasks; 0: collectable */
    uint64_t hash;
    uint32_t *q; /* ring of task slots in submission order; the head is live */
    uint32_t qcap, qhead, qlen;
    uint32_t nlive;      /* live tasks in the ring */
    uint64_t head_seq;   /* seq of the head task, when qlen > 0 */
    uint64_t blocked;    /* == free_epoch: fits nowhere now */
    uint64_t feas_epoch; /* place_epoch when feasible and bad_res were computed */
    int feasible, bad_res;
    int apos; /* index in active, or -1 */
    uint8_t used, parked;
    uint32_t next_free;
};

struct resource {
    char *name;
    size_t len;
    uint64_t hash;
    int own; /* each place's own, as CPU is, not its machine's */
};

struct place {
    uint8_t live;
    uint8_t closed;    /* ff_sched_close_place: takes no new tasks */
    uint32_t run_head; /* running tasks here */
    size_t nrunning;
    int64_t machine; /* the caller's key, or -1: a machine of its own */
    int mnext;       /* the next live place of its machine (a ring: itself when alone) */
};

struct hent {
    uint64_t id;
    uint32_t slot; /* NIL: empty */
};

struct ff_sched {
    struct resource *res;
    int nres, res_cap;
    uint32_t *rtab; /* resource ids by name hash; NIL: empty */
    uint32_t rtab_mask;

    struct place *places;
    int nplaces, places_cap;
    size_t nlive;
    uint32_t rstride;
    int64_t *total, *freev; /* places_cap rows of rstride */
    int64_t *hi;            /* rstride entries */
    int *top;               /* tournament tree of the most free CPU, 2 * top_cap */
    uint32_t top_cap;       /* leaves: a power of two >= places_cap, or 0 */

    struct task *tasks;
    uint32_t tasks_cap, tasks_used, task_free;
    struct hent *htab;
    uint32_t hmask, hshift;
    size_t hcount;

    struct shape *shapes;
    uint32_t shapes_cap, shapes_used, shape_free, shapes_live, shape_gc_at;
    uint32_t *stab; /* shape indices by hash; NIL: empty */
    uint32_t stab_mask;
    uint32_t *active; /* shapes_cap entries */
    uint32_t nactive, nparked_shapes;

    size_t nqueued, nparked, nrunning;
    uint64_t seq, free_epoch, place_epoch;

    uint32_t patience, passes;
    uint64_t starve_seq; /* the task passes counts for */
    uint32_t res_slot;   /* the reserved task, or NIL */
    int res_place;
};

/* --- helpers -------------------------------------------------------------- */

static uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

static uint64_t hash_name(const char *p, size_t len) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)p[i]) * 0x100000001b3ull;
    return mix64(h);
}

static uint64_t hash_req(const ff_res *r, uint32_t n) {
    uint64_t h = 0x9e3779b97f4a7c15ull ^ n;
    for (uint32_t i = 0; i < n; i++) {
        h = mix64(h ^ (uint64_t)(uint32_t)r[i].id);
        h = mix64(h ^ (uint64_t)r[i].amount);
    }
    return h;
}

static int64_t *row(int64_t *m, const ff_sched *s, int p) {
    return m + (size_t)p * s->rstride;
}

static const int64_t *crow(const int64_t *m, const ff_sched *s, int p) {
    return m + (size_t)p * s->rstride;
}

static int fits_row(const int64_t *r, const struct shape *sh) {
    for (uint32_t i = 0; i < sh->n; i++)
        if (r[sh->req[i].id] < sh->req[i].amount)
            return 0;
    return 1;
}

static int cmp_res(const void *a, const void *b) {
    int x = ((const ff_res *)a)->id, y = ((const ff_res *)b)->id;
    return (x > y) - (x < y);
}

/* Copies req into buf (room for n + 1), adds {CPU, 1.0} when default_cpu
 * is set and CPU is absent, sorts by id and drops zero amounts. */
static int normalize(const ff_sched *s, const ff_res *req, size_t n, int default_cpu, ff_res *buf,
                     uint32_t *m) {
    int has_cpu = 0;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (req[i].id < 0 || req[i].id >= s->nres || req[i].amount < 0 ||
            req[i].amount > FF_RES_MAX)
            return -EINVAL;
        has_cpu |= req[i].id == FF_RES_CPU;
        buf[k].id = req[i].id;
        buf[k++].amount = req[i].amount;
    }
    if (default_cpu && !has_cpu) {
        buf[k].id = FF_RES_CPU;
        buf[k++].amount = FF_RES_SCALE;
    }
    if (k > 16) {
        qsort(buf, k, sizeof *buf, cmp_res);
    } else {
        for (size_t i = 1; i < k; i++) {
            ff_res x = buf[i];
            size_t j = i;
            for (; j > 0 && buf[j - 1].id > x.id; j--)
                buf[j] = buf[j - 1];
            buf[j] = x;
        }
    }
    size_t w = 0;
    for (size_t i = 0; i < k; i++) {
        if (i > 0 && buf[i].id == buf[i - 1].id)
            return -EINVAL;
        if (buf[i].amount > 0)
            buf[w++] = buf[i];
    }
    *m = (uint32_t)w;
    return 0;
}

/* --- creation ------------------------------------------------------------- */

static int stride_grow(ff_sched *s, uint32_t need);

int ff_sched_create(ff_sched **out) {
    ff_sched *s = calloc(1, sizeof *s);
    if (s == NULL)
        return -ENOMEM;
    s->res_slot = NIL;
    s->res_place = -1;
    s->task_free = NIL;
    s->shape_free = NIL;
    s->shape_gc_at = 64;
    s->patience = FF_SCHED_PATIENCE;
    s->free_epoch = 1;
    s->place_epoch = 1;
    if (ff_sched_resource(s, "CPU", 3) != FF_RES_CPU) {
        ff_sched_destroy(s);
        return -ENOMEM;
    }
    s->res[FF_RES_CPU].own = 1;
    *out = s;
    return 0;
}

void ff_sched_destroy(ff_sched *s) {
    if (s == NULL)
        return;
    for (int i = 0; i < s->nres; i++)
        free(s->res[i].name);
    free(s->res);
    free(s->rtab);
    free(s->places);
    free(s->total);
    free(s->freev);
    free(s->hi);
    free(s->top);
    free(s->tasks);
    free(s->htab);
    for (uint32_t i = 0; i < s->shapes_used; i++) {
        if (s->shapes[i].used) {
            free(s->shapes[i].req);
            free(s->shapes[i].q);
        }
    }
    free(s->shapes);
    free(s->stab);
    free(s->active);
    free(s);
}

/* --- resources ------------------------------------------------------------ */

static int valid_name(const char *name, size_t len) {
    return name != NULL && len > 0 && len < INT_MAX && memchr(name, 0, len) == NULL;
}

static uint32_t res_lookup(const ff_sched *s, const char *name, size_t len, uint64_t h) {
    if (s->rtab == NULL)
        return NIL;
    for (uint32_t i = (uint32_t)h & s->rtab_mask;; i = (i + 1) & s->rtab_mask) {
        uint32_t id = s->rtab[i];
        if (id == NIL)
            return NIL;
        const struct resource *r = &s->res[id];
        if (r->hash == h && r->len == len && memcmp(r->name, name, len) == 0)
            return id;
    }
}

static void rtab_put(ff_sched *s, uint32_t id) {
    uint32_t i = (uint32_t)s->res[id].hash & s->rtab_mask;
    while (s->rtab[i] != NIL)
        i = (i + 1) & s->rtab_mask;
    s->rtab[i] = id;
}

int ff_sched_resource(ff_sched *s, const char *name, size_t len) {
    if (!valid_name(name, len))
        return -EINVAL;
    uint64_t h = hash_name(name, len);
    uint32_t id = res_lookup(s, name, len, h);
    if (id != NIL)
        return (int)id;
    if (s->nres == INT_MAX - 1)
        return -ENOMEM;
    /* Grow everything first, so that a failure changes nothing visible. */
    if ((uint32_t)s->nres + 1 > s->rstride) {
        int rc = stride_grow(s, (uint32_t)s->nres + 1);
        if (rc != 0)
            return rc;
    }
    if (s->nres == s->res_cap) {
        int cap = s->res_cap ? s->res_cap * 2 : 8;
        struct resource *r = realloc(s->res, (size_t)cap * sizeof *r);
        if (r == NULL)
            return -ENOMEM;
        s->res = r;
        s->res_cap = cap;
    }
    if (s->rtab == NULL || ((uint32_t)s->nres + 1) * 2 > s->rtab_mask + 1) {
        uint32_t cap = s->rtab ? (s->rtab_mask + 1) * 2 : 16;
        uint32_t *t = malloc(cap * sizeof *t);
        if (t == NULL)
            return -ENOMEM;
        free(s->rtab);
        s->rtab = t;
        s->rtab_mask = cap - 1;
        memset(t, 0xff, cap * sizeof *t);
        for (int i = 0; i < s->nres; i++)
            rtab_put(s, (uint32_t)i);
    }
    char *copy = malloc(len + 1);
    if (copy == NULL)
        return -ENOMEM;
    memcpy(copy, name, len);
    copy[len] = '\0';
    id = (uint32_t)s->nres++;
    s->res[id] = (struct resource){copy, len, h, 0};
    rtab_put(s, id);
    return (int)id;
}

int ff_sched_resource_find(const ff_sched *s, const char *name, size_t len) {
    if (!valid_name(name, len))
        return -ENOENT;
    uint32_t id = res_lookup(s, name, len, hash_name(name, len));
    return id == NIL ? -ENOENT : (int)id;
}

const char *ff_sched_resource_name(const ff_sched *s, int id) {
    return id >= 0 && id < s->nres ? s->res[id].name : NULL;
}

int ff_sched_nresources(const ff_sched *s) {
    return s->nres;
}

int ff_sched_amount(double v, int64_t *out) {
    if (v != v || v < 0 || v > DBL_MAX)
        return -EINVAL;
    double u = v * FF_RES_SCALE;
    if (u > (double)FF_RES_MAX + 0.5)
        return -ERANGE;
    int64_t r = (int64_t)(u + 0.5);
    double d = u - (double)r;
    if (d < 0)
        d = -d;
    if (d > 1e-9 * (u > 1 ? u : 1))
        return -EINVAL;
    if (r > FF_RES_MAX)
        return -ERANGE;
    *out = r;
    return 0;
}

/* --- places --------------------------------------------------------------- */

/* Re-lays the place matrices with a stride of at least need. */
static int stride_grow(ff_sched *s, uint32_t need) {
    uint32_t ns = s->rstride ? s->rstride : 4;
    while (ns < need)
        ns *= 2;
    int64_t *hi = realloc(s->hi, ns * sizeof *hi);
    if (hi == NULL)
        return -ENOMEM;
    s->hi = hi;
    for (uint32_t r = s->rstride; r < ns; r++)
        hi[r] = 0;
    size_t rows = (size_t)s->places_cap;
    if (rows > 0) {
        int64_t *t = malloc(rows * ns * sizeof *t);
        int64_t *f = malloc(rows * ns * sizeof *f);
        if (t == NULL || f == NULL) {
            free(t);
            free(f);
            return -ENOMEM;
        }
        for (size_t p = 0; p < rows; p++) {
            /* Rows past nplaces are not in use yet: -1 like removed ones. */
            int used = p < (size_t)s->nplaces;
            int64_t fill = used && s->places[p].live ? 0 : -1;
            for (uint32_t r = 0; r < ns; r++) {
                int old = used && r < s->rstride;
                t[p * ns + r] = old ? s->total[p * s->rstride + r] : fill;
                f[p * ns + r] = old ? s->freev[p * s->rstride + r] : fill;
            }
        }
        free(s->total);
        free(s->freev);
        s->total = t;
        s->freev = f;
    }
    s->rstride = ns;
    return 0;
}

/* The better of places a and b (-1: none) for a task asking only CPU. */
static int top_better(const ff_sched *s, int a, int b) {
    if (a < 0 || b < 0)
        return a < 0 ? b : a;
    int64_t fa = crow(s->freev, s, a)[FF_RES_CPU], fb = crow(s->freev, s, b)[FF_RES_CPU];
    return fa > fb || (fa == fb && a < b) ? a : b;
}

/* Place p's free CPU or liveness changed. */
static void top_update(ff_sched *s, int p) {
    uint32_t i = s->top_cap + (uint32_t)p;
    s->top[i] = s->places[p].live && !s->places[p].closed ? p : -1;
    for (i >>= 1; i > 0; i >>= 1)
        s->top[i] = top_better(s, s->top[2 * i], s->top[2 * i + 1]);
}

/* Sizes the tree for cap places and rebuilds it. */
static int top_grow(ff_sched *s, uint32_t cap) {
    uint32_t n = s->top_cap ? s->top_cap : 4;
    while (n < cap)
        n *= 2;
    if (n == s->top_cap)
        return 0;
    int *t = malloc(2 * (size_t)n * sizeof *t);
    if (t == NULL)
        return -ENOMEM;
    free(s->top);
    s->top = t;
    s->top_cap = n;
    for (uint32_t p = 0; p < n; p++)
        t[n + p] =
            p < (uint32_t)s->nplaces && s->places[p].live && !s->places[p].closed ? (int)p : -1;
    for (uint32_t i = n - 1; i > 0; i--)
        t[i] = top_better(s, t[2 * i], t[2 * i + 1]);
    t[0] = -1;
    return 0;
}

static int places_grow(ff_sched *s) {
    if (s->nplaces < s->places_cap)
        return 0;
    if (s->places_cap > INT_MAX / 2)
        return -ENOMEM;
    int cap = s->places_cap ? s->places_cap * 2 : 4;
    size_t cells = (size_t)cap * s->rstride;
    struct place *pl = realloc(s->places, (size_t)cap * sizeof *pl);
    if (pl == NULL)
        return -ENOMEM;
    s->places = pl;
    int64_t *t = realloc(s->total, cells * sizeof *t);
    if (t == NULL)
        return -ENOMEM;
    s->total = t;
    int64_t *f = realloc(s->freev, cells * sizeof *f);
    if (f == NULL)
        return -ENOMEM;
    s->freev = f;
    if (top_grow(s, (uint32_t)cap) != 0)
        return -ENOMEM;
    s->places_cap = cap;
    return 0;
}

static int shape_feasible(ff_sched *s, struct shape *sh);
static void active_insert(ff_sched *s, uint32_t si);

/* The live place of machine other than p, or -1. */
static int machine_peer(const ff_sched *s, int64_t machine) {
    if (machine < 0)
        return -1;
    for (int q = 0; q < s->nplaces; q++)
        if (s->places[q].live && s->places[q].machine == machine)
            return q;
    return -1;
}

int ff_sched_add_place_on(ff_sched *s, int64_t machine, const ff_res *cap, size_t n, int *bad_res) {
    if (bad_res != NULL)
        *bad_res = -1;
    if ((cap == NULL && n > 0) || n > (size_t)s->nres || machine < -1)
        return -EINVAL;
    ff_res sbuf[INLINE_REQ], *buf = sbuf;
    if (n + 1 > INLINE_REQ && (buf = malloc((n + 1) * sizeof *buf)) == NULL)
        return -ENOMEM;
    uint32_t m;
    int rc = normalize(s, cap, n, 0, buf, &m);
    if (rc == 0 && s->nplaces == INT_MAX)
        rc = -ENOMEM;
    /* On a machine that has places: what both name must agree. */
    int peer = rc == 0 ? machine_peer(s, machine) : -1;
    for (uint32_t i = 0; peer >= 0 && rc == 0 && i < m; i++) {
        int64_t have = crow(s->total, s, peer)[buf[i].id];
        if (!s->res[buf[i].id].own && have > 0 && have != buf[i].amount) {
            if (bad_res != NULL)
                *bad_res = buf[i].id;
            rc = -EEXIST;
        }
    }
    if (rc == 0)
        rc = places_grow(s);
    if (rc != 0) {
        if (buf != sbuf)
            free(buf);
        return rc;
    }
    int p = s->nplaces++;
    s->places[p] = (struct place){.live = 1, .run_head = NIL, .machine = machine, .mnext = p};
    int64_t *t = row(s->total, s, p), *f = row(s->freev, s, p);
    memset(t, 0, s->rstride * sizeof *t);
    memset(f, 0, s->rstride * sizeof *f);
    if (peer >= 0) {
        /* The machine's resources, as they stand; then into its ring. */
        const int64_t *pt = crow(s->total, s, peer), *pf = crow(s->freev, s, peer);
        for (uint32_t r = 0; r < s->rstride; r++)
            if ((int)r < s->nres && !s->res[r].own) {
                t[r] = pt[r];
                f[r] = pf[r];
            }
        s->places[p].mnext = s->places[peer].mnext;
        s->places[peer].mnext = p;
    }
    for (uint32_t i = 0; i < m; i++) {
        int id = buf[i].id;
        if (!s->res[id].own && t[id] > 0)
            continue; /* the machine has it already, the same amount */
        /* A resource new to the machine: every place of it gets it (a
         * place's own resource: this place). */
        for (int q = p;;) {
            row(s->total, s, q)[id] = row(s->freev, s, q)[id] = buf[i].amount;
            q = s->places[q].mnext;
            if (q == p || s->res[id].own)
                break;
        }
        if (buf[i].amount > s->hi[id])
            s->hi[id] = buf[i].amount;
    }
    if (buf != sbuf)
        free(buf);
    top_update(s, p);
    s->nlive++;
    s->place_epoch++;
    s->free_epoch++;
    /* Parked shapes a place can now hold become queued, in the order of
     * their oldest task. Other shapes recompute feasibility when used. */
    for (uint32_t si = 0; s->nparked_shapes > 0 && si < s->shapes_used; si++) {
        struct shape *sh = &s->shapes[si];
        if (!sh->used || !sh->parked)
            continue;
        int fits = 0;
        for (int q = p;;) {
            fits = fits || fits_row(crow(s->total, s, q), sh);
            q = s->places[q].mnext;
            if (q == p)
                break;
        }
        if (!fits)
            continue;
        sh->parked = 0;
        s->nparked_shapes--;
        s->nparked -= sh->nlive;
        s->nqueued += sh->nlive;
        sh->feasible = 1;
        sh->bad_res = -1;
        sh->feas_epoch = s->place_epoch;
        active_insert(s, si);
    }
    return p;
}

int ff_sched_add_place(ff_sched *s, const ff_res *cap, size_t n) {
    return ff_sched_add_place_on(s, -1, cap, n, NULL);
}

int ff_sched_resource_own(ff_sched *s, int id) {
    if (id < 0 || id >= s->nres || s->nplaces > 0)
        return -EINVAL;
    s->res[id].own = 1;
    return 0;
}

int64_t ff_sched_place_machine(const ff_sched *s, int place) {
    return ff_sched_place_live(s, place) ? s->places[place].machine : -1;
}

int ff_sched_nplaces(const ff_sched *s) {
    return s->nplaces;
}

int ff_sched_place_live(const ff_sched *s, int place) {
    return place >= 0 && place < s->nplaces && s->places[place].live;
}

int ff_sched_place_get(const ff_sched *s, int place, int res, int64_t *total, int64_t *avail) {
    if (!ff_sched_place_live(s, place) || res < 0 || res >= s->nres)
        return -EINVAL;
    if (total != NULL)
        *total = crow(s->total, s, place)[res];
    if (avail != NULL)
        *avail = crow(s->freev, s, place)[res];
    return 0;
}

size_t ff_sched_place_running(const ff_sched *s, int place) {
    return ff_sched_place_live(s, place) ? s->places[place].nrunning : 0;
}

int64_t ff_sched_max_capacity(const ff_sched *s, int res) {
    int64_t m = 0;
    if (res < 0 || res >= s->nres)
        return 0;
    for (int p = 0; p < s->nplaces; p++)
        if (s->places[p].live && crow(s->total, s, p)[res] > m)
            m = crow(s->total, s, p)[res];
    return m;
}

/* --- the task map --------------------------------------------------------- */

static uint32_t home(const ff_sched *s, uint64_t id) {
    /* Fibonacci hashing: consecutive ids land far apart, so runs of
     * occupied buckets stay short whatever the ids' pattern. */
    return (uint32_t)((id * 0x9e3779b97f4a7c15ull) >> s->hshift);
}

static uint32_t task_find(const ff_sched *s, uint64_t id) {
    if (s->htab == NULL)
        return NIL;
    for (uint32_t i = home(s, id);; i = (i + 1) & s->hmask) {
        const struct hent *e = &s->htab[i];
        if (e->slot == NIL)
            return NIL;
        if (e->id == id)
            return e->slot;
    }
}

static void hash_put(ff_sched *s, uint64_t id, uint32_t slot) {
    uint32_t i = home(s, id);
    while (s->htab[i].slot != NIL)
        i = (i + 1) & s->hmask;
    s->htab[i].id = id;
    s->htab[i].slot = slot;
    s->hcount++;
}

static int hash_reserve(ff_sched *s) {
    if (s->htab != NULL && (s->hcount + 1) * 2 <= (size_t)s->hmask + 1)
        return 0;
    uint32_t bits = s->htab ? 64 - s->hshift + 1 : 6;
    if (bits > 31)
        return -ENOMEM;
    size_t cap = (size_t)1 << bits;
    struct hent *t = malloc(cap * sizeof *t);
    if (t == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < cap; i++)
        t[i].slot = NIL;
    struct hent *old = s->htab;
    size_t oldcap = old ? (size_t)s->hmask + 1 : 0;
    s->htab = t;
    s->hmask = (uint32_t)(cap - 1);
    s->hshift = 64 - bits;
    s->hcount = 0;
    for (size_t i = 0; i < oldcap; i++)
        if (old[i].slot != NIL)
            hash_put(s, old[i].id, old[i].slot);
    free(old);
    return 0;
}

/* Removes id; returns its slot or NIL. */
static uint32_t hash_del(ff_sched *s, uint64_t id) {
    if (s->htab == NULL)
        return NIL;
    uint32_t i = home(s, id);
    for (;; i = (i + 1) & s->hmask) {
        if (s->htab[i].slot == NIL)
            return NIL;
        if (s->htab[i].id == id)
            break;
    }
    uint32_t slot = s->htab[i].slot;
    /* Backward-shift deletion: pull later entries of the run into the hole
     * unless their home lies cyclically in (hole, entry]. */
    for (uint32_t j = (i + 1) & s->hmask; s->htab[j].slot != NIL; j = (j + 1) & s->hmask) {
        uint32_t k = home(s, s->htab[j].id);
        int stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (!stays) {
            s->htab[i] = s->htab[j];
            i = j;
        }
    }
    s->htab[i].slot = NIL;
    s->hcount--;
    return slot;
}

/* --- task slots ----------------------------------------------------------- */

static int task_reserve(ff_sched *s) {
    if (s->task_free != NIL || s->tasks_used < s->tasks_cap)
        return 0;
    if (s->tasks_cap >= NIL / 2)
        return -ENOMEM;
    uint32_t cap = s->tasks_cap ? s->tasks_cap * 2 : 64;
    struct task *t = realloc(s->tasks, (size_t)cap * sizeof *t);
    if (t == NULL)
        return -ENOMEM;
    s->tasks = t;
    s->tasks_cap = cap;
    return 0;
}

static uint32_t task_alloc(ff_sched *s) {
    uint32_t slot = s->task_free;
    if (slot != NIL)
        s->task_free = s->tasks[slot].next;
    else
        slot = s->tasks_used++;
    return slot;
}

static void task_free(ff_sched *s, uint32_t slot) {
    s->tasks[slot].state = T_FREE;
    s->tasks[slot].next = s->task_free;
    s->task_free = slot;
}

/* --- shapes --------------------------------------------------------------- */

static void stab_put(ff_sched *s, uint32_t si) {
    uint32_t i = (uint32_t)s->shapes[si].hash & s->stab_mask;
    while (s->stab[i] != NIL)
        i = (i + 1) & s->stab_mask;
    s->stab[i] = si;
}

static void stab_rebuild(ff_sched *s) {
    memset(s->stab, 0xff, ((size_t)s->stab_mask + 1) * sizeof *s->stab);
    for (uint32_t si = 0; si < s->shapes_used; si++)
        if (s->shapes[si].used)
            stab_put(s, si);
}

/* Frees the shapes no task uses. Allocates nothing. */
static void shape_gc(ff_sched *s) {
    for (uint32_t si = 0; si < s->shapes_used; si++) {
        struct shape *sh = &s->shapes[si];
        if (!sh->used || sh->refs > 0)
            continue;
        free(sh->req);
        free(sh->q);
        memset(sh, 0, sizeof *sh);
        sh->apos = -1;
        sh->next_free = s->shape_free;
        s->shape_free = si;
        s->shapes_live--;
    }
    if (s->stab != NULL)
        stab_rebuild(s);
    s->shape_gc_at = s->shapes_live * 2 > 64 ? s->shapes_live * 2 : 64;
}

static int req_equal(const ff_res *a, const ff_res *b, uint32_t n) {
    for (uint32_t i = 0; i < n; i++)
        if (a[i].id != b[i].id || a[i].amount != b[i].amount)
            return 0;
    return 1;
}

/* The shape of the normalized request req[0 .. n-1], created if new. */
static int shape_intern(ff_sched *s, const ff_res *req, uint32_t n, uint32_t *out) {
    uint64_t h = hash_req(req, n);
    if (s->stab != NULL) {
        for (uint32_t i = (uint32_t)h & s->stab_mask; s->stab[i] != NIL;
             i = (i + 1) & s->stab_mask) {
            const struct shape *sh = &s->shapes[s->stab[i]];
            if (sh->hash == h && sh->n == n && req_equal(sh->req, req, n)) {
                *out = s->stab[i];
                return 0;
            }
        }
    }
    if (s->shapes_live >= s->shape_gc_at)
        shape_gc(s);
    if (s->stab == NULL || (s->shapes_live + 1) * 2 > s->stab_mask + 1) {
        uint32_t cap = s->stab ? (s->stab_mask + 1) * 2 : 64;
        if (cap == 0)
            return -ENOMEM;
        uint32_t *t = malloc((size_t)cap * sizeof *t);
        if (t == NULL)
            return -ENOMEM;
        free(s->stab);
        s->stab = t;
        s->stab_mask = cap - 1;
        stab_rebuild(s);
    }
    if (s->shape_free == NIL && s->shapes_used == s->shapes_cap) {
        if (s->shapes_cap >= NIL / 2)
            return -ENOMEM;
        uint32_t cap = s->shapes_cap ? s->shapes_cap * 2 : 16;
        struct shape *sh = realloc(s->shapes, (size_t)cap * sizeof *sh);
        if (sh == NULL)
            return -ENOMEM;
        s->shapes = sh;
        /* active holds at most one entry per shape: sized with them, it
         * never needs to grow where failing is not allowed. */
        uint32_t *a = realloc(s->active, (size_t)cap * sizeof *a);
        if (a == NULL)
            return -ENOMEM;
        s->active = a;
        s->shapes_cap = cap;
    }
    ff_res *copy = NULL;
    if (n > 0) {
        if ((copy = malloc(n * sizeof *copy)) == NULL)
            return -ENOMEM;
        memcpy(copy, req, n * sizeof *copy);
    }
    uint32_t si = s->shape_free;
    if (si != NIL)
        s->shape_free = s->shapes[si].next_free;
    else
        si = s->shapes_used++;
    struct shape *sh = &s->shapes[si];
    memset(sh, 0, sizeof *sh);
    sh->req = copy;
    sh->n = n;
    sh->hash = h;
    sh->apos = -1;
    sh->used = 1;
    s->shapes_live++;
    stab_put(s, si);
    *out = si;
    return 0;
}

static int queue_reserve(struct shape *sh) {
    if (sh->qlen < sh->qcap)
        return 0;
    if (sh->qcap >= NIL / 2 + 1)
        return -ENOMEM;
    uint32_t cap = sh->qcap ? sh->qcap * 2 : 8;
    uint32_t *q = malloc((size_t)cap * sizeof *q);
    if (q == NULL)
        return -ENOMEM;
    for (uint32_t i = 0; i < sh->qlen; i++)
        q[i] = sh->q[(sh->qhead + i) & (sh->qcap - 1)];
    free(sh->q);
    sh->q = q;
    sh->qcap = cap;
    sh->qhead = 0;
    return 0;
}

/* Computes (or returns the cached) feasibility of sh: some live place could
 * hold it when idle. Allocates nothing. */
static int shape_feasible(ff_sched *s, struct shape *sh) {
    if (sh->feas_epoch == s->place_epoch)
        return sh->feasible;
    sh->feasible = 0;
    sh->bad_res = -1;
    for (int p = 0; p < s->nplaces && !sh->feasible; p++)
        if (s->places[p].live && fits_row(crow(s->total, s, p), sh))
            sh->feasible = 1;
    for (uint32_t i = 0; !sh->feasible && s->nlive > 0 && i < sh->n; i++) {
        if (sh->req[i].amount > ff_sched_max_capacity(s, sh->req[i].id)) {
            sh->bad_res = sh->req[i].id;
            break;
        }
    }
    sh->feas_epoch = s->place_epoch;
    return sh->feasible;
}

/* --- the active list ------------------------------------------------------ */

static void active_set(ff_sched *s, uint32_t i, uint32_t si) {
    s->active[i] = si;
    s->shapes[si].apos = (int)i;
}

/* Inserts si (not active, qlen > 0) at the place of its head's seq. */
static void active_insert(ff_sched *s, uint32_t si) {
    uint64_t hs = s->shapes[si].head_seq;
    uint32_t lo = 0, hi = s->nactive;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (s->shapes[s->active[mid]].head_seq < hs)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (uint32_t i = s->nactive; i > lo; i--)
        active_set(s, i, s->active[i - 1]);
    active_set(s, lo, si);
    s->nactive++;
}

static void active_remove(ff_sched *s, uint32_t i) {
    s->shapes[s->active[i]].apos = -1;
    for (; i + 1 < s->nactive; i++)
        active_set(s, i, s->active[i + 1]);
    s->nactive--;
}

/* The shape at i has a younger head now: move it towards the back. */
static void active_sink(ff_sched *s, uint32_t i) {
    uint32_t si = s->active[i];
    uint64_t hs = s->shapes[si].head_seq;
    for (; i + 1 < s->nactive && s->shapes[s->active[i + 1]].head_seq < hs; i++)
        active_set(s, i, s->active[i + 1]);
    active_set(s, i, si);
}

/* After the head of si's ring was taken or dropped: pops tombstones, then
 * updates the shape's place among the active (or parked) shapes. */
static void shape_fix_head(ff_sched *s, uint32_t si) {
    struct shape *sh = &s->shapes[si];
    while (sh->qlen > 0 && s->tasks[sh->q[sh->qhead]].state == T_DROPPED) {
        task_free(s, sh->q[sh->qhead]);
        sh->refs--;
        sh->qhead = (sh->qhead + 1) & (sh->qcap - 1);
        sh->qlen--;
    }
    if (sh->qlen > 0) {
        sh->head_seq = s->tasks[sh->q[sh->qhead]].seq;
        if (sh->apos >= 0)
            active_sink(s, (uint32_t)sh->apos);
        return;
    }
    sh->qhead = 0;
    if (sh->apos >= 0)
        active_remove(s, (uint32_t)sh->apos);
    if (sh->parked) {
        sh->parked = 0;
        s->nparked_shapes--;
    }
    if (sh->qcap > 4096) { /* a burst is over: give its memory back */
        free(sh->q);
        sh->q = NULL;
        sh->qcap = 0;
    }
}

/* --- placement and reservation -------------------------------------------- */

/* Lowers hi to the exact maximum free amount of each resource sh asks for. */
static void tighten(ff_sched *s, const struct shape *sh) {
    for (uint32_t i = 0; i < sh->n; i++) {
        int id = sh->req[i].id;
        int64_t m = 0;
        for (int p = 0; p < s->nplaces; p++)
            if (crow(s->freev, s, p)[id] > m)
                m = crow(s->freev, s, p)[id];
        s->hi[id] = m;
    }
}

/* The place for a task of shape sh now, or -1: affinity if it fits there,
 * else the place with the most free CPU where it fits (lowest index on
 * ties). excl is a place not to use (the reserved one), or -1; a task
 * asking for more than CPU does not use excl's machine either. */
static int place_for(ff_sched *s, const struct shape *sh, int affinity, int excl) {
    for (uint32_t i = 0; i < sh->n; i++)
        if (sh->req[i].amount > s->hi[sh->req[i].id])
            return -1;
    /* A task asking for a machine's resources would take them from the
     * reserved place too, if it ran on that place's machine. */
    int64_t excl_machine = -1;
    if (excl >= 0 && sh->n > (sh->n > 0 && sh->req[0].id == FF_RES_CPU))
        excl_machine = s->places[excl].machine;
#define EXCLUDED(p)                                                                                \
    ((p) == excl || s->places[p].closed ||                                                         \
     (excl_machine >= 0 && s->places[p].machine == excl_machine))
    if (affinity >= 0 && !EXCLUDED(affinity) && s->places[affinity].live &&
        fits_row(crow(s->freev, s, affinity), sh))
        return affinity;
    int top = s->top_cap ? s->top[1] : -1;
    if (top >= 0 && top == excl) {
        /* The best of the rest: the winners beside the path from excl's
         * leaf to the root cover every other place. */
        top = -1;
        for (uint32_t i = s->top_cap + (uint32_t)excl; i > 1; i >>= 1)
            top = top_better(s, top, s->top[i ^ 1]);
    }
    if (top < 0)
        return -1; /* no live place it may use */
    int64_t cpu = sh->n > 0 && sh->req[0].id == FF_RES_CPU ? sh->req[0].amount : 0;
    if (crow(s->freev, s, top)[FF_RES_CPU] < cpu)
        return -1; /* no place it may use has the CPU */
    if (sh->n == (cpu > 0))
        return top; /* asks only CPU (or nothing): top is the answer */
    int best = -1;
    int64_t bestc = -1; /* removed places have -1 CPU free: never better */
    const int64_t *r = s->freev;
    for (int p = 0; p < s->nplaces; p++, r += s->rstride) {
        if (r[FF_RES_CPU] > bestc && !EXCLUDED(p) && fits_row(r, sh)) {
            best = p;
            bestc = r[FF_RES_CPU];
        }
    }
#undef EXCLUDED
    if (best < 0)
        tighten(s, sh);
    return best;
}

static void reservation_clear(ff_sched *s) {
    s->res_slot = NIL;
    s->res_place = -1;
    s->passes = 0;
    s->starve_seq = 0;
    s->free_epoch++;
}

/* Reserves for the queued task in slot the live place able to hold it
 * where the least is missing (relative to what it asks), ties to the most
 * free CPU, then the lowest index. */
static void reserve(ff_sched *s, uint32_t slot) {
    const struct shape *sh = &s->shapes[s->tasks[slot].shape];
    int best = -1;
    double bestd = 0;
    int64_t bestc = 0;
    for (int p = 0; p < s->nplaces; p++) {
        if (!s->places[p].live || s->places[p].closed || !fits_row(crow(s->total, s, p), sh))
            continue;
        const int64_t *f = crow(s->freev, s, p);
        double d = 0;
        for (uint32_t i = 0; i < sh->n; i++) {
            int64_t miss = sh->req[i].amount - f[sh->req[i].id];
            if (miss > 0)
                d += (double)miss / (double)sh->req[i].amount;
        }
        if (best < 0 || d < bestd || (d == bestd && f[FF_RES_CPU] > bestc)) {
            best = p;
            bestd = d;
            bestc = f[FF_RES_CPU];
        }
    }
    if (best >= 0) {
        s->res_slot = slot;
        s->res_place = best;
        s->free_epoch++;
    }
}

/* A task younger than the oldest queued one was started. */
static void passed_over(ff_sched *s) {
    const struct shape *old = &s->shapes[s->active[0]];
    if (s->starve_seq != old->head_seq) {
        s->starve_seq = old->head_seq;
        s->passes = 0;
    }
    if (s->passes < UINT32_MAX)
        s->passes++;
    if (s->passes >= s->patience && s->patience != UINT32_MAX && s->res_slot == NIL)
        reserve(s, old->q[old->qhead]);
}

int ff_sched_set_patience(ff_sched *s, uint32_t n) {
    if (n == 0)
        return -EINVAL;
    s->patience = n;
    return 0;
}

/* --- tasks ---------------------------------------------------------------- */

int ff_sched_submit(ff_sched *s, uint64_t task, const ff_res *req, size_t n, int affinity,
                    unsigned flags, int *bad_res) {
    int bad = -1, rc;
    if (bad_res != NULL)
        *bad_res = -1;
    if ((req == NULL && n > 0) || n > (size_t)s->nres || affinity < -1 || affinity >= s->nplaces ||
        (flags & ~FF_SCHED_WAIT) != 0)
        return -EINVAL;
    ff_res sbuf[INLINE_REQ], *buf = sbuf;
    if (n + 1 > INLINE_REQ && (buf = malloc((n + 1) * sizeof *buf)) == NULL)
        return -ENOMEM;
    uint32_t m, si;
    if ((rc = normalize(s, req, n, 1, buf, &m)) != 0)
        goto out;
    if (task_find(s, task) != NIL) {
        rc = -EEXIST;
        goto out;
    }
    if ((rc = shape_intern(s, buf, m, &si)) != 0)
        goto out;
    struct shape *sh = &s->shapes[si];
    int feasible = shape_feasible(s, sh);
    if (!feasible) {
        bad = sh->bad_res;
        if (!(flags & FF_SCHED_WAIT)) {
            rc = FFLUA_ERESOURCE;
            goto out;
        }
    }
    /* Make room everywhere first: nothing below can fail. */
    if ((rc = task_reserve(s)) != 0 || (rc = hash_reserve(s)) != 0 || (rc = queue_reserve(sh)) != 0)
        goto out;
    uint32_t slot = task_alloc(s);
    struct task *t = &s->tasks[slot];
    t->id = task;
    t->seq = ++s->seq;
    t->shape = si;
    t->place = -1;
    t->affinity = affinity;
    t->state = T_QUEUED;
    t->flags = (uint8_t)flags;
    t->prev = t->next = NIL;
    hash_put(s, task, slot);
    sh->q[(sh->qhead + sh->qlen) & (sh->qcap - 1)] = slot;
    sh->qlen++;
    sh->nlive++;
    sh->refs++;
    if (sh->qlen == 1) {
        sh->head_seq = t->seq;
        if (feasible) {
            /* The youngest head of all: its place is at the back. */
            active_set(s, s->nactive++, si);
        } else {
            sh->parked = 1;
            s->nparked_shapes++;
        }
    }
    if (feasible) {
        s->nqueued++;
        rc = 0;
    } else {
        s->nparked++;
        rc = FF_SCHED_WAITING;
    }
out:
    if (buf != sbuf)
        free(buf);
    if (bad_res != NULL)
        *bad_res = bad;
    return rc;
}

/* Starts the head task of shape si on place p. */
/* Takes (sign -1) or gives back (sign 1) the amounts of a task of shape
 * sh on place p: CPU from p, the rest from every place of p's machine,
 * which share them. Giving back raises hi. */
static void take(ff_sched *s, const struct shape *sh, int p, int sign) {
    for (uint32_t i = 0; i < sh->n; i++) {
        int id = sh->req[i].id;
        int64_t d = sign * sh->req[i].amount;
        for (int q = p;;) {
            int64_t *f = row(s->freev, s, q);
            f[id] += d;
            if (f[id] > s->hi[id])
                s->hi[id] = f[id];
            q = s->places[q].mnext;
            if (q == p || s->res[id].own)
                break;
        }
    }
}

static void start(ff_sched *s, uint32_t si, uint32_t slot, int p) {
    struct shape *sh = &s->shapes[si];
    struct task *t = &s->tasks[slot];
    take(s, sh, p, -1);
    if (sh->n > 0 && sh->req[0].id == FF_RES_CPU) /* sorted: CPU comes first */
        top_update(s, p);
    sh->qhead = (sh->qhead + 1) & (sh->qcap - 1);
    sh->qlen--;
    sh->nlive--;
    struct place *pl = &s->places[p];
    t->state = T_RUNNING;
    t->place = p;
    t->prev = NIL;
    t->next = pl->run_head;
    if (pl->run_head != NIL)
        s->tasks[pl->run_head].prev = slot;
    pl->run_head = slot;
    pl->nrunning++;
    s->nqueued--;
    s->nrunning++;
    shape_fix_head(s, si);
}

int ff_sched_next(ff_sched *s, uint64_t *task, int *place) {
    for (uint32_t i = 0; i < s->nactive; i++) {
        uint32_t si = s->active[i];
        struct shape *sh = &s->shapes[si];
        if (sh->blocked == s->free_epoch)
            continue;
        uint32_t slot = sh->q[sh->qhead];
        const struct task *t = &s->tasks[slot];
        int excl = s->res_slot != NIL && s->res_slot != slot ? s->res_place : -1;
        int p = place_for(s, sh, t->affinity, excl);
        if (p < 0) {
            sh->blocked = s->free_epoch;
            continue;
        }
        *task = t->id;
        *place = p;
        start(s, si, slot, p);
        if (slot == s->res_slot)
            reservation_clear(s);
        else if (i > 0)
            passed_over(s);
        return 0;
    }
    return -EAGAIN;
}

int ff_sched_release(ff_sched *s, uint64_t task) {
    uint32_t slot = hash_del(s, task);
    if (slot == NIL)
        return -ENOENT;
    struct task *t = &s->tasks[slot];
    uint32_t si = t->shape;
    struct shape *sh = &s->shapes[si];
    if (t->state == T_RUNNING) {
        int p = t->place;
        take(s, sh, p, 1);
        if (sh->n > 0 && sh->req[0].id == FF_RES_CPU)
            top_update(s, p);
        struct place *pl = &s->places[p];
        if (t->prev != NIL)
            s->tasks[t->prev].next = t->next;
        else
            pl->run_head = t->next;
        if (t->next != NIL)
            s->tasks[t->next].prev = t->prev;
        pl->nrunning--;
        s->nrunning--;
        sh->refs--;
        task_free(s, slot);
        s->free_epoch++;
        return 0;
    }
    /* Queued or parked: leave a tombstone, popped when it reaches the head. */
    if (slot == s->res_slot)
        reservation_clear(s);
    if (sh->parked)
        s->nparked--;
    else
        s->nqueued--;
    sh->nlive--;
    t->state = T_DROPPED;
    if (sh->q[sh->qhead] == slot)
        shape_fix_head(s, si);
    return 0;
}

/* Drops the tasks of si's ring (no longer active) that no place can hold,
 * keeping those submitted with FF_SCHED_WAIT (the shape is then parked).
 * Allocates nothing. */
static size_t drop_ring(ff_sched *s, uint32_t si, int keep_wait, ff_sched_drop_fn fn, void *ud) {
    struct shape *sh = &s->shapes[si];
    uint32_t mask = sh->qcap - 1, w = 0;
    size_t dropped = 0;
    int bad = sh->bad_res;
    for (uint32_t k = 0; k < sh->qlen; k++) {
        uint32_t slot = sh->q[(sh->qhead + k) & mask];
        struct task *t = &s->tasks[slot];
        if (t->state == T_DROPPED) {
            task_free(s, slot);
            sh->refs--;
        } else if (keep_wait && (t->flags & FF_SCHED_WAIT)) {
            sh->q[(sh->qhead + w++) & mask] = slot;
        } else {
            uint64_t id = t->id;
            hash_del(s, id);
            task_free(s, slot);
            sh->refs--;
            sh->nlive--;
            dropped++;
            if (fn != NULL)
                fn(ud, id, FF_SCHED_INFEASIBLE, bad);
        }
    }
    sh->qlen = w;
    return dropped;
}

int ff_sched_close_place(ff_sched *s, int place) {
    if (!ff_sched_place_live(s, place))
        return -EINVAL;
    s->places[place].closed = 1;
    top_update(s, place);
    if (s->res_place == place)
        reservation_clear(s); /* made again, elsewhere, as the oldest is passed over */
    return 0;
}

int ff_sched_remove_place(ff_sched *s, int place, ff_sched_drop_fn fn, void *ud) {
    if (!ff_sched_place_live(s, place))
        return -EINVAL;
    struct place *pl = &s->places[place];
    /* The tasks running there are lost with it; what they held of the
     * machine's resources returns to the machine's other places. */
    for (uint32_t slot = pl->run_head, next; slot != NIL; slot = next) {
        struct task *t = &s->tasks[slot];
        uint64_t id = t->id;
        next = t->next;
        take(s, &s->shapes[t->shape], place, 1);
        hash_del(s, id);
        s->shapes[t->shape].refs--;
        task_free(s, slot);
        s->nrunning--;
        if (fn != NULL)
            fn(ud, id, FF_SCHED_LOST, -1);
    }
    pl->run_head = NIL;
    pl->nrunning = 0;
    pl->live = 0;
    if (pl->mnext != place) { /* out of its machine's ring */
        int q = pl->mnext;
        while (s->places[q].mnext != place)
            q = s->places[q].mnext;
        s->places[q].mnext = pl->mnext;
        pl->mnext = place;
    }
    for (uint32_t r = 0; r < s->rstride; r++)
        row(s->total, s, place)[r] = row(s->freev, s, place)[r] = -1;
    top_update(s, place);
    s->nlive--;
    s->place_epoch++;
    s->free_epoch++;
    /* Queued shapes that no remaining place can hold. */
    for (uint32_t i = 0; i < s->nactive;) {
        uint32_t si = s->active[i];
        struct shape *sh = &s->shapes[si];
        if (shape_feasible(s, sh)) {
            i++;
            continue;
        }
        uint32_t before = sh->nlive;
        if (s->res_slot != NIL && s->tasks[s->res_slot].shape == si)
            reservation_clear(s);
        active_remove(s, i);
        drop_ring(s, si, 1, fn, ud);
        s->nqueued -= before;
        if (sh->qlen > 0) {
            sh->parked = 1;
            s->nparked_shapes++;
            s->nparked += sh->nlive;
            sh->head_seq = s->tasks[sh->q[sh->qhead]].seq;
        } else {
            sh->qhead = 0;
        }
    }
    /* A reservation on the removed place moves to another. */
    if (s->res_slot != NIL && s->res_place == place) {
        uint32_t slot = s->res_slot;
        reservation_clear(s);
        reserve(s, slot);
    }
    return 0;
}

size_t ff_sched_drop_waiting(ff_sched *s, ff_sched_drop_fn fn, void *ud) {
    size_t n = 0;
    for (uint32_t si = 0; s->nparked_shapes > 0 && si < s->shapes_used; si++) {
        struct shape *sh = &s->shapes[si];
        if (!sh->used || !sh->parked)
            continue;
        shape_feasible(s, sh); /* a current bad_res for the message */
        s->nparked -= sh->nlive;
        n += drop_ring(s, si, 0, fn, ud);
        sh->parked = 0;
        sh->qhead = 0;
        s->nparked_shapes--;
    }
    return n;
}

int ff_sched_task_state(const ff_sched *s, uint64_t task, int *place) {
    uint32_t slot = task_find(s, task);
    if (place != NULL)
        *place = -1;
    if (slot == NIL)
        return -ENOENT;
    const struct task *t = &s->tasks[slot];
    if (t->state == T_RUNNING) {
        if (place != NULL)
            *place = t->place;
        return FF_SCHED_RUNNING;
    }
    return s->shapes[t->shape].parked ? FF_SCHED_PARKED : FF_SCHED_QUEUED;
}

void ff_sched_get_stats(const ff_sched *s, ff_sched_stats *st) {
    st->places = s->nlive;
    st->queued = s->nqueued;
    st->parked = s->nparked;
    st->running = s->nrunning;
    st->shapes = s->nactive + s->nparked_shapes;
    st->reserved_place = s->res_slot != NIL ? s->res_place : -1;
    st->reserved_task = s->res_slot != NIL ? s->tasks[s->res_slot].id : 0;
}
