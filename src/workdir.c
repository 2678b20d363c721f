/*
 * workdir.c: packing a working directory into a blob, checking a blob and
 * unpacking it (workdir.h has the format). The packer walks the tree
 * twice over: once to list and size what goes in (so that a directory
 * over a cap is refused with its real size before anything is read), then
 * to read the files into the blob. The unpacker trusts nothing: every
 * path is checked component by component, every parent must be a
 * directory it made itself, and files are made with O_EXCL|O_NOFOLLOW, so
 * a hostile blob can neither escape the directory nor overwrite anything.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <xxhash.h>

#include "fflua.h"
#include "net.h"
#include "workdir.h"

#define WD_MAGIC "FFWD"
#define WD_VERSION 1
enum { WD_DIR = 1, WD_FILE = 2, WD_EXEC = 3 };

void ff_wd_hash(const char *p, size_t n, unsigned char out[FF_WD_HASH_LEN]) {
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, XXH3_128bits(p, n));
    memcpy(out, c.digest, FF_WD_HASH_LEN);
}

/* --- packing ------------------------------------------------------------- */

typedef struct wd_entry {
    char *path; /* relative */
    int kind;
    size_t size;
} wd_entry;

typedef struct wd_walk {
    const char *top;
    char *top_real; /* realpath(top), for links */
    size_t top_real_len;
    struct stat *excl;
    size_t nexcl;
    wd_entry *e;
    size_t n, cap;
    uint64_t bytes;
    char *err;
    size_t errlen;
} wd_walk;

static int skip_dir(const char *name) {
    return strcmp(name, ".git") == 0 || strcmp(name, "CMakeFiles") == 0 ||
           strcmp(name, "build") == 0 || strncmp(name, "build-", 6) == 0;
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int add_entry(wd_walk *w, const char *rel, int kind, size_t size) {
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 64;
        wd_entry *e = realloc(w->e, cap * sizeof *e);
        if (e == NULL)
            return -ENOMEM;
        w->e = e;
        w->cap = cap;
    }
    char *p = strdup(rel);
    if (p == NULL)
        return -ENOMEM;
    w->e[w->n++] = (wd_entry){p, kind, size};
    w->bytes += size;
    return 0;
}

/* Whether the link at abs points to a regular file inside the top: 0 and
 * its stat, or -EINVAL with why in w->err. */
static int follow_link(wd_walk *w, const char *abs, const char *rel, struct stat *st) {
    char *real = realpath(abs, NULL);
    int inside = real != NULL && strncmp(real, w->top_real, w->top_real_len) == 0 &&
                 real[w->top_real_len] == '/';
    int ok = inside && stat(real, st) == 0 && S_ISREG(st->st_mode);
    free(real);
    if (ok)
        return 0;
    snprintf(w->err, w->errlen,
             "working_dir '%s': the symbolic link '%s' %s: only links to files inside the "
             "directory are followed (packed as copies)",
             w->top, rel,
             !inside ? "leads outside the directory (or nowhere)" : "does not lead to a file");
    return -EINVAL;
}

