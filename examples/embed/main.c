/*
 * embed: a C program that embeds fflua.
 *
 * It registers a C function as a workflow function, builds a small
 * pipeline in Lua that uses it, runs the pipeline from C, prints the
 * results it reads off the Lua stack, then runs a node that fails and
 * prints the failing node's name. Build it against an installed fflua:
 *
 *   cc -o embed main.c $(pkg-config --cflags --libs fflua)
 *
 * (README.md has the static and the CMake builds.)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include <fflua.h>

/* weigh(x, w): x * w. A workflow function gets the node's arguments, the
 * results of its parents in place, and returns the node's result. */
static int weigh(lua_State *L) {
    lua_Number x = luaL_checknumber(L, 1);
    lua_Number w = luaL_checknumber(L, 2);
    lua_pushnumber(L, x * w);
    return 1;
}

/* Prints a failure of e and its node, if any. */
static void report(fflua_engine *e, const char *what) {
    const char *node = fflua_errnode(e);
    fprintf(stderr, "%s failed%s%s%s\n", what, node ? " at node '" : "", node ? node : "",
            node ? "'" : "");
}

/* Builds the pipeline: two Lua nodes and two of weigh's, one leaf. */
static const char pipeline[] = "local ff = require 'functionfuse'\n"
                               "local weigh = ff.c.weigh\n"
                               "local sum = ff.workflow('sum', function(a, b) return a + b end)\n"
                               "local a = weigh(3, 2):set_name('a')\n"
                               "local b = weigh(4, 0.5):set_name('b')\n"
                               "return sum(a, b):set_name('total'), a\n";

int main(void) {
    fflua_engine *e;
    int rc = fflua_new(&e);
    if (rc != 0) {
        fprintf(stderr, "fflua_new: %s\n", fflua_strerror(rc));
        return EXIT_FAILURE;
    }
    lua_State *L = fflua_state(e);
    int status = EXIT_FAILURE;
    if (fflua_register(e, "weigh", weigh) != 0 || fflua_dostring(e, pipeline, "=pipeline") != 0) {
        fprintf(stderr, "%s\n", fflua_errmsg(e));
        goto done;
    }
    /* The chunk left two nodes, the leaves; fflua_run pops them, runs them
     * on the local backend and pushes one result per leaf. */
    int n;
    if (fflua_run(e, "embed", 2, &n) != 0) {
        report(e, "the pipeline");
        goto done;
    }
    printf("fflua %s: %d results: total = %g, a = %g\n", fflua_version(), n, lua_tonumber(L, -2),
           lua_tonumber(L, -1));
    lua_pop(L, n);

    /* A node whose C function raises: the run fails, naming the node. */
    if (fflua_dostring(e, "return require('functionfuse').c.weigh('heavy', 2):set_name('bad')",
                       "=failing") != 0) {
        fprintf(stderr, "%s\n", fflua_errmsg(e));
        goto done;
    }
    if (fflua_run(e, "embed", 1, NULL) == FFLUA_ELUA) {
        const char *msg = fflua_errmsg(e);
        printf("failing node: %s\nerror: %.*s\n", fflua_errnode(e), (int)strcspn(msg, "\n"), msg);
        status = EXIT_SUCCESS;
    }
done:
    fflua_close(e);
    return status;
}
