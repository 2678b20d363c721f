-- The LuaRocks package of fflua's Lua side: the functionfuse package and
-- its C module functionfuse.core (the engine and its Lua bindings), built
-- by LuaRocks' "builtin" build from this tree, with no download:
--
--   luarocks --lua-version 5.4 make                 # system-wide (as root)
--   luarocks --lua-version 5.4 make --tree DIR      # into DIR
--
-- then `lua5.4 -e 'require "functionfuse"'` with the tree's paths
-- (`luarocks --lua-version 5.4 path --tree DIR`). The fflua program, the C
-- library and fflua.h come with `cmake --install` (README.md, Install).
-- spec/install_spec.lua checks that the version is fflua's and that every
-- Lua file of lua/ and stdlib/ and every source of core.so is listed.
rockspec_format = "3.0"
package = "fflua"
version = "0.1.0-1"
source = {
  -- Not fetched by `luarocks make`, which builds the tree it runs in.
  url = "git+file://.",
}
description = {
  summary = "Workflows of Lua functions (functionfuse for Lua) run by a C engine",
  detailed = [[
The functionfuse package: workflow functions make nodes of a graph, which
backends run locally, on a cluster, or draw; results can be stored and
cached (LMDB). functionfuse.core is the C engine and its bindings.]],
  license = "MIT",
}
-- functionfuse.stdlib.jsonl needs lua-cjson at run time (require "cjson";
-- nothing else does). It is not listed here: `luarocks make` would then
-- try to fetch the rock, and Debian's lua-cjson package is no rock, so the
-- offline build would fail. Install it beside (apt-get install lua-cjson,
-- or luarocks install lua-cjson); docs/building.md says so.
dependencies = {
  "lua >= 5.4, < 5.5",
}
external_dependencies = {
  LIBUV = { header = "uv.h", library = "uv" },
  LMDB = { header = "lmdb.h", library = "lmdb" },
  PCRE2 = { header = "pcre2.h", library = "pcre2-8" },
  XXHASH = { header = "xxhash.h", library = "xxhash" },
  SODIUM = { header = "sodium.h", library = "sodium" },
}
build = {
  type = "builtin",
  modules = {
    ["functionfuse.core"] = {
      sources = {
        "src/buf.c",
        "src/error.c",
        "src/graph.c",
        "src/guard.c",
        "src/query.c",
        "src/store.c",
        "src/text.c",
        "src/verify.c",
        "src/sched.c",
        "src/net.c",
        "src/msg.c",
        "src/conn.c",
        "src/head.c",
        "src/clusterutil.c",
        "src/workdir.c",
        "src/storeserve.c",
        "src/progress.c",
        "src/lcore.c",
        "src/lgraph.c",
        "src/lquery.c",
        "src/lrun.c",
        "src/llocal.c",
        "src/lcache.c",
        "src/ldriver.c",
        "src/lstore.c",
        "src/lcodec.c",
        "src/lclient.c",
        "src/lproc.c",
        "src/codec.c",
        "src/lutil.c",
        "src/lworkdir.c",
        "src/lrecord.c",
        "src/lcmd.c",
        "src/lfs.c",
      },
      defines = { "_GNU_SOURCE", "FF_LUA_RELEASE=\"Lua 5.4\"" },
      incdirs = { "$(LIBUV_INCDIR)", "$(LMDB_INCDIR)", "$(PCRE2_INCDIR)", "$(XXHASH_INCDIR)", "$(SODIUM_INCDIR)" },
      libdirs = { "$(LIBUV_LIBDIR)", "$(LMDB_LIBDIR)", "$(PCRE2_LIBDIR)", "$(XXHASH_LIBDIR)", "$(SODIUM_LIBDIR)" },
      libraries = { "uv", "lmdb", "pcre2-8", "xxhash", "sodium", "pthread" },
    },
    ["functionfuse._base"] = "lua/functionfuse/_base.lua",
    ["functionfuse._names"] = "lua/functionfuse/_names.lua",
    ["functionfuse._pretty"] = "lua/functionfuse/_pretty.lua",
    ["functionfuse._util"] = "lua/functionfuse/_util.lua",
    ["functionfuse.backends.builtin.clusterback"] = "lua/functionfuse/backends/builtin/clusterback.lua",
    ["functionfuse.backends.builtin.graphback"] = "lua/functionfuse/backends/builtin/graphback.lua",
    ["functionfuse.backends.builtin.localback"] = "lua/functionfuse/backends/builtin/localback.lua",
    ["functionfuse.backends.plugins"] = "lua/functionfuse/backends/plugins/init.lua",
    ["functionfuse.launch.slurm"] = "lua/functionfuse/launch/slurm.lua",
    ["functionfuse.cli.graph"] = "lua/functionfuse/cli/graph.lua",
    ["functionfuse.cli.report"] = "lua/functionfuse/cli/report.lua",
    ["functionfuse.cli.status"] = "lua/functionfuse/cli/status.lua",
    ["functionfuse.cli.store"] = "lua/functionfuse/cli/store.lua",
    ["functionfuse"] = "lua/functionfuse/init.lua",
    ["functionfuse.storage"] = "lua/functionfuse/storage.lua",
    ["functionfuse.stdlib.csv"] = "stdlib/csv.lua",
    ["functionfuse.stdlib.fs"] = "stdlib/fs.lua",
    ["functionfuse.stdlib.jsonl"] = "stdlib/jsonl.lua",
    ["functionfuse.stdlib.map"] = "stdlib/map.lua",
    ["functionfuse.stdlib.plugins"] = "stdlib/plugins.lua",
    ["functionfuse.stdlib.shell"] = "stdlib/shell.lua",
  },
}
