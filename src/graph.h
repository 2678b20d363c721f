/*
 * graph.h: the workflow graph.
 *
 * Nodes, their arguments, edges, names and per-node backend information,
 * and the plan of a run (which nodes, in which order, how many consumers
 * each result has). The graph knows nothing of Lua: values it cannot hold
 * inline (strings, tables, functions, plugins) are opaque int32 handles owned
 * by the caller, who gets each back through the release callback when the
 * graph no longer needs it.
 *
 * A node can only depend on nodes that exist when it is created, so every
 * edge runs from an older node to a newer one and the graph is acyclic by
 * construction; creation order is a topological order. Every node knows
 * its parents and its children (a list of child edges in a pool).
 *
 * A plan is the workflow of a set of given nodes, as functionfuse's
 * BaseWorkflow has it: the roots among their ancestors, then every node
 * whose parents are all in the workflow (so every descendant of those
 * roots that can run without a node from outside), in creation order, the
 * order Kahn's algorithm gives with creation order as the tie-break. With
 * FF_PLAN_NEEDED it is only the given nodes and their ancestors.
 *
 * Lifetime is per connected component (nodes linked by edges, in either
 * direction): a union-find over the nodes, whose roots count the
 * references the caller holds on any member (ff_graph_incref). A node
 * nobody refers to lives as long as its component; when the last
 * reference to a component goes, all of it is freed. Components only
 * merge (a node with parents in several joins them). Node ids are slot
 * numbers and are reused after a node is freed; the graph keeps creation
 * order in a separate log.
 *
 * Functions are reference counted too: the caller's references and every
 * live node of the function; their ids are reused as well.
 *
 * A graph is not thread-safe; one thread uses it at a time. No function
 * here calls back into the caller except the release callback, which is
 * called only from ff_graph_add_func (on failure), ff_graph_add_node (on
 * failure), ff_graph_decref, ff_graph_func_decref, ff_graph_set_slot and
 * ff_graph_destroy; the same holds for the function release callback.
 */
#ifndef FFLUA_GRAPH_H
#define FFLUA_GRAPH_H

#include <stddef.h>
#include <stdint.h>

#define FF_NOHANDLE (-2) /* "no handle": matches LUA_NOREF */

typedef struct ff_graph ff_graph;

enum ff_arg_kind {
    FF_ARG_NIL,
    FF_ARG_FALSE,
    FF_ARG_TRUE,
    FF_ARG_INT,    /* i */
    FF_ARG_NUM,    /* d */
    FF_ARG_HANDLE, /* handle: a value the caller holds */
    FF_ARG_DEEP,   /* handle: a value with node references inside */
    FF_ARG_NODE,   /* node: the result of a parent */
    FF_ARG_ITEM,   /* node + handle: a field of a parent's result */
};

typedef struct ff_arg {
    uint8_t kind;
    int32_t handle;
    union {
        int64_t i;
        double d;
        uint32_t node;
    } u;
} ff_arg;

/* Called with each handle the graph lets go of. */
typedef void (*ff_release_fn)(void *ud, int32_t handle);

/* Creates an empty graph. Returns 0 or -ENOMEM. */
int ff_graph_create(ff_graph **out, ff_release_fn release, void *ud);

/* Frees the graph and releases every handle it holds. g may be NULL. */
void ff_graph_destroy(ff_graph *g);

/* --- functions: what nodes run -------------------------------------------- */

/* Registers a function (the caller's handle) under name (copied; NULL
 * gives "task"), its nodes numbered from counter on, and returns its id in
 * *fid. The graph owns the handle from now on; the caller holds one
 * reference on the function, and every live node of it holds another.
 * When the last goes, the handle is released (through the function
 * release callback when one is set, with the counter reached, so that a
 * caller can go on numbering where it stopped) and the id may be given to
 * the next function added. Returns 0 or -ENOMEM (the handle is released). */
int ff_graph_add_func(ff_graph *g, int32_t handle, const char *name, uint32_t counter,
                      uint32_t *fid);
/* Called, instead of the release callback, with a function's id, handle
 * and counter when the function is freed. */
typedef void (*ff_func_release_fn)(void *ud, uint32_t fid, int32_t handle, uint32_t counter);
void ff_graph_set_func_release(ff_graph *g, ff_func_release_fn fn);
void ff_graph_func_incref(ff_graph *g, uint32_t fid);
/* Drops a reference on a live function; may release its handle. */
void ff_graph_func_decref(ff_graph *g, uint32_t fid);
int ff_graph_func_is_live(const ff_graph *g, uint32_t fid);
/* The function's name, or NULL when fid is not a live function. */
const char *ff_graph_func_name(const ff_graph *g, uint32_t fid);
int32_t ff_graph_func_handle(const ff_graph *g, uint32_t fid);
/* What a live function's nodes are: plain nodes, or a class's
 * constructor and method calls (class nodes, which a cluster runs as
 * actors). A function starts FF_FUNC_PLAIN. */