/* Lists directory rel (abs on disk) into w, sorted, depth first. */
static int walk(wd_walk *w, const char *abs, const char *rel) {
    DIR *d = opendir(abs);
    if (d == NULL) {
        int e = errno;
        snprintf(w->err, w->errlen, "working_dir '%s': cannot read '%s': %s", w->top,
                 rel[0] ? rel : ".", strerror(e));
        return -e;
    }
    char **names = NULL;
    size_t nn = 0, cap = 0;
    int rc = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (nn == cap) {
            cap = cap ? cap * 2 : 32;
            char **nw = realloc(names, cap * sizeof *nw);
            if (nw == NULL) {
                rc = -ENOMEM;
                break;
            }
            names = nw;
        }
        if ((names[nn] = strdup(de->d_name)) == NULL) {
            rc = -ENOMEM;
            break;
        }
        nn++;
    }
    closedir(d);
    if (names != NULL)
        qsort(names, nn, sizeof *names, by_name);
    size_t la = strlen(abs), lr = strlen(rel);
    for (size_t i = 0; i < nn && rc == 0; i++) {
        size_t ln = strlen(names[i]);
        char *a = malloc(la + ln + 2), *r = malloc(lr + ln + 2);
        if (a == NULL || r == NULL) {
            free(a);
            free(r);
            rc = -ENOMEM;
            break;
        }
        sprintf(a, "%s/%s", abs, names[i]);
        if (lr)
            sprintf(r, "%s/%s", rel, names[i]);
        else
            strcpy(r, names[i]);
        struct stat st;
        if (lstat(a, &st) != 0) {
            rc = -errno;
            snprintf(w->err, w->errlen, "working_dir '%s': cannot read '%s': %s", w->top, r,
                     strerror(-rc));
        } else if (S_ISLNK(st.st_mode)) {
            rc = follow_link(w, a, r, &st);
            if (rc == 0)
                rc = add_entry(w, r, st.st_mode & 0111 ? WD_EXEC : WD_FILE, (size_t)st.st_size);
        } else if (S_ISDIR(st.st_mode)) {
            int excluded = skip_dir(names[i]);
            for (size_t k = 0; k < w->nexcl && !excluded; k++)
                excluded = w->excl[k].st_dev == st.st_dev && w->excl[k].st_ino == st.st_ino;
            if (!excluded && (rc = add_entry(w, r, WD_DIR, 0)) == 0)
                rc = walk(w, a, r);
        } else if (S_ISREG(st.st_mode)) {
            rc = add_entry(w, r, st.st_mode & 0111 ? WD_EXEC : WD_FILE, (size_t)st.st_size);
        } /* sockets, FIFOs, devices: left out */
        free(a);
        free(r);
    }
    for (size_t i = 0; i < nn; i++)
        free(names[i]);
    free(names);
    if (rc == -ENOMEM && w->err[0] == '\0')
        snprintf(w->err, w->errlen, "working_dir '%s': not enough memory to list it", w->top);
    return rc;
}

static double mib(uint64_t n) {
    return (double)n / (1 << 20);
}

/* Appends the content of file abs (size bytes as listed) as a str. */
static int pack_file(wd_walk *w, const char *abs, const char *rel, size_t size, ff_buf *out) {
    int fd = open(abs, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        snprintf(w->err, w->errlen, "working_dir '%s': cannot read '%s': %s", w->top, rel,
                 strerror(e));
        return -e;
    }
    ff_wr_varint(out, size);
    int rc = ff_buf_reserve(out, size);
    size_t got = 0;
    while (rc == 0 && got < size) {
        ssize_t k = read(fd, out->p + out->n + got, size - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            rc = k < 0 ? -errno : -EAGAIN;
            snprintf(w->err, w->errlen, "working_dir '%s': cannot read '%s': %s", w->top, rel,
                     k < 0 ? strerror(-rc) : "it shrank while it was packed");
            break;
        }
        got += (size_t)k;
    }
    close(fd);
    if (rc == 0)
        out->n += size;
    return rc;
}

int ff_wd_pack(const char *dir, const char *const *exclude, size_t nexclude, ff_buf *out, char *err,
               size_t errlen) {
    wd_walk w = {.top = dir, .err = err, .errlen = errlen};
    err[0] = '\0';
    struct stat st;
    int e = stat(dir, &st) != 0 ? errno : S_ISDIR(st.st_mode) ? 0 : ENOTDIR;
    if (e != 0) {
        snprintf(err, errlen, "working_dir '%s': %s", dir, strerror(e));
        return -e;
    }
    w.top_real = realpath(dir, NULL);
    w.excl = calloc(nexclude ? nexclude : 1, sizeof *w.excl);
    if (w.top_real == NULL || w.excl == NULL) {
        free(w.top_real);
        free(w.excl);
        snprintf(err, errlen, "working_dir '%s': %s", dir, strerror(ENOMEM));
        return -ENOMEM;
    }
    w.top_real_len = strlen(w.top_real);
    for (size_t k = 0; k < nexclude; k++)
        if (stat(exclude[k], &w.excl[w.nexcl]) == 0)
            w.nexcl++;
    int rc = walk(&w, dir, "");
    if (rc == 0 && w.n > FF_WD_MAX_FILES) {
        snprintf(err, errlen,
                 "working_dir '%s' holds %zu files and directories, more than the %d a "
                 "working directory may have",
                 dir, w.n, FF_WD_MAX_FILES);
        rc = -EFBIG;
    }
    if (rc == 0 && w.bytes > FF_WD_MAX_BYTES) {
        snprintf(err, errlen,
                 "working_dir '%s' holds %.1f MiB of files, more than the %d MiB a working "
                 "directory may have",
                 dir, mib(w.bytes), (int)(FF_WD_MAX_BYTES >> 20));
        rc = -EFBIG;
    }
    if (rc == 0) {
        ff_wr_fixed(out, WD_MAGIC, 4);
        ff_wr_varint(out, WD_VERSION);
        ff_wr_varint(out, w.n);
        size_t ld = strlen(dir);
        for (size_t i = 0; i < w.n && rc == 0; i++) {
            ff_wr_varint(out, (uint64_t)w.e[i].kind);
            ff_wr_str(out, w.e[i].path, strlen(w.e[i].path));
            if (w.e[i].kind == WD_DIR)
                continue;
            char *a = malloc(ld + strlen(w.e[i].path) + 2);
            if (a == NULL) {
                rc = -ENOMEM;
                break;
            }
            sprintf(a, "%s/%s", dir, w.e[i].path);
            rc = pack_file(&w, a, w.e[i].path, w.e[i].size, out);
            free(a);
        }
        if (rc == 0 && out->err != 0)
            rc = out->err;
        if (rc == -ENOMEM && err[0] == '\0')
            snprintf(err, errlen, "working_dir '%s': not enough memory to pack it (%.1f MiB)", dir,
                     mib(w.bytes));
    }
    for (size_t i = 0; i < w.n; i++)
        free(w.e[i].path);
    free(w.e);
    free(w.excl);
    free(w.top_real);
    return rc;
}

