/*
 * codec.c: Lua values <-> bytes.
 *
 * Format (all integers little-endian; "varint" is LEB128, at most 10 bytes):
 *
 *   encoded  := 0x01 value            (the format version, then one value)
 *   value    := 0x00 nil | 0x01 false | 0x02 true
 *             | 0x80+v                integer 0..127
 *             | 0x03 i8 | 0x04 i16 | 0x05 i32 | 0x06 i64   integers
 *             | 0x07 f64              a float, its 64 bits as they are
 *             | 0x40+n bytes          a string of n < 64 bytes
 *             | 0x08 varint bytes     a string
 *             | 0x09 table            a table
 *             | 0x0A varint           the k-th table/serialized value already
 *                                     seen (0-based), for sharing and cycles
 *             | 0x0B string table     a table whose metatable is the class
 *                                     registered under that name
 *             | 0x0C string string    serializer name, its packed bytes
 *   table    := varint narr, u32 nhash, narr values (nil for holes),
 *               nhash (key value) pairs
 *
 * More tags, for code and fingerprints: 0x0D function, 0x0E node (a
 * task's parent's result), 0x0F marker, 0x10 module or library function by
 * name, 0x11 table with an unregistered metatable, 0x12 the receiver's
 * globals (_ENV), 0x13 an upvalue shared with a function before.
 * FFC_HASH writes them as fingerprint input, which is hashed, never
 * decoded. FFC_CODE (between authenticated cluster peers) encodes and
 * decodes 0x0D (bytecode string, upvalue count, upvalues, where 0x13
 * (function reference, upvalue number) joins an upvalue to one already
 * shipped), 0x10 (module, field), 0x12 (a count of (global, module) pairs:
 * the sender's globals that hold modules, bound in an environment of the
 * function's own on the receiver; written at the first 0x12 of a value),
 * and 0x0E (parent slot, key count, keys) through ffc_decode_code's hook.
 * Any other decoder refuses them: in particular a stored value that claims
 * to be a function is never loaded.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include <xxhash.h>

#include "codec.h"
#include "fflua.h"
#include "lutil.h"

enum {
    T_NIL = 0x00,
    T_FALSE,
    T_TRUE,
    T_I8,
    T_I16,
    T_I32,
    T_I64,
    T_F64,
    T_STR,
    T_TABLE,
    T_REF,
    T_CLASS,
    T_SER,
    T_FUNC,
    T_NODE,
    T_MARK,
    T_MODULE,
    T_MTABLE,
    T_ENV,
    T_UPREF,
    T_SHORTSTR = 0x40,
    T_SMALLINT = 0x80,
};

/* --- encoder ------------------------------------------------------------- */

struct ffc_enc {
    lua_State *L;
    ff_buf *b;
    const ffc_opts *o;
    int reg, seen, modmap; /* stack slots (nil until needed) */
    int msg;               /* stack slot of the error message */
    lua_Integer nseen;
    int depth;    /* steps on the path (path[1..depth]) */
    int level;    /* tables and functions entered: at most FFC_MAX_DEPTH */
    int env_done; /* FFC_CODE: the globals' modules were written */
    int err;
    ffc_step path[FFC_MAX_DEPTH + 2];
};

static int put(ffc_enc *e, const void *p, size_t n) {
    if (ff_buf_reserve(e->b, n) != 0)
        return e->err = -12;
    memcpy(e->b->p + e->b->n, p, n);
    e->b->n += n;
    return 0;
}

static int put1(ffc_enc *e, int c) {
    unsigned char u = (unsigned char)c;
    if (e->b->n < e->b->cap) {
        e->b->p[e->b->n++] = (char)u;
        return 0;
    }
    return put(e, &u, 1);
}

static int put_le(ffc_enc *e, uint64_t v, int n) {
    unsigned char t[8];
    for (int i = 0; i < n; i++)
        t[i] = (unsigned char)(v >> (8 * i));
    return put(e, t, (size_t)n);
}

static int put_varint(ffc_enc *e, uint64_t v) {
    unsigned char t[10];
    int n = 0;
    do {
        t[n] = (unsigned char)(v & 0x7f);
        v >>= 7;
        if (v)
            t[n] |= 0x80;
        n++;
    } while (v);
    return put(e, t, (size_t)n);
}

static int put_int(ffc_enc *e, lua_Integer v) {
    if (v >= 0 && v < 128)
        return put1(e, T_SMALLINT | (int)v);
    if (v >= INT8_MIN && v <= INT8_MAX)
        return put1(e, T_I8) || put_le(e, (uint64_t)v, 1);
    if (v >= INT16_MIN && v <= INT16_MAX)
        return put1(e, T_I16) || put_le(e, (uint64_t)v, 2);
    if (v >= INT32_MIN && v <= INT32_MAX)
        return put1(e, T_I32) || put_le(e, (uint64_t)v, 4);
    return put1(e, T_I64) || put_le(e, (uint64_t)v, 8);
}

static int put_str(ffc_enc *e, const char *s, size_t n) {
    if (n < 64) {
        if (put1(e, T_SHORTSTR | (int)n))
            return e->err;
    } else if (put1(e, T_STR) || put_varint(e, n)) {
        return e->err;
    }
    return put(e, s, n);
}

int ffc_put_bytes(ffc_enc *e, const void *p, size_t n) {
    return put(e, p, n);
}

int ffc_put_varint(ffc_enc *e, uint64_t v) {
    return put_varint(e, v);
}

int ffc_put_marker(ffc_enc *e, int tag, const void *p, size_t n) {
    return put1(e, tag) || put_str(e, p, n);
}

