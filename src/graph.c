/*
 * graph.c: the workflow graph (see graph.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fflua.h"
#include "graph.h"

/* A function nodes run. Slots are reused once nothing refers to them. */
struct func {
    int32_t handle;
    uint32_t refs;    /* the caller's references and live nodes; 0 marks a free slot */
    uint32_t counter; /* the next default name's number; the free-list link when free */
    int kind;         /* enum ff_func_kind */
    char *name;
};

#define INL_ARGS 2

struct node_ext { /* what few nodes have */
    char *name;   /* explicit name, or NULL */
    int32_t slots[FF_NSLOTS];
};

/* A child edge: the edges of a node's children form a list, newest child
 * first, in one pool of the graph. */
struct edge {
    uint32_t child, next;
};

struct node {
    uint32_t refs;  /* at a component's root: references to the component */
    uint32_t uf;    /* union-find link to the component's root; NONE: a free slot */
    uint32_t next;  /* the next member of the component (a circular list) */
    uint32_t child; /* the first edge of the children list, or NONE */
    uint32_t fid;
    uint32_t counter; /* the function's counter at creation */
    uint32_t nargs, nparents;
    uint32_t mark;   /* plan epoch, for ancestor search */
    uint32_t logpos; /* index in the creation log; the free-list link when free */
    struct node_ext *ext;
    ff_arg *args; /* heap block: args, then parents; NULL: inline */
    /* Most nodes have few arguments: those live here, saving a malloc per
     * node and keeping a node's edges in its own cache lines. */
    ff_arg inl_args[INL_ARGS];
    uint32_t inl_parents[INL_ARGS];
};

struct ff_graph {
    struct node *nodes;
    uint32_t cap, used; /* slots allocated, slots ever used */
    uint32_t free_head; /* UINT32_MAX: none */
    size_t live;
    uint32_t epoch;
    struct func *funcs;
    uint32_t nfuncs, funcs_cap; /* slots ever used, slots allocated */
    uint32_t func_free;         /* UINT32_MAX: none */
    ff_func_release_fn func_release;
    ff_release_fn release;
    void *ud;
    /* The creation log: node ids in creation order, NONE where a node has
     * been freed. Plans sweep it downwards, so they read memory in order
     * whatever slots nodes were given. Compacted when mostly holes. */
    uint32_t *log;
    uint32_t nlog, log_cap, log_holes;
    /* Child edges, and the free ones linked through next. */
    struct edge *edges;
    uint32_t edges_used, edges_cap, edge_free;
};

#define NONE UINT32_MAX

static ff_arg *args_of(const struct node *n) {
    return n->args ? n->args : (ff_arg *)n->inl_args;
}

static void release(ff_graph *g, int32_t h) {
    if (h != FF_NOHANDLE && g->release != NULL)
        g->release(g->ud, h);
}

static void release_arg(ff_graph *g, const ff_arg *a) {
    if (a->kind == FF_ARG_HANDLE || a->kind == FF_ARG_DEEP || a->kind == FF_ARG_ITEM)
        release(g, a->handle);
}

int ff_graph_create(ff_graph **out, ff_release_fn rel, void *ud) {
    ff_graph *g = calloc(1, sizeof *g);
    if (g == NULL)
        return -ENOMEM;
    g->free_head = NONE;
    g->edge_free = NONE;
    g->func_free = NONE;
    g->release = rel;
    g->ud = ud;
    *out = g;
    return 0;
}

static void func_release(ff_graph *g, uint32_t fid);

static void free_node(ff_graph *g, struct node *n) {
    func_release(g, n->fid);
    for (uint32_t i = 0; i < n->nargs; i++)
        release_arg(g, &args_of(n)[i]);
    if (n->ext != NULL) {
        for (int s = 0; s < FF_NSLOTS; s++)
            release(g, n->ext->slots[s]);
        free(n->ext->name);
        free(n->ext);
        n->ext = NULL;
    }
    free(n->args);
    n->args = NULL;
    n->refs = 0;
    n->uf = NONE;
}

void ff_graph_destroy(ff_graph *g) {
    if (g == NULL)
        return;
    g->func_release = NULL; /* no counter is worth keeping now */
    for (uint32_t i = 0; i < g->used; i++)
        if (g->nodes[i].uf != NONE)
            free_node(g, &g->nodes[i]);
    for (uint32_t i = 0; i < g->nfuncs; i++) {
        if (g->funcs[i].refs != 0) {
            release(g, g->funcs[i].handle);
            free(g->funcs[i].name);
        }
    }
    free(g->funcs);
    free(g->nodes);
    free(g->log);
    free(g->edges);
    free(g);
}

