/*
 * lcache.c: a local run with storage (struct ffl_cache in lrun.h).
 *
 * After the plugin pass, every planned node gets a fingerprint, in plan
 * order (parents first): its function's bytecode and upvalues, its
 * arguments (a parent by its fingerprint) and its plugins' pre-run
 * function. Then, from the newest node down, each node whose value is
 * needed (a leaf, a parent of a node that runs) is looked up by workflow
 * and node name: loaded (decoded straight into the results) when it was
 * stored with the same fingerprint (or with any, when cache = "name"),
 * else marked to run, which makes its parents needed. In a whole workflow
 * the other nodes run only when the storage does not hold them; a stored
 * one is counted as loaded without being read. Nodes of log_nodes always
 * run and are never read or saved. Consumers are recounted over the nodes
 * that run. The local executor (llocal.c)
 * then runs those and hands each result to ffl_cache_save, which encodes
 * it and queues it in the store with its compute time; ffl_cache_end
 * commits, also when the run failed. A damaged record is a warning and its
 * node runs.
 *
 * The cluster driver (ldriver.c) shares the fingerprints and the decision:
 * its storage is on a worker, which answers for every node at once whether
 * it holds it (c->remote, filled between ffl_cache_fingerprint and
 * ffl_cache_plan); a needed node it holds is LOAD without being read here
 * (the storage's worker serves it to the run), and the run's results are
 * saved there, not through ffl_cache_save. Class nodes and method calls
 * are actors there: like log_nodes, they always run and are never saved.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include <xxhash.h>

#include "codec.h"
#include "fflua.h"
#include "graph.h"
#include "lgraph.h"
#include "lrun.h"
#include "lstore.h"
#include "lutil.h"
#include "msg.h"
#include "store.h"
#include "text.h"

#define NAME_BUF 256

/* The name of the node at pos, from the run's names. */
const char *ffl_cache_name(const struct ffl_cache *c, uint32_t pos, size_t *len) {
    *len = c->name_off[pos + 1] - c->name_off[pos];
    return c->names.p + c->name_off[pos];
}

/* Collects every planned node's name and refuses duplicates: results are
 * stored by name, so two nodes with one name would overwrite each other
 * and load each other's results. A hash set of positions, by XXH3-64.
 * Names the storage cannot hold are refused too, before anything runs. */
static void collect_names(lua_State *L, struct ffl_cache *c) {
    ff_plan *p = c->run->plan;
    const ff_graph *g = c->run->ctx->graph;
    if (c->wflen > FF_STORE_WF_MAX)
        luaL_error(L, "workflow '%s': a workflow name in a storage has at most %d bytes",
                   ffl_push_short(L, c->wf, c->wflen), FF_STORE_WF_MAX);
    c->names.n = 0;
    c->name_off[0] = 0;
    for (uint32_t pos = 0; pos < p->n; pos++) {
        for (;;) {
            if (ff_buf_reserve(&c->names, NAME_BUF) != 0)
                luaL_error(L, "not enough memory");
            size_t room = c->names.cap - c->names.n;
            size_t len = ff_graph_name(g, p->order[pos], c->names.p + c->names.n, room);
            if (len < room) {
                c->names.n += len;
                break;
            }
            if (ff_buf_reserve(&c->names, len + 1) != 0)
                luaL_error(L, "not enough memory");
        }
        c->name_off[pos + 1] = c->names.n;
    }
    size_t cap = 16;
    while (cap < (size_t)p->n * 2)
        cap *= 2;
    uint32_t *set = lua_newuserdatauv(L, cap * sizeof *set, 0);
    memset(set, 0, cap * sizeof *set);
    for (uint32_t pos = 0; pos < p->n; pos++) {
        size_t len, olen;
        const char *nm = ffl_cache_name(c, pos, &len);
        if (len > FF_STORE_TASK_MAX)
            luaL_error(L, "node '%s': a node name in a storage has at most %d bytes",
                       ffl_push_short(L, nm, len), FF_STORE_TASK_MAX);
        size_t i = (size_t)XXH3_64bits(nm, len) & (cap - 1);
        for (; set[i] != 0; i = (i + 1) & (cap - 1)) {
            const char *other = ffl_cache_name(c, set[i] - 1, &olen);
            if (olen == len && memcmp(other, nm, len) == 0) {
                luaL_error(L,
                           "workflow '%s' has two nodes named '%s': with a storage, node "
                           "names must be distinct (use set_name)",
                           ffl_push_short(L, c->wf, c->wflen), ffl_push_short(L, nm, len));
            }
        }
        set[i] = pos + 1;
    }
    lua_pop(L, 1);
}

