/* The graph engine from C, without Lua: nodes, names, components, plans. */
#include <errno.h>
#include <stdint.h>

#include "fflua.h"
#include "graph.h"
#include "test.h"

static int released[4096];
static int nreleased;

static void on_release(void *ud, int32_t h) {
    (void)ud;
    if (nreleased < 4096)
        released[nreleased++] = h;
}

static ff_graph *new_graph(void) {
    ff_graph *g;
    nreleased = 0;
    ASSERT_EQ(ff_graph_create(&g, on_release, NULL), 0);
    return g;
}

static uint32_t add(ff_graph *g, uint32_t fid, const uint32_t *parents, uint32_t n) {
    ff_arg args[8];
    for (uint32_t i = 0; i < n; i++)
        args[i] = (ff_arg){.kind = FF_ARG_NODE, .handle = FF_NOHANDLE, .u.node = parents[i]};
    uint32_t id;
    ASSERT_EQ(ff_graph_add_node(g, fid, args, n, NULL, 0, &id), 0);
    return id;
}

static void test_names(void) {
    ff_graph *g = new_graph();
    uint32_t sum, minus;
    ASSERT_EQ(ff_graph_add_func(g, 100, "sum", 0, &sum), 0);
    ASSERT_EQ(ff_graph_add_func(g, 101, "minus", 0, &minus), 0);
    /* Functions are plain until marked as a class's. */
    ASSERT_EQ(ff_graph_func_kind(g, sum), FF_FUNC_PLAIN);
    ff_graph_set_func_kind(g, minus, FF_FUNC_METHOD);
    ASSERT_EQ(ff_graph_func_kind(g, minus), FF_FUNC_METHOD);
    ASSERT_EQ(ff_graph_func_kind(g, sum), FF_FUNC_PLAIN);
    uint32_t a = add(g, sum, NULL, 0), b = add(g, sum, &a, 1), c = add(g, minus, &b, 1);
    char buf[64];
    ASSERT_EQ(ff_graph_name(g, a, buf, sizeof buf), 8);
    ASSERT_STR_EQ(buf, "sum_0000");
    ff_graph_name(g, b, buf, sizeof buf);
    ASSERT_STR_EQ(buf, "sum_0001");
    ff_graph_name(g, c, buf, sizeof buf);
    ASSERT_STR_EQ(buf, "minus_0000");
    ASSERT_EQ(ff_graph_set_name(g, b, "node2", 5), 0);
    ff_graph_name(g, b, buf, sizeof buf);
    ASSERT_STR_EQ(buf, "node2");
    /* Truncation reports the full length. */
    ASSERT_EQ(ff_graph_name(g, a, buf, 4), 8);
    ASSERT_STR_EQ(buf, "sum");
    ff_graph_destroy(g);
    ASSERT_EQ(nreleased, 2); /* the two function handles */
}

static void test_plan_order_and_consumers(void) {
    ff_graph *g = new_graph();
    uint32_t f;
    ff_graph_add_func(g, 1, "f", 0, &f);
    /* d, c created first; b uses c and d; a alone; x unrelated. */
    uint32_t d = add(g, f, NULL, 0), c = add(g, f, NULL, 0);
    uint32_t x = add(g, f, NULL, 0);
    uint32_t cd[2] = {c, d};
    uint32_t b = add(g, f, cd, 2);
    uint32_t dd[3] = {d, d, b}; /* duplicates count once */
    uint32_t a = add(g, f, dd, 3);
    uint32_t np;
    ff_graph_parents(g, a, &np);
    ASSERT_EQ(np, 2);
    ff_plan *p;
    ASSERT_EQ(ff_graph_plan(g, &a, 1, 0, &p), 0);
    ASSERT_EQ(p->n, 4);
    uint32_t want[4] = {d, c, b, a};
    for (int i = 0; i < 4; i++)
        ASSERT_EQ(p->order[i], want[i]);
    ASSERT_EQ(p->consumers[0], 2); /* d: used by b and a */
    ASSERT_EQ(p->consumers[1], 1); /* c */
    ASSERT_EQ(p->consumers[2], 1); /* b */
    ASSERT_EQ(p->consumers[3], 0); /* a, the leaf */
    ASSERT_EQ(ff_plan_pos(p, x), UINT32_MAX);
    ff_plan_release(g, p);
    ff_graph_destroy(g);
}

