/*
 * llocal.c: the local executor, ls:run_local([opts]) on a LeafSet.
 *
 * It runs a plan in the calling Lua state inside one lua_pcall: first the
 * plugin pass (lrun.c), then, with a storage, the fingerprints and what
 * loads (lcache.c), then each node in plan order: the C `before` hook, the
 * plugins' pre-run function, the arguments with the parents' results in
 * place, the node's function by lua_call, the result saved (with a
 * storage), the C `after` hook, and every parent whose consumers are all
 * done released. The run's message handler (lrun.c) knows which node was
 * running and names it in the error. With opts.keep_going, each node's
 * call is protected on its own: a failure fails only the nodes that
 * depend on it, the others run, and the run then raises one error
 * listing every failure (lrun.c, ffl_run_raise_failures).
 */
#include <stdint.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "graph.h"
#include "lcmd.h"
#include "lgraph.h"
#include "lrecord.h"
#include "lrun.h"
#include "lutil.h"
#include "progress.h"

/* A local run: the run, and its storage when it has one. */
struct local {
    struct ffl_run r;    /* first: the message handler sees a struct ffl_run */
    struct ffl_cache *c; /* &cache with a storage, else NULL */
    struct ffl_cache cache;
    int keep_going;        /* opts.keep_going: a failure fails only its dependants */
    ffl_record *rec;       /* what became of each node, and when */
    uint32_t prev;         /* the position of the node that started last, or UINT32_MAX */
    ff_progress_count *pc; /* the progress display's counts, or NULL */
};

/* The node that started last (x->prev) ended at now (ns since the run
 * began). */
static inline void end_prev(struct local *x, uint64_t now) {
    if (x->prev != UINT32_MAX) {
        x->rec->end[x->prev] = now;
        if (x->pc != NULL) {
            int ok = x->rec->state[x->prev] == FFL_REC_COMPUTED;
            ff_progress_add(ok ? &x->pc->done : &x->pc->failed, 1);
        }
        x->prev = UINT32_MAX;
    }
}

/* Runs the plan; protected (called through lua_pcall by
 * ffl_leaves_run_local, with the run's message handler). Arguments: the
 * local run (light userdata) and the LeafSet. Node functions are called
 * with lua_call: one protected region for the whole run instead of one per
 * node; r->current says whom an error belongs to. */