/* --- functions ------------------------------------------------------------ */

int ff_graph_add_func(ff_graph *g, int32_t handle, const char *name, uint32_t counter,
                      uint32_t *fid) {
    char *s = strdup(name != NULL ? name : "task");
    if (s == NULL)
        goto nomem;
    uint32_t id = g->func_free;
    if (id != NONE) {
        g->func_free = g->funcs[id].counter;
    } else {
        if (g->nfuncs == g->funcs_cap) {
            if (g->funcs_cap >= NONE / 2)
                goto nomem;
            uint32_t cap = g->funcs_cap ? g->funcs_cap * 2 : 16;
            struct func *f = realloc(g->funcs, cap * sizeof *f);
            if (f == NULL)
                goto nomem;
            g->funcs = f;
            g->funcs_cap = cap;
        }
        id = g->nfuncs++;
    }
    g->funcs[id] = (struct func){handle, 1, counter, FF_FUNC_PLAIN, s};
    *fid = id;
    return 0;
nomem:
    free(s);
    release(g, handle);
    return -ENOMEM;
}

void ff_graph_set_func_release(ff_graph *g, ff_func_release_fn fn) {
    g->func_release = fn;
}

void ff_graph_func_incref(ff_graph *g, uint32_t fid) {
    g->funcs[fid].refs++;
}

static void func_release(ff_graph *g, uint32_t fid) {
    struct func *f = &g->funcs[fid];
    if (--f->refs > 0)
        return;
    int32_t h = f->handle;
    uint32_t counter = f->counter;
    free(f->name);
    f->name = NULL;
    f->handle = FF_NOHANDLE;
    f->counter = g->func_free;
    g->func_free = fid;
    if (g->func_release != NULL)
        g->func_release(g->ud, fid, h, counter);
    else
        release(g, h);
}

void ff_graph_func_decref(ff_graph *g, uint32_t fid) {
    func_release(g, fid);
}

int ff_graph_func_is_live(const ff_graph *g, uint32_t fid) {
    return fid < g->nfuncs && g->funcs[fid].refs != 0;
}

const char *ff_graph_func_name(const ff_graph *g, uint32_t fid) {
    return ff_graph_func_is_live(g, fid) ? g->funcs[fid].name : NULL;
}

int32_t ff_graph_func_handle(const ff_graph *g, uint32_t fid) {
    return g->funcs[fid].handle;
}

void ff_graph_set_func_kind(ff_graph *g, uint32_t fid, enum ff_func_kind kind) {
    g->funcs[fid].kind = kind;
}

enum ff_func_kind ff_graph_func_kind(const ff_graph *g, uint32_t fid) {
    return (enum ff_func_kind)g->funcs[fid].kind;
}

/* --- nodes ---------------------------------------------------------------- */

/* A mark no node carries yet. */
static uint32_t next_epoch(ff_graph *g) {
    if (++g->epoch == 0) { /* wrapped: clear every mark once */
        for (uint32_t i = 0; i < g->used; i++)
            g->nodes[i].mark = 0;
        g->epoch = 1;
    }
    return g->epoch;
}

static uint32_t *parents_of(const struct node *n) {
    return n->args ? (uint32_t *)(n->args + n->nargs) : (uint32_t *)n->inl_parents;
}

/* Makes room for one more log entry, compacting the log first when more
 * than half of it is holes. */
static int log_reserve(ff_graph *g) {
    if (g->log_holes > 1024 && g->log_holes > g->nlog / 2) {
        uint32_t k = 0;
        for (uint32_t i = 0; i < g->nlog; i++) {
            uint32_t id = g->log[i];
            if (id != NONE) {
                g->nodes[id].logpos = k;
                g->log[k++] = id;
            }
        }
        g->nlog = k;
        g->log_holes = 0;
    }
    if (g->nlog < g->log_cap)
        return 0;
    if (g->log_cap >= NONE / 2)
        return -ENOMEM;
    uint32_t cap = g->log_cap ? g->log_cap * 2 : 1024;
    uint32_t *l = realloc(g->log, (size_t)cap * sizeof *l);
    if (l == NULL)
        return -ENOMEM;
    g->log = l;
    g->log_cap = cap;
    return 0;
}