/* Adds one step to the path being built in b. */
static void add_step(lua_State *L, luaL_Buffer *b, const ffc_step *st, int space) {
    if (st->what != NULL) {
        if (space)
            luaL_addchar(b, ' ');
        luaL_addstring(b, st->what);
        return;
    }
    if (st->key == 0) {
        lua_pushfstring(L, "[%I]", st->i);
        luaL_addvalue(b);
        return;
    }
    int t = lua_type(L, st->key);
    size_t n;
    const char *s = t == LUA_TSTRING ? lua_tolstring(L, st->key, &n) : NULL;
    int ident = s != NULL && n > 0 && !(s[0] >= '0' && s[0] <= '9');
    for (size_t i = 0; ident && i < n; i++)
        ident = (s[i] == '_' || (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
                 (s[i] >= '0' && s[i] <= '9'));
    if (s != NULL) {
        luaL_addstring(b, ident ? "." : "[\"");
        ffl_push_short(L, s, n);
        luaL_addvalue(b);
        if (!ident)
            luaL_addstring(b, "\"]");
    } else if (t == LUA_TNUMBER || t == LUA_TBOOLEAN) {
        luaL_addchar(b, '[');
        luaL_tolstring(L, st->key, NULL);
        luaL_addvalue(b);
        luaL_addchar(b, ']');
    } else {
        lua_pushfstring(L, "[<%s key>]", lua_typename(L, t));
        luaL_addvalue(b);
    }
}

void ffc_push_path(lua_State *L, const ffc_step *steps, int n) {
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    int cut = n > 2 * FFC_PATH_KEEP;
    for (int d = 0; d < n; d++) {
        if (cut && d == FFC_PATH_KEEP) {
            luaL_addstring(&b, " ... ");
            d = n - FFC_PATH_KEEP;
            add_step(L, &b, &steps[d], 0);
            continue;
        }
        add_step(L, &b, &steps[d], d > 0);
    }
    luaL_pushresult(&b);
}

/* Sets an error: pushes "<msg> (at <path>)", or just msg at the top level. */
static int fail(ffc_enc *e, int code, const char *fmt, const char *arg) {
    lua_State *L = e->L;
    if (e->err != 0)
        return e->err;
    lua_pushfstring(L, fmt, arg);
    if (e->depth > 0) {
        ffc_push_path(L, &e->path[1], e->depth);
        lua_pushfstring(L, "%s (at %s)", lua_tostring(L, -2), lua_tostring(L, -1));
        lua_replace(L, -3);
        lua_pop(L, 1);
    }
    lua_replace(L, e->msg); /* callers just return; ffc_encode cleans up */
    e->err = code;
    return code;
}

/* Enters a table or a function (level): refused past FFC_MAX_DEPTH. */
static int enter(ffc_enc *e, const char *what) {
    if (e->level >= FFC_MAX_DEPTH)
        return fail(e, FFLUA_ENOSERIAL,
                    "%s nested more than " FFLUA_STRINGIFY(FFC_MAX_DEPTH) " levels deep", what);
    e->level++;
    return 0;
}

static int enc_value(ffc_enc *e, int idx);

/* m[value at v] = name at the top, unless it has a smaller name already
 * (so that a value reachable under two names gets the same one every run,
 * whatever the order of package.loaded). */
static void modmap_set(lua_State *L, int m, int v) {
    lua_pushvalue(L, v);
    if (lua_rawget(L, m) == LUA_TSTRING) {
        size_t a, b;
        const char *old = lua_tolstring(L, -1, &a);
        const char *new = lua_tolstring(L, -2, &b);
        int c = memcmp(old, new, a < b ? a : b);
        if (c < 0 || (c == 0 && a <= b)) {
            lua_pop(L, 1);
            return;
        }
    }
    lua_pop(L, 1);
    lua_pushvalue(L, v);
    lua_pushvalue(L, -2);
    lua_rawset(L, m);
}

/* Pushes a table value -> "name" for every table and function in
 * package.loaded and every function field of those tables ("math\0floor"). */
void ffc_push_modmap(lua_State *L) {
    lua_newtable(L);
    int m = lua_gettop(L);
    lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    int loaded = m + 1;
    lua_pushnil(L);
    while (lua_next(L, loaded)) { /* [m, loaded, name, mod] */
        if (lua_type(L, -2) == LUA_TSTRING &&
            (lua_type(L, -1) == LUA_TTABLE || lua_type(L, -1) == LUA_TFUNCTION)) {
            lua_pushvalue(L, -2);
            modmap_set(L, m, lua_gettop(L) - 1);
            lua_pop(L, 1);
            if (lua_type(L, -1) == LUA_TTABLE) {
                int mod = lua_gettop(L);
                lua_pushnil(L);
                while (lua_next(L, mod)) { /* [.., name, mod, k, f] */
                    if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TFUNCTION) {
                        /* "module\0field": module names have dots of their own */
                        lua_pushvalue(L, mod - 1);
                        lua_pushlstring(L, "", 1);
                        lua_pushvalue(L, -4);
                        lua_concat(L, 3);
                        modmap_set(L, m, lua_gettop(L) - 1);
                        lua_pop(L, 1);
                    }
                    lua_pop(L, 1);
                }
            }
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1); /* loaded */
}

static void need_slot(ffc_enc *e, int slot) {
    lua_State *L = e->L;
    if (!lua_isnil(L, slot))
        return;
    if (slot == e->reg) {
        ffc_push_registry(L);
    } else if (slot == e->seen) {
        lua_createtable(L, 0, 4);
    } else {
        ffc_push_modmap(L);
    }
    lua_replace(L, slot);
}

/* If the value at idx was seen, writes a reference and returns 1; else
 * records it and returns 0. */
static int seen_before(ffc_enc *e, int idx) {
    lua_State *L = e->L;
    need_slot(e, e->seen);
    lua_pushvalue(L, idx);
    if (lua_rawget(L, e->seen) == LUA_TNUMBER) {
        lua_Integer k = lua_tointeger(L, -1);
        lua_pop(L, 1);
        put1(e, T_REF);
        put_varint(e, (uint64_t)k);
        return 1;
    }
    lua_pop(L, 1);
    lua_pushvalue(L, idx);
    lua_pushinteger(L, e->nseen++);
    lua_rawset(L, e->seen);
    return 0;
}

/* The name modmap gives the value at idx, or NULL (FFC_HASH, FFC_CODE). */
static const char *module_name(ffc_enc *e, int idx, size_t *len) {
    lua_State *L = e->L;
    if (e->modmap == 0)
        return NULL;
    need_slot(e, e->modmap);
    lua_pushvalue(L, idx);
    lua_rawget(L, e->modmap);
    const char *s = lua_tolstring(L, -1, len);
    lua_pop(L, 1); /* the string stays reachable from modmap */
    return s;
}

/* A module or a module's function by name: FFC_CODE writes the module and
 * the field (empty for the module itself), FFC_HASH the name. */
static int put_module(ffc_enc *e, const char *m, size_t len) {
    if (!(e->o->flags & FFC_CODE))
        return ffc_put_marker(e, T_MODULE, m, len);
    const char *z = memchr(m, '\0', len);
    size_t ml = z ? (size_t)(z - m) : len;
    if (put1(e, T_MODULE) || put_str(e, m, ml))
        return e->err;
    return z ? put_str(e, z + 1, len - ml - 1) : put_str(e, "", 0);
}

/* Adds a step to the path. Every step but a metatable's is inside a table
 * or function entered (enter), so there are at most FFC_MAX_DEPTH + 1. */
static int push_level(ffc_enc *e, int key, lua_Integer i, const char *what) {
    if (e->depth > FFC_MAX_DEPTH)
        return fail(e, FFLUA_EINTERNAL, "%s", "path longer than the nesting limit");
    if (!lua_checkstack(e->L, 8))
        return fail(e, -12, "%s", "value nested too deep for the Lua stack");
    e->depth++;
    e->path[e->depth] = (ffc_step){key, i, what};
    return 0;
}

/* Encodes the value a serializer packs; the spec table is at the top. */
static int enc_serialized(ffc_enc *e, int idx) {
    lua_State *L = e->L;
    int spec = lua_gettop(L);
    lua_getfield(L, spec, "name");
    const char *name = lua_tostring(L, spec + 1);
    lua_getfield(L, spec, "pack");
    lua_pushvalue(L, idx);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        const char *why = luaL_tolstring(L, -1, NULL);
        lua_pushfstring(L, "serializer '%s' failed to pack: %s", ffl_push_short_at(L, spec + 1),
                        why);
        return fail(e, FFLUA_ELUA, "%s", lua_tostring(L, -1));
    }
    if (lua_type(L, -1) != LUA_TSTRING)
        return fail(e, FFLUA_ELUA, "serializer '%s' pack did not return a string",
                    ffl_push_short_at(L, spec + 1));
    size_t n, nn;
    const char *s = lua_tolstring(L, -1, &n);
    name = lua_tolstring(L, spec + 1, &nn);
    if (put1(e, T_SER) || put_str(e, name, nn) || put_str(e, s, n))
        return e->err;
    lua_settop(L, spec);
    return 0;
}

