/*
 * ldriver.c: the cluster driver, ls:run_cluster(client, opts) on a
 * LeafSet.
 *
 * The driver runs the plugin pass here (lrun.c), then encodes every
 * planned node as a task: its function once per distinct function (a FUNC
 * frame), its arguments with each parent replaced by a node tag naming the
 * parent's slot in the task's dependency list, its pre-run function and
 * its resources. Tasks go to the head in SUBMITs, each sent as soon as it
 * is encoded; the driver then reads the leaves' results (DONE frames) until
 * RUN_END, which says where each node ran. The connection is the cluster
 * client's (lclient.c); the messages are in msg.h. Class nodes are marked
 * as actors (cl_actor): a constructor's instance stays on its worker, and
 * its method calls run there, so no other node may take it.
 *
 * With a storage (on a worker of the cluster: opts.storage_path and
 * opts.storage_where), every planned node is fingerprinted as in a local
 * run (lcache.c), the storage's worker says in one call which nodes it
 * holds, and the local rules decide; only the nodes that run or load are
 * tasks (numbered apart from the plan: tpos maps a task to its position).
 * Tasks that run carry their fingerprint and are saved by the storage's
 * worker as the head forwards their results; tasks that load are served
 * by it. When the run ends, failed or not, that worker commits before the
 * driver returns.
 *
 * Faults: each task carries its remote args' max_retries (default 3),
 * retry_exceptions, timeout_s and, for a constructor, max_restarts; the
 * head retries. A failure (DONE) becomes the node's error object, with
 * the worker it last ran on and its attempts; with opts.keep_going the
 * failures are collected until RUN_END and raised as one error listing
 * them (cl_raise_failures).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "cluster.h"
#include "codec.h"
#include "graph.h"
#include "lclient.h"
#include "lgraph.h"
#include "lrecord.h"
#include "lrun.h"
#include "msg.h"
#include "net.h"
#include "progress.h"
#include "sched.h"
#include "text.h"

#define SUBMIT_TASKS 4096
#define LOOKUP_NODES 65536 /* nodes per LOOKUP: as many names of 511 bytes fit in a message */
#define SUBMIT_BYTES ((size_t)8 << 20)

/* A run on a cluster: the plugin pass here, then every planned node as a
 * task (function once per distinct function, arguments with references to
 * parents, pre-run function, resources) in SUBMITs, then the leaves'
 * results as they come. See msg.h for the messages. */
struct crun {
    struct ffl_run r;
    ffl_client *c_client;
    uint64_t run_id;
    uint32_t cur; /* the node whose arguments are being encoded */
    int fids;     /* stack index: function -> fid */
    int modmap;
    uint64_t nfids;
    int opts;    /* stack index of the options table */
    int bad_key; /* an item key that cannot ship (set by cl_hook) */
    /* Owned by the run and freed by its caller, also after an error: */
    ff_buf tasks;   /* the SUBMIT being built */
    ff_buf enc;     /* a task's arguments, then its pre-run function */
    uint32_t *deps; /* a task's dependencies, by position in the plan */
    size_t deps_cap;
    ff_msg_res *res; /* a task's resources */
    size_t res_cap;
    /* For a node with many parents: parent id -> slot, open addressing
     * (pairs of id + 1 and slot; cap a power of two, 0 when unused). */
    uint32_t *smap;
    size_t smap_cap;
    /* With a storage: c (else NULL), where it is, and the tasks: tpos
     * (task -> position) and ptask (position -> task, UINT32_MAX: none). */
    struct ffl_cache *c;
    struct ffl_cache cache;
    ff_msg_res sres[FF_MSG_RES_MAX];
    uint32_t nsres;
    unsigned char machine[FF_MACHINE_LEN];
    int has_machine;
    uint32_t *tpos, *ptask;
    uint32_t ntasks;
    size_t computed;
    uint8_t *remote;
    /* keep_going: the failures so far (stack index of a table of error
     * objects) and per position 1 failed, 2 did not run because of it. */
    int keep_going;
    int fails;
    uint8_t *failed;
    /* The run's record, when the first SUBMIT went (ns since the record's
     * start: the head's times count from about then), and the progress
     * display's counts (or NULL). */
    ffl_record *rec;
    int recidx;     /* its stack index in cluster_inner */
    int have_times; /* RUN_TIMES came */
    uint64_t submit_ns;
    ff_progress_count *pc;
};

/* The position in the plan of task t. */
static uint32_t t_pos(const struct crun *x, uint64_t t) {
    return x->tpos != NULL ? x->tpos[t] : (uint32_t)t;
}

static uint32_t smap_hash(uint32_t id) {
    return id * 2654435761u;
}

/* Builds the slot map of node id's parents when it has many. */
static void cl_slots(lua_State *L, struct crun *x, uint32_t id) {
    uint32_t np;
    const uint32_t *par = ff_graph_parents(x->r.ctx->graph, id, &np);
    if (np <= 8) {
        x->smap_cap = 0;
        return;
    }
    size_t cap = 16;
    while (cap < (size_t)np * 2)
        cap *= 2;
    if (cap > x->smap_cap || x->smap == NULL) {
        uint32_t *m = realloc(x->smap, cap * 2 * sizeof *m);
        if (m == NULL)
            luaL_error(L, "not enough memory");
        x->smap = m;
    }
    x->smap_cap = cap;
    memset(x->smap, 0, cap * 2 * sizeof *x->smap);
    for (uint32_t j = 0; j < np; j++) {
        size_t i = smap_hash(par[j]) & (cap - 1);
        while (x->smap[2 * i] != 0 && x->smap[2 * i] != par[j] + 1)
            i = (i + 1) & (cap - 1);
        if (x->smap[2 * i] == 0) { /* parents are distinct; keep the first */
            x->smap[2 * i] = par[j] + 1;
            x->smap[2 * i + 1] = j;
        }
    }
}

/* FFC_CODE hook: a Node or NodeItem inside a task's arguments is a node
 * tag with the parent's slot in the task's dependency list (and the item's
 * keys). */