static int alloc_slot(ff_graph *g, uint32_t *id) {
    if (g->free_head != NONE) {
        *id = g->free_head;
        g->free_head = g->nodes[*id].logpos;
        return 0;
    }
    if (g->used == g->cap) {
        if (g->cap >= NONE / 2)
            return -ENOMEM;
        uint32_t cap = g->cap ? g->cap * 2 : 1024;
        struct node *n = realloc(g->nodes, (size_t)cap * sizeof *n);
        if (n == NULL)
            return -ENOMEM;
        g->nodes = n;
        g->cap = cap;
    }
    *id = g->used++;
    return 0;
}

int ff_graph_is_live(const ff_graph *g, uint32_t id) {
    return id < g->used && g->nodes[id].uf != NONE;
}

/* The root of node id's component, halving the path on the way. */
static uint32_t find(ff_graph *g, uint32_t id) {
    struct node *nd = g->nodes;
    while (nd[id].uf != id) {
        nd[id].uf = nd[nd[id].uf].uf;
        id = nd[id].uf;
    }
    return id;
}

/* Makes room for n more child edges. */
static int edges_reserve(ff_graph *g, uint32_t n) {
    uint32_t nfree = 0;
    for (uint32_t e = g->edge_free; e != NONE && nfree < n; e = g->edges[e].next)
        nfree++;
    if (nfree >= n || g->edges_used + (n - nfree) <= g->edges_cap)
        return 0;
    if (g->edges_cap >= NONE / 4)
        return -ENOMEM;
    uint32_t cap = g->edges_cap ? g->edges_cap * 2 : 1024;
    while (cap < g->edges_used + n)
        cap *= 2;
    struct edge *e = realloc(g->edges, (size_t)cap * sizeof *e);
    if (e == NULL)
        return -ENOMEM;
    g->edges = e;
    g->edges_cap = cap;
    return 0;
}

/* Adds child to parent's children (room reserved). */
static void add_child(ff_graph *g, uint32_t parent, uint32_t child) {
    uint32_t e = g->edge_free;
    if (e != NONE)
        g->edge_free = g->edges[e].next;
    else
        e = g->edges_used++;
    g->edges[e].child = child;
    g->edges[e].next = g->nodes[parent].child;
    g->nodes[parent].child = e;
}

int ff_graph_add_node(ff_graph *g, uint32_t fid, const ff_arg *args, uint32_t nargs,
                      const uint32_t *deps, uint32_t ndeps, uint32_t *out) {
    int rc = -EINVAL;
    uint32_t id = NONE;
    ff_arg *block = NULL;
    if (!ff_graph_func_is_live(g, fid))
        goto fail;
    /* Collect the distinct parents, marking each with a fresh epoch so that
     * a node with many parents costs linear time. */
    size_t maxp = (size_t)nargs + ndeps;
    int inl = maxp <= INL_ARGS;
    uint32_t inl_parents[INL_ARGS];
    uint32_t *parents = inl_parents;
    if (!inl) {
        block = malloc(nargs * sizeof(ff_arg) + maxp * sizeof(uint32_t) + 1);
        rc = -ENOMEM;
        if (block == NULL)
            goto fail;
        memcpy(block, args, nargs * sizeof(ff_arg));
        parents = (uint32_t *)(block + nargs);
    }
    uint32_t np = 0;
    uint32_t mark = next_epoch(g);
    for (size_t i = 0; i < maxp; i++) {
        uint32_t p;
        if (i < nargs) {
            if (args[i].kind != FF_ARG_NODE && args[i].kind != FF_ARG_ITEM)
                continue;
            p = args[i].u.node;
        } else {
            p = deps[i - nargs];
        }
        rc = -EINVAL;
        if (!ff_graph_is_live(g, p))
            goto fail;
        if (g->nodes[p].mark != mark) {
            g->nodes[p].mark = mark;
            parents[np++] = p;
        }
    }
    rc = log_reserve(g);
    if (rc == 0)
        rc = edges_reserve(g, np);
    if (rc == 0)
        rc = alloc_slot(g, &id);
    if (rc != 0)
        goto fail;
    struct node *n = &g->nodes[id];
    n->refs = 0;
    n->uf = id;
    n->next = id;
    n->child = NONE;
    n->fid = fid;
    n->counter = g->funcs[fid].counter++;
    g->funcs[fid].refs++;
    n->nargs = nargs;
    n->nparents = np;
    n->mark = 0;
    n->ext = NULL;
    n->args = block;
    if (inl) {
        memcpy(n->inl_args, args, nargs * sizeof(ff_arg));
        memcpy(n->inl_parents, inl_parents, np * sizeof(uint32_t));
    }
    n->logpos = g->nlog;
    g->log[g->nlog++] = id;
    /* The new node joins its parents' components, merged into one: the
     * merged component's references are the sum of theirs, its members
     * the two circular lists spliced. */
    uint32_t root = id;
    for (uint32_t i = 0; i < np; i++) {
        add_child(g, parents[i], id);
        uint32_t r = find(g, parents[i]);
        if (r == root)
            continue;
        struct node *a = &g->nodes[root], *b = &g->nodes[r];
        b->refs += a->refs;
        a->uf = r;
        uint32_t t = a->next;
        a->next = b->next;
        b->next = t;
        root = r;
    }
    g->nodes[root].refs++;
    g->live++;
    *out = id;
    return 0;
fail:
    for (uint32_t i = 0; i < nargs; i++)
        release_arg(g, &args[i]);
    free(block);
    return rc;
}