/* The registry entry for the metatable at the top, in registry field f (pushed, or nil). */
static int reg_lookup(ffc_enc *e, const char *f) {
    lua_State *L = e->L;
    need_slot(e, e->reg);
    lua_getfield(L, e->reg, f);
    lua_pushvalue(L, -2);
    int t = lua_rawget(L, -2);
    lua_remove(L, -2);
    return t;
}

/* Encodes the key at k and the value above it, with k on the path. */
static int enc_pair(ffc_enc *e, int k) {
    if (push_level(e, k, 0, NULL))
        return e->err;
    int rc = enc_value(e, k);
    if (rc == 0)
        rc = enc_value(e, k + 1);
    e->depth--;
    return rc;
}

/* Writes v over the 4 bytes reserved at offset at. */
static void patch_u32(ffc_enc *e, size_t at, uint32_t v) {
    for (int i = 0; i < 4; i++)
        e->b->p[at + (size_t)i] = (char)(unsigned char)(v >> (8 * i));
}

/* FFC_HASH: the hash part in a canonical key order, so the same table
 * gives the same bytes whatever its traversal order (string hashing is
 * seeded per state). Keys order by type, then value; keys that are tables,
 * functions or userdata by the digest of their own encoding. */
struct skey {
    int rank; /* 0 boolean, 1 integer, 2 float, 3 string, 4 other */
    lua_Integer i;
    double d;
    const char *s;
    size_t n;
    uint64_t dig[2];
    int slot; /* index in the keys table */
};

static int skey_cmp(const void *pa, const void *pb) {
    const struct skey *a = pa, *b = pb;
    if (a->rank != b->rank)
        return a->rank < b->rank ? -1 : 1;
    switch (a->rank) {
    case 0:
    case 1:
        return a->i < b->i ? -1 : a->i > b->i;
    case 2:
        return a->d < b->d ? -1 : a->d > b->d;
    case 3: {
        int c = memcmp(a->s, b->s, a->n < b->n ? a->n : b->n);
        return c ? c : (a->n < b->n ? -1 : a->n > b->n);
    }
    default:
        if (a->dig[0] != b->dig[0])
            return a->dig[0] < b->dig[0] ? -1 : 1;
        return a->dig[1] < b->dig[1] ? -1 : a->dig[1] > b->dig[1];
    }
}

static int enc_sorted_pairs(ffc_enc *e, int idx, lua_Unsigned narr, size_t at) {
    lua_State *L = e->L;
    lua_newtable(L);
    int keys = lua_gettop(L);
    int nk = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (lua_isinteger(L, -1)) {
            lua_Integer k = lua_tointeger(L, -1);
            if (k >= 1 && (lua_Unsigned)k <= narr)
                continue;
        }
        lua_pushvalue(L, -1);
        lua_rawseti(L, keys, ++nk);
    }
    struct skey *sk = lua_newuserdatauv(L, sizeof *sk * (size_t)(nk ? nk : 1), 0);
    for (int j = 0; j < nk; j++) {
        struct skey *k = &sk[j];
        memset(k, 0, sizeof *k);
        k->slot = j + 1;
        lua_rawgeti(L, keys, j + 1);
        switch (lua_type(L, -1)) {
        case LUA_TBOOLEAN:
            k->rank = 0;
            k->i = lua_toboolean(L, -1);
            break;
        case LUA_TNUMBER:
            if (lua_isinteger(L, -1)) {
                k->rank = 1;
                k->i = lua_tointeger(L, -1);
            } else {
                k->rank = 2;
                k->d = lua_tonumber(L, -1);
            }
            break;
        case LUA_TSTRING:
            k->rank = 3;
            k->s = lua_tolstring(L, -1, &k->n); /* kept alive by keys */
            break;
        default: {
            k->rank = 4;
            ff_buf b = {0};
            ffc_opts o = *e->o;
            o.modmap = e->modmap;
            need_slot(e, e->modmap);
            int rc = ffc_encode(L, -1, &o, &b);
            if (rc != 0) { /* the key's own error, at this table's path */
                ff_buf_free(&b);
                return fail(e, rc, "%s", lua_tostring(L, -1));
            }
            XXH128_hash_t h = XXH3_128bits(b.p, b.n);
            k->dig[0] = h.high64;
            k->dig[1] = h.low64;
            ff_buf_free(&b);
        }
        }
        lua_pop(L, 1);
    }
    qsort(sk, (size_t)nk, sizeof *sk, skey_cmp);
    for (int j = 0; j < nk; j++) {
        lua_rawgeti(L, keys, sk[j].slot);
        int k = lua_gettop(L);
        lua_pushvalue(L, k);
        lua_rawget(L, idx);
        int rc = enc_pair(e, k);
        lua_pop(L, 2);
        if (rc)
            return rc;
    }
    lua_pop(L, 2); /* keys, sk */
    patch_u32(e, at, (uint32_t)nk);
    return 0;
}

static int enc_table_items(ffc_enc *e, int idx) {
    lua_State *L = e->L;
    lua_Unsigned narr = lua_rawlen(L, idx);
    if (put1(e, T_TABLE) || put_varint(e, narr))
        return e->err;
    size_t at = e->b->n;
    if (put_le(e, 0, 4))
        return e->err;
    for (lua_Unsigned i = 1; i <= narr; i++) {
        lua_rawgeti(L, idx, (lua_Integer)i);
        if (push_level(e, 0, (lua_Integer)i, NULL))
            return e->err;
        int rc = enc_value(e, lua_gettop(L));
        e->depth--;
        lua_pop(L, 1);
        if (rc)
            return rc;
    }
    uint64_t nhash = 0;
    if (e->o->flags & FFC_HASH)
        return enc_sorted_pairs(e, idx, narr, at);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_isinteger(L, -2)) {
            lua_Integer k = lua_tointeger(L, -2);
            if (k >= 1 && (lua_Unsigned)k <= narr) {
                lua_pop(L, 1);
                continue;
            }
        }
        int rc = enc_pair(e, lua_gettop(L) - 1);
        lua_pop(L, 1);
        if (rc)
            return rc;
        nhash++;
    }
    if (nhash > UINT32_MAX)
        return fail(e, FFLUA_ENOSERIAL, "%s", "table with more than 2^32 keys");
    patch_u32(e, at, (uint32_t)nhash);
    return 0;
}

static int enc_table_body(ffc_enc *e, int idx) {
    if (enter(e, "tables"))
        return e->err;
    int rc = enc_table_items(e, idx);
    e->level--;
    return rc;
}

static int enc_table(ffc_enc *e, int idx) {
    lua_State *L = e->L;
    if (e->o->flags & (FFC_HASH | FFC_CODE)) {
        size_t ml;
        const char *m = module_name(e, idx, &ml);
        if (m != NULL)
            return put_module(e, m, ml);
    }
    if (seen_before(e, idx))
        return e->err;
    if (!lua_getmetatable(L, idx))
        return enc_table_body(e, idx);
    if (reg_lookup(e, "class_names") == LUA_TSTRING) { /* [mt, name] */
        size_t n;
        const char *s = lua_tolstring(L, -1, &n);
        put1(e, T_CLASS);
        put_str(e, s, n);
        lua_pop(L, 2);
        return e->err ? e->err : enc_table_body(e, idx);
    }
    lua_pop(L, 1);
    if (reg_lookup(e, "ser") == LUA_TTABLE) { /* [mt, spec] */
        int rc = enc_serialized(e, idx);
        lua_pop(L, 2);
        return rc;
    }
    lua_pop(L, 1);
    if (e->o->flags & FFC_HASH) { /* the metatable's content stands for it */
        put1(e, T_MTABLE);
        int mt = lua_gettop(L);
        int rc = push_level(e, 0, 0, "metatable");
        if (rc == 0) {
            rc = enc_value(e, mt);
            e->depth--;
        }
        lua_pop(L, 1);
        return rc ? rc : enc_table_body(e, idx);
    }
    if (lua_getfield(L, -1, "__name") == LUA_TSTRING)
        return fail(e, FFLUA_ENOSERIAL,
                    "table with metatable '%s', which is not registered "
                    "(ff.register_class(name, mt) or a serializer)",
                    ffl_push_short_at(L, -1));
    return fail(e, FFLUA_ENOSERIAL, "%s",
                "table with a metatable that is not registered "
                "(ff.register_class(name, mt) or a serializer)");
}

