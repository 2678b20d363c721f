/*
 * lfs.c: the file helpers of the stdlib's fs and shell modules
 * (stdlib/fs.lua, stdlib/shell.lua), functions of functionfuse.core:
 *
 *   core.file_hash(path) -> hex | nil, "ENAME: msg", "ENAME"
 *   core.dir_list(path) -> names, kinds | nil, "ENAME: msg", "ENAME"
 *   core.fnmatch(pattern, name) -> boolean
 *
 * file_hash is the XXH3-128 hash of a file's content, read in a stream
 * (any size, constant memory), as 32 lowercase hex digits: what a node
 * that reads a file puts among its arguments, so that its fingerprint
 * covers the content. dir_list gives a directory's entries (not "." and
 * "..") sorted bytewise, with each one's kind: "file", "directory",
 * "link" (to anything: never followed) or "other".
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include <xxhash.h>

#include "fflua.h"
#include "lfs.h"

/* Pushes nil, "ENAME: <what> '<path>': <strerror>", "ENAME". Stack
 * effect: +3. */
static int push_fail(lua_State *L, const char *what, const char *path, int e) {
    const char *name = fflua_err_name(-e);
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s '%s': %s", name, what, path, strerror(e));
    lua_pushstring(L, name);
    return 3;
}

/* core.file_hash(path) -> hex. Stack effect: +1, or +3 on failure. */
static int ffl_fs_file_hash(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    int fd;
    do
        fd = open(path, O_RDONLY | O_CLOEXEC);
    while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return push_fail(L, "cannot read", path, errno);
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        close(fd);
        return push_fail(L, "cannot read", path, EISDIR);
    }
    XXH3_state_t *s = XXH3_createState();
    char *buf = malloc(1 << 16);
    if (s == NULL || buf == NULL) {
        XXH3_freeState(s);
        free(buf);
        close(fd);
        return push_fail(L, "cannot hash", path, ENOMEM);
    }
    XXH3_128bits_reset(s);
    int e = 0;
    for (;;) {
        ssize_t n = read(fd, buf, 1 << 16);
        if (n > 0) {
            XXH3_128bits_update(s, buf, (size_t)n);
        } else if (n == 0) {
            break;
        } else if (errno != EINTR) {
            e = errno;
            break;
        }
    }
    XXH128_canonical_t dg;
    XXH128_canonicalFromHash(&dg, XXH3_128bits_digest(s));
    XXH3_freeState(s);
    free(buf);
    close(fd);
    if (e != 0)
        return push_fail(L, "cannot read", path, e);
    char hex[2 * sizeof dg.digest + 1];
    for (size_t i = 0; i < sizeof dg.digest; i++)
        snprintf(hex + 2 * i, 3, "%02x", dg.digest[i]);
    lua_pushlstring(L, hex, 2 * sizeof dg.digest);
    return 1;
}

static int cmp_names(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* core.dir_list(path) -> names, kinds. Stack effect: +2, or +3 on failure. */
static int ffl_fs_dir_list(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    lua_settop(L, 1);
    lua_newtable(L); /* [path, names] */
    DIR *d = opendir(path);
    if (d == NULL)
        return push_fail(L, "cannot list the directory", path, errno);
    /* Names are collected in the Lua table first (so a memory error
     * leaves nothing of ours behind but the DIR, closed below), then
     * sorted through a C array of pointers into those strings. */
    int e = 0;
    lua_Integer n = 0;
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(d);
        if (de == NULL) {
            e = errno;
            break;
        }
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        lua_pushstring(L, de->d_name);
        lua_rawseti(L, 2, ++n);
    }
    closedir(d);
    if (e != 0)
        return push_fail(L, "cannot list the directory", path, e);
    const char **v = lua_newuserdatauv(L, sizeof(char *) * (size_t)(n > 0 ? n : 1), 0);
    for (lua_Integer i = 1; i <= n; i++) { /* the strings stay in names */
        lua_rawgeti(L, 2, i);
        v[i - 1] = lua_tostring(L, -1);
        lua_pop(L, 1);
    }
    qsort(v, (size_t)n, sizeof *v, cmp_names);
    lua_createtable(L, (int)n, 0); /* [path, names, v, sorted] */
    lua_createtable(L, (int)n, 0); /* [path, names, v, sorted, kinds] */
    for (lua_Integer i = 1; i <= n; i++) {
        lua_pushstring(L, v[i - 1]);
        lua_rawseti(L, 4, i);
        lua_pushfstring(L, "%s/%s", path, v[i - 1]);
        struct stat st;
        const char *kind = "other";
        if (lstat(lua_tostring(L, -1), &st) == 0)
            kind = S_ISREG(st.st_mode)   ? "file"
                   : S_ISDIR(st.st_mode) ? "directory"
                   : S_ISLNK(st.st_mode) ? "link"
                                         : "other";
        lua_pop(L, 1);
        lua_pushstring(L, kind);
        lua_rawseti(L, 5, i);
    }
    return 2;
}

/* core.fnmatch(pattern, name) -> whether name matches the glob pattern
 * (fnmatch(3) with FNM_PERIOD: a leading '.' only matches a '.'). Stack
 * effect: +1. */
static int ffl_fs_fnmatch(lua_State *L) {
    const char *pat = luaL_checkstring(L, 1);
    const char *name = luaL_checkstring(L, 2);
    lua_pushboolean(L, fnmatch(pat, name, FNM_PERIOD) == 0);
    return 1;
}

const luaL_Reg ffl_fs_funcs[] = {
    {"file_hash", ffl_fs_file_hash},
    {"dir_list", ffl_fs_dir_list},
    {"fnmatch", ffl_fs_fnmatch},
    {NULL, NULL},
};
