/*
 * fuzz_codec.c: libFuzzer entry point for the value decoder (src/codec.c).
 *
 * Each input is decoded twice, plain and with FFC_INSPECT, and must give a
 * value or an error message, never a crash (ASan, UBSan) or a memory peak
 * out of proportion to its length. A value decoded plainly holds nothing
 * but plain values (no class or serializer is registered here, so the
 * plain decoder refuses both), so it must encode again, and that encoding
 * must decode. An inspected value may hold a placeholder class, whose
 * metatable is not registered: it may refuse to encode, with ENOSERIAL.
 *
 * Every broken promise calls abort(), which libFuzzer reports as a crash
 * and saves the input. Run it by hand with (docs/building.md, Fuzzing):
 *
 *   build-fuzz/fuzz_codec -max_total_time=20 build-fuzz/fuzz-work/codec \
 *       spec/fuzz/corpus/codec
 *   build-fuzz/fuzz_codec crash-<sha1>          (replays one input)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "codec.h"
#include "fflua.h"

/* One state for the whole run (a harness may keep global state, the
 * library may not), with an allocator that keeps the peak. */
static lua_State *L;
static size_t mem_now, mem_peak;
static unsigned long runs;
static ff_buf buf;

#define GC_EVERY 4096
/* Bytes a decode may allocate per input byte, plus a constant. A decoded
 * value costs at most a few dozen bytes per byte it came from (a 1-byte
 * array slot is a 16-byte TValue, a 6-byte table a Table and a ref). */
#define MEM_PER_BYTE 256
#define MEM_BASE (256 * 1024)

static void *alloc(void *ud, void *p, size_t osize, size_t nsize) {
    (void)ud;
    if (p == NULL)
        osize = 0;
    if (nsize == 0) {
        free(p);
        mem_now -= osize;
        return NULL;
    }
    void *q = realloc(p, nsize);
    if (q == NULL)
        return NULL;
    mem_now += nsize - osize;
    if (mem_now > mem_peak)
        mem_peak = mem_now;
    return q;
}

static int panic(lua_State *l) {
    fprintf(stderr, "fuzz_codec: Lua panic: %s\n", lua_tostring(l, -1));
    abort();
}

#define CHECK(c, ...)                                                                              \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "fuzz_codec: %s:%d: %s: ", __FILE__, __LINE__, #c);                    \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static const char *msg(void) {
    const char *s = lua_tostring(L, -1);
    return s ? s : "(no message)";
}

/* Decodes p[0..n) with flags; checks the stack and the memory peak.
 * Leaves the value or the message at the top. */
static int decode(const char *p, size_t n, unsigned flags) {
    int top = lua_gettop(L);
    size_t before = mem_now;
    mem_peak = mem_now;
    int rc = ffc_decode(L, p, n, flags);
    CHECK(lua_gettop(L) == top + 1, "decode left %d values", lua_gettop(L) - top);
    CHECK(rc == 0 || lua_type(L, -1) == LUA_TSTRING, "error %d without a message", rc);
    CHECK(rc == 0 || rc == FFLUA_ECORRUPT || rc == FFLUA_ENOSERIAL, "unexpected error %d: %s", rc,
          msg());
    CHECK(mem_peak - before <= (size_t)MEM_PER_BYTE * n + MEM_BASE,
          "decoding %zu bytes allocated %zu bytes at the peak", n, mem_peak - before);
    return rc;
}

/* Encodes the value at the top into buf (emptied first). */
static int encode(void) {
    int top = lua_gettop(L);
    buf.n = 0;
    int rc = ffc_encode(L, -1, NULL, &buf);
    CHECK(lua_gettop(L) == top + (rc != 0), "encode left %d values", lua_gettop(L) - top);
    CHECK(rc == 0 || lua_type(L, -1) == LUA_TSTRING, "error %d without a message", rc);
    return rc;
}

/* Decodes with flags; when plain succeeded first, this must too. Returns
 * the decode's result. */
static int round_trip(const uint8_t *data, size_t size, unsigned flags, int plain_ok) {
    int top = lua_gettop(L);
    int rc = decode((const char *)data, size, flags);
    CHECK(!plain_ok || rc == 0, "decoded plainly but not with flags %u: %s", flags, msg());
    if (rc == 0) {
        int erc = encode();
        /* Only a placeholder class of FFC_INSPECT may refuse to encode. */
        CHECK(erc == 0 || (erc == FFLUA_ENOSERIAL && (flags & FFC_INSPECT) && !plain_ok),
              "a decoded value does not encode (flags %u): %d %s", flags, erc, msg());
        if (erc == 0) {
            int drc = decode(buf.p, buf.n, flags);
            CHECK(drc == 0, "a re-encoding does not decode (flags %u): %s", flags, msg());
        }
    }
    lua_settop(L, top);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (L == NULL) {
        L = lua_newstate(alloc, NULL);
        CHECK(L != NULL, "cannot create a Lua state");
        lua_atpanic(L, panic);
        luaL_openlibs(L);
    }
    int rc = round_trip(data, size, 0, 0);
    round_trip(data, size, FFC_INSPECT, rc == 0);
    CHECK(lua_gettop(L) == 0, "stack not balanced: %d", lua_gettop(L));
    if (++runs % GC_EVERY == 0)
        lua_gc(L, LUA_GCCOLLECT);
    return 0;
}