static int dump_writer(lua_State *L, const void *p, size_t n, void *ud) {
    ff_buf *b = ud;
    (void)L;
    if (ff_buf_reserve(b, n) != 0)
        return 1;
    memcpy(b->p + b->n, p, n);
    b->n += n;
    return 0;
}

/* A stripped Lua 5.4 dump still holds each function's first and last line
 * numbers. Fingerprints must not change when a function moves in its file,
 * so copy the dump with those two numbers zeroed. The walk follows
 * ldump.c's layout; on anything unexpected it gives up (the caller then
 * hashes the dump as it is). */
struct dumpwalk {
    const unsigned char *p, *end;
    ff_buf *out;
};

static int dw_copy(struct dumpwalk *w, size_t n) {
    if ((size_t)(w->end - w->p) < n || ff_buf_reserve(w->out, n) != 0)
        return -1;
    memcpy(w->out->p + w->out->n, w->p, n);
    w->out->n += n;
    w->p += n;
    return 0;
}

/* A size as ldump.c writes it: 7-bit groups, most significant first, the
 * last one flagged with 0x80. Copied unless zero is set. */
static int dw_size(struct dumpwalk *w, size_t *v, int zero) {
    const unsigned char *start = w->p;
    size_t x = 0;
    for (;;) {
        if (w->p >= w->end || x > (SIZE_MAX >> 7))
            return -1;
        unsigned c = *w->p++;
        x = (x << 7) | (c & 0x7f);
        if (c & 0x80)
            break;
    }
    *v = x;
    size_t n = (size_t)(w->p - start);
    if (ff_buf_reserve(w->out, n) != 0)
        return -1;
    if (zero) {
        w->out->p[w->out->n++] = (char)0x80;
    } else {
        memcpy(w->out->p + w->out->n, start, n);
        w->out->n += n;
    }
    return 0;
}

static int dw_string(struct dumpwalk *w) {
    size_t n;
    if (dw_size(w, &n, 0))
        return -1;
    return n == 0 ? 0 : dw_copy(w, n - 1);
}

static int dw_function(struct dumpwalk *w, int depth) {
    size_t n, k;
    if (depth > 200 || dw_string(w) || dw_size(w, &n, 1) || dw_size(w, &n, 1) || dw_copy(w, 3))
        return -1;
    if (dw_size(w, &n, 0) || n > (size_t)(w->end - w->p) / 4 || dw_copy(w, n * 4))
        return -1; /* code */
    if (dw_size(w, &n, 0))
        return -1; /* constants */
    for (k = 0; k < n; k++) {
        if (w->p >= w->end)
            return -1;
        unsigned t = *w->p;
        if (dw_copy(w, 1))
            return -1;
        if (t == 3 || t == 19) { /* integer, float */
            if (dw_copy(w, 8))
                return -1;
        } else if (t == 4 || t == 20) { /* short, long string */
            if (dw_string(w))
                return -1;
        } else if (t != 0 && t != 1 && t != 17) { /* nil, false, true */
            return -1;
        }
    }
    if (dw_size(w, &n, 0) || n > (size_t)(w->end - w->p) / 3 || dw_copy(w, n * 3))
        return -1; /* upvalues */
    if (dw_size(w, &n, 0))
        return -1; /* protos */
    for (k = 0; k < n; k++)
        if (dw_function(w, depth + 1))
            return -1;
    /* Debug info: empty in a stripped dump. */
    for (k = 0; k < 4; k++)
        if (dw_size(w, &n, 0) || n != 0)
            return -1;
    return 0;
}

/* Appends the dump d[0..n) without line numbers; -1 if it is not the
 * expected format (out is then unchanged). */
static int dump_without_lines(const char *d, size_t n, ff_buf *out) {
    /* Header: signature, version, format, data, three sizes, an integer,
     * a float, then the main function's upvalue count. */
    const size_t hdr = 4 + 1 + 1 + 6 + 3 + 8 + 8 + 1;
    size_t start = out->n;
    struct dumpwalk w = {(const unsigned char *)d, (const unsigned char *)d + n, out};
    if (n < hdr || memcmp(d, LUA_SIGNATURE, 4) != 0 || (unsigned char)d[4] != 0x54)
        return -1;
    if (dw_copy(&w, hdr) || dw_function(&w, 0) || w.p != w.end) {
        out->n = start;
        return -1;
    }
    return 0;
}

/* A Lua function is its bytecode and its upvalues. FFC_HASH: stripped,
 * without line numbers, _ENV left out. FFC_CODE: with debug information
 * (errors on a worker name the script's lines), as a string, then the
 * upvalue count and each upvalue; the globals table travels as T_ENV and
 * becomes the receiver's globals. Modules and their functions go by name;
 * other C functions cannot ship. */
static int enc_upvalues(ffc_enc *e, int idx, int code, lua_Integer fidx);

static int enc_function(ffc_enc *e, int idx) {
    lua_State *L = e->L;
    int code = (e->o->flags & FFC_CODE) != 0;
    size_t ml;
    const char *m = module_name(e, idx, &ml);
    if (m != NULL)
        return put_module(e, m, ml);
    if (lua_iscfunction(L, idx)) {
        if (!code)
            return ffc_put_marker(e, T_MARK, "C function", 10);
        return fail(e, FFLUA_ENOSERIAL, "%s",
                    "a C function that is not reachable from package.loaded cannot be shipped");
    }
    if (seen_before(e, idx))
        return e->err;
    lua_Integer fidx = e->nseen - 1; /* its reference number */
    put1(e, T_FUNC);
    ff_buf d = {0};
    lua_pushvalue(L, idx);
    int rc = lua_dump(L, dump_writer, &d, !code);
    lua_pop(L, 1);
    if (rc == 0) {
        if (code)
            rc = put_str(e, d.p, d.n);
        else if (dump_without_lines(d.p, d.n, e->b) != 0)
            rc = put(e, d.p, d.n);
    }
    ff_buf_free(&d);
    if (rc != 0 || e->err)
        return e->err ? e->err : fail(e, FFLUA_EINTERNAL, "%s", "cannot dump a function");
    if (code) {
        lua_Debug ar;
        lua_pushvalue(L, idx);
        lua_getinfo(L, ">u", &ar);
        if (put_varint(e, ar.nups))
            return e->err;
    }
    if (enter(e, "functions"))
        return e->err;
    rc = enc_upvalues(e, idx, code, fidx);
    e->level--;
    return rc;
}

