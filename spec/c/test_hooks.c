/* An embedding application watches nodes run through fflua_set_hooks. */
#include <stdlib.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "fflua.h"
#include "test.h"

struct seen {
    char log[1024];
    char failures[2048];
};

static void add(char *buf, size_t cap, const char *s) {
    strncat(buf, s, cap - strlen(buf) - 1);
}

static void before(void *ud, const char *name) {
    struct seen *s = ud;
    add(s->log, sizeof s->log, "+");
    add(s->log, sizeof s->log, name);
}

static void after(void *ud, const char *name, int failed) {
    struct seen *s = ud;
    add(s->log, sizeof s->log, failed ? " !" : " -");
    add(s->log, sizeof s->log, name);
    add(s->log, sizeof s->log, " ");
}

/* Keeps the node's name and the first line of the message. */
static void failure(void *ud, const char *name, const char *message) {
    struct seen *s = ud;
    char line[256];
    snprintf(line, sizeof line, "%s: %.*s\n", name, (int)strcspn(message, "\n"), message);
    add(s->failures, sizeof s->failures, line);
}

static const char script[] =
    "local ff = require 'functionfuse'\n"
    "local LW = require('functionfuse.backends.builtin.localback').LocalWorkflow\n"
    "local sum = ff.workflow(function(a, b) return a + b end)\n"
    "local a = sum(1, 1)\n"
    "local b = sum(a, 1):set_name('b')\n"
    "assert(LW(b, { workflow_name = 'h' }):run() == 3)\n"
    "local bad = sum(b, nil):set_name('bad')\n"
    "local wf = LW(bad, { workflow_name = 'h2' })\n"
    "return pcall(wf.run, wf)\n";

static void test_hooks(void) {
    fflua_engine *e;
    ASSERT_EQ(fflua_new(&e), 0);
    lua_State *L = fflua_state(e);
    struct seen s = {"", ""};
    fflua_hooks h = {before, after, failure};
    ASSERT_EQ(fflua_set_hooks(e, &h, &s), 0);
    ASSERT_EQ(lua_gettop(L), 0);
    if (fflua_dostring(e, script, NULL) != 0)
        FAIL_("%s", fflua_errmsg(e));
    ASSERT_EQ(lua_gettop(L), 2); /* the failed run's pcall: false, the run's error */
    ASSERT(!lua_toboolean(L, 1));
    ASSERT(lua_istable(L, 2)); /* an error object: its message, its node */
    ASSERT_EQ(lua_getfield(L, 2, "message"), LUA_TSTRING);
    ASSERT(strncmp(lua_tostring(L, -1), "node 'bad' ", 11) == 0);
    ASSERT_EQ(lua_getfield(L, 2, "node"), LUA_TSTRING);
    ASSERT_STR_EQ(lua_tostring(L, -1), "bad");
    lua_settop(L, 0);
    ASSERT_STR_EQ(s.log, "+sum_0000 -sum_0000 +b -b +sum_0000 -sum_0000 +b -b +bad !bad ");
    ASSERT_STR_EQ(s.failures,
                  "bad: node 'bad' (function 'sum' defined at [string \"local ff = require "
                  "'functionfuse'...\"]:3) failed: [string \"local ff = require "
                  "'functionfuse'...\"]:3: attempt to perform arithmetic on a nil value "
                  "(local 'b')\n");

    /* Removed: nothing is called any more. */
    ASSERT_EQ(fflua_set_hooks(e, NULL, NULL), 0);
    s.log[0] = s.failures[0] = '\0';
    ASSERT_EQ(fflua_dostring(e, script, NULL), 0);
    lua_settop(L, 0);
    ASSERT_STR_EQ(s.log, "");
    ASSERT_STR_EQ(s.failures, "");
    fflua_close(e);
}

/* A node whose function runs a workflow that fails fails after it. */
static void test_failure_in_nested_run(void) {
    fflua_engine *e;
    ASSERT_EQ(fflua_new(&e), 0);
    struct seen s = {"", ""};
    ASSERT_EQ(fflua_set_hooks(e, &(fflua_hooks){NULL, NULL, failure}, &s), 0);
    ASSERT_EQ(fflua_dostring(e,
                             "local ff = require 'functionfuse'\n"
                             "local LW = require('functionfuse.backends.builtin.localback')"
                             ".LocalWorkflow\n"
                             "local inner = ff.workflow('inner', function() error('deep') end)\n"
                             "local outer = ff.workflow('outer', function()\n"
                             "  return LW(inner(), { workflow_name = 'in' }):run()\n"
                             "end)\n"
                             "LW(outer(), { workflow_name = 'out' }):run()\n",
                             "=nested"),
              FFLUA_ELUA);
    ASSERT_STR_EQ(fflua_errnode(e), "outer_0000");
    ASSERT(strncmp(s.failures, "inner_0000: node 'inner_0000' ", 30) == 0);
    ASSERT(strstr(s.failures, "\nouter_0000: node 'outer_0000' ") != NULL);
    fflua_close(e);
}

/* On a cluster the nodes run in workers: the failure hook hears of a
 * failed node when the driver does; before and after are not called. */
static void test_failure_on_a_cluster(void) {
    if (getenv("FFLUA_BIN") == NULL || getenv("FFLUA_BIN")[0] == '\0') {
        printf("  (skipped: FFLUA_BIN is not set)\n");
        return;
    }
    fflua_engine *e;
    ASSERT_EQ(fflua_new(&e), 0);
    struct seen s = {"", ""};
    ASSERT_EQ(fflua_set_hooks(e, &(fflua_hooks){before, after, failure}, &s), 0);
    ASSERT_EQ(fflua_dostring(e,
                             "local ff = require 'functionfuse'\n"
                             "local CW = require('functionfuse.backends.builtin.clusterback')"
                             ".ClusterWorkflow\n"
                             "local f = ff.workflow('f', function(x)\n"
                             "  if x == 2 then error('two') end return x end)\n"
                             "local wf = CW(f(1):set_name('one'), f(2):set_name('two'),\n"
                             "  { workflow_name = 'c', quiet = true,\n"
                             "    cluster_init_args = { num_workers = 1 } })\n"
                             "wf:run { keep_going = true }\n",
                             "=cluster"),
              FFLUA_ELUA);
    ASSERT_STR_EQ(s.log, "");
    ASSERT(strncmp(s.failures,
                   "two: node 'two' (function 'f' defined at cluster:3) failed: ", 60) == 0);
    ASSERT(strchr(s.failures, '\n') == s.failures + strlen(s.failures) - 1); /* once */
    fflua_close(e);
}

int main(void) {
    RUN(test_hooks);
    RUN(test_failure_in_nested_run);
    RUN(test_failure_on_a_cluster);
    return 0;
}