static void test_refcounts_free_chains(void) {
    ff_graph *g = new_graph();
    uint32_t f;
    ff_graph_add_func(g, 7, "f", 0, &f);
    uint32_t prev = add(g, f, NULL, 0);
    for (int i = 0; i < 100000; i++) {
        uint32_t next = add(g, f, &prev, 1);
        ff_graph_decref(g, prev); /* only the child holds it now */
        prev = next;
    }
    ASSERT_EQ(ff_graph_size(g), 100001);
    ff_graph_decref(g, prev); /* the whole chain goes, without recursion */
    ASSERT_EQ(ff_graph_size(g), 0);
    /* Slots are reused, and creation order still rules plans. */
    uint32_t n = add(g, f, NULL, 0);
    ASSERT(n < 100001);
    uint32_t m = add(g, f, &n, 1);
    uint32_t k = add(g, f, NULL, 0);
    uint32_t leaves[2] = {k, m};
    ff_plan *p;
    ASSERT_EQ(ff_graph_plan(g, leaves, 2, 0, &p), 0);
    ASSERT_EQ(p->n, 3);
    ASSERT_EQ(p->order[0], n);
    ASSERT_EQ(p->order[1], m);
    ASSERT_EQ(p->order[2], k);
    ff_plan_release(g, p);
    ff_graph_destroy(g);
}

/* A workflow is the roots of the given nodes and every node whose parents
 * are all in it; FF_PLAN_NEEDED keeps only the ancestors. */
static void test_whole_workflow(void) {
    ff_graph *g = new_graph();
    uint32_t f;
    ff_graph_add_func(g, 1, "f", 0, &f);
    uint32_t r = add(g, f, NULL, 0), s = add(g, f, NULL, 0);
    uint32_t a = add(g, f, &r, 1);
    uint32_t b = add(g, f, &a, 1); /* a child of a: in the workflow of a */
    uint32_t rs[2] = {r, s};
    uint32_t c = add(g, f, rs, 2); /* needs s, a root a does not reach: out */
    uint32_t d = add(g, f, &b, 1);
    uint32_t other = add(g, f, NULL, 0);
    ff_plan *p;
    ASSERT_EQ(ff_graph_plan(g, &a, 1, 0, &p), 0);
    uint32_t want[4] = {r, a, b, d};
    ASSERT_EQ(p->n, 4);
    for (int i = 0; i < 4; i++)
        ASSERT_EQ(p->order[i], want[i]);
    ASSERT_EQ(p->consumers[0], 1);
    ASSERT_EQ(p->consumers[3], 0);
    ASSERT_EQ(ff_plan_pos(p, c), UINT32_MAX);
    ff_plan_release(g, p);
    ASSERT_EQ(ff_graph_plan(g, &a, 1, FF_PLAN_NEEDED, &p), 0);
    ASSERT_EQ(p->n, 2);
    ff_plan_release(g, p);
    ASSERT_EQ(ff_graph_plan(g, &c, 1, 0, &p), 0); /* both roots: everything but other */
    ASSERT_EQ(p->n, 6);
    ff_plan_release(g, p);
    uint32_t kids[4];
    ASSERT_EQ(ff_graph_children(g, r, kids, 4), 2);
    ASSERT_EQ(kids[0], a); /* creation order */
    ASSERT_EQ(kids[1], c);
    ASSERT_EQ(ff_graph_children(g, r, kids, 1), 2);
    ASSERT_EQ(kids[0], a);
    ASSERT_EQ(ff_graph_children(g, d, NULL, 0), 0);
    /* The component lives while any member is referenced. */
    uint32_t mine[6] = {r, s, a, b, c};
    for (int i = 0; i < 5; i++)
        ff_graph_decref(g, mine[i]);
    ASSERT_EQ(ff_graph_size(g), 7);
    ff_graph_decref(g, d);
    ASSERT_EQ(ff_graph_size(g), 1);
    ASSERT(ff_graph_is_live(g, other));
    ASSERT(!ff_graph_is_live(g, c));
    /* Freed slots and edges are reused. */
    uint32_t x = add(g, f, NULL, 0), y = add(g, f, &x, 1);
    ASSERT(x < 7 && y < 7);
    ASSERT_EQ(ff_graph_children(g, x, kids, 4), 1);
    ASSERT_EQ(kids[0], y);
    ff_graph_destroy(g);
}

static void test_handles_released(void) {
    ff_graph *g = new_graph();
    uint32_t f;
    ff_graph_add_func(g, 1, "f", 0, &f);
    ff_arg args[3] = {
        {.kind = FF_ARG_HANDLE, .handle = 11},
        {.kind = FF_ARG_INT, .handle = FF_NOHANDLE, .u.i = 5},
        {.kind = FF_ARG_DEEP, .handle = 12},
    };
    uint32_t id;
    ASSERT_EQ(ff_graph_add_node(g, f, args, 3, NULL, 0, &id), 0);
    ASSERT_EQ(ff_graph_slot(g, id, FF_SLOT_PLUGINS), FF_NOHANDLE);
    ASSERT_EQ(ff_graph_set_slot(g, id, FF_SLOT_PLUGINS, 13), 0);
    ASSERT_EQ(ff_graph_set_slot(g, id, FF_SLOT_PLUGINS, 14), 0); /* releases 13 */
    ASSERT_EQ(ff_graph_slot(g, id, FF_SLOT_PLUGINS), 14);
    ASSERT_EQ(nreleased, 1);
    ASSERT_EQ(released[0], 13);
    ff_graph_decref(g, id);
    ASSERT_EQ(nreleased, 4);
    ASSERT_EQ(released[1], 11);
    ASSERT_EQ(released[2], 12);
    ASSERT_EQ(released[3], 14);
    ff_graph_destroy(g);
}