/* The standard libraries, which every Lua state has under their names. */
static int standard_global(const char *k, size_t kl, const char *m, size_t ml) {
    static const char *const libs[] = {"_G",      "coroutine", "debug", "io",   "math", "os",
                                       "package", "string",    "table", "utf8", NULL};
    if (kl != ml || memcmp(k, m, kl) != 0)
        return 0;
    for (int i = 0; libs[i]; i++)
        if (strcmp(k, libs[i]) == 0)
            return 1;
    return 0;
}

/* FFC_CODE's T_ENV: the receiver's globals, and (the first time in a
 * value) the sender's globals that hold a whole module, by name, so that a
 * function that uses `ff` from the REPL or a library loaded with -l finds
 * it on the receiver too. */
static int put_env(ffc_enc *e) {
    lua_State *L = e->L;
    if (put1(e, T_ENV))
        return e->err;
    if (e->env_done)
        return put_varint(e, 0);
    e->env_done = 1;
    ff_buf pairs = {0};
    uint64_t n = 0;
    need_slot(e, e->modmap);
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
    int g = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, g)) { /* [g, k, v] */
        size_t kl, ml;
        const char *m = NULL;
        if (lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TTABLE)
            m = module_name(e, lua_gettop(L), &ml);
        const char *k = lua_tolstring(L, -2, &kl);
        if (m != NULL && memchr(m, '\0', ml) == NULL && !standard_global(k, kl, m, ml)) {
            ff_buf *save = e->b;
            e->b = &pairs;
            put_str(e, k, kl);
            put_str(e, m, ml);
            e->b = save;
            n++;
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (put_varint(e, n) == 0 && pairs.n > 0)
        put(e, pairs.p, pairs.n);
    ff_buf_free(&pairs);
    return e->err;
}

/* The upvalues of the function at idx (reference number fidx), each with
 * its name on the path. FFC_CODE: an upvalue shared with a function
 * written before is a reference to that function's upvalue, so closures
 * that share a variable still share it on the receiver. */
static int enc_upvalues(ffc_enc *e, int idx, int code, lua_Integer fidx) {
    lua_State *L = e->L;
    for (int i = 1;; i++) {
        const char *name = lua_getupvalue(L, idx, i);
        if (name == NULL)
            break;
        if (code) {
            /* _ENV (by name, or the globals table under any name) is the
             * receiver's globals. */
            lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
            int is_env = lua_rawequal(L, -1, -2) || strcmp(name, "_ENV") == 0;
            lua_pop(L, 1);
            if (is_env) {
                lua_pop(L, 1);
                if (put_env(e))
                    return e->err;
                continue;
            }
            /* Upvalue ids are addresses: light userdata keys of seen, next
             * to the values, mapping to (function << 8 | upvalue). */
            need_slot(e, e->seen);
            lua_pushlightuserdata(L, lua_upvalueid(L, idx, i));
            if (lua_rawget(L, e->seen) == LUA_TNUMBER) {
                lua_Integer k = lua_tointeger(L, -1);
                lua_pop(L, 2); /* the reference and the upvalue's value */
                if (put1(e, T_UPREF) || put_varint(e, (uint64_t)(k >> 8)) ||
                    put_varint(e, (uint64_t)(k & 0xff)))
                    return e->err;
                continue;
            }
            lua_pop(L, 1);
            lua_pushlightuserdata(L, lua_upvalueid(L, idx, i));
            lua_pushinteger(L, fidx << 8 | i);
            lua_rawset(L, e->seen);
        } else if (strcmp(name, "_ENV") == 0) {
            lua_pop(L, 1);
            ffc_put_marker(e, T_MARK, "_ENV", 4);
            continue;
        }
        lua_pushfstring(L, "upvalue '%s'", ffl_push_short(L, name, strlen(name)));
        lua_remove(L, -2);
        int top = lua_gettop(L);
        int rc = push_level(e, 0, 0, lua_tostring(L, top));
        if (rc == 0) {
            rc = enc_value(e, top - 1);
            e->depth--;
        }
        if (rc)
            return rc;
        lua_pop(L, 2);
    }
    return e->err;
}

/* Offers the userdata at idx to the caller's hook: 1 when it wrote the
 * value (*rc its result), else 0. */
static int try_ud_hook(ffc_enc *e, int idx, int *rc) {
    if (e->o->ud_hook == NULL)
        return 0;
    int h = e->o->ud_hook(e->o->hook_ud, e, e->L, idx);
    if (h < 0)
        *rc = fail(e, FFLUA_ELUA, "%s", lua_tostring(e->L, -1));
    else if (h > 0)
        *rc = e->err;
    return h != 0;
}

static int enc_userdata(ffc_enc *e, int idx) {
    lua_State *L = e->L;
    int hrc;
    if (try_ud_hook(e, idx, &hrc))
        return hrc;
    int top = lua_gettop(L);
    if (lua_getmetatable(L, idx)) {
        if (reg_lookup(e, "ser") == LUA_TTABLE) { /* [mt, spec] */
            int rc = seen_before(e, idx) ? e->err : enc_serialized(e, idx);
            if (rc == 0)
                lua_settop(L, top);
            return rc;
        }
        lua_pop(L, 1);
        lua_getfield(L, -1, "__name");
    } else {
        lua_pushnil(L);
    }
    const char *nm = lua_tostring(L, -1);
    if (e->o->flags & FFC_HASH) {
        const char *m = lua_pushfstring(L, "userdata %s", nm ? nm : "?");
        ffc_put_marker(e, T_MARK, m, strlen(m));
        lua_settop(L, top);
        return e->err;
    }
    if (nm != NULL)
        return fail(e, FFLUA_ENOSERIAL,
                    "userdata '%s' has no serializer (storage:register_serializer)",
                    ffl_push_short_at(L, -1));
    return fail(e, FFLUA_ENOSERIAL, "%s",
                "userdata without a serializer (storage:register_serializer)");
}

static int enc_value(ffc_enc *e, int idx) {
    lua_State *L = e->L;
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        return put1(e, T_NIL);
    case LUA_TBOOLEAN:
        return put1(e, lua_toboolean(L, idx) ? T_TRUE : T_FALSE);
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx))
            return put_int(e, lua_tointeger(L, idx));
        else {
            double d = lua_tonumber(L, idx);
            uint64_t u;
            memcpy(&u, &d, 8);
            return put1(e, T_F64) || put_le(e, u, 8);
        }
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        return put_str(e, s, n);
    }
    case LUA_TTABLE:
        return enc_table(e, idx);
    case LUA_TFUNCTION:
        if (e->o->flags & (FFC_HASH | FFC_CODE))
            return enc_function(e, idx);
        return fail(e, FFLUA_ENOSERIAL, "%s", "a function cannot be stored");
    case LUA_TUSERDATA:
        return enc_userdata(e, idx);
    case LUA_TLIGHTUSERDATA: {
        /* The graph's weak node references in arguments (lgraph.c). */
        int hrc;
        if (try_ud_hook(e, idx, &hrc))
            return hrc;
    }
        /* fallthrough */
    default: {
        const char *tn = luaL_typename(L, idx);
        if (e->o->flags & FFC_HASH)
            return ffc_put_marker(e, T_MARK, tn, strlen(tn));
        return fail(e, FFLUA_ENOSERIAL,
                    (e->o->flags & FFC_CODE) ? "a %s cannot be shipped" : "a %s cannot be stored",
                    tn);
    }
    }
}

