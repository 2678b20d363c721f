/*
 * lstore.c: the Lua binding of the store (the codec's is lcodec.c).
 *
 * core.store_open(path[, create]) -> Store, a userdata with methods:
 *   st:put(wf, task, value[, fp[, compute_ns]])   encode and queue
 *   st:get(wf, task[, inspect]) -> value | nil, why ("missing", "corrupt")
 *   st:info(wf, task) -> {size, stored, compute, fingerprint, ok} | nil
 *   st:list(wf[, glob[, details]]) -> sorted names (or info tables)[, damage]
 *   st:workflows() -> sorted names[, damage]
 *   st:verify() -> the file's structural problems: {workflow?, why} each
 *   st:readonly() -> whether it was opened read-only
 *   st:del(wf, task) -> true | nil    st:drop(wf)    st:flush()    st:close()
 *   st:poke(wf, task, offset[, mask])   test hook: damage a stored byte
 *   st:path(), st:mapsize()
 * core.store_repair(path) -> {workflows, kept, lost, kept_as, lost_list}
 *   | nil, message (lost_list: {wf, task (nil: a damaged part), why} each)
 * Errors name the storage path, the workflow and the task. A scan that
 * meets a damaged part of the file returns what it could read and, as a
 * second value, what is damaged.
 */
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "codec.h"
#include "fflua.h"
#include "lstore.h"
#include "lutil.h"
#include "store.h"
#include "text.h"

/* What a scan or a read gathers in C before any of it reaches Lua: no Lua
 * code may run while the store has a read transaction active (store.c),
 * and a Lua allocation may run any finalizer. Kept in the userdata, so
 * that a Lua error while the results are pushed frees nothing twice and
 * leaks nothing: the next call, or __gc, frees them. */
struct lentry {
    char *name;
    size_t len;
    ff_rec rec; /* rec.val is not kept */
    char *why;  /* a copy of rec.why, or NULL */
};

typedef struct lstore {
    ff_store *s;
    ff_buf value; /* a value copied out of the store, to decode */
    struct lentry *ents;
    size_t nents, capents;
    int oom;
} lstore;

static lstore *check_lstore(lua_State *L, int idx) {
    lstore *u = luaL_checkudata(L, idx, STORE_MT);
    if (u->s == NULL)
        luaL_error(L, "the storage is closed");
    return u;
}

ff_store *ffl_check_store(lua_State *L, int idx) {
    return check_lstore(L, idx)->s;
}

static void ents_clear(lstore *u) {
    for (size_t i = 0; i < u->nents; i++) {
        free(u->ents[i].name);
        free(u->ents[i].why);
    }
    u->nents = 0;
    u->oom = 0;
}

static void ents_free(lstore *u) {
    ents_clear(u);
    free(u->ents);
    u->ents = NULL;
    u->capents = 0;
}

/* Adds an entry (C only: called while the store scans). */
static int ents_add(lstore *u, const char *name, size_t len, const ff_rec *rec, const char *why) {
    if (u->nents == u->capents) {
        size_t cap = u->capents ? u->capents * 2 : 64;
        struct lentry *v = realloc(u->ents, cap * sizeof *v);
        if (v == NULL)
            return u->oom = 1;
        u->ents = v;
        u->capents = cap;
    }
    struct lentry *en = &u->ents[u->nents];
    memset(en, 0, sizeof *en);
    if ((en->name = malloc(len ? len : 1)) == NULL)
        return u->oom = 1;
    memcpy(en->name, name, len);
    en->len = len;
    if (rec != NULL) {
        en->rec = *rec;
        en->rec.val = NULL;
        en->rec.why = NULL;
    }
    if (why != NULL && (en->why = strdup(why)) == NULL) {
        free(en->name);
        return u->oom = 1;
    }
    u->nents++;
    return 0;
}