static int cl_hook(void *ud, ffc_enc *e, lua_State *L, int idx) {
    struct crun *x = ud;
    int is_item;
    ffl_node *n = ffl_test_handle(L, x->r.ctx, idx, &is_item);
    if (n == NULL)
        return 0;
    uint32_t np, slot = 0;
    if (x->smap_cap > 0) {
        size_t i = smap_hash(n->id) & (x->smap_cap - 1);
        while (x->smap[2 * i] != 0 && x->smap[2 * i] != n->id + 1)
            i = (i + 1) & (x->smap_cap - 1);
        slot = x->smap[2 * i + 1];
    } else {
        const uint32_t *par = ff_graph_parents(x->r.ctx->graph, x->cur, &np);
        while (slot < np && par[slot] != n->id)
            slot++;
    }
    uint8_t tag = FFC_TAG_NODE;
    ffc_put_bytes(e, &tag, 1);
    ffc_put_varint(e, slot);
    if (!is_item) {
        ffc_put_varint(e, 0);
        return 1;
    }
    lua_getiuservalue(L, idx, 1);
    lua_Integer len = luaL_len(L, -1);
    ffc_put_varint(e, (uint64_t)len);
    ff_buf sub = {0};
    ffc_opts o = {FFC_CODE, NULL, NULL, x->modmap};
    for (lua_Integer i = 1; i <= len; i++) {
        /* Keys are encoded apart, so only keys without references (a
         * table or function key would number them on its own). */
        int kt = lua_rawgeti(L, -1, i);
        sub.n = 0;
        if ((kt == LUA_TSTRING || kt == LUA_TNUMBER || kt == LUA_TBOOLEAN) &&
            ffc_encode(L, -1, &o, &sub) == 0) {
            ffc_put_bytes(e, sub.p + 1, sub.n - 1); /* without the version byte */
        } else {
            x->bad_key = 1;
            ffc_put_bytes(e, "", 1); /* nil: the run stops before sending */
        }
        lua_pop(L, 1);
    }
    ff_buf_free(&sub);
    lua_pop(L, 1);
    return 1;
}

/* Raises "node 'x' (function 'f' defined at ...): <what>: <msg at top>". */
static int cl_node_error(lua_State *L, struct crun *x, uint32_t id, const char *what) {
    ffl_run_push_desc(L, x->r.ctx, id);
    if (what[0] == '\0')
        return luaL_error(L, "%s: %s", lua_tostring(L, -1), lua_tostring(L, -2));
    return luaL_error(L, "%s: %s: %s", lua_tostring(L, -1), what, lua_tostring(L, -2));
}

/* Pushes "N.N MiB, more than the 256 MiB one message may carry". */
static void push_too_big(lua_State *L, size_t n) {
    char msg[100];
    snprintf(msg, sizeof msg, "%.1f MiB, more than the %d MiB one message may carry",
             (double)n / (1 << 20), (int)(FF_FRAME_MAX >> 20));
    lua_pushstring(L, msg);
}

/* The fid of node id's function, sending the function the first time. */
static uint64_t cl_fid(lua_State *L, struct crun *x, uint32_t id) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, ffl_run_func(x->r.ctx->graph, id));
    lua_pushvalue(L, -1);
    if (lua_rawget(L, x->fids) == LUA_TNUMBER) {
        uint64_t fid = (uint64_t)lua_tointeger(L, -1);
        lua_pop(L, 2);
        return fid;
    }
    lua_pop(L, 1);
    uint64_t fid = ++x->nfids;
    ff_buf *b = ffl_client_out(x->c_client);
    ff_buf code = {0};
    ffc_opts o = {FFC_CODE, NULL, NULL, x->modmap};
    if (ffc_encode(L, -1, &o, &code) != 0) {
        ff_buf_free(&code);
        cl_node_error(L, x, id, "its function cannot be shipped");
    }
    int rc = ff_msg_func_write(b, &(ff_msg_func){x->run_id, fid, code.p, code.n});
    size_t n = code.n;
    ff_buf_free(&code);
    if (rc == -EMSGSIZE) {
        push_too_big(L, n);
        lua_pushfstring(L, "it takes %s", lua_tostring(L, -1));
        cl_node_error(L, x, id, "its function cannot be shipped");
    }
    if (rc != 0)
        luaL_error(L, "not enough memory to send the function of a node (%d MiB)", (int)(n >> 20));
    lua_pushinteger(L, (lua_Integer)fid);
    lua_rawset(L, x->fids);
    return fid;
}

/* Grows a scratch array of the run to hold n elements of size. */
static void *cl_scratch(lua_State *L, void **p, size_t *cap, size_t n, size_t size) {
    if (n > *cap) {
        size_t c = *cap ? *cap : 16;
        while (c < n)
            c *= 2;
        void *q = realloc(*p, c * size);
        if (q == NULL)
            luaL_error(L, "not enough memory");
        *p = q;
        *cap = c;
    }
    return *p;
}

/* Adds resource n of a task to x->res. The name is a literal or a key of
 * the node's remote args, which the graph keeps. */
static void cl_res_add(lua_State *L, struct crun *x, uint32_t n, const char *name, size_t len,
                       int64_t amount) {
    cl_scratch(L, (void **)&x->res, &x->res_cap, (size_t)n + 1, sizeof *x->res);
    x->res[n] = (ff_msg_res){name, len, (uint64_t)amount};
}

/* The resources node id asks for (its remote args: num_cpus as CPU,
 * num_gpus as GPU, resources; set_remote_args refuses other keys), into
 * x->res; returns their count. */
static uint32_t cl_resources(lua_State *L, struct crun *x, uint32_t id) {
    int32_t h = ff_graph_slot(x->r.ctx->graph, id, FF_SLOT_REMOTE);
    if (h == FF_NOHANDLE)
        return 0;                         /* the default: 1 CPU */
    lua_rawgeti(L, LUA_REGISTRYINDEX, h); /* [args] */
    int t = lua_gettop(L);
    uint32_t n = 0;
    int64_t amount;
    if (lua_getfield(L, t, "num_cpus") != LUA_TNIL) {
        if (!lua_isnumber(L, -1) || ff_sched_amount(lua_tonumber(L, -1), &amount) != 0) {
            lua_pushfstring(L, "num_cpus must be a non-negative number with at most 4 decimals");
            cl_node_error(L, x, id, "bad remote args");
        }
        cl_res_add(L, x, n++, "CPU", 3, amount);
    }
    lua_pop(L, 1);
    int gpus = lua_getfield(L, t, "num_gpus") != LUA_TNIL; /* Ray's name for the resource GPU */
    if (gpus) {
        if (!lua_isnumber(L, -1) || ff_sched_amount(lua_tonumber(L, -1), &amount) != 0) {
            lua_pushfstring(L, "num_gpus must be a non-negative number with at most 4 decimals");
            cl_node_error(L, x, id, "bad remote args");
        }
        cl_res_add(L, x, n++, "GPU", 3, amount);
    }
    lua_pop(L, 1);
    if (lua_getfield(L, t, "resources") == LUA_TTABLE) {
        int rt = lua_gettop(L);
        lua_pushnil(L);
        while (lua_next(L, rt)) {
            if (lua_type(L, -2) != LUA_TSTRING || !lua_isnumber(L, -1) ||
                ff_sched_amount(lua_tonumber(L, -1), &amount) != 0 ||
                strcmp(lua_tostring(L, -2), "CPU") == 0) {
                lua_pushfstring(L, "resources must map names to non-negative numbers with at "
                                   "most 4 decimals (CPUs go in num_cpus)");
                cl_node_error(L, x, id, "bad remote args");
            }
            size_t len;
            const char *nm = lua_tolstring(L, -2, &len);
            if (gpus && strcmp(nm, "GPU") == 0) {
                lua_pushliteral(L, "give GPUs once, as num_gpus or as resources.GPU");
                cl_node_error(L, x, id, "bad remote args");
            }
            if (ff_res_name_check(nm, len) != 0) {
                lua_pushfstring(L,
                                "resource names must be 1 to %d bytes of text without "
                                "control characters or backslashes",
                                FF_RES_NAME_MAX);
                cl_node_error(L, x, id, "bad remote args");
            }
            cl_res_add(L, x, n++, nm, len, amount);
            lua_pop(L, 1);
        }
    } else if (!lua_isnil(L, -1)) {
        lua_pushliteral(L, "resources must be a table");
        cl_node_error(L, x, id, "bad remote args");
    }
    lua_settop(L, t - 1);
    return n;
}