/* Raises "<what> of node 'x': <msg at the top>". */
static int node_error(lua_State *L, struct ffl_cache *c, uint32_t id, const char *what) {
    const char *msg = lua_tostring(L, -1);
    ffl_push_short_name(L, c->run->ctx, id);
    return luaL_error(L, "%s of node '%s': %s", what, lua_tostring(L, -1), msg);
}

/* FFC_HASH hook: a node handle inside an argument table stands for its
 * fingerprint (and, for an item, the path into the result). */
static int fp_hook(void *ud, ffc_enc *e, lua_State *L, int idx) {
    struct ffl_cache *c = ud;
    int is_item;
    ffl_node *n = ffl_test_handle(L, c->run->ctx, idx, &is_item);
    if (n == NULL)
        return 0;
    uint8_t tag = FFC_TAG_NODE;
    ffc_put_bytes(e, &tag, 1);
    uint32_t pos = ff_plan_pos(c->run->plan, n->id);
    if (pos == UINT32_MAX || pos >= c->fp_pos) {
        /* A node that is not a parent (held by a function, or outside the
         * workflow): what the value holds is the node itself, by name. */
        ffc_put_bytes(e, "name", 4);
        size_t len;
        const char *nm = (ffl_push_name(L, c->run->ctx, n->id), lua_tolstring(L, -1, &len));
        ffc_put_bytes(e, nm, len);
        lua_pop(L, 1);
    } else {
        ffc_put_bytes(e, c->fp + (size_t)pos * FF_FP_LEN, FF_FP_LEN);
    }
    if (is_item) { /* the keys: a key that cannot be encoded fails the fingerprint */
        ff_buf sub = {0};
        ffc_opts o = {FFC_HASH, NULL, NULL, c->modmap};
        lua_getiuservalue(L, idx, 1);
        int rc = ffc_encode(L, -1, &o, &sub);
        if (rc == 0)
            ffc_put_bytes(e, sub.p, sub.n);
        ff_buf_free(&sub);
        if (rc != 0) { /* [path, msg] */
            lua_remove(L, -2);
            return -1;
        }
        lua_pop(L, 1);
    }
    return 1;
}

/* Appends the FFC_HASH encoding of the value at the top (popped). */
static void fp_value(lua_State *L, struct ffl_cache *c, uint32_t id) {
    ffc_opts o = {FFC_HASH, fp_hook, c, c->modmap};
    if (ffc_encode(L, -1, &o, &c->buf) != 0)
        node_error(L, c, id, "fingerprint");
    lua_pop(L, 1);
}

static void fp_bytes(lua_State *L, struct ffl_cache *c, const void *p, size_t n) {
    if (ff_buf_reserve(&c->buf, n) != 0)
        luaL_error(L, "not enough memory");
    memcpy(c->buf.p + c->buf.n, p, n);
    c->buf.n += n;
}

/* The digest of a node's function: its bytecode and upvalues, cached per
 * function for the run. */
static void fp_function(lua_State *L, struct ffl_cache *c, uint32_t id, uint8_t out[FF_FP_LEN]) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, ffl_run_func(c->run->ctx->graph, id)); /* [fn] */
    lua_pushvalue(L, -1);
    if (lua_rawget(L, c->fn_cache) == LUA_TSTRING) {
        memcpy(out, lua_tostring(L, -1), FF_FP_LEN);
        lua_pop(L, 2);
        return;
    }
    lua_pop(L, 1);
    size_t start = c->buf.n;
    lua_pushvalue(L, -1);
    fp_value(L, c, id);
    XXH128_canonical_t dg;
    XXH128_canonicalFromHash(&dg, XXH3_128bits(c->buf.p + start, c->buf.n - start));
    c->buf.n = start;
    memcpy(out, dg.digest, FF_FP_LEN);
    lua_pushlstring(L, (const char *)dg.digest, FF_FP_LEN);
    lua_rawset(L, c->fn_cache);
}