static void test_bad_parents(void) {
    ff_graph *g = new_graph();
    uint32_t f, id;
    ff_graph_add_func(g, 1, "f", 0, &f);
    ff_arg bad = {.kind = FF_ARG_NODE, .handle = FF_NOHANDLE, .u.node = 12345};
    ASSERT_EQ(ff_graph_add_node(g, f, &bad, 1, NULL, 0, &id), -EINVAL);
    ff_arg owned = {.kind = FF_ARG_HANDLE, .handle = 77};
    uint32_t dep = 999;
    ASSERT_EQ(ff_graph_add_node(g, f, &owned, 1, &dep, 1, &id), -EINVAL);
    ASSERT_EQ(nreleased, 1); /* the handle is released on failure too */
    ASSERT_EQ(released[0], 77);
    ASSERT_EQ(ff_graph_add_node(g, 42, NULL, 0, NULL, 0, &id), -EINVAL);
    ff_plan *p;
    uint32_t missing = 3;
    ASSERT_EQ(ff_graph_plan(g, &missing, 1, 0, &p), -EINVAL);
    ff_graph_destroy(g);
}

static uint32_t freed_fid, freed_counter;
static int32_t freed_handle;

static void on_func_release(void *ud, uint32_t fid, int32_t h, uint32_t counter) {
    (void)ud;
    freed_fid = fid;
    freed_handle = h;
    freed_counter = counter;
}

/* A function lives while the caller's reference or a node of it does;
 * its slot then goes to the next function, which numbers from the counter
 * it is given. */
static void test_function_slots(void) {
    ff_graph *g = new_graph();
    ff_graph_set_func_release(g, on_func_release);
    freed_handle = FF_NOHANDLE;
    uint32_t f, h;
    ASSERT_EQ(ff_graph_add_func(g, 10, "f", 0, &f), 0);
    ASSERT_EQ(ff_graph_add_func(g, 11, "h", 0, &h), 0);
    uint32_t a = add(g, f, NULL, 0), b = add(g, f, &a, 1);
    ff_graph_func_decref(g, f); /* the caller lets go: its nodes keep it */
    ASSERT_EQ(ff_graph_func_is_live(g, f), 1);
    ASSERT_STR_EQ(ff_graph_func_name(g, f), "f");
    ASSERT_EQ(freed_handle, FF_NOHANDLE);
    ff_graph_decref(g, a); /* b still holds a */
    ASSERT_EQ(ff_graph_func_is_live(g, f), 1);
    ff_graph_decref(g, b); /* frees b, then a: the last node of f */
    ASSERT_EQ(ff_graph_func_is_live(g, f), 0);
    ASSERT_EQ(ff_graph_func_name(g, f) == NULL, 1);
    ASSERT_EQ(freed_handle, 10);
    ASSERT_EQ(freed_fid, f);
    ASSERT_EQ(freed_counter, 2);
    /* A node of a freed function is refused. */
    uint32_t id;
    ASSERT_EQ(ff_graph_add_node(g, f, NULL, 0, NULL, 0, &id), -EINVAL);
    /* The slot is reused, numbering from the counter given. */
    uint32_t f2;
    ASSERT_EQ(ff_graph_add_func(g, 12, "f", 2, &f2), 0);
    ASSERT_EQ(f2, f);
    uint32_t c = add(g, f2, NULL, 0);
    char buf[32];
    ff_graph_name(g, c, buf, sizeof buf);
    ASSERT_STR_EQ(buf, "f_0002");
    /* 1000 functions made and dropped one after another need one slot. */
    for (int i = 0; i < 1000; i++) {
        uint32_t t;
        ASSERT_EQ(ff_graph_add_func(g, 100 + i, "t", 0, &t), 0);
        ASSERT_EQ(t != f2 && t != h, 1);
        ff_graph_func_decref(g, t);
        ASSERT_EQ(freed_handle, 100 + i);
    }
    uint32_t t1, t2;
    ASSERT_EQ(ff_graph_add_func(g, 5000, "t", 0, &t1), 0);
    ASSERT_EQ(ff_graph_add_func(g, 5001, "t", 0, &t2), 0);
    ASSERT_EQ(t1 <= 2 && t2 <= 3, 1); /* slots 0..3: f2, h, and two more */
    ff_graph_destroy(g);
    /* destroy releases what is left through the plain release callback */
    ASSERT_EQ(nreleased, 4); /* h, f2 (12), t1, t2 */
}

int main(void) {
    RUN(test_names);
    RUN(test_function_slots);
    RUN(test_plan_order_and_consumers);
    RUN(test_refcounts_free_chains);
    RUN(test_whole_workflow);
    RUN(test_handles_released);
    RUN(test_bad_parents);
    return 0;
}