/* --- checking and unpacking ---------------------------------------------- */

/* Whether the path (len bytes) is relative and clean: 0, or a reason. */
static const char *bad_path(const char *p, size_t len) {
    if (len == 0)
        return "an empty path";
    if (len >= 4000)
        return "a path too long";
    if (memchr(p, '\0', len) != NULL)
        return "a path with a NUL byte";
    if (p[0] == '/')
        return "an absolute path";
    for (size_t i = 0; i <= len;) {
        size_t j = i;
        while (j < len && p[j] != '/')
            j++;
        size_t c = j - i;
        if (c == 0)
            return "a path with an empty component";
        if ((c == 1 && p[i] == '.') || (c == 2 && p[i] == '.' && p[i + 1] == '.'))
            return "a path with '.' or '..'";
        i = j + 1;
    }
    return NULL;
}

/* Walks a blob; with top set, makes each entry under it. */
static int wd_read(const char *blob, size_t n, const char *top, char *err, size_t errlen) {
    ff_rd r;
    ff_rd_init(&r, blob, n);
    const unsigned char *magic = ff_rd_fixed(&r, 4);
    uint64_t version = ff_rd_varint(&r), count = ff_rd_varint(&r);
    if (r.err || memcmp(magic, WD_MAGIC, 4) != 0 || version != WD_VERSION) {
        snprintf(err, errlen, "not a working directory of this version");
        return FFLUA_EPROTO;
    }
    if (count > FF_WD_MAX_FILES) {
        snprintf(err, errlen, "it has %llu entries, more than %d", (unsigned long long)count,
                 FF_WD_MAX_FILES);
        return FFLUA_EPROTO;
    }
    /* The directories made so far, to check each entry's parent. */
    char **dirs = calloc(count ? count : 1, sizeof *dirs);
    if (dirs == NULL) {
        snprintf(err, errlen, "not enough memory");
        return -ENOMEM;
    }
    size_t ndirs = 0, ltop = top ? strlen(top) : 0;
    uint64_t bytes = 0;
    int rc = 0;
    for (uint64_t i = 0; i < count && rc == 0; i++) {
        uint64_t kind = ff_rd_varint(&r);
        size_t len, clen = 0;
        const char *path = ff_rd_str(&r, &len), *content = NULL;
        if (kind != WD_DIR)
            content = ff_rd_str(&r, &clen);
        if (r.err || kind < WD_DIR || kind > WD_EXEC) {
            snprintf(err, errlen, "entry %llu is malformed", (unsigned long long)i + 1);
            rc = FFLUA_EPROTO;
            break;
        }
        const char *why = bad_path(path, len);
        if (why != NULL) {
            snprintf(err, errlen, "entry %llu has %s", (unsigned long long)i + 1, why);
            rc = FFLUA_EPROTO;
            break;
        }
        size_t lp = len;
        while (lp > 0 && path[lp - 1] != '/')
            lp--;
        lp = lp > 0 ? lp - 1 : 0; /* the parent's length */
        int parent = lp == 0;
        for (size_t k = ndirs; k-- > 0 && !parent;)
            parent = strlen(dirs[k]) == lp && memcmp(dirs[k], path, lp) == 0;
        if (!parent) {
            snprintf(err, errlen, "entry '%.*s' comes before its directory", (int)len, path);
            rc = FFLUA_EPROTO;
            break;
        }
        bytes += clen;
        if (bytes > FF_WD_MAX_BYTES) {
            snprintf(err, errlen, "its files take more than %d MiB", (int)(FF_WD_MAX_BYTES >> 20));
            rc = FFLUA_EPROTO;
            break;
        }
        if (kind == WD_DIR && (dirs[ndirs] = strndup(path, len)) != NULL)
            ndirs++;
        else if (kind == WD_DIR)
            rc = -ENOMEM;
        if (top == NULL || rc != 0)
            continue;
        char *a = malloc(ltop + len + 2);
        if (a == NULL) {
            rc = -ENOMEM;
            break;
        }
        snprintf(a, ltop + len + 2, "%s/%.*s", top, (int)len, path);
        if (kind == WD_DIR) {
            if (mkdir(a, 0700) != 0)
                rc = -errno;
        } else {
            int fd = open(a, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                          kind == WD_EXEC ? 0700 : 0600);
            if (fd < 0)
                rc = -errno;
            for (size_t done = 0; rc == 0 && done < clen;) {
                ssize_t k = write(fd, content + done, clen - done);
                if (k < 0 && errno == EINTR)
                    continue;
                if (k < 0)
                    rc = -errno;
                else
                    done += (size_t)k;
            }
            if (fd >= 0 && close(fd) != 0 && rc == 0)
                rc = -errno;
        }
        if (rc != 0)
            snprintf(err, errlen, "cannot make '%s': %s", a, strerror(-rc));
        free(a);
    }
    if (rc == 0 && ff_rd_done(&r) != 0) {
        snprintf(err, errlen, "it has bytes left over after its entries");
        rc = FFLUA_EPROTO;
    }
    if (rc == -ENOMEM)
        snprintf(err, errlen, "not enough memory");
    for (size_t k = 0; k < ndirs; k++)
        free(dirs[k]);
    free(dirs);
    return rc;
}

