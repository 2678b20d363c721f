/*
 * lfs.c: the file helpers of the stdlib's fs and shell modules
 * (stdlib/fs.lua, stdlib/shell.lua), functions of functionfuse.core:
 *
 *   core.file_hash(path) -> hex | nil, "ENAME: msg", "ENAME"
 *   core.file_read(path) -> content, hex | nil, "ENAME: msg", "ENAME"
 *   core.dir_list(path) -> names, kinds | nil, "ENAME: msg", "ENAME"
 *   core.fnmatch(pattern, name) -> boolean
 *
 * file_hash is the XXH3-128 hash of a file's content, read in a stream
 * (any size, constant memory), as 32 lowercase hex digits: what a node
 * that reads a file puts among its arguments, so that its fingerprint
 * covers the content; file_read also returns the content, read once.
 * Both refuse what is not a regular file (after symbolic links: a FIFO
 * would block, a device never end). dir_list gives a directory's entries (not "." and
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

/* What a call holds while it may raise (a memory error pushing a chunk or
 * a name): a userdata whose __gc releases it, so nothing leaks. Released
 * explicitly (res_release) on every normal path. */
struct res {
    int fd;
    DIR *dir;
    XXH3_state_t *s;
    char *buf;
};

static void res_release(struct res *r) {
    if (r->fd >= 0)
        close(r->fd);
    if (r->dir != NULL)
        closedir(r->dir);
    XXH3_freeState(r->s);
    free(r->buf);
    r->fd = -1;
    r->dir = NULL;
    r->s = NULL;
    r->buf = NULL;
}

static int res_gc(lua_State *L) {
    res_release(lua_touserdata(L, 1));
    return 0;
}

/* Pushes a new, empty resource box. Stack effect: +1. */
static struct res *res_push(lua_State *L) {
    struct res *r = lua_newuserdatauv(L, sizeof *r, 0);
    *r = (struct res){-1, NULL, NULL, NULL};
    if (luaL_newmetatable(L, "functionfuse.FsResources")) {
        lua_pushcfunction(L, res_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    return r;
}

/* Opens path for reading if it is a regular file (after symbolic links):
 * a FIFO or a device would block or never end. The fd, or -1 with the
 * failure pushed (+3). */
static int open_regular(lua_State *L, const char *path) {
    int fd;
    do /* O_NONBLOCK: opening a FIFO does not wait for a writer */
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    while (fd < 0 && errno == EINTR);
    if (fd < 0) {
        push_fail(L, "cannot read", path, errno);
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        int isdir = S_ISDIR(st.st_mode);
        close(fd);
        if (isdir) {
            push_fail(L, "cannot read", path, EISDIR);
        } else {
            lua_pushnil(L);
            lua_pushfstring(L, "EINVAL: cannot read '%s': not a regular file", path);
            lua_pushliteral(L, "EINVAL");
        }
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    return fd;
}

/* Hashes (and with keep, also returns) the content of a regular file, read
 * once. Stack effect: +1 (hex) or +2 (content, hex), or +3 on failure. */
static int hash_file(lua_State *L, int keep) {
    const char *path = luaL_checkstring(L, 1);
    lua_settop(L, 1);
    struct res *r = res_push(L); /* [path, res] */
    r->fd = open_regular(L, path);
    if (r->fd < 0)
        return 3;
    r->s = XXH3_createState();
    r->buf = malloc(1 << 16);
    if (r->s == NULL || r->buf == NULL) {
        res_release(r);
        return push_fail(L, "cannot hash", path, ENOMEM);
    }
    /* The content is kept as a table of chunks, joined at the end. */
    lua_newtable(L); /* [path, res, chunks] */
    lua_Integer nchunks = 0;
    XXH3_128bits_reset(r->s);
    int e = 0;
    for (;;) {
        ssize_t n = read(r->fd, r->buf, 1 << 16);
        if (n > 0) {
            XXH3_128bits_update(r->s, r->buf, (size_t)n);
            if (keep) {
                lua_pushlstring(L, r->buf, (size_t)n);
                lua_rawseti(L, 3, ++nchunks);
            }
        } else if (n == 0) {
            break;
        } else if (errno != EINTR) {
            e = errno;
            break;
        }
    }
    XXH128_canonical_t dg;
    XXH128_canonicalFromHash(&dg, XXH3_128bits_digest(r->s));
    res_release(r);
    if (e != 0)
        return push_fail(L, "cannot read", path, e);
    if (keep) {
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        for (lua_Integer i = 1; i <= nchunks; i++) {
            lua_rawgeti(L, 3, i);
            luaL_addvalue(&b);
        }
        luaL_pushresult(&b);
    }
    char hex[2 * sizeof dg.digest + 1];
    for (size_t i = 0; i < sizeof dg.digest; i++)
        snprintf(hex + 2 * i, 3, "%02x", dg.digest[i]);
    lua_pushlstring(L, hex, 2 * sizeof dg.digest);
    return keep ? 2 : 1;
}

/* core.file_hash(path) -> hex. Stack effect: +1, or +3 on failure. */
static int ffl_fs_file_hash(lua_State *L) {
    return hash_file(L, 0);
}

/* core.file_read(path) -> content, hex: read once, hashed as read. Stack
 * effect: +2, or +3 on failure. */
static int ffl_fs_file_read(lua_State *L) {
    return hash_file(L, 1);
}

static int cmp_names(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* core.dir_list(path) -> names, kinds. Stack effect: +2, or +3 on failure. */
static int ffl_fs_dir_list(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    lua_settop(L, 1);
    lua_newtable(L); /* [path, names] */
    struct res *r = res_push(L);
    lua_insert(L, 1); /* [res, path, names]: the DIR is closed even if a push raises */
    DIR *d = r->dir = opendir(path);
    if (d == NULL)
        return push_fail(L, "cannot list the directory", path, errno);
    /* Names are collected in the Lua table first, then sorted through a C
     * array of pointers into those strings. */
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
        lua_rawseti(L, 3, ++n);
    }
    res_release(r);
    if (e != 0)
        return push_fail(L, "cannot list the directory", path, e);
    const char **v = lua_newuserdatauv(L, sizeof(char *) * (size_t)(n > 0 ? n : 1), 0);
    for (lua_Integer i = 1; i <= n; i++) { /* the strings stay in names */
        lua_rawgeti(L, 3, i);
        v[i - 1] = lua_tostring(L, -1);
        lua_pop(L, 1);
    }
    qsort(v, (size_t)n, sizeof *v, cmp_names);
    lua_createtable(L, (int)n, 0); /* [res, path, names, v, sorted] */
    lua_createtable(L, (int)n, 0); /* [res, path, names, v, sorted, kinds] */
    for (lua_Integer i = 1; i <= n; i++) {
        lua_pushstring(L, v[i - 1]);
        lua_rawseti(L, 5, i);
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
        lua_rawseti(L, 6, i);
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
    {"file_read", ffl_fs_file_read},
    {"dir_list", ffl_fs_dir_list},
    {"fnmatch", ffl_fs_fnmatch},
    {NULL, NULL},
};