static int local_inner(lua_State *L) {
    struct local *x = lua_touserdata(L, 1);
    struct ffl_run *r = &x->r;
    struct ffl_cache *c = x->c;
    ffl_ctx *ctx = r->ctx;
    ff_plan *p = r->plan;
    ffl_run_plugins(L, r);
    int has_pre = lua_next(L, (lua_pushnil(L), r->pre)) != 0;
    lua_settop(L, r->pre);
    /* keep_going: each node's call is protected on its own, with the
     * run's message handler (msgh); its failures (fails), and per
     * position 1 failed, 2 not run because a parent failed or did not
     * run (failed). */
    int msgh = 0, fails = 0;
    uint8_t *failed = NULL;
    size_t skipped = 0;
    if (x->keep_going) {
        ffl_run_push_msgh(L, r, 2);
        msgh = lua_gettop(L);
        lua_newtable(L);
        fails = lua_gettop(L);
        failed = lua_newuserdatauv(L, (size_t)p->n + 1, 0);
        memset(failed, 0, (size_t)p->n + 1);
    }
    ffl_record *rec = x->rec;
    ff_progress_count *pc = x->pc;
    if (c != NULL) {
        ffl_cache_decide(L, c);
        static const uint8_t state_of[] = {
            [FFL_ACT_LOAD] = FFL_REC_LOADED,
            [FFL_ACT_STORED] = FFL_REC_STORED,
        };
        size_t runs = 0;
        for (uint32_t pos = 0; pos < p->n; pos++) {
            uint8_t a = c->act[pos];
            if (a < sizeof state_of)
                rec->state[pos] = state_of[a];
            runs += FFL_ACT_RUNS(a);
        }
        if (pc != NULL) {
            ff_progress_add(&pc->total, runs + c->loaded);
            ff_progress_add(&pc->loaded, c->loaded);
        }
    } else {
        if (pc != NULL)
            ff_progress_add(&pc->total, p->n);
    }
    rec->loop0 = ffl_record_now(rec);

    for (uint32_t pos = 0; pos < p->n; pos++) {
        uint32_t id = p->order[pos];
        ff_graph *g = ctx->graph;
        int top = lua_gettop(L);
        if (c != NULL && !FFL_ACT_RUNS(c->act[pos]))
            continue;
        int bad = 0;
        if (failed != NULL) {
            uint32_t np;
            const uint32_t *par = ff_graph_parents(g, id, &np);
            for (uint32_t j = 0; j < np && !bad; j++)
                bad = failed[ff_plan_pos(p, par[j])] != 0;
            if (bad) {
                failed[pos] = 2;
                skipped++;
                rec->state[pos] = FFL_REC_SKIPPED;
                if (pc != NULL) { /* counted as started, so running stays right */
                    ff_progress_add(&pc->started, 1);
                    ff_progress_add(&pc->failed, 1);
                }
                goto release;
            }
        }
        uint64_t now = ffl_record_now(rec);
        end_prev(x, now);
        rec->start[pos] = now;
        rec->state[pos] = FFL_REC_COMPUTED;
        x->prev = pos;
        if (pc != NULL)
            ff_progress_add(&pc->started, 1);
        r->current = pos;
        if (ctx->hooks.before != NULL) {
            ffl_push_name(L, ctx, id);
            ctx->hooks.before(ctx->hooks_ud, lua_tostring(L, -1));
            lua_pop(L, 1);
        }
        /* The stdlib's EnvPlugin overlay (core.node_env) is the node's
         * own: what an earlier node's plugin set is gone. */
        ffl_cmd_node_start(L);
        if (has_pre) {
            if (lua_rawgeti(L, r->pre, (lua_Integer)pos + 1) == LUA_TNIL)
                lua_pop(L, 1);
            else if (!x->keep_going)
                lua_call(L, 0, 0); /* the plugins' pre-run call */
            else if (lua_pcall(L, 0, 0, msgh) != LUA_OK)
                bad = 1;
        }
        if (bad) {
            failed[pos] = 1;
            rec->state[pos] = FFL_REC_FAILED;
            lua_rawseti(L, fails, (lua_Integer)luaL_len(L, fails) + 1);
            lua_settop(L, top);
            goto release;
        }
        lua_rawgeti(L, LUA_REGISTRYINDEX, ffl_run_func(g, id));
        uint32_t nargs;
        const ff_arg *args = ff_graph_args(g, id, &nargs);
        luaL_checkstack(L, (int)nargs + LUA_MINSTACK, "too many arguments");
        for (uint32_t i = 0; i < nargs; i++) {
            ff_arg a = args[i];
            r->argn = (int)i + 1;
            ffl_run_push_arg(L, r, &a);
            /* An item or a table with nodes may run Lua code (an __index,
             * a __gc) that adds nodes and moves the node table: fetch the
             * arguments afresh after those. */
            if (a.kind == FF_ARG_ITEM || a.kind == FF_ARG_DEEP)
                args = ff_graph_args(ctx->graph, id, &nargs);
        }
        if (!x->keep_going) {
            lua_call(L, (int)nargs, LUA_MULTRET);
        } else if (lua_pcall(L, (int)nargs, LUA_MULTRET, msgh) != LUA_OK) {
            failed[pos] = 1;
            rec->state[pos] = FFL_REC_FAILED;
            lua_rawseti(L, fails, (lua_Integer)luaL_len(L, fails) + 1);
            lua_settop(L, top);
            goto release;
        }
        ffl_one_result(L, top);
        if (c != NULL && c->act[pos] == FFL_ACT_RUN) {
            r->current = UINT32_MAX; /* errors here name the node themselves */
            ffl_cache_save(L, c, pos, ffl_record_now(rec) - rec->start[pos]);
        }
        if (p->consumers[pos] > 0) /* else no node and no leaf needs it */
            lua_rawseti(L, r->results, (lua_Integer)pos + 1);
        lua_settop(L, top);
        if (ctx->hooks.after != NULL) {
            ffl_push_name(L, ctx, id);
            ctx->hooks.after(ctx->hooks_ud, lua_tostring(L, -1), 0);
            lua_pop(L, 1);
        }
    release:
        /* Release what no later node needs. */
        g = ctx->graph;
        uint32_t np;
        const uint32_t *par = ff_graph_parents(g, id, &np);
        for (uint32_t j = 0; j < np; j++) {
            uint32_t pp = ff_plan_pos(p, par[j]);
            if (--p->consumers[pp] == 0) {
                lua_pushnil(L);
                lua_rawseti(L, r->results, (lua_Integer)pp + 1);
            }
        }
    }
    r->current = UINT32_MAX;
    end_prev(x, ffl_record_now(rec));
    if (failed != NULL && luaL_len(L, fails) > 0)
        ffl_run_raise_failures(L, fails, skipped);
    return ffl_run_push_leaves(L, r, 2);
}