int ff_wd_check(const char *p, size_t n, char *err, size_t errlen) {
    return wd_read(p, n, NULL, err, errlen);
}

int ff_wd_unpack(const char *p, size_t n, const char *dir, char *err, size_t errlen) {
    if (mkdir(dir, 0700) != 0) {
        int e = errno;
        snprintf(err, errlen, "cannot make '%s': %s", dir, strerror(e));
        return -e;
    }
    return wd_read(p, n, dir, err, errlen);
}

/* Removes what directory fd dirfd holds (closes dirfd). Every entry is
 * opened relative to its directory with O_NOFOLLOW, so a link put in
 * place of a directory meanwhile (a node of a run still going) is removed
 * as the link it is, never followed. */
static int remove_in(int dirfd) {
    DIR *d = fdopendir(dirfd);
    if (d == NULL) {
        int e = -errno;
        close(dirfd);
        return e;
    }
    int rc = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        const char *nm = de->d_name;
        if (strcmp(nm, ".") == 0 || strcmp(nm, "..") == 0)
            continue;
        int r = 0;
        if (unlinkat(dirfd, nm, 0) != 0) {
            if (errno != EISDIR && errno != EPERM) {
                r = errno == ENOENT ? 0 : -errno;
            } else {
                int sub = openat(dirfd, nm, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                r = sub < 0 ? -errno : remove_in(sub);
                if (unlinkat(dirfd, nm, AT_REMOVEDIR) != 0 && r == 0 && errno != ENOENT)
                    r = -errno;
            }
        }
        if (rc == 0)
            rc = r;
    }
    closedir(d);
    return rc;
}

int ff_wd_remove(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        if (errno != ENOTDIR && errno != ELOOP)
            return -errno;
        return unlink(path) == 0 || errno == ENOENT ? 0 : -errno; /* a file or a link */
    }
    int rc = remove_in(fd);
    if (rmdir(path) != 0 && rc == 0 && errno != ENOENT)
        rc = -errno;
    return rc;
}