static enum ff_func_kind cl_kind(const ff_graph *g, uint32_t id) {
    return ff_graph_func_kind(g, ff_graph_fid(g, id));
}

/* Sets what node id is to actors (class nodes: the constructor makes an
 * actor, which stays on its worker; a method call runs there), checking
 * before the run that an actor goes to its own methods only. */
static void cl_actor(lua_State *L, struct crun *x, uint32_t pos, int leaf, ff_msg_subtask *task) {
    ff_plan *p = x->r.plan;
    const ff_graph *g = x->r.ctx->graph;
    uint32_t id = p->order[pos];
    enum ff_func_kind kind = cl_kind(g, id);
    uint32_t ctor = UINT32_MAX;
    if (kind == FF_FUNC_CTOR) {
        task->actor = FF_ACTOR_CTOR;
        if (leaf) {
            lua_pushliteral(L, "it makes an actor (a class instance), which stays on the worker "
                               "that made it: it cannot be a result of a run on a cluster; give "
                               "its method calls instead");
            cl_node_error(L, x, id, "");
        }
    } else if (kind == FF_FUNC_METHOD) {
        uint32_t nargs;
        const ff_arg *args = ff_graph_args(g, id, &nargs);
        if (nargs > 0 && args[0].kind == FF_ARG_NODE && cl_kind(g, args[0].u.node) == FF_FUNC_CTOR)
            ctor = args[0].u.node;
        if (ctor != UINT32_MAX) {
            task->actor = FF_ACTOR_METHOD;
            task->ctor = ff_plan_pos(p, ctor); /* a parent: planned before it */
        }
    }
    uint32_t np;
    const uint32_t *par = ff_graph_parents(g, id, &np);
    for (uint32_t j = 0; j < np; j++) {
        if (par[j] == ctor || cl_kind(g, par[j]) != FF_FUNC_CTOR)
            continue;
        ffl_push_name(L, x->r.ctx, par[j]);
        lua_pushfstring(L,
                        "it takes the actor '%s' (a class instance) as an argument, but an "
                        "actor stays on the worker that made it and only its own method "
                        "calls can use it",
                        lua_tostring(L, -1));
        cl_node_error(L, x, id, "");
    }
}

/* An integer remote arg of node id from the args table at t (0 .. max, or
 * def when absent), else a "bad remote args" error. */
static uint32_t cl_count_arg(lua_State *L, struct crun *x, uint32_t id, int t, const char *key,
                             uint32_t def) {
    uint32_t v = def;
    if (lua_getfield(L, t, key) != LUA_TNIL) {
        int ok;
        lua_Integer i = lua_tointegerx(L, -1, &ok);
        if (!ok || lua_type(L, -1) != LUA_TNUMBER || i < 0 || i > FF_MSG_RETRIES_MAX) {
            lua_pushfstring(L, "%s must be an integer from 0 to %d", key, FF_MSG_RETRIES_MAX);
            cl_node_error(L, x, id, "bad remote args");
        }
        v = (uint32_t)i;
    }
    lua_pop(L, 1);
    return v;
}

/* What node id's remote args say of faults (set_remote_args checked
 * them; checked again here, since the graph's slot can be set directly):
 * max_retries (Ray's default of 3; a method call has none of its own: it
 * is run again only with its actor, by max_restarts), retry_exceptions,
 * timeout_s (in ms, rounded up) and, for a constructor, max_restarts. */