/* The arguments (store, workflow, task) most methods take. */
static ff_store *check_task_args(lua_State *L, const char **wf, size_t *wl, const char **task,
                                 size_t *tl) {
    ff_store *s = ffl_check_store(L, 1);
    *wf = luaL_checklstring(L, 2, wl);
    *task = luaL_checklstring(L, 3, tl);
    return s;
}

static int l_open(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    int create = lua_isnone(L, 2) || lua_toboolean(L, 2);
    lstore *u = lua_newuserdatauv(L, sizeof *u, 0);
    memset(u, 0, sizeof *u);
    luaL_setmetatable(L, STORE_MT);
    char err[512];
    if (ff_store_open(&u->s, path, create, err, sizeof err) != 0) {
        lua_pushstring(L, err); /* no position: the caller's Lua code adds its own */
        return lua_error(L);
    }
    return 1;
}

/* st:close(): commits and closes; a failed commit is an error, after the
 * storage is closed anyway. */
static int l_close(lua_State *L) {
    lstore *u = luaL_checkudata(L, 1, STORE_MT);
    ents_free(u);
    ff_buf_free(&u->value);
    if (u->s == NULL)
        return 0;
    ff_store *s = u->s;
    u->s = NULL;
    char msg[600];
    int rc = ff_store_flush(s);
    if (rc != 0)
        snprintf(msg, sizeof msg, "storage '%s': %s", ff_store_path(s), ff_store_errmsg(s));
    ff_store_close(s);
    if (rc != 0)
        return luaL_error(L, "%s", msg);
    return 0;
}

/* __gc: as close, but with nothing to report to. */
static int l_gc(lua_State *L) {
    lstore *u = luaL_checkudata(L, 1, STORE_MT);
    ents_free(u);
    ff_buf_free(&u->value);
    if (u->s != NULL) {
        ff_store_close(u->s);
        u->s = NULL;
    }
    return 0;
}

static void store_fail(lua_State *L, ff_store *s, int rc) {
    const char *m = ff_store_errmsg(s);
    if (m[0] == '\0')
        m = fflua_strerror(rc);
    luaL_error(L, "storage '%s': %s", ff_store_path(s), m);
}

/* st:put(wf, task, value[, fp[, compute_ns]]) */
static int l_put(lua_State *L) {
    size_t wl, tl, fl = 0;
    const char *wf, *task;
    ff_store *s = check_task_args(L, &wf, &wl, &task, &tl);
    luaL_checkany(L, 4);
    const char *fp = luaL_optlstring(L, 5, NULL, &fl);
    lua_Integer cns = luaL_optinteger(L, 6, 0);
    uint8_t fpb[FF_FP_LEN] = {0};
    if (fp != NULL) {
        luaL_argcheck(L, fl == FF_FP_LEN, 5, "a fingerprint is 16 bytes");
        memcpy(fpb, fp, FF_FP_LEN);
    }
    ff_buf b = {0};
    lua_settop(L, 4);
    if (ffc_encode(L, 4, NULL, &b) != 0) {
        ff_buf_free(&b);
        return luaL_error(L, "cannot store task '%s' of workflow '%s': %s", task, wf,
                          lua_tostring(L, -1));
    }
    int rc = ff_store_put(s, wf, wl, task, tl, fpb, (uint64_t)cns, b.p, b.n);
    ff_buf_free(&b);
    if (rc != 0)
        store_fail(L, s, rc);
    return 0;
}

static int l_flush(lua_State *L) {
    ff_store *s = ffl_check_store(L, 1);
    int rc = ff_store_flush(s);
    if (rc != 0)
        store_fail(L, s, rc);
    return 0;
}