int ffc_encode(lua_State *L, int idx, const ffc_opts *o, ff_buf *out) {
    static const ffc_opts none = {0, NULL, NULL, 0};
    idx = lua_absindex(L, idx);
    if (!lua_checkstack(L, 16)) {
        lua_pushliteral(L, "Lua stack overflow");
        return -12;
    }
    ffc_enc e;
    e.L = L;
    e.b = out;
    e.o = o ? o : &none;
    e.nseen = 0;
    e.depth = 0;
    e.level = 0;
    e.env_done = 0;
    e.err = 0;
    size_t start = out->n;
    int top = lua_gettop(L);
    lua_settop(L, top + 4);
    e.reg = top + 1;
    e.seen = top + 2;
    e.modmap = (e.o->flags & (FFC_HASH | FFC_CODE)) ? top + 3 : 0;
    e.msg = top + 4;
    if (e.modmap != 0 && e.o->modmap != 0) {
        lua_pushvalue(L, e.o->modmap);
        lua_replace(L, e.modmap);
    }
    if ((e.o->flags & FFC_ARGS) && lua_type(L, idx) == LUA_TTABLE)
        e.level = -1; /* the arguments' table: each argument may nest fully */
    int rc = put1(&e, FFC_VERSION);
    if (rc == 0)
        rc = enc_value(&e, idx);
    if (e.err != 0)
        rc = e.err;
    if (rc != 0) {
        if (lua_type(L, top + 4) != LUA_TSTRING)
            lua_pushstring(L, rc == -12 ? "not enough memory" : "cannot encode the value");
        else
            lua_pushvalue(L, top + 4);
        lua_replace(L, top + 1);
        lua_settop(L, top + 1);
        out->n = start;
        return rc;
    }
    lua_settop(L, top);
    return 0;
}

/* --- decoder ------------------------------------------------------------- */

typedef struct dec {
    lua_State *L;
    const unsigned char *p, *start, *end;
    int refs, reg, msg; /* stack slots */
    int envslot, env;   /* a stack slot; env: it, once it holds a function environment */
    lua_Integer nrefs;
    int depth;
    unsigned flags;
    int err;
    size_t presize; /* table slots still allowed to be made in advance */
    ffc_node_hook node_hook;
    void *hook_ud;
} dec;

static int dfail(dec *d, const char *what) {
    if (d->err)
        return d->err;
    lua_pushfstring(d->L, "corrupt value at byte %d: %s", (int)(d->p - d->start), what);
    lua_replace(d->L, d->msg);
    return d->err = FFLUA_ECORRUPT;
}

static int get_le(dec *d, int n, uint64_t *v) {
    if (d->end - d->p < n)
        return dfail(d, "truncated");
    uint64_t x = 0;
    for (int i = 0; i < n; i++)
        x |= (uint64_t)d->p[i] << (8 * i);
    d->p += n;
    *v = x;
    return 0;
}

