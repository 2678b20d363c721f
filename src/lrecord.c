/*
 * lrecord.c: the record of a run, per node (lrecord.h), and its Lua
 * face, functionfuse.RunRecord:
 *   #rec                 the planned nodes
 *   rec[i], rec[name]    a table about one node: name, state, queued,
 *                        started, finished (seconds since the run began;
 *                        nil where it did not run), worker, machine,
 *                        loaded, attempts (a cluster's); nil for no such
 *                        node
 *   rec:export()         every node as columns (docs/report.md)
 *   rec.started_at, rec.elapsed, rec.backend
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "buf.h"
#include "codec.h"
#include "lrecord.h"
#include "lutil.h"
#include "progress.h"
#include "store.h"

#define RECORD_MT "functionfuse.RunRecord"

/* User values: the LeafSet, the workers, the name -> position table (made
 * on the first lookup by name). */
enum { UV_LEAVES = 1, UV_WORKERS, UV_BYNAME, UV_N = UV_BYNAME };

static const char *const state_names[FFL_REC_LAST] = {
    "notrun", "computed", "loaded", "failed", "skipped", "stored",
};

const char *ffl_record_state_name(int s) {
    return s >= 0 && s < FFL_REC_LAST ? state_names[s] : "notrun";
}

static ffl_record *check_record(lua_State *L, int idx) {
    return luaL_checkudata(L, idx, RECORD_MT);
}

ffl_record *ffl_record_push(lua_State *L, int lsidx, const char *backend, int with_queued) {
    lsidx = lua_absindex(L, lsidx);
    ffl_record *rec = lua_newuserdatauv(L, sizeof *rec, UV_N);
    memset(rec, 0, sizeof *rec);
    luaL_setmetatable(L, RECORD_MT);
    rec->backend = backend;
    rec->queued = with_queued ? (uint64_t *)rec : NULL; /* a mark until ffl_record_alloc */
    lua_pushvalue(L, lsidx);
    lua_setiuservalue(L, -2, UV_LEAVES);
    if (!with_queued) { /* one worker: this process */
        char host[256];
        if (gethostname(host, sizeof host) != 0)
            strcpy(host, "localhost");
        host[sizeof host - 1] = '\0';
        lua_createtable(L, 1, 0);
        lua_createtable(L, 0, 2);
        lua_pushfstring(L, "%s:%d", host, (int)getpid());
        lua_setfield(L, -2, "name");
        lua_pushstring(L, host);
        lua_setfield(L, -2, "machine");
        lua_rawseti(L, -2, 1);
        lua_setiuservalue(L, -2, UV_WORKERS);
    }
    return rec;
}