void ff_graph_incref(ff_graph *g, uint32_t id) {
    g->nodes[find(g, id)].refs++;
}

void ff_graph_decref(ff_graph *g, uint32_t id) {
    uint32_t root = find(g, id);
    if (--g->nodes[root].refs > 0)
        return;
    /* Nothing outside refers to the component: every member goes, with its
     * child edges (their children are members too). */
    uint32_t i = root;
    do {
        struct node *n = &g->nodes[i];
        uint32_t next = n->next;
        for (uint32_t e = n->child; e != NONE;) {
            uint32_t en = g->edges[e].next;
            g->edges[e].next = g->edge_free;
            g->edge_free = e;
            e = en;
        }
        n->child = NONE;
        g->log[n->logpos] = NONE;
        g->log_holes++;
        free_node(g, n);
        n = &g->nodes[i];
        n->logpos = g->free_head;
        g->free_head = i;
        g->live--;
        i = next;
    } while (i != root);
}

size_t ff_graph_size(const ff_graph *g) {
    return g->live;
}

uint32_t ff_graph_fid(const ff_graph *g, uint32_t id) {
    return g->nodes[id].fid;
}

const ff_arg *ff_graph_args(const ff_graph *g, uint32_t id, uint32_t *nargs) {
    *nargs = g->nodes[id].nargs;
    return args_of(&g->nodes[id]);
}

const uint32_t *ff_graph_parents(const ff_graph *g, uint32_t id, uint32_t *nparents) {
    *nparents = g->nodes[id].nparents;
    return parents_of(&g->nodes[id]);
}

uint32_t ff_graph_children(const ff_graph *g, uint32_t id, uint32_t *buf, uint32_t cap) {
    uint32_t n = 0;
    for (uint32_t e = g->nodes[id].child; e != NONE; e = g->edges[e].next)
        n++;
    uint32_t k = n; /* the list is newest first */
    for (uint32_t e = g->nodes[id].child; e != NONE; e = g->edges[e].next)
        if (--k < cap)
            buf[k] = g->edges[e].child;
    return n;
}

/* Copies what fits of p[0..n) to buf at *at (cap bytes), counting all. */
static void name_put(char *buf, size_t cap, size_t *at, const char *p, size_t n) {
    if (*at < cap) {
        size_t k = cap - *at < n ? cap - *at : n;
        memcpy(buf + *at, p, k);
    }
    *at += n;
}

/* As snprintf(buf, cap, "%s_%04u", fn, counter) or the explicit name, but
 * without stdio: names are made for every node of a run with storage. */
size_t ff_graph_name(const ff_graph *g, uint32_t id, char *buf, size_t cap) {
    const struct node *n = &g->nodes[id];
    size_t at = 0;
    if (n->ext != NULL && n->ext->name != NULL) {
        name_put(buf, cap, &at, n->ext->name, strlen(n->ext->name));
    } else {
        const char *fn = g->funcs[n->fid].name;
        name_put(buf, cap, &at, fn, strlen(fn));
        char d[12];
        int k = 0;
        unsigned c = n->counter;
        do {
            d[11 - k++] = (char)('0' + c % 10);
            c /= 10;
        } while (c != 0);
        while (k < 4)
            d[11 - k++] = '0';
        d[11 - k] = '_';
        name_put(buf, cap, &at, d + 11 - k, (size_t)k + 1);
    }
    if (cap > 0)
        buf[at < cap ? at : cap - 1] = '\0';
    return at;
}