static int get_varint(dec *d, uint64_t *v) {
    uint64_t x = 0;
    for (int i = 0; i < 10; i++) {
        if (d->p >= d->end)
            return dfail(d, "truncated");
        unsigned c = *d->p++;
        if (i == 9 && c > 1)
            return dfail(d, "varint overflows 64 bits");
        x |= (uint64_t)(c & 0x7f) << (7 * i);
        if (!(c & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return dfail(d, "varint too long");
}

/* Reads a string value (either string tag) without pushing it. */
static int get_str(dec *d, const char **s, size_t *n) {
    if (d->p >= d->end)
        return dfail(d, "truncated");
    unsigned t = *d->p++;
    uint64_t len;
    if ((t & 0xc0) == T_SHORTSTR) {
        len = t & 0x3f;
    } else if (t == T_STR) {
        if (get_varint(d, &len))
            return d->err;
    } else {
        d->p--;
        return dfail(d, "a string was expected");
    }
    if (len > (uint64_t)(d->end - d->p))
        return dfail(d, "string longer than the data");
    *s = (const char *)d->p;
    *n = (size_t)len;
    d->p += len;
    return 0;
}

static int dec_value(dec *d);

static void dneed(dec *d, int slot) {
    if (!lua_isnil(d->L, slot))
        return;
    if (slot == d->reg)
        ffc_push_registry(d->L);
    else
        lua_newtable(d->L);
    lua_replace(d->L, slot);
}

/* Decodes a table body into the table at the top. */
static int dec_table_body(dec *d, int t) {
    lua_State *L = d->L;
    uint64_t narr, nhash;
    if (get_varint(d, &narr) || get_le(d, 4, &nhash))
        return d->err;
    size_t left = (size_t)(d->end - d->p);
    if (narr > left || nhash > (left - narr) / 2)
        return dfail(d, "table larger than the data");
    if (narr > INT32_MAX || nhash > INT32_MAX)
        return dfail(d, "table too large");
    for (uint64_t i = 1; i <= narr; i++) {
        if (dec_value(d))
            return d->err;
        if (lua_isnil(L, -1))
            lua_pop(L, 1);
        else
            lua_rawseti(L, t, (lua_Integer)i);
    }
    for (uint64_t i = 0; i < nhash; i++) {
        if (dec_value(d))
            return d->err;
        int kt = lua_type(L, -1);
        if (kt == LUA_TNIL ||
            (kt == LUA_TNUMBER && !lua_isinteger(L, -1) && isnan(lua_tonumber(L, -1)))) {
            lua_pop(L, 1);
            return dfail(d, "a table key is nil or NaN");
        }
        if (dec_value(d)) {
            lua_pop(L, 1);
            return d->err;
        }
        lua_rawset(L, t);
    }
    return 0;
}

/* Peeks the table header sizes for lua_createtable (validated later, so
 * bounded here by what the data could hold). */
static void peek_sizes(dec *d, int *na, int *nh) {
    uint64_t narr = 0, nhash = 0;
    const unsigned char *p = d->p;
    for (int i = 0; i < 10 && p < d->end; i++) {
        narr |= (uint64_t)(*p & 0x7f) << (7 * i);
        if (!(*p++ & 0x80))
            break;
    }
    if (d->end - p >= 4)
        nhash = (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24;
    size_t left = (size_t)(d->end - d->p);
    /* Each table may claim every byte left, and nested tables claim them
     * again: one budget for the whole value keeps the sizes made in
     * advance proportional to its length, not to depth times length. */
    if (narr > left || narr > d->presize)
        narr = 0;
    d->presize -= (size_t)narr;
    if (nhash > left / 2 || nhash > d->presize)
        nhash = 0;
    d->presize -= (size_t)nhash;
    *na = (int)narr;
    *nh = (int)nhash;
}

static int new_ref(dec *d) {
    dneed(d, d->refs);
    lua_pushvalue(d->L, -1);
    lua_rawseti(d->L, d->refs, ++d->nrefs);
    return 0;
}

static int dec_table(dec *d, int klass) {
    lua_State *L = d->L;
    if (d->depth >= FFC_MAX_DEPTH)
        return dfail(d, "tables nested more than " FFLUA_STRINGIFY(FFC_MAX_DEPTH) " levels deep");
    if (!lua_checkstack(L, 8))
        return dfail(d, "nested too deep for the Lua stack");
    if (d->p >= d->end || *d->p != T_TABLE)
        return dfail(d, "a table was expected");
    d->p++;
    int na, nh;
    peek_sizes(d, &na, &nh);
    lua_createtable(L, na, nh);
    int t = lua_gettop(L);
    new_ref(d);
    d->depth++;
    int rc = dec_table_body(d, t);
    d->depth--;
    if (rc) {
        lua_remove(L, t);
        return rc;
    }
    if (klass) { /* [mt, t] */
        lua_pushvalue(L, t - 1);
        lua_setmetatable(L, t);
        lua_remove(L, t - 1);
    }
    return 0;
}

static int dec_serialized(dec *d) {
    lua_State *L = d->L;
    const char *name, *bytes;
    size_t nn, nb;
    if (get_str(d, &name, &nn) || get_str(d, &bytes, &nb))
        return d->err;
    dneed(d, d->reg);
    dneed(d, d->refs);
    lua_Integer slot = ++d->nrefs; /* reserved: refs to it follow it */
    lua_getfield(L, d->reg, "ser_names");
    lua_pushlstring(L, name, nn);
    if (lua_rawget(L, -2) != LUA_TTABLE) {
        lua_pop(L, 2);
        if (d->flags & FFC_INSPECT) {
            lua_createtable(L, 0, 2);
            lua_pushlstring(L, name, nn);
            lua_setfield(L, -2, "__ffserializer");
            lua_pushlstring(L, bytes, nb);
            lua_setfield(L, -2, "bytes");
        } else {
            lua_pushfstring(L, "no serializer named '%s' is registered",
                            ffl_push_short(L, name, nn));
            lua_replace(L, d->msg);
            return d->err = FFLUA_ENOSERIAL;
        }
    } else {
        lua_getfield(L, -1, "unpack");
        lua_pushlstring(L, bytes, nb);
        if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
            const char *why = luaL_tolstring(L, -1, NULL);
            lua_pushfstring(L, "serializer '%s' failed to unpack: %s", ffl_push_short(L, name, nn),
                            why);
            lua_replace(L, d->msg);
            return d->err = FFLUA_ELUA;
        }
        lua_replace(L, -3);
        lua_pop(L, 1);
    }
    lua_pushvalue(L, -1);
    lua_rawseti(L, d->refs, slot);
    return 0;
}

/* A task argument standing for another task's result, maybe indexed. */
static int dec_node(dec *d) {
    lua_State *L = d->L;
    uint64_t slot, nkeys;
    if (get_varint(d, &slot))
        return d->err;
    if (d->node_hook(d->hook_ud, L, slot) != 0) {
        lua_replace(L, d->msg);
        return d->err = FFLUA_ELUA;
    }
    if (get_varint(d, &nkeys))
        return d->err;
    if (nkeys > (uint64_t)(d->end - d->p))
        return dfail(d, "more keys than data");
    for (uint64_t i = 0; i < nkeys; i++) {
        if (dec_value(d))
            return d->err;
        lua_gettable(L, -2); /* may run __index: a task's own code */
        lua_remove(L, -2);
    }
    return 0;
}

/* FFC_CODE's T_ENV: the environment of a function shipped here. Without
 * (global, module) pairs, the globals; with them, a table of its own that
 * binds each global name to require(module) (a module that does not load
 * here is left out: only a function that uses it can fail) and passes
 * every other name, read or written, to the globals. The receiver's
 * globals themselves never change, so what one driver's functions bring
 * cannot reach another's. Later T_ENVs of the value (no pairs) share it. */
static int dec_env(dec *d) {
    lua_State *L = d->L;
    uint64_t n;
    if (get_varint(d, &n))
        return d->err;
    if (n > (uint64_t)(d->end - d->p))
        return dfail(d, "more globals than data");
    if (n == 0) {
        if (d->env != 0)
            lua_pushvalue(L, d->env);
        else
            lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
        return 0;
    }
    lua_createtable(L, 0, (int)(n < 64 ? n : 64)); /* [env] */
    int env = lua_gettop(L);
    lua_createtable(L, 0, 2);
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
    lua_setfield(L, -2, "__index");
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
    lua_setfield(L, -2, "__newindex");
    lua_setmetatable(L, env);
    for (uint64_t k = 0; k < n; k++) {
        const char *name, *m;
        size_t nl, ml;
        if (get_str(d, &name, &nl) || get_str(d, &m, &ml))
            return d->err;
        if (memchr(m, '\0', ml) != NULL)
            continue;
        lua_getglobal(L, "require");
        lua_pushlstring(L, m, ml);
        if (lua_pcall(L, 1, 1, 0) == LUA_OK && !lua_isnil(L, -1)) {
            lua_pushlstring(L, name, nl);
            lua_insert(L, -2);
            lua_rawset(L, env);
        } else {
            lua_pop(L, 1);
        }
    }
    if (d->env == 0) {
        lua_pushvalue(L, env);
        lua_replace(L, d->envslot);
        d->env = d->envslot;
    }
    return 0;
}

/* FFC_CODE: require(module)[field] (field empty: the module). */
static int dec_module(dec *d) {
    lua_State *L = d->L;
    const char *m, *f;
    size_t ml, fl;
    if (get_str(d, &m, &ml) || get_str(d, &f, &fl))
        return d->err;
    lua_getglobal(L, "require");
    lua_pushlstring(L, m, ml);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        const char *why = luaL_tolstring(L, -1, NULL);
        lua_pushfstring(L, "module '%s' cannot be loaded here: %s", ffl_push_short(L, m, ml), why);
        lua_replace(L, d->msg);
        return d->err = FFLUA_ELUA;
    }
    if (fl > 0) {
        if (lua_type(L, -1) != LUA_TTABLE) {
            lua_pushfstring(L, "module '%s' is not a table here", ffl_push_short(L, m, ml));
            lua_replace(L, d->msg);
            return d->err = FFLUA_ELUA;
        }
        lua_pushlstring(L, f, fl);
        lua_rawget(L, -2);
        lua_remove(L, -2);
    }
    return 0;
}

/* FFC_CODE: bytecode (a string), the upvalue count, the upvalues. The
 * function is a reference target before its upvalues are read, so it may
 * refer to itself. */
/* T_UPREF as upvalue i of the function at f: joined to upvalue n of a
 * function decoded before (or being decoded). */
static int dec_upref(dec *d, int f, int i) {
    lua_State *L = d->L;
    uint64_t v, n;
    d->p++;
    if (get_varint(d, &v) || get_varint(d, &n))
        return d->err;
    if (v >= (uint64_t)d->nrefs)
        return dfail(d, "an upvalue of a function not yet seen");
    lua_rawgeti(L, d->refs, (lua_Integer)v + 1);
    lua_Debug ar;
    if (lua_type(L, -1) != LUA_TFUNCTION || lua_iscfunction(L, -1)) {
        lua_pop(L, 1);
        return dfail(d, "an upvalue of something that is not a Lua function");
    }
    lua_pushvalue(L, -1);
    lua_getinfo(L, ">u", &ar);
    if (n < 1 || n > ar.nups) {
        lua_pop(L, 1);
        return dfail(d, "an upvalue the function does not have");
    }
    lua_upvaluejoin(L, f, i, lua_gettop(L), (int)n);
    lua_pop(L, 1);
    return 0;
}

static int dec_function(dec *d) {
    lua_State *L = d->L;
    const char *b;
    size_t n;
    uint64_t nups;
    if (get_str(d, &b, &n))
        return d->err;
    if (luaL_loadbufferx(L, b, n, "=(shipped function)", "b") != LUA_OK) {
        lua_pop(L, 1);
        return dfail(d, "bytecode that does not load");
    }
    int f = lua_gettop(L);
    new_ref(d);
    lua_Debug ar;
    lua_pushvalue(L, f);
    lua_getinfo(L, ">u", &ar);
    if (get_varint(d, &nups))
        return d->err;
    if (nups != ar.nups)
        return dfail(d, "upvalue count does not match the bytecode");
    if (d->depth >= FFC_MAX_DEPTH)
        return dfail(d,
                     "functions nested more than " FFLUA_STRINGIFY(FFC_MAX_DEPTH) " levels deep");
    if (!lua_checkstack(L, 8))
        return dfail(d, "nested too deep for the Lua stack");
    d->depth++;
    for (int i = 1; i <= (int)nups; i++) {
        if (d->p < d->end && *d->p == T_UPREF) {
            if (dec_upref(d, f, i)) {
                d->depth--;
                return d->err;
            }
            continue;
        }
        if (dec_value(d)) {
            d->depth--;
            return d->err;
        }
        lua_setupvalue(L, f, i);
    }
    d->depth--;
    return 0;
}

static int dec_value(dec *d) {
    lua_State *L = d->L;
    if (d->p >= d->end)
        return dfail(d, "truncated");
    unsigned t = *d->p;
    if (t & T_SMALLINT) {
        d->p++;
        lua_pushinteger(L, t & 0x7f);
        return 0;
    }
    if ((t & 0xc0) == T_SHORTSTR || t == T_STR) {
        const char *s;
        size_t n;
        if (get_str(d, &s, &n))
            return d->err;
        lua_pushlstring(L, s, n);
        return 0;
    }
    d->p++;
    /* Set by get_le before any use; the 0 is for gcc, which cannot see it
     * without link-time optimization (-DFFLUA_LTO=OFF). */
    uint64_t v = 0;
    switch (t) {
    case T_NIL:
        lua_pushnil(L);
        return 0;
    case T_FALSE:
    case T_TRUE:
        lua_pushboolean(L, t == T_TRUE);
        return 0;
    case T_I8:
    case T_I16:
    case T_I32:
    case T_I64: { /* 1, 2, 4 or 8 bytes, sign-extended */
        int w = 1 << (t - T_I8), shift = 64 - 8 * w;
        if (get_le(d, w, &v))
            return d->err;
        lua_pushinteger(L, (lua_Integer)((int64_t)(v << shift) >> shift));
        return 0;
    }
    case T_F64: {
        if (get_le(d, 8, &v))
            return d->err;
        double x;
        memcpy(&x, &v, 8);
        lua_pushnumber(L, x);
        return 0;
    }
    case T_TABLE:
        d->p--;
        return dec_table(d, 0);
    case T_REF:
        if (get_varint(d, &v))
            return d->err;
        if (v >= (uint64_t)d->nrefs)
            return dfail(d, "reference to a table not yet seen");
        if (lua_rawgeti(L, d->refs, (lua_Integer)v + 1) == LUA_TNIL) {
            lua_pop(L, 1);
            return dfail(d, "reference to a value still being decoded");
        }
        return 0;
    case T_CLASS: {
        const char *name;
        size_t n;
        if (get_str(d, &name, &n))
            return d->err;
        dneed(d, d->reg);
        lua_getfield(L, d->reg, "classes");
        lua_pushlstring(L, name, n);
        if (lua_rawget(L, -2) != LUA_TTABLE) {
            lua_pop(L, 2);
            if (!(d->flags & FFC_INSPECT)) {
                lua_pushfstring(L, "class '%s' is not registered (ff.register_class)",
                                ffl_push_short(L, name, n));
                lua_replace(L, d->msg);
                return d->err = FFLUA_ENOSERIAL;
            }
            lua_createtable(L, 0, 1);
            lua_pushlstring(L, name, n);
            lua_setfield(L, -2, "__ffclass");
        } else {
            lua_remove(L, -2);
        }
        int rc = dec_table(d, 1);
        if (rc)
            lua_pop(L, 1);
        return rc;
    }
    case T_SER:
        return dec_serialized(d);
    case T_FUNC:
        if (!(d->flags & FFC_CODE)) {
            d->p--;
            return dfail(d,
                         "the value claims to be a function: bytecode is never loaded from data");
        }
        return dec_function(d);
    case T_NODE:
        if (d->node_hook == NULL) {
            d->p--;
            return dfail(d, "a task result reference outside a task");
        }
        return dec_node(d);
    case T_MODULE:
    case T_ENV:
        if (!(d->flags & FFC_CODE)) {
            d->p--;
            return dfail(d, "a module reference outside code");
        }
        if (t == T_ENV)
            return dec_env(d);
        return dec_module(d);
    case T_UPREF:
        return dfail(d, "an upvalue reference outside a function's upvalues");
    default:
        d->p--;
        return dfail(d, "unknown tag");
    }
}

static int decode(lua_State *L, const char *p, size_t n, unsigned flags, ffc_node_hook hook,
                  void *ud);

int ffc_decode(lua_State *L, const char *p, size_t n, unsigned flags) {
    return decode(L, p, n, flags, NULL, NULL);
}

int ffc_decode_code(lua_State *L, const char *p, size_t n, ffc_node_hook hook, void *ud) {
    return decode(L, p, n, FFC_CODE, hook, ud);
}

static int decode(lua_State *L, const char *p, size_t n, unsigned flags, ffc_node_hook hook,
                  void *ud) {
    if (!lua_checkstack(L, 16)) {
        lua_pushliteral(L, "Lua stack overflow");
        return -12;
    }
    dec d = {.L = L,
             .p = (const unsigned char *)p,
             .start = (const unsigned char *)p,
             .end = (const unsigned char *)p + n,
             .flags = flags,
             .presize = n,
             .node_hook = hook,
             .hook_ud = ud};
    int top = lua_gettop(L);
    lua_settop(L, top + 4);
    d.refs = top + 1;
    d.reg = top + 2;
    d.msg = top + 3;
    d.envslot = top + 4;
    int rc;
    if (n == 0 || d.p[0] != FFC_VERSION) {
        rc = n == 0 ? dfail(&d, "empty") : dfail(&d, "unknown format version");
    } else {
        d.p++;
        if (hook != NULL && n > 1 && d.p[0] == T_TABLE)
            d.depth = -1; /* a task's arguments (FFC_ARGS) */
        rc = dec_value(&d);
        if (rc == 0 && d.p != d.end)
            rc = dfail(&d, "trailing bytes after the value");
    }
    if (d.err != 0)
        rc = d.err;
    if (rc != 0)
        lua_pushvalue(L, d.msg); /* partial values above are dropped */
    lua_replace(L, top + 1);     /* the value or the message */
    lua_settop(L, top + 1);
    return rc;
}

/* --- registry -------------------------------------------------------------- */

void ffc_push_registry(lua_State *L) {
    if (lua_getfield(L, LUA_REGISTRYINDEX, FFC_REGISTRY) == LUA_TTABLE)
        return;
    lua_pop(L, 1);
    lua_createtable(L, 0, 4);
    static const char *const f[] = {"classes", "class_names", "ser", "ser_names"};
    for (int i = 0; i < 4; i++) {
        lua_newtable(L);
        lua_setfield(L, -2, f[i]);
    }
    lua_pushvalue(L, -1);
    lua_setfield(L, LUA_REGISTRYINDEX, FFC_REGISTRY);
}