enum ff_func_kind { FF_FUNC_PLAIN, FF_FUNC_CTOR, FF_FUNC_METHOD };
void ff_graph_set_func_kind(ff_graph *g, uint32_t fid, enum ff_func_kind kind);
enum ff_func_kind ff_graph_func_kind(const ff_graph *g, uint32_t fid);

/* --- nodes ---------------------------------------------------------------- */

/* Adds a node running function fid on args (copied; the graph owns their
 * handles from now on, also on failure). Its parents are the distinct
 * nodes named by FF_ARG_NODE/FF_ARG_ITEM args and by deps (which carry
 * edges with no argument: nodes inside deep arguments, ordering edges).
 * Every parent must be a live node, fid a live function (the node holds a
 * reference on it). The new node starts with one reference, the caller's,
 * on the component it joins (its parents' components, merged). Returns 0,
 * -ENOMEM or -EINVAL (a parent or the function is not live). */
int ff_graph_add_node(ff_graph *g, uint32_t fid, const ff_arg *args, uint32_t nargs,
                      const uint32_t *deps, uint32_t ndeps, uint32_t *id);

/* Takes a reference on node id's component. */
void ff_graph_incref(ff_graph *g, uint32_t id);
/* Drops a reference on node id's component; a component without
 * references is freed, every member's handles released. */
void ff_graph_decref(ff_graph *g, uint32_t id);
int ff_graph_is_live(const ff_graph *g, uint32_t id);
/* Number of live nodes. */
size_t ff_graph_size(const ff_graph *g);

uint32_t ff_graph_fid(const ff_graph *g, uint32_t id);
/* The node's arguments and distinct parents. The arrays may live inside
 * the graph's node table: they are valid until the next ff_graph_add_node
 * (which may move it) or until the node is freed. */
const ff_arg *ff_graph_args(const ff_graph *g, uint32_t id, uint32_t *nargs);
const uint32_t *ff_graph_parents(const ff_graph *g, uint32_t id, uint32_t *nparents);
/* Writes up to cap of the node's children (distinct, in creation order)
 * to buf and returns how many it has. buf may be NULL when cap is 0. */
uint32_t ff_graph_children(const ff_graph *g, uint32_t id, uint32_t *buf, uint32_t cap);

/* Writes the node's name into buf (NUL-terminated, truncated to cap) and
 * returns its full length: the name set with ff_graph_set_name, otherwise
 * "<function name>_<NNNN>" with its function's counter at creation. */
size_t ff_graph_name(const ff_graph *g, uint32_t id, char *buf, size_t cap);
/* Sets an explicit name (copied, len bytes). Returns 0 or -ENOMEM. */
int ff_graph_set_name(ff_graph *g, uint32_t id, const char *name, size_t len);

/* Per-node handles for backends: which function overrides the node's own
 * (replace_func), remote args, plugins, the backend info (a table of the
 * caller's). Setting one releases the previous; on failure (-ENOMEM) the
 * new handle is released. */
enum ff_slot { FF_SLOT_FUNC, FF_SLOT_REMOTE, FF_SLOT_PLUGINS, FF_SLOT_INFO, FF_NSLOTS };
int ff_graph_set_slot(ff_graph *g, uint32_t id, enum ff_slot slot, int32_t handle);
int32_t ff_graph_slot(const ff_graph *g, uint32_t id, enum ff_slot slot);

/* --- plans ---------------------------------------------------------------- */

typedef struct ff_plan {
    uint32_t n;          /* nodes to run */
    uint32_t *order;     /* node ids in run order */
    uint32_t *consumers; /* per position: how many planned nodes use its result */
    uint32_t *pos;       /* per node id (graph capacity): position + 1, 0 = not planned */
    uint32_t pos_cap;    /* length of pos */
    int flags;           /* as given to ff_graph_plan */
    uint32_t *held;      /* the nodes whose components the plan holds a reference on */
    uint32_t nheld;
} ff_plan;

/* Plan flags: only the leaves and their ancestors, not the whole workflow. */
#define FF_PLAN_NEEDED 1

/* Plans a run of the workflow of leaves (live node ids; duplicates are
 * fine), or of their ancestors with FF_PLAN_NEEDED. Takes a reference on
 * the leaves' components (which hold every planned node), dropped by
 * ff_plan_release. Returns 0, -ENOMEM,
 * -EINVAL (a leaf is not live) or FFLUA_ECYCLE (an edge against creation
 * order, which the API cannot make). */
int ff_graph_plan(ff_graph *g, const uint32_t *leaves, uint32_t nleaves, int flags, ff_plan **out);
/* Position of node id in the plan, or UINT32_MAX. */
uint32_t ff_plan_pos(const ff_plan *p, uint32_t id);
void ff_plan_release(ff_graph *g, ff_plan *p);

#endif