static struct node_ext *ext_of(ff_graph *g, uint32_t id) {
    struct node *n = &g->nodes[id];
    if (n->ext == NULL && (n->ext = calloc(1, sizeof *n->ext)) != NULL)
        for (int s = 0; s < FF_NSLOTS; s++)
            n->ext->slots[s] = FF_NOHANDLE;
    return n->ext;
}

int ff_graph_set_name(ff_graph *g, uint32_t id, const char *name, size_t len) {
    struct node_ext *e = ext_of(g, id);
    char *s = malloc(len + 1);
    if (e == NULL || s == NULL) {
        free(s);
        return -ENOMEM;
    }
    memcpy(s, name, len);
    s[len] = '\0';
    free(e->name);
    e->name = s;
    return 0;
}

int ff_graph_set_slot(ff_graph *g, uint32_t id, enum ff_slot slot, int32_t handle) {
    if (g->nodes[id].ext == NULL && handle == FF_NOHANDLE)
        return 0;
    struct node_ext *e = ext_of(g, id);
    if (e == NULL) {
        release(g, handle);
        return -ENOMEM;
    }
    int32_t old = e->slots[slot];
    e->slots[slot] = handle;
    release(g, old);
    return 0;
}

int32_t ff_graph_slot(const ff_graph *g, uint32_t id, enum ff_slot slot) {
    const struct node_ext *e = g->nodes[id].ext;
    return e != NULL ? e->slots[slot] : FF_NOHANDLE;
}

/* --- plans ---------------------------------------------------------------- */

void ff_plan_release(ff_graph *g, ff_plan *p) {
    if (p == NULL)
        return;
    for (uint32_t i = 0; i < p->nheld; i++)
        ff_graph_decref(g, p->held[i]);
    free(p->held);
    free(p->order);
    free(p->consumers);
    free(p->pos);
    free(p);
}

uint32_t ff_plan_pos(const ff_plan *p, uint32_t id) {
    return id < p->pos_cap && p->pos[id] != 0 ? p->pos[id] - 1 : NONE;
}

/* Appends id to the array *a of *n ids (room for *cap), doubling it when
 * full; on failure frees it. Returns 0 or -ENOMEM. */
static int append(uint32_t **a, size_t *n, size_t *cap, uint32_t id) {
    if (*n == *cap) {
        uint32_t *o = realloc(*a, (*cap *= 2) * sizeof *o);
        if (o == NULL) {
            free(*a);
            *a = NULL;
            return -ENOMEM;
        }
        *a = o;
    }
    (*a)[(*n)++] = id;
    return 0;
}

/* Ancestors of the leaves, in creation order: one sweep down the creation
 * log from the newest leaf, where every marked node marks its parents (all
 * older, so still ahead of the sweep). It stops when no marked node is left
 * ahead. With roots_only, only the ancestors without parents (in any
 * order). */
static int sweep_ancestors(ff_graph *g, const uint32_t *leaves, uint32_t nleaves, int roots_only,
                           uint32_t **out, size_t *nout) {
    uint32_t mark = next_epoch(g);
    uint32_t hi = 0;
    size_t pending = 0;
    for (uint32_t i = 0; i < nleaves; i++) {
        struct node *nd = &g->nodes[leaves[i]];
        if (nd->mark != mark) {
            nd->mark = mark;
            pending++;
        }
        hi = nd->logpos > hi ? nd->logpos : hi;
    }
    size_t n = 0, cap = 64;
    uint32_t *order = malloc(cap * sizeof *order);
    if (order == NULL)
        return -ENOMEM;
    for (uint32_t k = hi + 1; k-- > 0 && pending > 0;) {
        uint32_t id = g->log[k];
        if (id == NONE || g->nodes[id].mark != mark)
            continue;
        struct node *nd = &g->nodes[id];
        pending--;
        if ((!roots_only || nd->nparents == 0) && append(&order, &n, &cap, id) != 0)
            return -ENOMEM;
        const uint32_t *par = parents_of(nd);
        for (uint32_t j = 0; j < nd->nparents; j++) {
            struct node *pn = &g->nodes[par[j]];
            if (pn->mark != mark) {
                pn->mark = mark;
                pending++;
            }
        }
    }
    for (size_t i = 0; i < n / 2; i++) { /* newest first -> creation order */
        uint32_t t = order[i];
        order[i] = order[n - 1 - i];
        order[n - 1 - i] = t;
    }
    *out = order;
    *nout = n;
    return 0;
}

