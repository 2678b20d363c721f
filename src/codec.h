/*
 * codec.h: Lua values <-> bytes, the one way a value crosses a boundary (to
 * LMDB, later to the wire).
 *
 * Encoding is exact for every plain value (nil, booleans, integers and
 * floats kept apart and bit-exact, binary strings, tables with any keys,
 * shared references and cycles), plus tables whose metatable is a
 * registered class and values with a registered serializer. What it cannot
 * encode is an error naming the place in the value (".model[3]").
 * Decoding trusts nothing: any byte string gives a value or an error, never
 * a crash, an overread or an allocation out of proportion to its length.
 *
 * The codec's registry (classes and serializers) is one table per Lua state,
 * in the Lua registry under FFC_REGISTRY; see ffc_push_registry.
 */
#ifndef FFLUA_CODEC_H
#define FFLUA_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include <lua.h>

#include "buf.h"

#define FFC_VERSION 1 /* the first byte of every encoded value */
/* The one nesting limit of values: a table (or, in code, a function)
 * inside FFC_MAX_DEPTH - 1 others is the deepest the encoder writes, the
 * decoder reads and a node's argument may hold (the argument scanner uses
 * it too), so whatever is accepted can be stored, shipped and read back. */
#define FFC_MAX_DEPTH 1000
/* Error paths longer than twice this many steps show the first and the
 * last FFC_PATH_KEEP steps with " ... " between. */
#define FFC_PATH_KEEP 4
#define FFC_REGISTRY "functionfuse.codec"

enum {
    FFC_HASH = 1 << 0,    /* fingerprint mode: see below */
    FFC_INSPECT = 1 << 1, /* decode: unknown classes/serializers become
                             placeholders instead of errors */
    FFC_CODE = 1 << 2,    /* functions travel (bytecode and upvalues), loaded
                             modules by name: ONLY between authenticated
                             peers; a decoder without it refuses code */
    FFC_ARGS = 1 << 3,    /* encode: the value is a table of a task's
                             arguments, each of which may nest
                             FFC_MAX_DEPTH deep (the table itself is not a
                             level); ffc_decode_code with a node hook reads
                             it so */
};

typedef struct ffc_enc ffc_enc;

/* Called for a userdata (full or light) before anything else: return 1 if it wrote the
 * value (with ffc_put_*), 0 to go on as usual, or -1 with an error message
 * pushed to fail the encoding (the message gets the path). */
typedef int (*ffc_ud_hook)(void *ud, ffc_enc *e, lua_State *L, int idx);

typedef struct ffc_opts {
    unsigned flags;
    ffc_ud_hook ud_hook;
    void *hook_ud;
    int modmap; /* FFC_HASH: stack index of a ffc_push_modmap table, or 0 */
} ffc_opts;

/* Appends the encoding of the value at idx to out (which may hold bytes
 * already). On success returns 0 and leaves the stack as it was. On failure
 * returns an FFLUA_E* code, pushes a message that leads with the reason and
 * ends with a short path ("a function cannot be stored (at .a[3])") and
 * leaves out's length as it was.
 *
 * FFC_HASH mode writes a stable digest input instead of a decodable value:
 * functions become their stripped bytecode plus their upvalues (_ENV is left
 * out), loaded modules (tables and functions reachable from package.loaded)
 * become their names, and what has no encoding (a coroutine, a userdata
 * without serializer) becomes a marker naming its type. */
int ffc_encode(lua_State *L, int idx, const ffc_opts *o, ff_buf *out);

/* Pushes the value encoded in p[0..n) and returns 0, or pushes an error
 * message and returns FFLUA_ECORRUPT (bad bytes) or another FFLUA_E*. */
int ffc_decode(lua_State *L, const char *p, size_t n, unsigned flags);

/* FFC_CODE decoding with a hook for FFC_TAG_NODE (a task's argument that
 * is another task's result): the tag is followed by a varint slot, which
 * the hook pushes (returning 0) or refuses (nonzero, with a message pushed),
 * then a varint count of keys and the keys, which index the value pushed
 * (the result's item, for node[k] arguments). With a hook, the value is a
 * table of arguments as FFC_ARGS encodes it: the table is not a level. */
typedef int (*ffc_node_hook)(void *ud, lua_State *L, uint64_t slot);
int ffc_decode_code(lua_State *L, const char *p, size_t n, ffc_node_hook hook, void *ud);

/* Pushes the map FFC_HASH uses to name modules: every table and function
 * in package.loaded and every function field of those tables, mapped to
 * its name ("math", "math.floor"). Build it once for many encodes. */
void ffc_push_modmap(lua_State *L);

/* For hooks: append raw bytes / a marker tag with a string. */
int ffc_put_bytes(ffc_enc *e, const void *p, size_t n);
int ffc_put_marker(ffc_enc *e, int tag, const void *p, size_t n);
int ffc_put_varint(ffc_enc *e, uint64_t v);

#define FFC_TAG_NODE                                                                               \
    0x0E /* a node: by its fingerprint (FFC_HASH), by its
                            parent slot and keys (FFC_CODE, tasks) */

/* One step of a path into a value: the key at stack index key, else the
 * array position i when what is NULL, else a description ("upvalue 'x'",
 * "metatable"). */
typedef struct ffc_step {
    int key;
    lua_Integer i;
    const char *what;
} ffc_step;

/* Pushes the path steps[0..n) describe, ".a[3].b", shortened past
 * 2 * FFC_PATH_KEEP steps (".a.b.c.d ... .w.x.y.z"); long keys are
 * shortened too, so the result is short whatever the value. Stack effect:
 * +1. */
void ffc_push_path(lua_State *L, const ffc_step *steps, int n);

/* Pushes the codec registry of this state (creating it). Fields: classes
 * (name -> mt), class_names (mt -> name), ser (mt -> {name, pack, unpack}),
 * ser_names (name -> the same). */
void ffc_push_registry(lua_State *L);

#endif