int ffl_record_alloc(ffl_record *rec, const ff_plan *p) {
    size_t n = p->n;
    int with_queued = rec->queued != NULL;
    /* One block, widest columns first so each is aligned. */
    size_t per = 2 * sizeof(uint64_t) + (with_queued ? sizeof(uint64_t) : 0) + sizeof(uint32_t) +
                 sizeof(uint16_t) + 2;
    char *m = malloc(n * per + 1);
    if (m == NULL)
        return -ENOMEM;
    rec->n = p->n;
    rec->start = (uint64_t *)m;
    rec->end = rec->start + n;
    rec->queued = with_queued ? rec->end + n : NULL;
    rec->ids = (uint32_t *)(rec->end + n + (with_queued ? n : 0));
    rec->worker = (uint16_t *)(rec->ids + n);
    rec->state = (uint8_t *)(rec->worker + n);
    rec->attempts = rec->state + n;
    memcpy(rec->ids, p->order, n * sizeof *rec->ids);
    if (with_queued) /* FFL_REC_NOTIME */
        memset(rec->start, 0xff, 3 * n * sizeof *rec->start);
    memset(rec->worker, 0, n * sizeof *rec->worker);
    memset(rec->state, FFL_REC_NOTRUN, 2 * n);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    rec->t0 = ffl_mono_ns();
    rec->started_at = (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
    return 0;
}

void ffl_record_set_workers(lua_State *L, int recidx) {
    lua_setiuservalue(L, recidx < 0 ? recidx - 1 : recidx, UV_WORKERS);
}

size_t ffl_record_count(const ffl_record *rec, int s) {
    size_t k = 0;
    for (uint32_t i = 0; i < rec->n; i++)
        k += rec->state[i] == s;
    return k;
}

static int record_gc(lua_State *L) {
    ffl_record *rec = check_record(L, 1);
    free(rec->start);
    free(rec->byid);
    rec->start = NULL;
    rec->byid = NULL;
    rec->byid_dense = 0;
    rec->n = 0;
    rec->queued = NULL;
    return 0;
}

static int record_len(lua_State *L) {
    lua_pushinteger(L, check_record(L, 1)->n);
    return 1;
}

static double secs(uint64_t ns) {
    return (double)ns / 1e9;
}

/* --- lookups ---------------------------------------------------------------
 * Positions by node id, made on the first need and kept in rec->byid: an
 * array indexed by id (4 bytes per id up to the largest) when the ids are
 * dense enough (a workflow in a graph of its own), else the ids sorted
 * with their positions (8 bytes per node, a binary search each). */

struct idpos {
    uint32_t id, pos;
};

static int idpos_cmp(const void *a, const void *b) {
    uint32_t x = ((const struct idpos *)a)->id, y = ((const struct idpos *)b)->id;
    return (x > y) - (x < y);
}

static void make_byid(lua_State *L, ffl_record *rec) {
    if (rec->byid != NULL || rec->n == 0)
        return;
    uint32_t max = 0;
    for (uint32_t i = 0; i < rec->n; i++)
        max = rec->ids[i] > max ? rec->ids[i] : max;
    if ((uint64_t)max < 4 * (uint64_t)rec->n + 1024) {
        uint32_t *m = malloc(((size_t)max + 1) * sizeof *m);
        if (m == NULL)
            luaL_error(L, "not enough memory");
        memset(m, 0xff, ((size_t)max + 1) * sizeof *m);
        for (uint32_t i = 0; i < rec->n; i++)
            m[rec->ids[i]] = i;
        rec->byid = m;
        rec->byid_dense = max + 1;
        return;
    }
    struct idpos *v = malloc((size_t)rec->n * sizeof *v);
    if (v == NULL)
        luaL_error(L, "not enough memory");
    for (uint32_t i = 0; i < rec->n; i++)
        v[i] = (struct idpos){rec->ids[i], i};
    qsort(v, rec->n, sizeof *v, idpos_cmp);
    rec->byid = v;
}

/* The position of node id in the record, or UINT32_MAX. */
static uint32_t pos_of(lua_State *L, ffl_record *rec, uint32_t id) {
    make_byid(L, rec);
    if (rec->byid_dense > 0)
        return id < rec->byid_dense ? ((const uint32_t *)rec->byid)[id] : UINT32_MAX;
    const struct idpos *v = rec->byid;
    uint32_t lo = 0, hi = rec->n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (v[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < rec->n && v[lo].id == id ? v[lo].pos : UINT32_MAX;
}

/* When the node at pos was ready to run: its queue time on a cluster;
 * locally, when the last of its parents that ran finished, or when nodes
 * began to run. FFL_REC_NOTIME when it did not run. */
/* Whether the node at pos has times. */
static int timed(const ffl_record *rec, uint32_t pos) {
    uint8_t s = rec->state[pos];
    return (s == FFL_REC_COMPUTED || s == FFL_REC_FAILED) && rec->start[pos] != FFL_REC_NOTIME;
}

static uint64_t queued_at(lua_State *L, ffl_record *rec, const ff_graph *g, uint32_t pos) {
    if (!timed(rec, pos))
        return FFL_REC_NOTIME;
    if (rec->queued != NULL)
        return rec->queued[pos];
    uint64_t q = rec->loop0;
    uint32_t np;
    const uint32_t *par = ff_graph_parents(g, rec->ids[pos], &np);
    for (uint32_t j = 0; j < np; j++) {
        uint32_t pp = pos_of(L, rec, par[j]);
        if (pp != UINT32_MAX && timed(rec, pp) && rec->end[pp] > q)
            q = rec->end[pp];
    }
    return q < rec->start[pos] ? q : rec->start[pos];
}

/* 1 + the index of the node's worker, 0: none. A local run has one
 * worker, its own process, and does not fill the column. */
static unsigned worker_of(const ffl_record *rec, uint32_t pos) {
    if (rec->queued == NULL)
        return timed(rec, pos) ? 1 : 0;
    return rec->worker[pos];
}

static void set_time(lua_State *L, const char *k, uint64_t ns) {
    if (ns == FFL_REC_NOTIME)
        return;
    lua_pushnumber(L, secs(ns));
    lua_setfield(L, -2, k);
}

/* Pushes the table about the node at pos. */
static void push_node(lua_State *L, ffl_record *rec, int recidx, uint32_t pos) {
    ffl_ctx *ctx = ffl_ctx_get(L);
    lua_createtable(L, 0, 9);
    ffl_push_name(L, ctx, rec->ids[pos]);
    lua_setfield(L, -2, "name");
    lua_pushstring(L, ffl_record_state_name(rec->state[pos]));
    lua_setfield(L, -2, "state");
    lua_pushboolean(L, rec->state[pos] == FFL_REC_LOADED);
    lua_setfield(L, -2, "loaded");
    set_time(L, "queued", queued_at(L, rec, ctx->graph, pos));
    if (timed(rec, pos)) {
        set_time(L, "started", rec->start[pos]);
        set_time(L, "finished", rec->end[pos]);
    }
    if (worker_of(rec, pos) > 0) {
        if (lua_getiuservalue(L, recidx, UV_WORKERS) != LUA_TTABLE)
            lua_pushnil(L);
        else if (lua_rawgeti(L, -1, worker_of(rec, pos)) == LUA_TTABLE) {
            lua_getfield(L, -1, "name");
            lua_setfield(L, -4, "worker");
            lua_getfield(L, -1, "machine");
            lua_setfield(L, -4, "machine");
        }
        lua_pop(L, 2);
    }
    if (rec->queued != NULL) {
        lua_pushinteger(L, rec->attempts[pos]);
        lua_setfield(L, -2, "attempts");
    }
}

/* rec[i], rec[name], or a field or method */
static int record_index(lua_State *L) {
    ffl_record *rec = check_record(L, 1);
    uint32_t pos = UINT32_MAX;
    if (lua_type(L, 2) == LUA_TNUMBER) {
        lua_Integer i = lua_tointeger(L, 2);
        if (i >= 1 && i <= (lua_Integer)rec->n)
            pos = (uint32_t)(i - 1);
    } else if (lua_type(L, 2) == LUA_TSTRING) {
        const char *k = lua_tostring(L, 2);
        if (strcmp(k, "started_at") == 0) {
            lua_pushnumber(L, rec->started_at);
            return 1;
        } else if (strcmp(k, "elapsed") == 0) {
            lua_pushnumber(L, secs(rec->elapsed));
            return 1;
        } else if (strcmp(k, "backend") == 0) {
            lua_pushstring(L, rec->backend);
            return 1;
        }
        luaL_getmetafield(L, 1, "methods");
        if (lua_getfield(L, -1, k) != LUA_TNIL)
            return 1;
        lua_pop(L, 2);
        if (lua_getiuservalue(L, 1, UV_BYNAME) != LUA_TTABLE) {
            lua_pop(L, 1);
            ffl_ctx *ctx = ffl_ctx_get(L);
            lua_createtable(L, 0, (int)rec->n);
            for (uint32_t i = 0; i < rec->n; i++) {
                ffl_push_name(L, ctx, rec->ids[i]);
                lua_pushinteger(L, (lua_Integer)i + 1);
                lua_rawset(L, -3);
            }
            lua_pushvalue(L, -1);
            lua_setiuservalue(L, 1, UV_BYNAME);
        }
        lua_pushvalue(L, 2);
        if (lua_rawget(L, -2) == LUA_TNUMBER)
            pos = (uint32_t)(lua_tointeger(L, -1) - 1);
        lua_pop(L, 2);
    }
    if (pos >= rec->n) /* none, or a record collected and brought back */
        return 0;
    push_node(L, rec, 1, pos);
    return 1;
}

/* Sets t[i] for i in 1..n from f(i - 1), or false. */
static void set_times(lua_State *L, ffl_record *rec, const ff_graph *g, const char *k, int which) {
    lua_createtable(L, (int)rec->n, 0);
    for (uint32_t i = 0; i < rec->n; i++) {
        uint64_t ns = which == 0       ? queued_at(L, rec, g, i)
                      : !timed(rec, i) ? FFL_REC_NOTIME
                      : which == 1     ? rec->start[i]
                                       : rec->end[i];
        if (ns == FFL_REC_NOTIME)
            lua_pushboolean(L, 0);
        else
            lua_pushnumber(L, secs(ns));
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, k);
}

/* rec:export() -> { backend, started_at, elapsed, names, parents, state,
 * queued, started, finished, worker, workers[, attempts], retried } */
static int record_export(lua_State *L) {
    ffl_record *rec = check_record(L, 1);
    ffl_ctx *ctx = ffl_ctx_get(L);
    const ff_graph *g = ctx->graph;
    lua_settop(L, 1);
    lua_createtable(L, 0, 16);
    lua_pushstring(L, rec->backend);
    lua_setfield(L, -2, "backend");
    lua_pushnumber(L, rec->started_at);
    lua_setfield(L, -2, "started_at");
    lua_pushnumber(L, secs(rec->elapsed));
    lua_setfield(L, -2, "elapsed");
    lua_pushinteger(L, rec->retried);
    lua_setfield(L, -2, "retried");
    lua_createtable(L, (int)rec->n, 0);
    for (uint32_t i = 0; i < rec->n; i++) {
        ffl_push_name(L, ctx, rec->ids[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "names");
    lua_createtable(L, (int)rec->n, 0);
    for (uint32_t i = 0; i < rec->n; i++) {
        uint32_t np;
        const uint32_t *par = ff_graph_parents(g, rec->ids[i], &np);
        lua_createtable(L, (int)np, 0);
        lua_Integer k = 0;
        for (uint32_t j = 0; j < np; j++) {
            uint32_t pp = pos_of(L, rec, par[j]);
            if (pp != UINT32_MAX) {
                lua_pushinteger(L, (lua_Integer)pp + 1);
                lua_rawseti(L, -2, ++k);
            }
        }
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "parents");
    lua_createtable(L, (int)rec->n, 0);
    for (uint32_t i = 0; i < rec->n; i++) {
        lua_pushstring(L, ffl_record_state_name(rec->state[i]));
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "state");
    set_times(L, rec, g, "queued", 0);
    set_times(L, rec, g, "started", 1);
    set_times(L, rec, g, "finished", 2);
    lua_createtable(L, (int)rec->n, 0);
    for (uint32_t i = 0; i < rec->n; i++) {
        lua_pushinteger(L, worker_of(rec, i));
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "worker");
    if (rec->queued != NULL) {
        lua_createtable(L, (int)rec->n, 0);
        for (uint32_t i = 0; i < rec->n; i++) {
            lua_pushinteger(L, rec->attempts[i]);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        lua_setfield(L, -2, "attempts");
    }
    if (lua_getiuservalue(L, 1, UV_WORKERS) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
    }
    lua_setfield(L, -2, "workers");
    return 1;
}

/* rec:count(state) -> how many nodes are in that state */
static int record_count(lua_State *L) {
    ffl_record *rec = check_record(L, 1);
    int s = luaL_checkoption(L, 2, NULL, state_names);
    lua_pushinteger(L, (lua_Integer)ffl_record_count(rec, s));
    return 1;
}

static int record_tostring(lua_State *L) {
    ffl_record *rec = check_record(L, 1);
    lua_pushfstring(L, "functionfuse.RunRecord: %d nodes, %s, %f s", (int)rec->n, rec->backend,
                    secs(rec->elapsed));
    return 1;
}

static int core_decode_run(lua_State *L);
static int record_encode(lua_State *L);

const luaL_Reg ffl_record_funcs[] = {
    {"decode_run", core_decode_run},
    {NULL, NULL},
};

static const luaL_Reg record_methods[] = {
    {"export", record_export},
    {"encode", record_encode},
    {"count", record_count},
    {NULL, NULL},
};

void ffl_record_open(lua_State *L) {
    if (luaL_newmetatable(L, RECORD_MT)) {
        luaL_newlib(L, record_methods);
        lua_setfield(L, -2, "methods");
        const luaL_Reg mm[] = {
            {"__index", record_index},       {"__len", record_len}, {"__gc", record_gc},
            {"__tostring", record_tostring}, {NULL, NULL},
        };
        luaL_setfuncs(L, mm, 0);
    }
    lua_pop(L, 1);
}

/* --- progress ------------------------------------------------------------- */

#define PROGRESS_INTERVAL 10.0

/* print, io.write and file:write while a terminal line shows: they write
 * with the line erased and the display held, so that it cannot draw in
 * between (file:write only on io.stdout and io.stderr). Upvalues: the
 * state's engine context (light userdata; its progress is the display
 * of the run in progress, or NULL once it ended: a copy of a wrapper kept
 * past the run just calls the function), the function wrapped, for
 * file:write the io table. */
static int progress_wrapper(lua_State *L) {
    ffl_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    /* Held already: a wrapper called by the function another one wraps (a
     * __tostring that writes). */
    struct ff_progress *p = ctx->progress_held ? NULL : ctx->progress;
    if (p != NULL && lua_istable(L, lua_upvalueindex(3))) {
        lua_getfield(L, lua_upvalueindex(3), "stdout");
        lua_getfield(L, lua_upvalueindex(3), "stderr");
        if (!lua_rawequal(L, 1, -2) && !lua_rawequal(L, 1, -1))
            p = NULL;
        lua_pop(L, 2);
    }
    lua_pushvalue(L, lua_upvalueindex(2));
    lua_insert(L, 1);
    if (p == NULL) {
        lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
        return lua_gettop(L);
    }
    ff_progress_hold(p);
    ctx->progress_held = 1;
    int status = lua_pcall(L, lua_gettop(L) - 1, LUA_MULTRET, 0);
    ctx->progress_held = 0;
    ff_progress_release(p);
    if (status != LUA_OK)
        return lua_error(L);
    return lua_gettop(L);
}

/* Replaces t[k] (t at -1, io at -2 for files) by a wrapper of it, or,
 * with wrap 0, puts back what a wrapper wrapped. */
static void wrap_field(lua_State *L, ffl_ctx *ctx, const char *k, int wrap, int files) {
    if (lua_type(L, -1) != LUA_TTABLE)
        return;
    lua_getfield(L, -1, k);
    if (wrap && lua_isfunction(L, -1) && lua_tocfunction(L, -1) != progress_wrapper) {
        lua_pushlightuserdata(L, ctx);
        lua_insert(L, -2);
        if (files)
            lua_pushvalue(L, -4);
        lua_pushcclosure(L, progress_wrapper, files ? 3 : 2);
        lua_setfield(L, -2, k);
        return;
    }
    if (!wrap && lua_tocfunction(L, -1) == progress_wrapper) {
        lua_getupvalue(L, -1, 2);
        lua_setfield(L, -3, k);
    }
    lua_pop(L, 1);
}

/* Protected: (ctx, wrap) -> (). Wraps or unwraps print, io.write and
 * file:write. */
static int wrap_output_p(lua_State *L) {
    ffl_ctx *ctx = lua_touserdata(L, 1);
    int wrap = lua_toboolean(L, 2);
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
    wrap_field(L, ctx, "print", wrap, 0);
    lua_getfield(L, -1, "io"); /* [G, io] */
    wrap_field(L, ctx, "write", wrap, 0);
    luaL_getmetatable(L, LUA_FILEHANDLE);
    if (lua_istable(L, -1)) {
        lua_getfield(L, -1, "__index"); /* [G, io, mt, methods] */
        lua_insert(L, -2);
        lua_pop(L, 1); /* [G, io, methods] */
        if (lua_istable(L, -2))
            wrap_field(L, ctx, "write", wrap, 1);
    }
    return 0;
}

/* Wraps (or unwraps) the output functions; raises nothing (what cannot
 * be done, for want of memory or an io table that raises, is not). */
static void wrap_output(lua_State *L, ffl_ctx *ctx, int wrap) {
    if (!lua_checkstack(L, 3))
        return;
    lua_pushcfunction(L, wrap_output_p);
    lua_pushlightuserdata(L, ctx);
    lua_pushboolean(L, wrap);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK)
        lua_pop(L, 1);
}

/* Whether $FFLUA_PROGRESS turns the display on (and *interval, when it
 * is a number of seconds); dflt when it is not set. */
static int progress_env(int dflt, double *interval) {
    const char *env = getenv("FFLUA_PROGRESS");
    if (env == NULL || *env == '\0')
        return dflt;
    char *end;
    double v = strtod(env, &end);
    if (*end == '\0') { /* a number: seconds between lines; 0 (or less): off */
        if (v > 0)
            *interval = v;
        return v > 0;
    }
    return strcmp(env, "off") != 0 && strcmp(env, "no") != 0 && strcmp(env, "false") != 0;
}

struct ff_progress *ffl_progress_begin(lua_State *L, ffl_ctx *ctx, int optsidx, const char *title) {
    if (ctx->running != NULL || ctx->progress != NULL || !lua_istable(L, optsidx))
        return NULL;
    int tty = isatty(2);
    double interval = PROGRESS_INTERVAL;
    int on;
    if (!lua_checkstack(L, 1))
        return NULL;
    lua_pushliteral(L, "progress"); /* a fixed string: the table is the run's options */
    int t = lua_rawget(L, optsidx);
    if (t == LUA_TNIL)
        on = progress_env(tty, &interval);
    else if (t == LUA_TNUMBER)
        on = 1, interval = lua_tonumber(L, -1);
    else
        on = lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (!on)
        return NULL;
    if (tty) /* first: what raises here leaves no display behind */
        wrap_output(L, ctx, 1);
    struct ff_progress *p = NULL;
    if (ff_progress_start(&p, 2, tty, interval, title) != 0) {
        if (tty)
            wrap_output(L, ctx, 0);
        return NULL;
    }
    ctx->progress = p;
    return p;
}

void ffl_progress_end(lua_State *L, ffl_ctx *ctx, struct ff_progress *p) {
    if (p == NULL)
        return;
    ctx->progress = NULL; /* wrappers kept past the run no longer touch it */
    ff_progress_stop(p);
    wrap_output(L, ctx, 0);
}

/* --- the saved form --------------------------------------------------------
 * What a storage keeps of a run (rec:encode, core.decode_run): bytes, not
 * Lua tables, so that saving the record of a run of a million nodes costs
 * tens of milliseconds:
 *   "FFRUN1\n"
 *   varint len, then len bytes: the codec's encoding of the meta table
 *   varint nworkers, then per worker: str name, str machine
 *   varint n, then per node in run order:
 *     str name, byte state, varint worker (1 + index, 0: none),
 *     byte flags (1: it has times, 2: it has an end),
 *     [varint start ns, varint start - queued ns, [varint end - start ns]],
 *     varint attempts, varint nparents, varint (pos - parent's pos) each
 * (str: varint length, then the bytes). */

#define RUN_MAGIC "FFRUN1\n"
#define RUN_MAGIC_LEN (sizeof RUN_MAGIC - 1)

static void put_varint(luaL_Buffer *b, uint64_t v) {
    char t[10];
    int k = 0;
    do {
        t[k++] = (char)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v > 0);
    luaL_addlstring(b, t, (size_t)k);
}

static void put_str(luaL_Buffer *b, const char *s, size_t n) {
    put_varint(b, n);
    luaL_addlstring(b, s, n);
}

/* rec:encode(meta) -> bytes. meta: a table of values the codec encodes
 * (the workflow's name, the counts, failures); backend, started_at,
 * elapsed and retried are set in it from the record. */
static int record_encode(lua_State *L) {
    ffl_record *rec = check_record(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 2);
    ffl_ctx *ctx = ffl_ctx_get(L);
    const ff_graph *g = ctx->graph;
    lua_pushstring(L, rec->backend);
    lua_setfield(L, 2, "backend");
    lua_pushnumber(L, rec->started_at);
    lua_setfield(L, 2, "started_at");
    lua_pushnumber(L, secs(rec->elapsed));
    lua_setfield(L, 2, "elapsed");
    lua_pushinteger(L, rec->retried);
    lua_setfield(L, 2, "retried");
    ff_buf meta = {0};
    if (ffc_encode(L, 2, NULL, &meta) != 0) {
        ff_buf_free(&meta);
        return luaL_error(L, "cannot save the run's record: %s", lua_tostring(L, -1));
    }
    if (lua_getiuservalue(L, 1, UV_WORKERS) != LUA_TTABLE) { /* [rec, meta, workers] */
        lua_pop(L, 1);
        lua_newtable(L);
    }
    make_byid(L, rec);
    luaL_Buffer b;
    luaL_buffinit(L, &b); /* from here the stack above workers is b's */
    luaL_addlstring(&b, RUN_MAGIC, RUN_MAGIC_LEN);
    put_str(&b, meta.p, meta.n);
    ff_buf_free(&meta);
    lua_Integer nw = luaL_len(L, 3);
    put_varint(&b, (uint64_t)nw);
    for (lua_Integer i = 1; i <= nw; i++) {
        size_t n;
        const char *s;
        lua_rawgeti(L, 3, i);
        lua_getfield(L, -1, "name");
        s = luaL_optlstring(L, -1, "", &n);
        lua_pop(L, 1);
        lua_getfield(L, -1, "machine");
        const char *m = luaL_optlstring(L, -1, "", &(size_t){0});
        size_t mn = strlen(m);
        lua_pop(L, 2);
        put_str(&b, s, n);
        put_str(&b, m, mn);
    }
    put_varint(&b, rec->n);
    char name[FF_STORE_TASK_MAX + 1];
    for (uint32_t i = 0; i < rec->n; i++) {
        size_t n = ff_graph_name(g, rec->ids[i], name, sizeof name);
        if (n < sizeof name) {
            put_str(&b, name, n);
        } else { /* longer than any stored task's: as Lua has it */
            put_varint(&b, n);
            ffl_push_name(L, ctx, rec->ids[i]);
            luaL_addvalue(&b);
        }
        luaL_addchar(&b, (char)rec->state[i]);
        put_varint(&b, worker_of(rec, i));
        int t = timed(rec, i);
        int has_end = t && rec->end[i] != FFL_REC_NOTIME;
        luaL_addchar(&b, (char)(t | has_end << 1));
        if (t) {
            uint64_t q = queued_at(L, rec, g, i);
            put_varint(&b, rec->start[i]);
            put_varint(&b, q != FFL_REC_NOTIME && q < rec->start[i] ? rec->start[i] - q : 0);
            if (has_end)
                put_varint(&b, rec->end[i] > rec->start[i] ? rec->end[i] - rec->start[i] : 0);
        }
        put_varint(&b, rec->queued != NULL ? rec->attempts[i] : 0);
        uint32_t np, k = 0;
        const uint32_t *par = ff_graph_parents(g, rec->ids[i], &np);
        for (uint32_t j = 0; j < np; j++)
            k += pos_of(L, rec, par[j]) < i;
        put_varint(&b, k);
        for (uint32_t j = 0; j < np; j++) {
            uint32_t pp = pos_of(L, rec, par[j]);
            if (pp < i)
                put_varint(&b, i - pp);
        }
    }
    luaL_pushresult(&b);
    return 1;
}

/* A cursor over saved bytes; a read past the end marks it bad. */
struct rd {
    const unsigned char *p, *e;
    int bad;
};

static uint64_t get_varint(struct rd *r) {
    uint64_t v = 0;
    for (int sh = 0; sh < 64; sh += 7) {
        if (r->p >= r->e) {
            r->bad = 1;
            return 0;
        }
        unsigned c = *r->p++;
        v |= (uint64_t)(c & 0x7f) << sh;
        if (!(c & 0x80))
            return v;
    }
    r->bad = 1;
    return 0;
}

static const char *get_str(struct rd *r, size_t *n) {
    uint64_t len = get_varint(r);
    if (r->bad || len > (uint64_t)(r->e - r->p)) {
        r->bad = 1;
        *n = 0;
        return "";
    }
    const char *s = (const char *)r->p;
    r->p += len;
    *n = (size_t)len;
    return s;
}

static int get_byte(struct rd *r) {
    if (r->p >= r->e) {
        r->bad = 1;
        return 0;
    }
    return *r->p++;
}

static int damaged(lua_State *L) {
    return luaL_error(L, "a damaged run record");
}

/* Makes t[k] = a new table of n slots at the top, and leaves it there. */
static int column(lua_State *L, int t, const char *k, uint64_t n) {
    lua_createtable(L, (int)n, 0);
    lua_pushvalue(L, -1);
    lua_setfield(L, t, k);
    return lua_gettop(L);
}

/* core.decode_run(bytes) -> the record as columns (docs/report.md) */
static int core_decode_run(lua_State *L) {
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    struct rd r = {(const unsigned char *)s, (const unsigned char *)s + len, 0};
    if (len < RUN_MAGIC_LEN || memcmp(s, RUN_MAGIC, RUN_MAGIC_LEN) != 0)
        return luaL_error(L, "not a run record");
    r.p += RUN_MAGIC_LEN;
    size_t mn;
    const char *m = get_str(&r, &mn);
    if (r.bad || ffc_decode(L, m, mn, 0) != 0 || !lua_istable(L, -1))
        return damaged(L);
    int t = lua_gettop(L);
    uint64_t nw = get_varint(&r);
    if (r.bad || nw > len)
        return damaged(L);
    int w = column(L, t, "workers", nw);
    for (uint64_t i = 1; i <= nw; i++) {
        size_t a, c;
        const char *nm = get_str(&r, &a);
        const char *mc = get_str(&r, &c);
        if (r.bad)
            return damaged(L);
        lua_createtable(L, 0, 2);
        lua_pushlstring(L, nm, a);
        lua_setfield(L, -2, "name");
        lua_pushlstring(L, mc, c);
        lua_setfield(L, -2, "machine");
        lua_rawseti(L, w, (lua_Integer)i);
    }
    uint64_t n = get_varint(&r);
    if (r.bad || n > len) /* every node takes at least one byte */
        return damaged(L);
    int names = column(L, t, "names", n), parents = column(L, t, "parents", n),
        state = column(L, t, "state", n), queued = column(L, t, "queued", n),
        started = column(L, t, "started", n), finished = column(L, t, "finished", n),
        worker = column(L, t, "worker", n), attempts = column(L, t, "attempts", n);
    for (uint64_t i = 1; i <= n; i++) {
        size_t nl;
        const char *nm = get_str(&r, &nl);
        int st = get_byte(&r);
        uint64_t wk = get_varint(&r);
        int flags = get_byte(&r);
        if (r.bad || st >= FFL_REC_LAST || wk > nw)
            return damaged(L);
        lua_pushlstring(L, nm, nl);
        lua_rawseti(L, names, (lua_Integer)i);
        lua_pushstring(L, ffl_record_state_name(st));
        lua_rawseti(L, state, (lua_Integer)i);
        lua_pushinteger(L, (lua_Integer)wk);
        lua_rawseti(L, worker, (lua_Integer)i);
        double st0 = 0;
        if (flags & 1) {
            uint64_t a = get_varint(&r), q = get_varint(&r);
            st0 = secs(a);
            lua_pushnumber(L, st0);
            lua_rawseti(L, started, (lua_Integer)i);
            lua_pushnumber(L, q <= a ? secs(a - q) : 0);
            lua_rawseti(L, queued, (lua_Integer)i);
        } else {
            lua_pushboolean(L, 0);
            lua_rawseti(L, started, (lua_Integer)i);
            lua_pushboolean(L, 0);
            lua_rawseti(L, queued, (lua_Integer)i);
        }
        if ((flags & 3) == 3)
            lua_pushnumber(L, st0 + secs(get_varint(&r)));
        else
            lua_pushboolean(L, 0);
        lua_rawseti(L, finished, (lua_Integer)i);
        lua_pushinteger(L, (lua_Integer)get_varint(&r));
        lua_rawseti(L, attempts, (lua_Integer)i);
        uint64_t np = get_varint(&r);
        if (r.bad || np > (uint64_t)(r.e - r.p))
            return damaged(L);
        lua_createtable(L, (int)np, 0);
        for (uint64_t j = 1; j <= np; j++) {
            uint64_t d = get_varint(&r);
            if (r.bad || d == 0 || d >= i)
                return damaged(L);
            lua_pushinteger(L, (lua_Integer)(i - d));
            lua_rawseti(L, -2, (lua_Integer)j);
        }
        lua_rawseti(L, parents, (lua_Integer)i);
    }
    if (r.p != r.e)
        return damaged(L);
    lua_settop(L, t);
    return 1;
}
