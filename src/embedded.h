/*
 * embedded.h: the Lua package compiled into the binary.
 *
 * The table is generated at build time by embedgen from lua/ and stdlib/ and
 * sorted by module name. It is read-only; any thread may read it.
 */
#ifndef FFLUA_EMBEDDED_H
#define FFLUA_EMBEDDED_H

#include <stddef.h>

struct ff_embedded_module {
    const char *name;      /* module name, "functionfuse.backends" */
    const char *path;      /* path in the source tree, "lua/functionfuse/backends/init.lua" */
    const char *chunkname; /* "@functionfuse/backends/init.lua" */
    const char *data;      /* Lua source text, not NUL-terminated */
    size_t len;
};

extern const struct ff_embedded_module ff_embedded_modules[];
extern const size_t ff_embedded_count;

#endif
