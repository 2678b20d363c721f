/*
 * lloader.c: how `require` finds the fflua Lua package.
 *
 * fflua_open() registers functionfuse.core in package.preload and inserts one
 * searcher after the preload searcher. For the module "functionfuse" and
 * every "functionfuse.*" module the searcher looks, in order:
 *
 *   1. in a source tree: $FFLUA_TREE when that variable is set (an empty value
 *      turns this step off), otherwise the tree this binary was built from in
 *      a development build (FFLUA_SOURCE_TREE) when it still exists, so
 *      editing lua/ needs no rebuild. `-E` (LUA_NOENV) ignores $FFLUA_TREE;
 *   2. in the copy compiled into the binary (embedded.h), so a copied fflua
 *      needs no files at all.
 *
 * Module names map to files as embedgen maps them: functionfuse.a.b is
 * lua/functionfuse/a/b.lua or lua/functionfuse/a/b/init.lua, and
 * functionfuse.stdlib.x is stdlib/x.lua or stdlib/x/init.lua.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "embedded.h"
#include "fflua.h"

#define FF_PKG "functionfuse"
#define FF_STDLIB FF_PKG ".stdlib"

static int is_ours(const char *name) {
    size_t n = strlen(FF_PKG);
    return strncmp(name, FF_PKG, n) == 0 && (name[n] == '\0' || name[n] == '.');
}

static const struct ff_embedded_module *find_embedded(const char *name) {
    size_t lo = 0, hi = ff_embedded_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, ff_embedded_modules[mid].name);
        if (c == 0)
            return &ff_embedded_modules[mid];
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

/* The source tree to prefer, or NULL. */
static const char *tree_root(lua_State *L) {
    lua_getfield(L, LUA_REGISTRYINDEX, "LUA_NOENV");
    int noenv = lua_toboolean(L, -1);
    lua_pop(L, 1);
    const char *env = noenv ? NULL : getenv("FFLUA_TREE");
    if (env != NULL)
        return env[0] != '\0' ? env : NULL;
#ifdef FFLUA_SOURCE_TREE
    if (access(FFLUA_SOURCE_TREE "/lua/" FF_PKG "/init.lua", R_OK) == 0)
        return FFLUA_SOURCE_TREE;
#endif
    return NULL;
}

/* Pushes the relative path stem of a module: "lua/functionfuse/a/b" or
 * "stdlib/x". */
static void push_stem(lua_State *L, const char *name) {
    size_t n = strlen(FF_STDLIB);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    if (strncmp(name, FF_STDLIB ".", n + 1) == 0) {
        luaL_addstring(&b, "stdlib/");
        name += n + 1;
    } else {
        luaL_addstring(&b, "lua/");
    }
    for (; *name; name++)
        luaL_addchar(&b, *name == '.' ? '/' : *name);
    luaL_pushresult(&b);
}

/* Tries root/stem.lua and root/stem/init.lua. On success pushes the loader
 * and the file name and returns 2; otherwise pushes nothing and returns 0 (or raises on a syntax error, as Lua's own
 * file searcher does). */
static int search_tree(lua_State *L, const char *root, const char *name) {
    static const char *const suffixes[] = {".lua", "/init.lua"};
    push_stem(L, name); /* [stem] */
    for (int i = 0; i < 2; i++) {
        const char *file = lua_pushfstring(L, "%s/%s%s", root, lua_tostring(L, -1), suffixes[i]);
        /* [stem, file] */
        if (access(file, R_OK) == 0) {
            if (luaL_loadfilex(L, file, "t") != LUA_OK)
                return luaL_error(L, "error loading module '%s' from file '%s':\n\t%s", name, file,
                                  lua_tostring(L, -1));
            /* [stem, file, loader] */
            lua_rotate(L, -3, 1); /* [loader, stem, file] */
            lua_remove(L, -2);    /* [loader, file] */
            return 2;
        }
        lua_pop(L, 1); /* [stem] */
    }
    lua_pop(L, 1);
    return 0;
}

/* package.searchers entry: (name) -> loader, extra | message | nil */
static int ffl_loader_search(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    if (!is_ours(name))
        return 0;
    const char *root = tree_root(L);
    if (root != NULL) {
        int n = search_tree(L, root, name);
        if (n > 0)
            return n;
    }
    const struct ff_embedded_module *m = find_embedded(name);
    if (m == NULL) {
        lua_pushfstring(L, "no embedded module '%s'%s%s", name, root ? " and no file in " : "",
                        root ? root : "");
        return 1;
    }
    if (luaL_loadbufferx(L, m->data, m->len, m->chunkname, "t") != LUA_OK)
        return luaL_error(L, "error loading embedded module '%s':\n\t%s", name,
                          lua_tostring(L, -1));
    lua_pushstring(L, m->chunkname + 1);
    return 2;
}

int fflua_open(lua_State *L) {
    int top = lua_gettop(L);
    lua_getglobal(L, "package"); /* [package] */
    if (!lua_istable(L, -1)) {
        lua_settop(L, top);
        return FFLUA_EINTERNAL;
    }
    lua_getfield(L, -1, "preload");   /* [package, preload] */
    lua_getfield(L, -2, "searchers"); /* [package, preload, searchers] */
    if (!lua_istable(L, -2) || !lua_istable(L, -1)) {
        lua_settop(L, top);
        return FFLUA_EINTERNAL;
    }
    /* Once per state: a second call (fflua_attach on a state the host
     * opened with fflua_open) finds the loader in place. */
    lua_getfield(L, -2, FF_PKG ".core");
    int done = lua_tocfunction(L, -1) == luaopen_functionfuse_core;
    lua_pop(L, 1);
    if (done) {
        lua_settop(L, top);
        return 0;
    }
    lua_pushcfunction(L, luaopen_functionfuse_core);
    lua_setfield(L, -3, FF_PKG ".core");

    /* Insert at position 2, after the preload searcher. */
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    for (lua_Integer i = n; i >= 2; i--) {
        lua_rawgeti(L, -1, i);
        lua_rawseti(L, -2, i + 1);
    }
    lua_pushcfunction(L, ffl_loader_search);
    lua_rawseti(L, -2, n >= 1 ? 2 : 1);
    lua_settop(L, top);
    return 0;
}