/* Fingerprints every planned node, in order (parents first): its function,
 * its arguments (a node argument by the parent's fingerprint) and its
 * plugins' pre-run function. */
static void fingerprint_all(lua_State *L, struct ffl_cache *c) {
    ff_plan *p = c->run->plan;
    const ff_graph *g = c->run->ctx->graph;
    lua_newtable(L);
    c->fn_cache = lua_gettop(L);
    ffc_push_modmap(L);
    c->modmap = lua_gettop(L);
    collect_names(L, c);
    for (uint32_t pos = 0; pos < p->n; pos++) {
        uint32_t id = p->order[pos];
        uint8_t fd[FF_FP_LEN];
        c->fp_pos = pos;
        fp_function(L, c, id, fd);
        c->buf.n = 0;
        fp_bytes(L, c, "ffn1", 4);
        fp_bytes(L, c, fd, FF_FP_LEN);
        uint32_t nargs;
        const ff_arg *args = ff_graph_args(g, id, &nargs);
        fp_bytes(L, c, &nargs, sizeof nargs);
        for (uint32_t i = 0; i < nargs; i++) {
            ff_arg a = args[i];
            uint8_t k = (uint8_t)a.kind;
            fp_bytes(L, c, &k, 1);
            switch (a.kind) {
            case FF_ARG_INT:
                fp_bytes(L, c, &a.u.i, sizeof a.u.i);
                break;
            case FF_ARG_NUM:
                fp_bytes(L, c, &a.u.d, sizeof a.u.d);
                break;
            case FF_ARG_NODE:
                fp_bytes(L, c, c->fp + (size_t)ff_plan_pos(p, a.u.node) * FF_FP_LEN, FF_FP_LEN);
                break;
            case FF_ARG_HANDLE:
            case FF_ARG_ITEM:
            case FF_ARG_DEEP:
                lua_rawgeti(L, LUA_REGISTRYINDEX, a.handle);
                fp_value(L, c, id);
                break;
            default:
                break;
            }
            args = ff_graph_args(g, id, &nargs); /* encoding may run Lua */
        }
        /* Plugins by what they do to this node: the pre-run function
         * remote_initialize made (a seed is one of its upvalues). The
         * plugin object itself is left out: its state after the plugin
         * pass depends on how many nodes share it. */
        if (lua_rawgeti(L, c->run->pre, (lua_Integer)pos + 1) != LUA_TNIL) {
            fp_bytes(L, c, "plug", 4);
            fp_value(L, c, id);
        } else {
            lua_pop(L, 1);
        }
        XXH128_canonical_t dg;
        XXH128_canonicalFromHash(&dg, XXH3_128bits(c->buf.p, c->buf.n));
        memcpy(c->fp + (size_t)pos * FF_FP_LEN, dg.digest, FF_FP_LEN);
    }
    lua_pop(L, 2);
}

/* A warning that the stored result of task key cannot be used, on
 * stderr, names escaped; the node runs instead. */
static void damaged_note(struct ffl_cache *c, const char *key, size_t nl, const char *what,
                         const char *why) {
    char task[160], wf[160];
    fprintf(stderr,
            "fflua: warning: storage '%s': the stored result of task '%s' of workflow "
            "'%s' %s (%s); computing it again\n",
            c->path, ff_text_escape(task, sizeof task, key, nl),
            ff_text_escape(wf, sizeof wf, c->wf, c->wflen), what, why);
}

/* A line of verbose = true about node key. */
static void verbose_note(struct ffl_cache *c, const char *key, size_t nl, const char *what) {
    char task[160], wf[160];
    fprintf(stderr, "fflua: workflow '%s': node '%s' %s\n",
            ff_text_escape(wf, sizeof wf, c->wf, c->wflen),
            ff_text_escape(task, sizeof task, key, nl), what);
}

/* Tries to load node pos from the storage into the results. A damaged
 * record, or a damaged part of the file, is a warning: the node runs. */