static void set_count(lua_State *L, int t, const char *k, size_t v) {
    lua_pushinteger(L, (lua_Integer)v);
    lua_setfield(L, t, k);
}

/* ls:run_local([opts]) -> one value per leaf. opts: storage (a Store),
 * workflow (its name there), cache, always_read, verbose, keep_going,
 * progress (lrecord.h), title (the progress display's); after the run,
 * also when it failed, opts also holds the counts computed, loaded,
 * skipped, damaged, failed, and record (the run's RunRecord), and
 * opts.on_end is called (ffl_run_on_end). */
static int ffl_leaves_run_local(lua_State *L) {
    ffl_check_leaves(L, 1);
    lua_settop(L, 2);
    ffl_ctx *ctx = ffl_ctx_get(L);
    struct local x = {.r = FFL_RUN_INIT(ctx), .prev = UINT32_MAX};
    if (!lua_isnil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        if (ffl_cache_options(L, &x.cache, 2))
            x.c = &x.cache;
        lua_getfield(L, 2, "keep_going");
        x.keep_going = lua_toboolean(L, -1);
        lua_pop(L, 1);
    }
    const char *title = NULL;
    if (lua_istable(L, 2)) {
        if (lua_getfield(L, 2, "title") == LUA_TSTRING)
            title = lua_tostring(L, -1);
        lua_pop(L, 1); /* opts keeps it */
    }
    x.rec = ffl_record_push(L, 1, "local", 0); /* [ls, opts, rec] */
    ffl_run_push_msgh(L, &x.r, 1);             /* [ls, opts, rec, msgh] */
    lua_pushcfunction(L, local_inner);
    lua_pushlightuserdata(L, &x);
    lua_pushvalue(L, 1); /* [ls, opts, rec, msgh, inner, x, ls] */
    /* From the plan on, nothing raises until the protected call. */
    ffl_run_plan(L, &x.r, 1);
    if (ffl_record_alloc(x.rec, x.r.plan) != 0 ||
        (x.c != NULL && ffl_cache_begin(x.c, &x.r) != 0)) {
        ffl_run_release(&x.r);
        return luaL_error(L, "not enough memory");
    }
    struct ff_progress *prog = ffl_progress_begin(L, ctx, 2, title != NULL ? title : "run");
    x.pc = prog != NULL ? ff_progress_counts(prog) : NULL;
    ffl_run_begin(&x.r);
    int status = lua_pcall(L, 2, LUA_MULTRET, 4);
    ctx->L = L;
    ffl_cmd_node_start(L); /* the last node's EnvPlugin overlay ends with it */
    if (status != LUA_OK && x.prev != UINT32_MAX) /* the node that raised */
        x.rec->state[x.prev] = FFL_REC_FAILED;
    end_prev(&x, ffl_record_now(x.rec));
    ffl_record_finish(x.rec);
    ffl_progress_end(L, ctx, prog);
    ffl_run_release(&x.r);
    if (x.c != NULL)
        status = ffl_cache_end(L, x.c, status);
    ffl_run_end(L, &x.r, status != LUA_OK);
    if (lua_istable(L, 2)) {
        set_count(L, 2, "computed", ffl_record_count(x.rec, FFL_REC_COMPUTED));
        set_count(L, 2, "loaded", x.cache.loaded);
        set_count(L, 2, "skipped", x.cache.skipped + ffl_record_count(x.rec, FFL_REC_SKIPPED));
        set_count(L, 2, "damaged", x.cache.damaged);
        set_count(L, 2, "failed", ffl_record_count(x.rec, FFL_REC_FAILED));
        lua_pushvalue(L, 3);
        lua_setfield(L, 2, "record");
    }
    ffl_run_on_end(L, 2, status);
    if (status != LUA_OK)
        return lua_error(L);
    return lua_gettop(L) - 4;
}

const luaL_Reg ffl_local_methods[] = {
    {"run_local", ffl_leaves_run_local},
    {NULL, NULL},
};