/* The workflow of the roots (distinct nodes without parents: the roots
 * among the given nodes' ancestors): the roots, then every node whose
 * parents are all in the workflow, in creation order, found by one sweep
 * up the creation log from the oldest root.
 * A node becomes a candidate when one of its parents is in; a candidate
 * is in when all its parents are (all older, so decided already). The
 * sweep stops when no candidate is left ahead. */
static int sweep_descendants(ff_graph *g, const uint32_t *roots, size_t nroots, uint32_t **out,
                             size_t *nout) {
    uint32_t cand = next_epoch(g), in = next_epoch(g);
    if (in < cand) /* the epochs wrapped between the two */
        cand = next_epoch(g), in = next_epoch(g);
    uint32_t lo = NONE;
    size_t pending = 0;
    for (size_t i = 0; i < nroots; i++) {
        struct node *nd = &g->nodes[roots[i]];
        nd->mark = cand;
        pending++;
        lo = nd->logpos < lo ? nd->logpos : lo;
    }
    size_t n = 0, cap = 1024;
    uint32_t *res = malloc(cap * sizeof *res);
    if (res == NULL)
        return -ENOMEM;
    for (uint32_t k = lo; pending > 0; k++) {
        uint32_t id = g->log[k];
        if (id == NONE || g->nodes[id].mark != cand)
            continue;
        pending--;
        struct node *nd = &g->nodes[id];
        const uint32_t *par = parents_of(nd);
        uint32_t j = 0;
        while (j < nd->nparents && g->nodes[par[j]].mark == in)
            j++;
        if (j < nd->nparents)
            continue;
        nd->mark = in;
        if (append(&res, &n, &cap, id) != 0)
            return -ENOMEM;
        for (uint32_t e = nd->child; e != NONE; e = g->edges[e].next) {
            struct node *c = &g->nodes[g->edges[e].child];
            if (c->mark != cand && c->mark != in) {
                c->mark = cand;
                pending++;
            }
        }
    }
    *out = res;
    *nout = n;
    return 0;
}

int ff_graph_plan(ff_graph *g, const uint32_t *leaves, uint32_t nleaves, int flags, ff_plan **out) {
    for (uint32_t i = 0; i < nleaves; i++)
        if (!ff_graph_is_live(g, leaves[i]))
            return -EINVAL;
    ff_plan *p = calloc(1, sizeof *p);
    if (p == NULL)
        return -ENOMEM;
    size_t n = 0;
    uint32_t *order = NULL;
    int whole = !(flags & FF_PLAN_NEEDED);
    int rc = sweep_ancestors(g, leaves, nleaves, whole, &order, &n);
    if (rc == 0 && whole) {
        uint32_t *roots = order;
        rc = sweep_descendants(g, roots, n, &order, &n);
        free(roots);
        if (rc != 0)
            order = NULL;
    }
    if (rc != 0)
        goto fail;
    p->n = (uint32_t)n;
    p->order = order;
    p->flags = flags;
    p->pos_cap = g->used;
    p->pos = calloc(g->used ? g->used : 1, sizeof *p->pos);
    p->consumers = calloc(n ? n : 1, sizeof *p->consumers);
    p->held = malloc((nleaves ? nleaves : 1) * sizeof *p->held);
    if (p->pos == NULL || p->consumers == NULL || p->held == NULL) {
        ff_plan_release(g, p);
        return -ENOMEM;
    }
    /* Every planned node is in the component of a leaf: a reference on
     * each leaf's component keeps them all. */
    for (uint32_t i = 0; i < nleaves; i++)
        ff_graph_incref(g, p->held[p->nheld++] = leaves[i]);
    for (uint32_t i = 0; i < p->n; i++) {
        p->pos[order[i]] = i + 1; /* parents are earlier: their positions are set */
        const struct node *nd = &g->nodes[order[i]];
        const uint32_t *par = parents_of(nd);
        for (uint32_t j = 0; j < nd->nparents; j++) {
            uint32_t pp = p->pos[par[j]] - 1;
            if (pp >= i) { /* cannot happen: edges follow creation order and
                            * a plan holds every parent of its nodes */
                ff_plan_release(g, p);
                return FFLUA_ECYCLE;
            }
            p->consumers[pp]++;
        }
    }
    *out = p;
    return 0;
fail:
    free(order);
    free(p);
    return rc;
}
