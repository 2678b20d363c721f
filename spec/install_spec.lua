-- Installing fflua: `cmake --install` of this build into a temporary
-- prefix, then what a user does with it. The embed example (examples/embed)
-- is built against the prefix with pkg-config (libfflua.so, and libfflua.a
-- with pkg-config --static) and with CMake's find_package, and run; stock
-- lua5.4 and busted load the installed Lua package and its C module; the
-- man page covers --help; and the rockspec builds and installs with
-- LuaRocks (offline, from a copy of the tree) into a temporary tree.
local H = require "spec.helper"

local prefix, libdir, work

-- The compiler flags a program linked with this build's libraries needs:
-- the sanitizer build's are instrumented.
local san = H.sanitize and "-fsanitize=address,undefined" or nil

local function sh(argv, opts)
  local r = H.run(argv, opts)
  assert.are.equal(0, r.code, table.concat(argv, " ") .. "\n" .. r.stdout .. r.stderr)
  return r
end

-- The environment of pkg-config for the prefix, and of a program of it.
local function pc_env(extra)
  local env = { PKG_CONFIG_PATH = libdir .. "/pkgconfig", FFLUA_TREE = "" }
  for k, v in pairs(extra or {}) do env[k] = v end
  return env
end

local function pkg_config(args)
  local argv = { "pkg-config" }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local out = sh(argv, { env = pc_env() }).stdout
  local words = {}
  for w in out:gmatch("%S+") do words[#words + 1] = w end
  return words, out
end

-- What the embed example prints: the pipeline's two results, then the
-- node that fails.
local EMBED_OUT = "fflua " .. H.version .. ": 2 results: total = 8, a = 6\n" ..
  "failing node: bad\n" ..
  "error: node 'bad' (function 'weigh', a C function) failed: bad argument #1 to 'functionfuse.c.weigh' " ..
  "(number expected, got string)\n"

-- cc [san] -o out examples/embed/main.c flags...
local function cc(out, flags)
  local argv = { "cc", "-Wall", "-Wextra", "-Werror", "-o", out, H.source .. "/examples/embed/main.c" }
  if san then table.insert(argv, 2, san) end
  for _, f in ipairs(flags) do argv[#argv + 1] = f end
  sh(argv, { env = pc_env() })
end

local function needed(bin)
  return sh({ "readelf", "-d", bin }).stdout
end

-- Loading the installed package in a stock interpreter: LUA_PATH and
-- LUA_CPATH at the prefix, the sanitizer's runtime first when the
-- installed core.so is instrumented.
local function lua_env(share, lib, instrumented)
  local env = {
    LUA_PATH = share .. "/?.lua;" .. share .. "/?/init.lua;;",
    LUA_CPATH = lib .. "/?.so;;",
  }
  if instrumented and H.sanitize then
    env.LD_PRELOAD = H.asan_lib
    env.ASAN_OPTIONS = "detect_leaks=0"
  end
  return env
end

local WORKFLOW = [[
local ff = require "functionfuse"
local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow
local double = ff.workflow("double", function(x) return 2 * x end)
local r = LocalWorkflow(double(double(5)), { workflow_name = "w" }):run()
print(ff.version, r, package.searchpath("functionfuse.core", package.cpath))
]]

describe("cmake --install", function()
  lazy_setup(function()
    work = H.fftest.mkdtemp()
    prefix = work .. "/prefix"
    sh({ "cmake", "--install", H.build, "--prefix", prefix })
    local pc = sh({ "find", prefix, "-name", "fflua.pc" }).stdout:gsub("\n$", "")
    libdir = pc:match("^(.*)/pkgconfig/fflua%.pc$")
    assert.truthy(libdir, "no fflua.pc under " .. prefix)
  end)

  lazy_teardown(function()
    if work then os.execute("rm -rf '" .. work .. "'") end
  end)

  it("puts in place the program, the libraries, the header and the package files", function()
    for _, f in ipairs {
      "/bin/fflua", "/include/fflua.h", "/share/man/man1/fflua.1",
      "/share/lua/5.4/functionfuse/init.lua",
    } do
      assert.truthy(H.read(prefix .. f), f)
    end
    for _, f in ipairs {
      "/libfflua.a", "/libfflua.so", "/pkgconfig/fflua.pc", "/pkgconfig/fflua-static.pc",
      "/cmake/fflua/fflua-config.cmake", "/cmake/fflua/fflua-config-version.cmake",
      "/lua/5.4/functionfuse/core.so",
    } do
      assert.truthy(H.read(libdir .. f), f)
    end
    -- The shared library has a versioned soname and exports only the API.
    assert.truthy(needed(libdir .. "/libfflua.so"):find("%(SONAME%)%s+Library soname: %[libfflua%.so%.0%.%d+%]"))
    local syms = sh({ "nm", "-D", "--defined-only", libdir .. "/libfflua.so" }).stdout
    for name in syms:gmatch(" T (%S+)") do
      assert.truthy(name:match("^fflua_") or name == "luaopen_functionfuse_core", name)
    end
    assert.truthy(syms:find(" T fflua_run\n", 1, true))
    local r = H.run({ prefix .. "/bin/fflua", "-e", "print(require('functionfuse').version)" },
                    { env = { FFLUA_TREE = "" } })
    assert.are.equal(H.version .. "\n", r.stdout, r.stderr)
  end)

  it("gives pkg-config the flags, and the private dependencies with --static", function()
    local words = pkg_config { "--cflags", "--libs", "fflua" }
    -- The prefix is found from the .pc file's place: PREFIX/lib/pkgconfig/../..
    local function real(w) return (w:gsub("/[^/]+/pkgconfig/%.%./%.%.", "")) end
    assert.are.equal("-I" .. prefix .. "/include", real(words[1]))
    assert.are.same({ "-L" .. libdir, "-lfflua", "-llua5.4" },
                    { real(words[#words - 2]), words[#words - 1], words[#words] })
    local _, static = pkg_config { "--static", "--libs", "fflua" }
    for _, lib in ipairs { "-lfflua", "-pthread", "-llua5.4", "-luv", "-llmdb", "-lpcre2-8", "-lxxhash", "-lsodium" } do
      assert.truthy(static:find(lib, 1, true), lib .. " missing from: " .. static)
    end
    assert.are.equal(H.version .. "\n", sh({ "pkg-config", "--modversion", "fflua" }, { env = pc_env() }).stdout)
  end)

  it("builds the embed example with pkg-config against libfflua.so and runs it", function()
    local bin = work .. "/embed-shared"
    cc(bin, pkg_config { "--cflags", "--libs", "fflua" })
    assert.truthy(needed(bin):find("[libfflua.so.", 1, true))
    local r = H.run({ bin }, { env = pc_env { LD_LIBRARY_PATH = libdir } })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(EMBED_OUT, r.stdout)
  end)

  it("builds the embed example with pkg-config --static against libfflua.a and runs it", function()
    local bin = work .. "/embed-static"
    cc(bin, pkg_config { "--static", "--cflags", "--libs", "fflua-static" })
    assert.falsy(needed(bin):find("libfflua", 1, true))
    local r = H.run({ bin }, { env = pc_env() })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(EMBED_OUT, r.stdout)
  end)

  it("builds the embed example with CMake's find_package(fflua), shared and static, and runs it", function()
    for _, static in ipairs { "OFF", "ON" } do
      local b = work .. "/cmake-" .. static
      local argv = { "cmake", "-S", H.source .. "/examples/embed", "-B", b,
                     "-DCMAKE_PREFIX_PATH=" .. prefix, "-DFFLUA_STATIC=" .. static }
      if san then
        argv[#argv + 1] = "-DCMAKE_C_FLAGS=" .. san
        argv[#argv + 1] = "-DCMAKE_EXE_LINKER_FLAGS=" .. san
      end
      sh(argv, { env = { PKG_CONFIG_PATH = false } })
      sh({ "cmake", "--build", b })
      assert.are.equal(static == "ON", not needed(b .. "/embed"):find("libfflua", 1, true))
      local r = H.run({ b .. "/embed" }, { env = { FFLUA_TREE = "" } })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal(EMBED_OUT, r.stdout)
    end
  end)

  it("installs the Lua package that stock lua5.4 and busted load", function()
    local share, lib = prefix .. "/share/lua/5.4", libdir .. "/lua/5.4"
    local env = lua_env(share, lib, true)
    local r = H.run({ "lua5.4", "-e", WORKFLOW }, { env = env })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(H.version .. "\t20\t" .. lib .. "/functionfuse/core.so\n", r.stdout)

    local spec = H.write(work .. "/installed_spec.lua", [[
describe("the installed functionfuse", function()
  it("runs a workflow", function()
    local ff = require "functionfuse"
    local LW = require("functionfuse.backends.builtin.localback").LocalWorkflow
    local inc = ff.workflow("inc", function(x) return x + 1 end)
    assert.are.equal(3, LW(inc(inc(1)), { workflow_name = "b" }):run())
    assert.are.equal("]] .. lib .. [[/functionfuse/core.so",
                     package.searchpath("functionfuse.core", package.cpath))
  end)
end)
]])
    r = H.run({ "lua5.4", "/usr/bin/busted", "-o", "plainTerminal", spec }, { env = env, cwd = work })
    assert.are.equal(0, r.code, r.stdout .. r.stderr)
    assert.truthy(r.stdout:find("1 success / 0 failures / 0 errors / 0 pending", 1, true), r.stdout)
  end)

  it("installs a man page that says what --help says", function()
    local page = assert(H.read(prefix .. "/share/man/man1/fflua.1"))
    assert.truthy(page:find('\n.TH FFLUA 1 "" "fflua ' .. H.version .. '"', 1, true))
    for _, s in ipairs { "NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "COMMANDS", "ENVIRONMENT", "SEE ALSO" } do
      assert.truthy(page:find("\n.SH " .. s .. "\n", 1, true), s)
    end
    -- In roff a dash is \-; undo that to compare with --help.
    local text = page:gsub("\\%-", "-")
    local help = H.fflua({ "--help" }).stdout
    local seen = { option = 0, command = 0, variable = 0 }
    for line in help:gmatch("[^\n]+") do
      local opt = line:match("^  (%-%S*)") -- an option
      local cmd = line:match("^  ([a-z]+)  ") -- a command
      local var = line:match("^  ([A-Z][A-Z_0-9]+)") -- an environment variable
      if opt then
        seen.option = seen.option + 1
        assert.truthy(text:find("\\fB" .. opt, 1, true), opt)
      elseif cmd then
        seen.command = seen.command + 1
        assert.truthy(text:find(".TP\n\\fB" .. cmd .. "\\fR\n", 1, true), cmd)
        -- Each command has its own --help.
        assert.are.equal(0, H.fflua({ cmd, "--help" }).code, cmd)
      elseif var then
        seen.variable = seen.variable + 1
        assert.truthy(text:find(var, 1, true), var)
      end
    end
    assert.are.same({ option = 11, command = 6, variable = 7 }, seen)
    for _, cmd in ipairs { "head", "worker" } do
      local usage = H.fflua({ cmd, "--help" }).stdout
      for opt in usage:gmatch("%-%-[a-z-]+") do
        assert.truthy(text:find(opt, 1, true), cmd .. " " .. opt)
      end
    end
    local groff = H.run({ "sh", "-c", "command -v groff" })
    if groff.code ~= 0 then
      pending("groff is not installed: the page's rendering is not checked")
      return
    end
    local r = sh({ "groff", "-man", "-Tutf8", "-ww", "-z", prefix .. "/share/man/man1/fflua.1" })
    assert.are.equal("", r.stderr)
  end)
end)

describe("the rockspec", function()
  local rockspec = H.source .. "/fflua-" .. H.version .. "-1.rockspec"

  after_each(H.cleanup)

  it("lists fflua's version, every Lua file and every source of core.so", function()
    local spec = {}
    assert(loadfile(rockspec, "t", spec))()
    assert.are.equal(H.version .. "-1", spec.version)
    local mods = spec.build.modules
    local r = sh({ "find", "lua", "stdlib", "-name", "*.lua" }, { cwd = H.source })
    local n = 0
    for f in r.stdout:gmatch("[^\n]+") do
      local m = f:gsub("^lua/", ""):gsub("^stdlib/", "functionfuse/stdlib/"):gsub("%.lua$", "")
                 :gsub("/init$", ""):gsub("/", ".")
      assert.are.equal(f, mods[m], m)
      n = n + 1
    end
    -- core.so: the engine and the bindings, as CMakeLists.txt lists them.
    local cml = H.read(H.source .. "/CMakeLists.txt")
    local want = {}
    for _, var in ipairs { "FFLUA_ENGINE_SOURCES", "FFLUA_BINDINGS" } do
      for f in cml:match("set%(" .. var .. "(.-)%)"):gmatch("src/[%w_]+%.c") do
        want[#want + 1] = f
      end
    end
    table.sort(want)
    local got = { table.unpack(mods["functionfuse.core"].sources) }
    table.sort(got)
    assert.are.same(want, got)
    local count = 0
    for _ in pairs(mods) do count = count + 1 end
    assert.are.equal(n + 1, count)
  end)

  it("builds and installs with luarocks make into a tree, which lua5.4 loads", function()
    local dir = H.tmpdir()
    -- A copy of what the build reads: LuaRocks' builtin build writes its
    -- objects beside the sources.
    sh({ "cp", "-r", rockspec, H.source .. "/src", H.source .. "/lua", H.source .. "/stdlib", dir })
    local tree = dir .. "/tree"
    local env = { HOME = dir, LUAROCKS_CONFIG = false }
    sh({ "luarocks", "--lua-version", "5.4", "make", "--tree", tree }, { cwd = dir, env = env, timeout = 120 })
    local share, lib = tree .. "/share/lua/5.4", tree .. "/lib/lua/5.4"
    local r = H.run({ "lua5.4", "-e", WORKFLOW }, { env = lua_env(share, lib, false) })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(H.version .. "\t20\t" .. lib .. "/functionfuse/core.so\n", r.stdout)
    r = sh({ "luarocks", "--lua-version", "5.4", "list", "--tree", tree, "--porcelain" }, { env = env })
    assert.truthy(r.stdout:find("^fflua\t" .. H.version:gsub("%.", "%%.") .. "%-1\tinstalled"), r.stdout)
  end)
end)