/* st:get(wf, task[, inspect]) -> value | nil, "missing" | nil, "corrupt", msg */
static int l_get(lua_State *L) {
    size_t wl, tl;
    const char *wf, *task;
    ff_store *s = check_task_args(L, &wf, &wl, &task, &tl);
    lstore *u = lua_touserdata(L, 1);
    int inspect = lua_toboolean(L, 4);
    ff_rec rec;
    int rc = ff_store_get(s, wf, wl, task, tl, &rec);
    if (rc == FFLUA_ENOTFOUND) {
        ff_store_read_end(s);
        lua_pushnil(L);
        lua_pushliteral(L, "missing");
        return 2;
    }
    if (rc == FFLUA_ECHECKSUM || rc == FFLUA_ECORRUPT) {
        ff_store_read_end(s);
        lua_pushnil(L);
        lua_pushliteral(L, "corrupt");
        lua_pushstring(L, rec.why != NULL ? rec.why : "damaged record");
        return 3;
    }
    if (rc != 0) {
        ff_store_read_end(s);
        store_fail(L, s, rc);
    }
    /* Copied out, and the read transaction ended, before decoding: it may
     * run Lua code (a serializer, a finalizer). */
    u->value.n = 0;
    if (ff_buf_reserve(&u->value, rec.len) != 0) {
        ff_store_read_end(s);
        return luaL_error(L, "not enough memory to read a result of %I bytes",
                          (lua_Integer)rec.len);
    }
    memcpy(u->value.p, rec.val, rec.len);
    ff_store_read_end(s);
    rc = ffc_decode(L, u->value.p, rec.len, inspect ? FFC_INSPECT : 0);
    if (rc != 0) {
        lua_pushnil(L);
        lua_insert(L, -2);
        lua_pushliteral(L, "corrupt");
        lua_insert(L, -2);
        return 3;
    }
    return 1;
}

static void push_info(lua_State *L, const char *task, size_t tl, const ff_rec *rec, int ok) {
    lua_createtable(L, 0, 7);
    lua_pushlstring(L, task, tl);
    lua_setfield(L, -2, "name");
    lua_pushinteger(L, rec->len == SIZE_MAX ? -1 : (lua_Integer)rec->len);
    lua_setfield(L, -2, "size");
    lua_pushnumber(L, (lua_Number)rec->stored_ns / 1e9);
    lua_setfield(L, -2, "stored");
    lua_pushnumber(L, (lua_Number)rec->compute_ns / 1e9);
    lua_setfield(L, -2, "compute");
    lua_pushlstring(L, (const char *)rec->fp, FF_FP_LEN);
    lua_setfield(L, -2, "fingerprint");
    lua_pushboolean(L, ok);
    lua_setfield(L, -2, "ok");
    if (!ok) {
        lua_pushstring(L, rec->why != NULL ? rec->why : "damaged record");
        lua_setfield(L, -2, "why");
    }
}

/* st:info(wf, task) -> table | nil */
static int l_info(lua_State *L) {
    size_t wl, tl;
    const char *wf, *task;
    ff_store *s = check_task_args(L, &wf, &wl, &task, &tl);
    ff_rec rec;
    int rc = ff_store_get(s, wf, wl, task, tl, &rec);
    ff_store_read_end(s);
    if (rc == FFLUA_ENOTFOUND) {
        lua_pushnil(L);
        return 1;
    }
    if (rc != 0 && rc != FFLUA_ECHECKSUM && rc != FFLUA_ECORRUPT)
        store_fail(L, s, rc);
    push_info(L, task, tl, &rec, rc == 0);
    return 1;
}

struct list_ud {
    lstore *u;
    const char *glob;
};

static int list_one(void *ud, const char *task, size_t tl, const ff_rec *rec) {
    struct list_ud *l = ud;
    if (FF_STORE_INTERNAL(task, tl) || (l->glob != NULL && !ff_text_glob(l->glob, task, tl)))
        return 0;
    return ents_add(l->u, task, tl, rec, rec != NULL && !rec->ok ? rec->why : NULL);
}

/* Pushes the entries gathered (names, or with details info tables) as a
 * sequence, then the damage the scan met (rc FFLUA_ECORRUPT) as a second
 * result; raises for any other failure. Returns the number of results. */