static int try_load(lua_State *L, struct ffl_cache *c, uint32_t pos) {
    size_t nl;
    const char *key = ffl_cache_name(c, pos, &nl);
    ff_rec rec;
    int rc = ff_store_get(c->st, c->wf, c->wflen, key, nl, &rec);
    int loaded = 0;
    if (rc == FFLUA_ECHECKSUM || rc == FFLUA_ECORRUPT) {
        c->damaged++;
        damaged_note(c, key, nl, "is damaged", rec.why);
    } else if (rc != 0 && rc != FFLUA_ENOTFOUND) {
        ff_store_read_end(c->st);
        luaL_error(L, "storage '%s': %s", ff_store_path(c->st), ff_store_errmsg(c->st));
    } else if (rc == 0 && (c->mode == FFL_CACHE_NAME ||
                           memcmp(rec.fp, c->fp + (size_t)pos * FF_FP_LEN, FF_FP_LEN) == 0)) {
        /* Copied out, and the read transaction ended, before decoding:
         * decoding may run Lua code (a serializer, a finalizer), and no Lua
         * code may run while a read transaction is active (store.c). */
        c->vbuf.n = 0;
        if (ff_buf_reserve(&c->vbuf, rec.len) != 0) {
            ff_store_read_end(c->st);
            luaL_error(L, "not enough memory to load a result of %I bytes", (lua_Integer)rec.len);
        }
        memcpy(c->vbuf.p, rec.val, rec.len);
        ff_store_read_end(c->st);
        if (ffc_decode(L, c->vbuf.p, rec.len, 0) == 0) {
            lua_rawseti(L, c->run->results, (lua_Integer)pos + 1);
            loaded = 1;
            if (c->verbose)
                verbose_note(c, key, nl, "is read from the storage");
        } else {
            c->damaged++;
            damaged_note(c, key, nl, "cannot be read", lua_tostring(L, -1));
            lua_pop(L, 1);
        }
    } else if (rc == 0 && c->verbose) {
        verbose_note(c, key, nl, "changed since it was stored");
    }
    return loaded;
}

/* Whether node id is one of log_nodes: its backend info has "print". */
static int is_log(lua_State *L, struct ffl_cache *c, uint32_t id) {
    int32_t h = ff_graph_slot(c->run->ctx->graph, id, FF_SLOT_INFO);
    if (h == FF_NOHANDLE)
        return 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, h);
    lua_pushliteral(L, "print");
    int log = lua_rawget(L, -2) != LUA_TNIL;
    lua_pop(L, 2);
    return log;
}

/* Whether node id is a class node or a method call: on a cluster an actor,
 * whose calls change its state, so they always run and are never saved or
 * loaded (as functionfuse's RayWorkflow does with them). */
static int is_actor(struct ffl_cache *c, uint32_t id) {
    const ff_graph *g = c->run->ctx->graph;
    return ff_graph_func_kind(g, ff_graph_fid(g, id)) != FF_FUNC_PLAIN;
}

/* Whether the storage holds node pos's result (same fingerprint unless
 * cache = "name"), without reading it. A damaged record is a warning. */
static int is_stored(lua_State *L, struct ffl_cache *c, uint32_t pos) {
    size_t nl;
    const char *key = ffl_cache_name(c, pos, &nl);
    ff_rec rec;
    int rc = ff_store_get(c->st, c->wf, c->wflen, key, nl, &rec);
    if (rc == FFLUA_ECHECKSUM || rc == FFLUA_ECORRUPT) {
        c->damaged++;
        damaged_note(c, key, nl, "is damaged", rec.why);
        return 0;
    }
    if (rc != 0 && rc != FFLUA_ENOTFOUND) {
        ff_store_read_end(c->st);
        luaL_error(L, "storage '%s': %s", ff_store_path(c->st), ff_store_errmsg(c->st));
    }
    if (rc != 0)
        return 0;
    if (c->mode == FFL_CACHE_NAME ||
        memcmp(rec.fp, c->fp + (size_t)pos * FF_FP_LEN, FF_FP_LEN) == 0) {
        if (c->verbose)
            verbose_note(c, key, nl, "is in the storage");
        return 1;
    }
    if (c->verbose)
        verbose_note(c, key, nl, "changed since it was stored");
    return 0;
}