static void cl_faults(lua_State *L, struct crun *x, uint32_t id, ff_msg_subtask *task) {
    int method = task->actor == FF_ACTOR_METHOD;
    task->max_retries = method ? 0 : 3;
    int32_t h = ff_graph_slot(x->r.ctx->graph, id, FF_SLOT_REMOTE);
    if (h == FF_NOHANDLE)
        return;
    lua_rawgeti(L, LUA_REGISTRYINDEX, h); /* [args] */
    int t = lua_gettop(L);
    if (!method) {
        task->max_retries = cl_count_arg(L, x, id, t, "max_retries", 3);
        if (lua_getfield(L, t, "retry_exceptions") != LUA_TNIL && !lua_isboolean(L, -1)) {
            lua_pushliteral(L, "retry_exceptions must be a boolean");
            cl_node_error(L, x, id, "bad remote args");
        }
        task->retry_exceptions = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    if (task->actor == FF_ACTOR_CTOR) {
        task->max_restarts = cl_count_arg(L, x, id, t, "max_restarts", 0);
    } else if (task->actor == FF_ACTOR_NONE) {
        if (lua_getfield(L, t, "max_restarts") != LUA_TNIL) {
            lua_pushliteral(L, "max_restarts is for class nodes (actors), not a plain "
                               "function's");
            cl_node_error(L, x, id, "bad remote args");
        }
        lua_pop(L, 1);
    }
    if (lua_getfield(L, t, "timeout_s") != LUA_TNIL) {
        int ok;
        lua_Number s = lua_tonumberx(L, -1, &ok);
        if (!ok || lua_type(L, -1) != LUA_TNUMBER || !(s > 0 && s <= 1e9)) {
            lua_pushliteral(L, "timeout_s must be a number of seconds > 0");
            cl_node_error(L, x, id, "bad remote args");
        }
        uint64_t ms = (uint64_t)(s * 1000);
        task->timeout_ms = (double)ms < s * 1000 ? ms + 1 : ms; /* at least 1 */
    }
    lua_settop(L, t - 1);
}

/* Appends one SUBMIT task for the node at pos. */
static void cl_task(lua_State *L, struct crun *x, uint32_t pos, const uint8_t *leaf, ff_buf *b) {
    ff_plan *p = x->r.plan;
    ffl_ctx *ctx = x->r.ctx;
    uint32_t id = p->order[pos];
    if (x->c != NULL && x->c->act[pos] == FFL_ACT_LOAD) {
        /* Served by the storage's worker: a name and nothing to run. The
         * stored result must still have the fingerprint LOOKUP found (the
         * node's), unless any will do (cache = "name"). */
        ffl_push_name(L, ctx, id);
        ff_msg_subtask lt = {.leaf = leaf[pos], .load = 1, .args = "", .pre = ""};
        if (x->c->mode != FFL_CACHE_NAME)
            lt.fp = x->c->fp + (size_t)pos * FF_FP_LEN;
        lt.name = lua_tolstring(L, -1, &lt.name_len);
        ff_msg_subtask_write(b, &lt, NULL, NULL);
        lua_pop(L, 1);
        return;
    }
    ff_msg_subtask task = {.fid = cl_fid(L, x, id), .leaf = leaf[pos]};
    if (x->c != NULL && x->c->act[pos] == FFL_ACT_RUN) {
        task.save = 1;
        task.fp = x->c->fp + (size_t)pos * FF_FP_LEN;
    }
    cl_actor(L, x, pos, leaf[pos], &task);
    cl_faults(L, x, id, &task);
    if (x->ptask != NULL && task.actor == FF_ACTOR_METHOD)
        task.ctor = x->ptask[task.ctor]; /* actors always run: their constructor is a task */
    int base = lua_gettop(L);
    ffl_push_name(L, ctx, id); /* [name] */
    task.name = lua_tolstring(L, -1, &task.name_len);
    uint32_t np;
    const uint32_t *par = ff_graph_parents(ctx->graph, id, &np);
    uint32_t *deps = cl_scratch(L, (void **)&x->deps, &x->deps_cap, np, sizeof *deps);
    for (uint32_t j = 0; j < np; j++) {
        deps[j] = ff_plan_pos(p, par[j]);
        if (x->ptask != NULL)
            deps[j] = x->ptask[deps[j]]; /* a parent of a node that runs is a task */
    }
    task.ndeps = np;
    /* The arguments as a sequence with n. */
    uint32_t nargs;
    const ff_arg *args = ff_graph_args(ctx->graph, id, &nargs);
    lua_createtable(L, (int)nargs, 1); /* [name, args] */
    int t = lua_gettop(L);
    for (uint32_t i = 0; i < nargs; i++) {
        ff_arg a = args[i];
        if (a.kind == FF_ARG_NODE)
            ffl_push_node(L, ctx, a.u.node);
        else if (a.kind == FF_ARG_ITEM || a.kind == FF_ARG_DEEP || a.kind == FF_ARG_HANDLE)
            lua_rawgeti(L, LUA_REGISTRYINDEX, a.handle);
        else
            ffl_run_push_arg(L, &x->r, &a);
        lua_rawseti(L, t, (lua_Integer)i + 1);
        args = ff_graph_args(ctx->graph, id, &nargs);
    }
    lua_pushinteger(L, nargs);
    lua_setfield(L, t, "n");
    /* The arguments, then the pre-run function, in x->enc. */
    x->enc.n = 0;
    x->cur = id;
    cl_slots(L, x, id);
    ffc_opts o = {FFC_CODE | FFC_ARGS, cl_hook, x, x->modmap};
    x->bad_key = 0;
    if (ffc_encode(L, t, &o, &x->enc) != 0 || x->bad_key) {
        if (x->bad_key)
            lua_pushliteral(L, "an item key (node[k]) must be a string, a number or a boolean");
        cl_node_error(L, x, id, "its arguments cannot be shipped");
    }
    size_t nenc = x->enc.n;
    lua_settop(L, t - 1); /* [name] */
    if (lua_rawgeti(L, x->r.pre, (lua_Integer)pos + 1) != LUA_TNIL) {
        if (ffc_encode(L, -1, &o, &x->enc) != 0)
            cl_node_error(L, x, id, "its plugins' pre-run function cannot be shipped");
    }
    lua_pop(L, 1);
    task.args = x->enc.p;
    task.nargs = nenc;
    task.pre = x->enc.p + nenc;
    task.npre = x->enc.n - nenc;
    /* A method call runs where its actor is: its own remote args are not used. */
    task.nres = task.actor == FF_ACTOR_METHOD ? 0 : cl_resources(L, x, id);
    ff_msg_subtask_write(b, &task, deps, x->res);
    lua_settop(L, base); /* [] */
}

/* Sends the SUBMIT of tasks first .. first + count - 1: the first n bytes
 * of x->tasks. */
static void cl_submit(lua_State *L, struct crun *x, lua_Integer maxp, uint32_t first,
                      uint32_t count, size_t n) {
    if (first == 0)
        x->submit_ns = ffl_record_now(x->rec);
    ff_msg_submit m = {.run = x->run_id,
                       .max_pending = (uint64_t)maxp,
                       .flags = x->keep_going ? FF_RUN_KEEP_GOING : 0,
                       .total = x->ntasks,
                       .first = first,
                       .count = count};
    if (ff_msg_submit_write(ffl_client_out(x->c_client), &m, x->tasks.p, n) != 0)
        luaL_error(L, "not enough memory to send the run's tasks"); /* parts are made to fit */
    if (ffl_client_flush(x->c_client) != 0)
        luaL_error(L, "%s", ffl_client_error(x->c_client));
}

/* Sends every planned node: functions (FUNC frames) and tasks, in
 * SUBMITs of up to SUBMIT_TASKS tasks or about SUBMIT_BYTES, each sent as
 * soon as it is encoded (the head reads one while the next is encoded; it
 * starts the run once every part is there, so a node that cannot be
 * encoded stops the run before anything ran). */
static void cl_send_tasks(lua_State *L, struct crun *x) {
    ff_plan *p = x->r.plan;
    uint8_t *leaf = lua_newuserdatauv(L, p->n + 1, 0); /* [leaf] */
    memset(leaf, 0, p->n + 1);
    for (uint32_t i = 0; i < x->r.nleaves; i++)
        leaf[x->r.leaf_pos[i]] = 1;
    lua_getfield(L, x->opts, "max_pending_tasks");
    lua_Integer maxp = lua_isnil(L, -1) ? 0 : luaL_checkinteger(L, -1);
    lua_pop(L, 1);
    if (maxp < 0)
        luaL_error(L, "bad option 'max_pending_tasks' (a positive integer expected)");
    if (p->n > FF_RUN_MAX_TASKS)
        luaL_error(L,
                   "cannot run workflow: it has %d nodes, more than the %d a run on a "
                   "cluster may have",
                   (int)p->n, (int)FF_RUN_MAX_TASKS);
    uint32_t first = 0;
    for (uint32_t ti = 0; ti < x->ntasks; ti++) {
        uint32_t pos = t_pos(x, ti);
        size_t start = x->tasks.n;
        cl_task(L, x, pos, leaf, &x->tasks);
        if (x->tasks.err != 0)
            luaL_error(L, "not enough memory to send the run's tasks");
        size_t one = x->tasks.n - start;
        if (one + FF_MSG_SUBMIT_OVERHEAD > FF_FRAME_MAX) {
            push_too_big(L, one);
            lua_pushfstring(L,
                            "its arguments take %s: pass large inputs through a storage or "
                            "a file",
                            lua_tostring(L, -1));
            cl_node_error(L, x, p->order[pos], "");
        }
        if (start > 0 && x->tasks.n + FF_MSG_SUBMIT_OVERHEAD > FF_FRAME_MAX) {
            /* This task does not fit with the part so far: that goes first. */
            cl_submit(L, x, maxp, first, ti - first, start);
            memmove(x->tasks.p, x->tasks.p + start, one);
            x->tasks.n = one;
            first = ti;
        }
        uint32_t count = ti + 1 - first;
        if (count < SUBMIT_TASKS && x->tasks.n < SUBMIT_BYTES && ti + 1 < x->ntasks)
            continue;
        cl_submit(L, x, maxp, first, count, x->tasks.n);
        x->tasks.n = 0;
        first = ti + 1;
    }
    lua_pop(L, 1); /* [] */
}

/* Pushes the error object (lrun.c's RunError) of node id's failure, told
 * by DONE m: its error (FF_DONE_FAILED: the worker's text, whose value is
 * the text before its traceback and the worker's line), a timeout, or
 * its worker lost, with the worker where it last ran and how many times
 * it ran when more than once. */
static void cl_push_failure(lua_State *L, struct crun *x, const ff_msg_done *m, uint32_t id) {
    int base = lua_gettop(L);
    luaL_Buffer b;
    char esc[200];
    const char *worker =
        m->worker_len > 0 ? ff_text_escape(esc, sizeof esc, m->worker, m->worker_len) : NULL;
    if (m->status == FF_DONE_FAILED) {
        /* The error's text crosses the wire, not its value: the value is
         * the text without its traceback (see guide.md), nor the worker's
         * line saying where (lexec.c). */
        const char *text = lua_pushlstring(L, m->bytes, m->len); /* [text] */
        const char *tb = strstr(text, "\nstack traceback:\n");
        const char *at = strstr(text, "\n(on worker ");
        const char *cut = at != NULL && (tb == NULL || at < tb) ? at : tb;
        size_t vlen = cut != NULL ? (size_t)(cut - text) : m->len;
        lua_pushlstring(L, text, vlen); /* [text, value] */
        /* The worker's line (or one made of DONE's worker), then how many
         * times it ran, then the traceback. */
        size_t wend = vlen;
        if (at != NULL && at == cut) {
            const char *nl = strchr(at + 1, '\n');
            wend = nl != NULL ? (size_t)(nl - text) : m->len;
        }
        luaL_buffinit(L, &b);
        luaL_addlstring(&b, text, wend);
        if (at == NULL && worker != NULL)
            lua_pushfstring(L, "\n(on worker %s)", worker), luaL_addvalue(&b);
        if (m->attempts > 1)
            lua_pushfstring(L, "\n(it failed on each of its %d attempts)", (int)m->attempts),
                luaL_addvalue(&b);
        luaL_addstring(&b, text + wend);
        luaL_pushresult(&b); /* [text, value, text'] */
        ffl_run_push_error(L, x->r.ctx, id, base + 2, base + 3, 0);
    } else {
        luaL_buffinit(L, &b);
        if (m->status == FF_DONE_TIMEOUT) {
            double t = 0;
            int32_t h = ff_graph_slot(x->r.ctx->graph, id, FF_SLOT_REMOTE);
            if (h != FF_NOHANDLE) {
                lua_rawgeti(L, LUA_REGISTRYINDEX, h);
                lua_getfield(L, -1, "timeout_s");
                t = lua_tonumber(L, -1);
                lua_pop(L, 2);
            }
            char secs[32]; /* lua_pushfstring has no %g */
            snprintf(secs, sizeof secs, "%g", t);
            lua_pushfstring(L, "it ran longer than its timeout_s (%s s)", secs);
            luaL_addvalue(&b);
            if (m->attempts > 1)
                lua_pushfstring(L, " on each of its %d attempts", (int)m->attempts),
                    luaL_addvalue(&b);
            if (worker != NULL)
                lua_pushfstring(L, " and was stopped on worker %s", worker), luaL_addvalue(&b);
            /* The worker's text says as much; its traceback says where the
             * node was stopped. */
            const char *tb = lua_pushlstring(L, m->bytes, m->len);
            tb = strstr(tb, "\nstack traceback:\n");
            lua_pushstring(L, tb != NULL ? tb : "");
            lua_remove(L, -2);
            luaL_addvalue(&b);
        } else if (m->status == FF_DONE_LOST) {
            /* The head says which workers it took down, and how each ended. */
            if (m->attempts > 1)
                lua_pushfstring(
                    L, "its worker was lost on each of its %d attempts: ", (int)m->attempts),
                    luaL_addvalue(&b);
            if (m->len > 0)
                luaL_addlstring(&b, m->bytes, m->len);
            else
                lua_pushfstring(L, "its worker (%s) was lost", worker != NULL ? worker : "?"),
                    luaL_addvalue(&b);
        } else {
            luaL_addstring(&b, "the head sent an unknown status: ");
            luaL_addlstring(&b, m->bytes, m->len);
        }
        luaL_pushresult(&b); /* [text] */
        ffl_run_push_error(L, x->r.ctx, id, base + 1, base + 1, 0);
    }
    lua_replace(L, base + 1);
    lua_settop(L, base + 1);
}

/* A DONE frame: a leaf's result, stored in the results, or the failure
 * of a node: raised, or with keep_going added to the run's failures.
 * Frames of earlier runs are skipped. */
static void cl_on_done(lua_State *L, struct crun *x, const char *p, size_t n) {
    struct ffl_run *r = &x->r;
    ff_msg_done m;
    if (ff_msg_done_read(p, n, &m) != 0)
        luaL_error(L, "the head sent a malformed result");
    if (m.run != x->run_id)
        return; /* left over from an earlier run on this connection */
    if (m.index >= x->ntasks)
        luaL_error(L, "the head sent a malformed result");
    uint32_t pos = t_pos(x, m.index);
    uint32_t id = r->plan->order[pos];
    if (m.status == FF_DONE_REFUSED)
        luaL_error(L, "cannot run workflow: %s", lua_pushlstring(L, m.bytes, m.len));
    if (m.status != FF_DONE_OK) {
        x->rec->state[pos] = FFL_REC_FAILED;
        cl_push_failure(L, x, &m, id);
        ffl_run_hook_failure(L, r->ctx); /* the node ran elsewhere: the hook hears of it here */
        if (!x->keep_going)
            lua_error(L);
        lua_rawseti(L, x->fails, (lua_Integer)luaL_len(L, x->fails) + 1);
        x->failed[pos] = 1;
        return;
    }
    if (ffc_decode_code(L, m.bytes, m.len, NULL, NULL) != 0)
        luaL_error(L, "the result of a leaf cannot be read: %s", lua_tostring(L, -1));
    lua_rawseti(L, r->results, (lua_Integer)pos + 1);
}

/* With keep_going, after the run's end: raises the failures when there
 * were any, as the first one's error object whose message lists them
 * all (without their tracebacks), with failures (every error object, in
 * the order they came) and skipped (the nodes not run because they
 * depend on a failed one). */
static void cl_raise_failures(lua_State *L, struct crun *x) {
    lua_Integer nf = luaL_len(L, x->fails);
    if (nf == 0)
        return;
    ff_plan *p = x->r.plan;
    size_t skipped = 0;
    for (uint32_t ti = 0; ti < x->ntasks; ti++) {
        uint32_t pos = t_pos(x, ti), np;
        const uint32_t *par = ff_graph_parents(x->r.ctx->graph, p->order[pos], &np);
        for (uint32_t j = 0; j < np && x->failed[pos] == 0; j++)
            if (x->failed[ff_plan_pos(p, par[j])] != 0)
                x->failed[pos] = 2, skipped++;
    }
    ffl_run_raise_failures(L, x->fails, skipped);
}

/* A RUN_END frame: where each node ran, set as node name -> worker in
 * opts.placement. Returns 0 for a frame of an earlier run (skipped), else
 * 1. */
static int cl_on_run_end(lua_State *L, struct crun *x, const char *msg, size_t n) {
    ff_plan *p = x->r.plan;
    uint64_t run;
    ff_msg_list names, places;
    if (ff_msg_placement_read(msg, n, &run, &names, &places) != 0)
        luaL_error(L, "the head sent a malformed run end");
    if (run != x->run_id)
        return 0;
    if (places.n != x->ntasks)
        luaL_error(L, "the head sent a malformed run end");
    lua_createtable(L, (int)names.n, 0); /* names.n is at most the frame's size */
    int t = lua_gettop(L);
    for (lua_Integer k = 1; names.n > 0; k++) {
        ff_msg_str s;
        ff_msg_next_str(&names, &s);
        lua_pushlstring(L, s.p, s.len);
        lua_rawseti(L, t, k);
    }
    lua_createtable(L, 0, (int)x->ntasks);
    for (uint32_t i = 0; i < x->ntasks; i++) {
        uint64_t place = ff_msg_next_index(&places);
        ffl_push_name(L, x->r.ctx, p->order[t_pos(x, i)]);
        lua_rawgeti(L, t, (lua_Integer)place);
        lua_rawset(L, -3);
        x->rec->worker[t_pos(x, i)] = place <= UINT16_MAX ? (uint16_t)place : 0;
    }
    lua_setfield(L, x->opts, "placement");
    /* The record's workers: { name = "host:pid", machine = "host" }. */
    lua_Integer nw = luaL_len(L, t);
    lua_createtable(L, (int)nw, 0);
    for (lua_Integer k = 1; k <= nw; k++) {
        lua_createtable(L, 0, 2);
        lua_rawgeti(L, t, k);
        const char *nm = lua_tostring(L, -1), *colon = strrchr(nm, ':');
        lua_pushlstring(L, nm, colon != NULL ? (size_t)(colon - nm) : strlen(nm));
        lua_setfield(L, -3, "machine");
        lua_setfield(L, -2, "name");
        lua_rawseti(L, -2, k);
    }
    ffl_record_set_workers(L, x->recidx);
    lua_pop(L, 1);
    return 1;
}

/* A PROGRESS frame: the display's counts. */
static void cl_on_progress(lua_State *L, struct crun *x, const char *msg, size_t n) {
    ff_msg_progress m;
    if (ff_msg_progress_read(msg, n, &m) != 0)
        luaL_error(L, "the head sent a malformed progress report");
    if (m.run != x->run_id || x->pc == NULL)
        return;
    atomic_store_explicit(&x->pc->done, m.done, memory_order_relaxed);
    atomic_store_explicit(&x->pc->failed, m.failed, memory_order_relaxed);
    atomic_store_explicit(&x->pc->started, m.done + m.failed + m.running, memory_order_relaxed);
}

/* A RUN_TIMES frame: what became of each task and when, in the record. */
static void cl_on_times(lua_State *L, struct crun *x, const char *msg, size_t n) {
    static const uint8_t state_of[] = {
        [FF_TIMES_NOTRUN] = FFL_REC_NOTRUN,   [FF_TIMES_DONE] = FFL_REC_COMPUTED,
        [FF_TIMES_LOADED] = FFL_REC_LOADED,   [FF_TIMES_FAILED] = FFL_REC_FAILED,
        [FF_TIMES_SKIPPED] = FFL_REC_SKIPPED,
    };
    uint64_t run, nt;
    ff_msg_list l;
    if (ff_msg_times_read(msg, n, &run, &nt, &l) != 0)
        luaL_error(L, "the head sent malformed run times");
    if (run != x->run_id)
        return;
    if (nt != x->ntasks)
        luaL_error(L, "the head sent malformed run times");
    ffl_record *rec = x->rec;
    x->have_times = 1;
    for (uint32_t i = 0; i < x->ntasks; i++) {
        uint64_t v[5];
        for (int k = 0; k < 5; k++)
            v[k] = ff_msg_next_index(&l);
        uint32_t pos = t_pos(x, i);
        if (v[0] < sizeof state_of)
            rec->state[pos] = state_of[v[0]];
        uint64_t *col[3] = {rec->queued, rec->start, rec->end};
        for (int k = 0; k < 3; k++)
            col[k][pos] = v[k + 1] == 0 ? FFL_REC_NOTIME : x->submit_ns + (v[k + 1] - 1) * 1000;
        rec->attempts[pos] = v[4] > UINT8_MAX ? UINT8_MAX : (uint8_t)v[4];
        rec->retried += v[4] > 1 ? (uint32_t)(v[4] - 1) : 0;
    }
}

/* Reads the head's frames until the run's RUN_END: the leaves' results
 * (DONE), or the failure that ends the run. */
static void cl_collect(lua_State *L, struct crun *x) {
    for (;;) {
        int type;
        const char *msg;
        size_t n;
        if (ffl_client_recv(x->c_client, &type, &msg, &n, -1) != 0)
            luaL_error(L, "%s", ffl_client_error(x->c_client));
        switch (type) {
        case FF_M_DONE:
            cl_on_done(L, x, msg, n);
            break;
        case FF_M_PROGRESS:
            cl_on_progress(L, x, msg, n);
            break;
        case FF_M_RUN_TIMES:
            cl_on_times(L, x, msg, n);
            break;
        case FF_M_RUN_END:
            if (cl_on_run_end(L, x, msg, n)) {
                if (x->keep_going)
                    cl_raise_failures(L, x);
                return;
            }
            break;
        case FF_M_BYE:
            luaL_error(L, "the head at %s stopped during the run", ffl_client_address(x->c_client));
            break;
        default:
            luaL_error(L, "unexpected message %d from the head", type);
        }
    }
}

/* Raises "<the storage's message>" for a call that failed (out holds it). */
static int cl_store_error(lua_State *L, ff_msg_list *out) {
    ff_msg_str s;
    ff_msg_next_str(out, &s);
    lua_pushlstring(L, s.p, s.len);
    return lua_error(L);
}

/* With a storage: fingerprints, asks the storage's worker which nodes it
 * holds (one LOOKUP), decides, and numbers the tasks (the nodes that run
 * or load); then tells the head where the run's storage is (RUN_STORE). */
static void cl_storage_plan(lua_State *L, struct crun *x) {
    struct ffl_cache *c = x->c;
    ff_plan *p = x->r.plan;
    x->has_machine = ffl_client_store_where(L, x->opts, x->sres, &x->nsres, x->machine);
    ffl_cache_fingerprint(L, c);
    x->remote = calloc((size_t)p->n + 1, 1);
    x->tpos = malloc(((size_t)p->n + 1) * sizeof *x->tpos);
    x->ptask = malloc(((size_t)p->n + 1) * sizeof *x->ptask);
    if (x->remote == NULL || x->tpos == NULL || x->ptask == NULL)
        luaL_error(L, "not enough memory");
    ff_msg_store m = {
        .op = FF_STORE_LOOKUP, .nres = x->nsres, .machine = x->has_machine ? x->machine : NULL};
    /* In parts of LOOKUP_NODES, so that a call fits in a message whatever
     * the names (at most 511 bytes each). */
    uint32_t chunk = p->n < LOOKUP_NODES ? p->n : LOOKUP_NODES;
    ff_msg_str *args = lua_newuserdatauv(L, ((size_t)chunk * 2 + 2) * sizeof *args, 0);
    args[0] = (ff_msg_str){c->path, strlen(c->path)};
    args[1] = (ff_msg_str){c->wf, c->wflen};
    for (uint32_t first = 0; c->mode != FFL_CACHE_NONE && first < p->n; first += chunk) {
        uint32_t n = p->n - first < chunk ? p->n - first : chunk;
        for (uint32_t k = 0; k < n; k++) {
            uint32_t pos = first + k;
            args[2 + 2 * k].p = ffl_cache_name(c, pos, &args[2 + 2 * k].len);
            args[3 + 2 * k] =
                (ff_msg_str){(const char *)c->fp + (size_t)pos * FF_FP_LEN, FF_FP_LEN};
        }
        ff_msg_list out;
        if (ffl_client_store(L, x->c_client, &m, x->sres, args, (size_t)n * 2 + 2, &out) != 0)
            cl_store_error(L, &out);
        ff_msg_str st;
        if (out.n != 1 || (ff_msg_next_str(&out, &st), st.len != n))
            luaL_error(L, "the storage's worker sent a malformed answer");
        memcpy(x->remote + first, st.p, n);
    }
    lua_pop(L, 1);
    c->remote = x->remote;
    ffl_cache_plan(L, c);
    x->ntasks = 0;
    for (uint32_t pos = 0; pos < p->n; pos++) {
        uint8_t a = c->act[pos];
        x->ptask[pos] = UINT32_MAX;
        if (FFL_ACT_RUNS(a))
            x->computed++;
        if (FFL_ACT_RUNS(a) || a == FFL_ACT_LOAD) {
            x->ptask[pos] = x->ntasks;
            x->tpos[x->ntasks++] = pos;
        }
    }
    if (x->ntasks == 0)
        return;
    ff_msg_run_store rs = {.run = x->run_id,
                           .nres = x->nsres,
                           .machine = x->has_machine ? x->machine : NULL,
                           .path = c->path,
                           .path_len = strlen(c->path),
                           .wf = c->wf,
                           .wf_len = c->wflen};
    if (ff_msg_run_store_write(ffl_client_out(x->c_client), &rs, x->sres) != 0)
        luaL_error(L, "not enough memory");
}

/* Has the storage's worker commit what the run saved. 0, or 1 with the
 * message pushed. */
static int cl_storage_flush(lua_State *L, struct crun *x) {
    ff_msg_str arg = {x->c->path, strlen(x->c->path)};
    ff_msg_store m = {
        .op = FF_STORE_FLUSH, .nres = x->nsres, .machine = x->has_machine ? x->machine : NULL};
    ff_msg_list out;
    if (ffl_client_store(L, x->c_client, &m, x->sres, &arg, 1, &out) == 0)
        return 0;
    ff_msg_str s;
    ff_msg_next_str(&out, &s);
    lua_pushlstring(L, s.p, s.len);
    return 1;
}

/* Protected: the flush after a failed run (crun light userdata). */
static int cl_flush_inner(lua_State *L) {
    struct crun *x = lua_touserdata(L, 1);
    return cl_storage_flush(L, x) ? lua_error(L) : 0;
}

/* The run's working directory (opts.workdir, 16 bytes, or none): the
 * hashes to forget (opts.workdir_forget) and the blob (opts.workdir_blob,
 * when the head does not have it) are sent at once, so that a run that
 * fails before its tasks went still leaves the head what the caller
 * counts it has; then RUN_WORKDIR, ahead of the run's first FUNC. */
static void cl_workdir(lua_State *L, struct crun *x) {
    ff_buf *b = ffl_client_out(x->c_client);
    size_t len;
    if (lua_getfield(L, x->opts, "workdir_forget") == LUA_TTABLE) {
        for (lua_Integer i = 1; lua_rawgeti(L, -1, i) == LUA_TSTRING; i++) {
            const char *h = lua_tolstring(L, -1, &len);
            if (len == FF_MSG_HASH_LEN && ff_msg_workdir_write(b, (const unsigned char *)h, "", 0))
                luaL_error(L, "not enough memory to send the run's working directory");
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (lua_getfield(L, x->opts, "workdir") != LUA_TSTRING) {
        lua_pop(L, 1);
        return;
    }
    const unsigned char *hash = (const unsigned char *)lua_tolstring(L, -1, &len);
    if (len != FF_MSG_HASH_LEN)
        luaL_error(L, "bad option 'workdir' (a hash of 16 bytes expected)");
    if (lua_getfield(L, x->opts, "workdir_blob") == LUA_TSTRING) {
        const char *blob = lua_tolstring(L, -1, &len);
        if (ff_msg_workdir_write(b, hash, blob, len) != 0)
            luaL_error(L, "not enough memory to send the run's working directory (%d MiB)",
                       (int)(len >> 20));
    }
    lua_pop(L, 1);
    if (ffl_client_flush(x->c_client) != 0)
        luaL_error(L, "%s", ffl_client_error(x->c_client));
    lua_pushboolean(L, 1); /* the head has it now (clusterback.lua) */
    lua_setfield(L, x->opts, "workdir_sent");
    if (ff_msg_run_workdir_write(b, x->run_id, hash) != 0)
        luaL_error(L, "not enough memory to send the run's working directory");
    lua_pop(L, 1);
}

/* Protected: args (crun light userdata, LeafSet, options, record). */
static int cluster_inner(lua_State *L) {
    struct crun *x = lua_touserdata(L, 1);
    x->opts = 3;
    x->recidx = 4;
    lua_getfield(L, x->opts, "keep_going");
    x->keep_going = lua_toboolean(L, -1);
    lua_pop(L, 1);
    ffl_run_plugins(L, &x->r);
    cl_workdir(L, x);
    lua_newtable(L);
    x->fids = lua_gettop(L);
    ffc_push_modmap(L);
    x->modmap = lua_gettop(L);
    if (x->c != NULL) {
        cl_storage_plan(L, x);
        for (uint32_t pos = 0; pos < x->r.plan->n; pos++)
            if (x->c->act[pos] == FFL_ACT_STORED)
                x->rec->state[pos] = FFL_REC_STORED;
    } else {
        x->ntasks = x->r.plan->n, x->computed = x->r.plan->n;
    }
    if (x->pc != NULL)
        ff_progress_add(&x->pc->total, x->ntasks);
    x->rec->loop0 = ffl_record_now(x->rec);
    if (x->ntasks > 0) {
        if (x->keep_going) {
            lua_newtable(L);
            x->fails = lua_gettop(L);
            x->failed = calloc((size_t)x->r.plan->n + 1, 1);
            if (x->failed == NULL)
                luaL_error(L, "not enough memory");
        }
        cl_send_tasks(L, x);
        cl_collect(L, x);
    }
    if (x->c != NULL && cl_storage_flush(L, x) != 0)
        return lua_error(L);
    if (lua_getfield(L, x->opts, "return_results") == LUA_TBOOLEAN && !lua_toboolean(L, -1))
        return 0;
    lua_pop(L, 1);
    return ffl_run_push_leaves(L, &x->r, 2);
}

/* Tells the head to drop the run after a failure (it may be running
 * still). */
static void cl_cancel(struct crun *x) {
    ff_buf *b = ffl_client_out(x->c_client);
    b->n = 0;
    ff_msg_run_end_write(b, x->run_id);
    ffl_client_flush(x->c_client);
}

/* ls:run_cluster(client, opts) -> one value per leaf (none when
 * opts.return_results == false); opts.placement gets node name -> worker. */
static int ffl_leaves_run_cluster(lua_State *L) {
    ffl_check_leaves(L, 1);
    ffl_client *c = ffl_check_client(L, 2);
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_settop(L, 3);
    ffl_ctx *ctx = ffl_ctx_get(L);
    struct crun x = {.r = FFL_RUN_INIT(ctx), .c_client = c};
    lua_getfield(L, 3, "run_id");
    x.run_id = (uint64_t)luaL_checkinteger(L, -1);
    lua_pop(L, 1);
    if (ffl_cache_options(L, &x.cache, 3))
        x.c = &x.cache;
    lua_getfield(L, 3, "title");
    const char *title = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : "run";
    lua_pop(L, 1);                               /* opts keeps the title */
    x.rec = ffl_record_push(L, 1, "cluster", 1); /* [ls, client, opts, rec] */
    ffl_run_push_msgh(L, &x.r, 1);               /* [ls, client, opts, rec, msgh] */
    lua_pushcfunction(L, cluster_inner);
    lua_pushlightuserdata(L, &x);
    lua_pushvalue(L, 1);
    lua_pushvalue(L, 3);
    lua_pushvalue(L, 4); /* [ls, client, opts, rec, msgh, inner, x, ls, opts, rec] */
    /* From the plan on, nothing raises until the protected call. */
    ffl_run_plan(L, &x.r, 1);
    if (ffl_record_alloc(x.rec, x.r.plan) != 0 ||
        (x.c != NULL && ffl_cache_begin(x.c, &x.r) != 0)) {
        ffl_run_release(&x.r);
        return luaL_error(L, "not enough memory");
    }
    struct ff_progress *prog = ffl_progress_begin(L, ctx, 3, title);
    x.pc = prog != NULL ? ff_progress_counts(prog) : NULL;
    ffl_run_begin(&x.r);
    int status = lua_pcall(L, 4, LUA_MULTRET, 5);
    ctx->L = L;
    ffl_record_finish(x.rec);
    ffl_progress_end(L, ctx, prog);
    free(x.smap);
    free(x.deps);
    free(x.res);
    free(x.remote);
    free(x.tpos);
    free(x.ptask);
    free(x.failed);
    ff_buf_free(&x.tasks);
    ff_buf_free(&x.enc);
    ffl_run_release(&x.r);
    if (x.c != NULL) {
        status = ffl_cache_end(L, x.c, status);
        lua_pushinteger(L, (lua_Integer)x.computed);
        lua_setfield(L, 3, "computed");
        lua_pushinteger(L, (lua_Integer)x.cache.loaded);
        lua_setfield(L, 3, "loaded");
        lua_pushinteger(L, (lua_Integer)x.cache.skipped);
        lua_setfield(L, 3, "skipped");
        lua_pushinteger(L, (lua_Integer)x.cache.damaged);
        lua_setfield(L, 3, "damaged");
    }
    if (x.c == NULL || x.have_times) { /* else the storage's plan says */
        lua_pushinteger(L, (lua_Integer)ffl_record_count(x.rec, FFL_REC_COMPUTED));
        lua_setfield(L, 3, "computed");
        lua_pushinteger(L,
                        (lua_Integer)(x.cache.skipped + ffl_record_count(x.rec, FFL_REC_SKIPPED)));
        lua_setfield(L, 3, "skipped");
    }
    lua_pushinteger(L, (lua_Integer)ffl_record_count(x.rec, FFL_REC_FAILED));
    lua_setfield(L, 3, "failed");
    lua_pushinteger(L, (lua_Integer)x.rec->retried);
    lua_setfield(L, 3, "retried");
    lua_pushvalue(L, 4);
    lua_setfield(L, 3, "record");
    ffl_run_end(L, &x.r, status != LUA_OK);
    if (status != LUA_OK) {
        cl_cancel(&x);
        if (x.c != NULL && x.ntasks > 0) {
            /* What the run computed before it failed is committed too;
             * the run's error stays the error. */
            lua_pushcfunction(L, cl_flush_inner);
            lua_pushlightuserdata(L, &x);
            if (lua_pcall(L, 1, 0, 0) != LUA_OK)
                lua_pop(L, 1);
        }
        ffl_run_on_end(L, 3, status);
        return lua_error(L);
    }
    ffl_run_on_end(L, 3, status);
    return lua_gettop(L) - 5;
}

const luaL_Reg ffl_driver_methods[] = {
    {"run_cluster", ffl_leaves_run_cluster},
    {NULL, NULL},
};