static int push_entries(lua_State *L, lstore *u, int rc, int details) {
    if (u->oom) {
        ents_clear(u);
        return luaL_error(L, "not enough memory to list the storage");
    }
    if (rc != 0 && rc != FFLUA_ECORRUPT && rc != FFLUA_ENOTFOUND) {
        ents_clear(u);
        store_fail(L, u->s, rc);
    }
    luaL_checkstack(L, 8, NULL);
    lua_createtable(L, (int)u->nents, 0);
    for (size_t i = 0; i < u->nents; i++) {
        struct lentry *en = &u->ents[i];
        if (details) {
            en->rec.why = en->why;
            push_info(L, en->name, en->len, &en->rec, en->rec.ok);
        } else {
            lua_pushlstring(L, en->name, en->len);
        }
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    ents_clear(u);
    if (rc == FFLUA_ECORRUPT) {
        lua_pushstring(L, ff_store_errmsg(u->s));
        return 2;
    }
    return 1;
}

/* st:list(wf[, glob[, details]]) -> names in byte order[, damage] */
static int l_list(lua_State *L) {
    lstore *u = check_lstore(L, 1);
    size_t wl;
    const char *wf = luaL_checklstring(L, 2, &wl);
    const char *glob = luaL_optstring(L, 3, NULL);
    int details = lua_toboolean(L, 4);
    ents_clear(u);
    struct list_ud l = {u, glob};
    int rc = ff_store_each(u->s, wf, wl, list_one, &l);
    return push_entries(L, u, rc, details);
}

/* Gathers the keys of the run records, which come first (a zero byte
 * sorts before every name), and stops after them. */
static int runs_one(void *ud, const char *task, size_t tl, const ff_rec *rec) {
    (void)rec;
    if (tl <= FF_STORE_RUN_PREFIX_LEN ||
        memcmp(task, FF_STORE_RUN_PREFIX, FF_STORE_RUN_PREFIX_LEN) != 0)
        return FF_STORE_INTERNAL(task, tl) ? 0 : 1;
    return ents_add(ud, task, tl, NULL, NULL);
}

/* st:runs(wf) -> the keys of the workflow's run records, oldest first */
static int l_runs(lua_State *L) {
    lstore *u = check_lstore(L, 1);
    size_t wl;
    const char *wf = luaL_checklstring(L, 2, &wl);
    ents_clear(u);
    int rc = ff_store_each(u->s, wf, wl, runs_one, u);
    return push_entries(L, u, rc, 0);
}

static int wf_one(void *ud, const char *name, size_t n, const ff_rec *rec) {
    (void)rec;
    return ents_add(ud, name, n, NULL, NULL);
}

/* st:workflows() -> names[, damage] */
static int l_workflows(lua_State *L) {
    lstore *u = check_lstore(L, 1);
    ents_clear(u);
    int rc = ff_store_workflows(u->s, wf_one, u);
    return push_entries(L, u, rc, 0);
}

/* A problem: an entry named after its workflow (an empty name: none;
 * workflows' names are never empty). */
static void verify_one(void *ud, const char *wf, size_t wflen, const char *why) {
    ents_add(ud, wf != NULL ? wf : "", wf != NULL ? wflen : 0, NULL, why);
}

/* st:verify() -> {{workflow = name | nil, why = text}, ...}: the file's
 * structural problems (an empty table when it is sound) */
static int l_verify(lua_State *L) {
    lstore *u = check_lstore(L, 1);
    ents_clear(u);
    int rc = ff_store_verify(u->s, verify_one, u);
    if (u->oom || (rc != 0 && rc != FFLUA_ECORRUPT)) {
        ents_clear(u);
        if (rc != 0 && rc != FFLUA_ECORRUPT)
            store_fail(L, u->s, rc);
        return luaL_error(L, "not enough memory to check the storage");
    }
    lua_createtable(L, (int)u->nents, 0);
    for (size_t i = 0; i < u->nents; i++) {
        struct lentry *en = &u->ents[i];
        lua_createtable(L, 0, 2);
        if (en->len > 0) {
            lua_pushlstring(L, en->name, en->len);
            lua_setfield(L, -2, "workflow");
        }
        lua_pushstring(L, en->why != NULL ? en->why : "?");
        lua_setfield(L, -2, "why");
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    ents_clear(u);
    return 1;
}

static int l_readonly(lua_State *L) {
    lua_pushboolean(L, ff_store_readonly(ffl_check_store(L, 1)));
    return 1;
}

/* What a repair left behind, gathered in C (no Lua call may raise while
 * the store runs the repair) and pushed afterwards. */
struct lost {
    char *wf, *task, *why; /* task NULL: a damaged part */
    size_t wflen, tlen;
};

struct lost_list {
    struct lost *v;
    size_t n, cap;
    int oom;
};

static char *dup_bytes(const char *p, size_t n) {
    char *c = malloc(n + 1);
    if (c != NULL) {
        memcpy(c, p, n);
        c[n] = '\0';
    }
    return c;
}

static void on_lost(void *ud, const char *wf, size_t wflen, const char *task, size_t tlen,
                    const char *why) {
    struct lost_list *ll = ud;
    if (ll->n == ll->cap) {
        size_t cap = ll->cap ? ll->cap * 2 : 16;
        struct lost *v = realloc(ll->v, cap * sizeof *v);
        if (v == NULL) {
            ll->oom = 1;
            return;
        }
        ll->v = v;
        ll->cap = cap;
    }
    struct lost *l = &ll->v[ll->n++];
    l->wf = wf != NULL ? dup_bytes(wf, wflen) : NULL;
    l->wflen = wflen;
    l->task = task != NULL ? dup_bytes(task, tlen) : NULL;
    l->tlen = tlen;
    l->why = dup_bytes(why, strlen(why));
}

/* core.store_repair(path) */
static int l_repair(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    struct lost_list ll = {0};
    ff_repair_stats st;
    char err[1024];
    int rc = ff_store_repair(path, on_lost, &ll, &st, err, sizeof err);
    /* Move the list into a userdata-free state first: from here on a
     * memory error may raise, so free as we push. */
    lua_settop(L, 1);
    if (rc != 0)
        lua_pushnil(L);
    else
        lua_createtable(L, 0, 5);
    lua_createtable(L, (int)ll.n, 0);
    for (size_t i = 0; i < ll.n; i++) {
        struct lost *l = &ll.v[i];
        lua_createtable(L, 0, 3);
        if (l->wf != NULL)
            lua_pushlstring(L, l->wf, l->wflen);
        else
            lua_pushnil(L);
        lua_setfield(L, -2, "workflow");
        if (l->task != NULL)
            lua_pushlstring(L, l->task, l->tlen);
        else
            lua_pushnil(L);
        lua_setfield(L, -2, "task");
        lua_pushstring(L, l->why != NULL ? l->why : "?");
        lua_setfield(L, -2, "why");
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    for (size_t i = 0; i < ll.n; i++) {
        free(ll.v[i].wf);
        free(ll.v[i].task);
        free(ll.v[i].why);
    }
    free(ll.v);
    if (rc != 0) { /* [path, nil, lost] */
        lua_pop(L, 1);
        lua_pushstring(L, err);
        return 2;
    }
    lua_setfield(L, -2, "lost_list"); /* [path, result] */
    lua_pushinteger(L, (lua_Integer)st.workflows);
    lua_setfield(L, -2, "workflows");
    lua_pushinteger(L, (lua_Integer)st.kept);
    lua_setfield(L, -2, "kept");
    lua_pushinteger(L, (lua_Integer)st.lost);
    lua_setfield(L, -2, "lost");
    lua_pushstring(L, st.kept_as);
    lua_setfield(L, -2, "kept_as");
    if (ll.oom)
        return luaL_error(L, "not enough memory to list what the repair left behind");
    return 1;
}

static int l_del(lua_State *L) {
    size_t wl, tl;
    const char *wf, *task;
    ff_store *s = check_task_args(L, &wf, &wl, &task, &tl);
    int rc = ff_store_del(s, wf, wl, task, tl);
    if (rc == FFLUA_ENOTFOUND) {
        lua_pushnil(L);
        return 1;
    }
    if (rc != 0)
        store_fail(L, s, rc);
    lua_pushboolean(L, 1);
    return 1;
}

/* st:del_many(wf, {task, ...}) -> count given */
static int l_del_many(lua_State *L) {
    ff_store *s = ffl_check_store(L, 1);
    size_t wl;
    const char *wf = luaL_checklstring(L, 2, &wl);
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_Integer n = luaL_len(L, 3);
    ff_key *keys = lua_newuserdatauv(L, sizeof *keys * (size_t)(n > 0 ? n : 1), 0);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, 3, i); /* kept alive by the table */
        keys[i - 1].p = luaL_checklstring(L, -1, &keys[i - 1].len);
        lua_pop(L, 1);
    }
    int rc = ff_store_del_many(s, wf, wl, keys, (size_t)n);
    if (rc != 0 && rc != FFLUA_ENOTFOUND)
        store_fail(L, s, rc);
    lua_pushinteger(L, rc == 0 ? n : 0);
    return 1;
}

static int l_drop(lua_State *L) {
    ff_store *s = ffl_check_store(L, 1);
    size_t wl;
    const char *wf = luaL_checklstring(L, 2, &wl);
    int rc = ff_store_drop(s, wf, wl);
    if (rc != 0 && rc != FFLUA_ENOTFOUND)
        store_fail(L, s, rc);
    lua_pushboolean(L, rc == 0);
    return 1;
}

static int l_poke(lua_State *L) {
    size_t wl, tl;
    const char *wf, *task;
    ff_store *s = check_task_args(L, &wf, &wl, &task, &tl);
    lua_Integer off = luaL_checkinteger(L, 4);
    lua_Integer mask = luaL_optinteger(L, 5, 1);
    luaL_argcheck(L, off >= 0, 4, "negative offset");
    int rc = ff_store_poke(s, wf, wl, task, tl, (size_t)off, (uint8_t)mask);
    if (rc != 0)
        return luaL_error(L, "cannot poke task '%s' of workflow '%s': %s", task, wf,
                          rc == FFLUA_ENOTFOUND ? "no such task or offset" : fflua_strerror(rc));
    return 0;
}

static int l_path(lua_State *L) {
    lua_pushstring(L, ff_store_path(ffl_check_store(L, 1)));
    return 1;
}

static int l_mapsize(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)ff_store_mapsize(ffl_check_store(L, 1)));
    return 1;
}

static int l_tostring(lua_State *L) {
    lstore *u = luaL_checkudata(L, 1, STORE_MT);
    if (u->s == NULL)
        lua_pushliteral(L, "functionfuse.Store (closed)");
    else
        lua_pushfstring(L, "functionfuse.Store: %s", ff_store_path(u->s));
    return 1;
}

static const luaL_Reg store_methods[] = {
    {"put", l_put},
    {"get", l_get},
    {"info", l_info},
    {"list", l_list},
    {"workflows", l_workflows},
    {"runs", l_runs},
    {"del", l_del},
    {"del_many", l_del_many},
    {"drop", l_drop},
    {"flush", l_flush},
    {"close", l_close},
    {"poke", l_poke},
    {"path", l_path},
    {"mapsize", l_mapsize},
    {"verify", l_verify},
    {"readonly", l_readonly},
    {NULL, NULL},
};

const luaL_Reg ffl_store_funcs[] = {
    {"store_open", l_open},
    {"store_repair", l_repair},
    {NULL, NULL},
};

void ffl_store_open(lua_State *L) {
    ffl_new_type(L, STORE_MT, store_methods, l_gc, l_close, l_tostring);
    lua_pop(L, 1);
}