/* With a storage on a cluster: whether its worker holds node pos (same
 * fingerprint unless cache = "name"), from its answer in c->remote. */
static int remote_stored(struct ffl_cache *c, uint32_t pos) {
    size_t nl;
    const char *key = ffl_cache_name(c, pos, &nl);
    uint8_t st = c->remote[pos];
    if (st == FF_STORED_DAMAGED) {
        c->damaged++;
        damaged_note(c, key, nl, "is damaged", "see 'fflua store check' on its machine");
        return 0;
    }
    if (st == FF_STORED_SAME || (st == FF_STORED_OTHER && c->mode == FFL_CACHE_NAME)) {
        if (c->verbose)
            verbose_note(c, key, nl, "is in the storage");
        return 1;
    }
    if (st == FF_STORED_OTHER && c->verbose)
        verbose_note(c, key, nl, "changed since it was stored");
    return 0;
}

/* Decides what runs, from the newest node down, so that every node's
 * children are decided before it. A node whose value is needed (a leaf,
 * or the parent of a node that runs) is loaded when the storage has it
 * (same name, and same fingerprint unless cache = "name"), else it runs.
 * In a whole workflow every other node is wanted: it must be computed or
 * stored, so it only runs when the storage does not hold it, and a stored
 * one is not read. A node that runs makes its parents needed. Nodes of
 * log_nodes always run and are never read. Nodes nobody needs are skipped
 * (only with only_needed). Then counts consumers among the nodes that
 * run. */
static void decide(lua_State *L, struct ffl_cache *c) {
    struct ffl_run *r = c->run;
    ff_plan *p = r->plan;
    ff_graph *g = r->ctx->graph;
    memset(c->act, (p->flags & FF_PLAN_NEEDED) ? FFL_ACT_SKIP : FFL_ACT_WANT, p->n);
    for (uint32_t i = 0; i < r->nleaves; i++)
        c->act[r->leaf_pos[i]] = FFL_ACT_NEED;
    for (uint32_t pos = p->n; pos-- > 0;) {
        uint8_t a = c->act[pos];
        if (a == FFL_ACT_SKIP) {
            c->skipped++;
            continue;
        }
        if (is_log(L, c, p->order[pos]) || (c->remote != NULL && is_actor(c, p->order[pos]))) {
            c->act[pos] = FFL_ACT_LOG;
        } else if (c->mode == FFL_CACHE_NONE) {
            c->act[pos] = FFL_ACT_RUN;
        } else if (c->remote != NULL   ? remote_stored(c, pos)
                   : a == FFL_ACT_NEED ? try_load(L, c, pos)
                                       : is_stored(L, c, pos)) {
            c->act[pos] = a == FFL_ACT_NEED ? FFL_ACT_LOAD : FFL_ACT_STORED;
            c->loaded++;
            continue;
        } else {
            c->act[pos] = FFL_ACT_RUN;
        }
        uint32_t np;
        const uint32_t *par = ff_graph_parents(g, p->order[pos], &np);
        for (uint32_t j = 0; j < np; j++) {
            uint32_t pp = ff_plan_pos(p, par[j]);
            if (c->act[pp] == FFL_ACT_SKIP || c->act[pp] == FFL_ACT_WANT)
                c->act[pp] = FFL_ACT_NEED; /* not yet visited: lower positions */
        }
    }
    if (c->st != NULL)
        ff_store_read_end(c->st);
    memset(p->consumers, 0, sizeof *p->consumers * p->n);
    for (uint32_t pos = 0; pos < p->n; pos++) {
        if (!FFL_ACT_RUNS(c->act[pos]))
            continue;
        uint32_t np;
        const uint32_t *par = ff_graph_parents(g, p->order[pos], &np);
        for (uint32_t j = 0; j < np; j++)
            p->consumers[ff_plan_pos(p, par[j])]++;
    }
    ffl_run_count_leaves(r);
}

void ffl_cache_save(lua_State *L, struct ffl_cache *c, uint32_t pos, uint64_t compute_ns) {
    uint32_t id = c->run->plan->order[pos];
    c->buf.n = 0;
    if (ffc_encode(L, -1, NULL, &c->buf) != 0)
        node_error(L, c, id, "result");
    size_t nl;
    const char *key = ffl_cache_name(c, pos, &nl);
    if (ff_store_put(c->st, c->wf, c->wflen, key, nl, c->fp + (size_t)pos * FF_FP_LEN, compute_ns,
                     c->buf.p, c->buf.n) != 0)
        luaL_error(L, "storage '%s': %s", ff_store_path(c->st), ff_store_errmsg(c->st));
    if (c->always_read) {
        if (ffc_decode(L, c->buf.p, c->buf.n, 0) != 0)
            node_error(L, c, id, "reading back the result");
        lua_replace(L, -2);
    }
}

static int opt_bool(lua_State *L, int t, const char *k, int dflt) {
    int ty = lua_getfield(L, t, k);
    int v = ty == LUA_TNIL ? dflt : lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

int ffl_cache_options(lua_State *L, struct ffl_cache *c, int idx) {
    if (lua_getfield(L, idx, "storage") == LUA_TNIL) {
        lua_pop(L, 1);
        /* A storage on a cluster: its path on its worker. */
        if (lua_getfield(L, idx, "storage_path") != LUA_TSTRING) {
            lua_pop(L, 1);
            return 0;
        }
        c->st = NULL;
        c->path = lua_tostring(L, -1);
        lua_pop(L, 1); /* the caller's table keeps it */
    } else {
        c->st = ffl_check_store(L, -1);
        c->path = ff_store_path(c->st);
        lua_pop(L, 1); /* the caller's table keeps it */
    }
    lua_getfield(L, idx, "workflow");
    c->wf = luaL_checklstring(L, -1, &c->wflen);
    lua_pop(L, 1); /* the workflow object keeps the string */
    lua_getfield(L, idx, "cache");
    if (lua_isnil(L, -1) ||
        (lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "fingerprint") == 0))
        c->mode = FFL_CACHE_FINGERPRINT;
    else if (lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "name") == 0)
        c->mode = FFL_CACHE_NAME;
    else if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1))
        c->mode = FFL_CACHE_NONE;
    else
        luaL_error(L, "bad option 'cache' (\"fingerprint\", \"name\" or false expected, got %s)",
                   luaL_tolstring(L, -1, NULL));
    lua_pop(L, 1);
    c->always_read = opt_bool(L, idx, "always_read", 0);
    c->verbose = opt_bool(L, idx, "verbose", 0);
    return 1;
}

int ffl_cache_begin(struct ffl_cache *c, struct ffl_run *r) {
    size_t n = r->plan->n;
    c->run = r;
    c->fp = malloc(n * FF_FP_LEN + 1);
    c->act = malloc(n + 1);
    c->name_off = malloc((n + 1) * sizeof *c->name_off);
    if (c->fp == NULL || c->act == NULL || c->name_off == NULL) {
        free(c->fp);
        free(c->act);
        free(c->name_off);
        c->fp = c->act = NULL;
        c->name_off = NULL;
        return -ENOMEM;
    }
    return 0;
}

void ffl_cache_fingerprint(lua_State *L, struct ffl_cache *c) {
    fingerprint_all(L, c);
}

void ffl_cache_plan(lua_State *L, struct ffl_cache *c) {
    decide(L, c);
}

void ffl_cache_decide(lua_State *L, struct ffl_cache *c) {
    fingerprint_all(L, c);
    decide(L, c);
}

int ffl_cache_end(lua_State *L, struct ffl_cache *c, int status) {
    free(c->fp);
    free(c->act);
    free(c->name_off);
    c->fp = c->act = NULL;
    c->name_off = NULL;
    ff_buf_free(&c->buf);
    ff_buf_free(&c->vbuf);
    ff_buf_free(&c->names);
    if (c->st == NULL) /* on a cluster: the driver has its worker commit */
        return status;
    /* What was computed is committed even when the run failed. */
    ff_store_read_end(c->st);
    if (ff_store_flush(c->st) != 0 && status == LUA_OK) {
        lua_pushfstring(L, "storage '%s': %s", ff_store_path(c->st), ff_store_errmsg(c->st));
        status = LUA_ERRRUN;
    }
    return status;
}
