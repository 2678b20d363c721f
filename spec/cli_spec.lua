-- fflua as a command: the options, arguments, exit codes and error reports
-- that a lua5.4 user relies on, checked on real subprocesses.
local H = require "spec.helper"

describe("fflua command line", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(H.cleanup)

  local function script(name, text) return H.write(dir .. "/" .. name, text) end

  it("runs a script with the standard arg table and ...", function()
    local s = script("args.lua", [[
      print(select("#", ...), ...)
      print(arg[0], arg[1], arg[2], #arg)
      print(arg[-1], arg[-2])
    ]])
    local r = H.fflua({ s, "a", "b c" })
    assert.are.equal(0, r.code)
    assert.are.equal("2\ta\tb c\n" .. s .. "\ta\tb c\t2\n" .. H.bin .. "\tnil\n", r.stdout)
    assert.are.equal("", r.stderr)
  end)

  it("puts the interpreter and options at negative arg indices", function()
    local s = script("neg.lua", "print(arg[-3], arg[-2], arg[-1], arg[0])")
    local r = H.fflua({ "-e", "x=1", s })
    assert.are.equal(H.bin .. "\t-e\tx=1\t" .. s .. "\n", r.stdout)
    r = H.fflua({ "-e", "print(arg[0], arg[-1], #arg)" })
    assert.are.equal(H.bin .. "\tnil\t2\n", r.stdout) -- no script: the interpreter is arg[0], as lua5.4
  end)

  it("runs -e chunks in order, before the script", function()
    local s = script("after.lua", "print('script', x)")
    local r = H.fflua({ "-e", "x = 1", "-e", "print('e', x); x = x + 1", s })
    assert.are.equal(0, r.code)
    assert.are.equal("e\t1\nscript\t2\n", r.stdout)
    r = H.fflua({ "-eprint(40 + 2)" }) -- attached argument
    assert.are.equal("42\n", r.stdout)
  end)

  it("requires -l mod into a global and -l g=mod into g", function()
    script("mymod.lua", "return { name = 'mine' }")
    local env = { LUA_PATH = dir .. "/?.lua;;" }
    local r = H.fflua({ "-l", "mymod", "-e", "print(mymod.name)" }, { env = env })
    assert.are.equal("mine\n", r.stdout)
    r = H.fflua({ "-lg=mymod", "-e", "print(g.name, mymod)" }, { env = env })
    assert.are.equal("mine\tnil\n", r.stdout)
    r = H.fflua({ "-l", "ff=functionfuse", "-e", "print(ff.version)" })
    assert.are.equal(H.version .. "\n", r.stdout)
  end)

  it("reports a missing module from -l and stops", function()
    local r = H.fflua({ "-l", "no_such_mod_xyz", "-e", "print('not reached')" })
    assert.are.equal(1, r.code)
    assert.are.equal("", r.stdout)
    assert.matches("^" .. H.prog_pat .. ": module 'no_such_mod_xyz' not found:", r.stderr)
  end)

  it("prints the version with -v and --version", function()
    local r = H.fflua({ "-v" })
    assert.are.equal(0, r.code)
    assert.matches("^fflua " .. H.version:gsub("%.", "%%.") .. " %-%- Lua 5%.4%.%d+  Copyright", r.stdout)
    local r2 = H.fflua({ "--version" })
    assert.are.equal(r.stdout, r2.stdout)
  end)

  it("-i runs the script, then reads statements from stdin", function()
    local s = script("i.lua", "x = 20")
    local r = H.fflua({ "-i", s }, { stdin = "x + 1\nprint(x * 2)\n" })
    assert.are.equal(0, r.code)
    local out = r.stdout
    assert.matches("^fflua " .. H.version:gsub("%.", "%%."), out) -- -i implies -v
    assert.truthy(out:find("> 21\n> 40\n> \n", 1, true), out)
  end)

  it("-E ignores LUA_INIT, LUA_PATH and FFLUA_TREE", function()
    script("hidden.lua", "return 'found'")
    assert.are.equal(0, H.run({ "mkdir", "-p", dir .. "/lua/functionfuse" }).code)
    H.write(dir .. "/lua/functionfuse/init.lua", "return { version = 'from the tree' }")
    local env = { LUA_INIT = "print('init ran')", LUA_PATH = dir .. "/?.lua;;", FFLUA_TREE = dir }
    local code = "print(pcall(require, 'hidden')); print(require('functionfuse').version)"
    local r = H.fflua({ "-e", code }, { env = env })
    assert.are.equal("init ran\ntrue\tfound\t" .. dir .. "/hidden.lua\nfrom the tree\n", r.stdout)
    r = H.fflua({ "-E", "-e", code }, { env = env })
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("^false\tmodule 'hidden' not found[^\n]*\n", r.stdout)
    assert.matches("\n" .. H.version:gsub("%.", "%%.") .. "\n$", r.stdout)
  end)

  it("-W turns warnings on", function()
    local r = H.fflua({ "-e", "warn('quiet')" })
    assert.are.equal("", r.stderr)
    r = H.fflua({ "-W", "-e", "warn('loud')" })
    assert.are.equal("Lua warning: loud\n", r.stderr)
  end)

  it("-- stops options and - runs stdin with arguments", function()
    local s = script("-dash.lua", "print('dash', ...)")
    local r = H.fflua({ "--", s, "-e", "x" })
    assert.are.equal("dash\t-e\tx\n", r.stdout)
    r = H.fflua({ "-", "a", "b" }, { stdin = "print('stdin', arg[0], ...)" })
    assert.are.equal("stdin\t-\ta\tb\n", r.stdout)
  end)

  it("runs piped stdin as a script when there is no terminal", function()
    local r = H.fflua({}, { stdin = "local t = {}\nfor i = 1, 3 do t[i] = i * i end\nprint(table.concat(t, ','))\n" })
    assert.are.equal(0, r.code)
    assert.are.equal("1,4,9\n", r.stdout)
  end)

  it("runs LUA_INIT_5_4 in preference to LUA_INIT, and @file", function()
    local init = script("init.lua", "print('from file')")
    local r = H.fflua({ "-e", "" }, { env = { LUA_INIT_5_4 = "print('5.4')", LUA_INIT = "print('plain')" } })
    assert.are.equal("5.4\n", r.stdout)
    r = H.fflua({ "-e", "" }, { env = { LUA_INIT_5_4 = false, LUA_INIT = "@" .. init } })
    assert.are.equal("from file\n", r.stdout)
    r = H.fflua({ "-e", "print('no')" }, { env = { LUA_INIT_5_4 = false, LUA_INIT = "error('bad init')" } })
    assert.are.equal(1, r.code)
    assert.are.equal("", r.stdout)
    assert.matches("^" .. H.prog_pat .. ": LUA_INIT:1: bad init\nstack traceback:", r.stderr)
  end)

  describe("errors", function()
    it("exits 1 with the message and a traceback on stderr", function()
      local s = script("boom.lua", "local function f()\n  error('boom')\nend\nf()\n")
      local r = H.fflua({ s })
      assert.are.equal(1, r.code)
      assert.are.equal("", r.stdout)
      local lines = {}
      for l in r.stderr:gmatch("[^\n]+") do lines[#lines + 1] = l end
      assert.are.equal(H.bin .. ": " .. s .. ":2: boom", lines[1])
      assert.are.equal("stack traceback:", lines[2])
      assert.truthy(r.stderr:find(s .. ":2: in local 'f'", 1, true)
                    or r.stderr:find(s .. ":2: in function 'f'", 1, true), r.stderr)
      assert.truthy(r.stderr:find(s .. ":4: in main chunk", 1, true), r.stderr)
    end)

    it("reports syntax errors without running anything", function()
      local s = script("syntax.lua", "print('no')\nlocal = 1\n")
      local r = H.fflua({ s })
      assert.are.equal(1, r.code)
      assert.are.equal("", r.stdout)
      assert.are.equal(H.bin .. ": " .. s .. ":2: <name> expected near '='\n", r.stderr)
    end)

    it("reports a missing script file", function()
      local r = H.fflua({ dir .. "/nope.lua" })
      assert.are.equal(1, r.code)
      assert.are.equal(H.bin .. ": cannot open " .. dir .. "/nope.lua: No such file or directory\n", r.stderr)
    end)

    it("shows non-string error objects through __tostring or their type", function()
      local r = H.fflua({ "-e", "error(setmetatable({}, {__tostring = function() return 'custom!' end}))" })
      assert.are.equal(1, r.code)
      assert.are.equal(H.bin .. ": custom!\n", r.stderr)
      r = H.fflua({ "-e", "error({})" })
      assert.matches("^" .. H.prog_pat .. ": %(error object is a table value%)\nstack traceback:", r.stderr)
    end)

    it("prefix reports with the program's name as it was called (argv[0]), as lua5.4", function()
      local link = dir .. "/my-lua"
      assert.is_true(os.execute("ln -s '" .. H.bin .. "' '" .. link .. "'"))
      local r = H.run({ link, "-e", "error('boom', 0)" })
      assert.are.equal(1, r.code)
      assert.are.equal(link .. ": boom\nstack traceback:", r.stderr:match("^[^\n]*\n[^\n]*"))
      r = H.run({ link, "-x" })
      assert.matches("^" .. link:gsub("%p", "%%%0") .. ": unrecognized option '%-x'\nusage: " ..
                     link:gsub("%p", "%%%0") .. " %[options%]", r.stderr)
      -- Run through PATH, argv[0] is the bare name.
      r = H.run({ "/bin/sh", "-c", "PATH=\"$1\" exec my-lua -e \"error('boom', 0)\"", "sh", dir })
      assert.are.equal(1, r.code)
      assert.matches("^my%-lua: boom\n", r.stderr)
    end)

    it("reports an error that ends the REPL without the program's name, as lua5.4", function()
      local r = H.fflua({ "-i" }, {
        stdin = "_PROMPT = setmetatable({}, { __tostring = function() error('no prompt', 0) end })\n" })
      assert.are.equal(1, r.code)
      assert.are.equal("no prompt\n", r.stderr)
    end)

    it("passes os.exit codes through", function()
      assert.are.equal(7, H.fflua({ "-e", "os.exit(7)" }).code)
      assert.are.equal(1, H.fflua({ "-e", "os.exit(false)" }).code)
      assert.are.equal(0, H.fflua({ "-e", "os.exit(true, true)" }).code)
    end)

    it("rejects unknown options and options missing their argument", function()
      local r = H.fflua({ "-x" })
      assert.are.equal(1, r.code)
      assert.matches("^" .. H.prog_pat .. ": unrecognized option '%-x'\nusage: " .. H.prog_pat .. " ", r.stderr)
      r = H.fflua({ "-e" })
      assert.are.equal(1, r.code)
      assert.matches("^" .. H.prog_pat .. ": '%-e' needs argument\n", r.stderr)
      r = H.fflua({ "-l", "-v" })
      assert.matches("^" .. H.prog_pat .. ": '%-l' needs argument\n", r.stderr)
      r = H.fflua({ "--bogus" })
      assert.matches("^" .. H.prog_pat .. ": unrecognized option '%-%-bogus'", r.stderr)
    end)
  end)

  it("--help lists the options and the subcommands, and only those that exist", function()
    local r = H.fflua({ "--help" })
    assert.are.equal(0, r.code)
    for _, word in ipairs { "-e stat", "-l g=mod", "-i", "-v", "-E", "-W", "head", "worker",
                            "status", "store", "FFLUA_HISTORY", "LUA_INIT" } do
      assert.truthy(r.stdout:find(word, 1, true), word)
    end
    local commands = r.stdout:match("\nCommands[^\n]*\n(.-)\n\n")
    assert.truthy(commands, r.stdout)
    local listed = {}
    for name in ("\n" .. commands):gmatch("\n  (%S+)") do listed[#listed + 1] = name end
    assert.are.same({ "store", "head", "worker", "status", "graph", "report" }, listed)
    assert.falsy(r.stdout:find("not yet", 1, true))
    assert.are.equal(r.stdout, H.fflua({ "-h" }).stdout)
  end)

  describe("subcommands", function()
    it("a first argument that is neither a file nor a command says both", function()
      local r = H.fflua({ "stats" }, { cwd = dir })
      assert.are.equal(1, r.code)
      assert.are.equal(H.bin .. ": cannot open stats: No such file or directory\n"
                       .. "'stats' is not a command either ('fflua --help' lists them)\n", r.stderr)
      -- A script that is not there, named as one, gets only the lua5.4 message.
      r = H.fflua({ "stats.lua" }, { cwd = dir })
      assert.are.equal(H.bin .. ": cannot open stats.lua: No such file or directory\n", r.stderr)
      r = H.fflua({ "--", "stats" }, { cwd = dir })
      assert.are.equal(H.bin .. ": cannot open stats: No such file or directory\n", r.stderr)
    end)

    it("'head', 'worker' and 'status' reject bad options, naming the option and value", function()
      for _, case in ipairs {
        { { "head", "--port", "nope" }, "fflua head: bad --port 'nope': an integer from 0 to 65535 expected\n" },
        { { "head", "--bogus" }, "fflua head: bad or incomplete option '--bogus'\nusage: fflua head" },
        { { "worker" }, "fflua worker: --address HOST:PORT is required\nusage: fflua worker" },
        { { "worker", "--address", "127.0.0.1:1", "--num-cpus=-1" },
          "fflua worker: bad --num-cpus '-1': a number of CPUs from 0 to 4096, with at most 4 decimals expected\n" },
        { { "status" }, "fflua status: --address is required" },
      } do
        local r = H.fflua(case[1])
        assert.are.equal(2, r.code, table.concat(case[1], " "))
        assert.matches(case[2], r.stderr, 1, true)
      end
      for _, name in ipairs { "head", "worker", "status" } do
        local r = H.fflua { name, "--help" }
        assert.are.equal(0, r.code)
        assert.matches("^usage: fflua " .. name, r.stdout)
      end
    end)

    it("'store' prints its usage on stderr without arguments and exits 2", function()
      local r = H.fflua({ "store" })
      assert.are.equal(2, r.code)
      assert.matches("^usage: fflua store ls PATH", r.stderr)
      assert.are.equal("", r.stdout)
    end)

    it("a script named like a subcommand runs as ./name", function()
      script("head", "print('I am a script', ...)")
      local r = H.fflua({ "./head", "x" }, { cwd = dir })
      assert.are.equal(0, r.code)
      assert.are.equal("I am a script\tx\n", r.stdout)
    end)
  end)

  describe("SIGINT", function()
    it("interrupts a running script with a traceback", function()
      local s = script("loop.lua", "print('ready')\nio.stdout:flush()\nwhile true do end\n")
      local p = H.pty({ s })
      H.expect(p, "ready")
      p:kill(H.signals.SIGINT)
      local seen = H.plain(H.expect(p, "in main chunk"))
      -- Where it stops depends on when the signal lands (usually the loop on
      -- line 3, possibly the return from print); the report is the same.
      assert.matches("fflua: [^\n]*interrupted!\nstack traceback:\n", seen)
      assert.truthy(seen:find(s .. ":%d: in main chunk"), seen)
      assert.are.equal(1, p:wait(10))
      p:close()
    end)

    it("cannot be swallowed by pcall", function()
      local s = script("stubborn.lua", [[
        print('ready'); io.stdout:flush()
        while true do pcall(function() while true do end end) end
      ]])
      local p = H.pty({ s })
      H.expect(p, "ready")
      p:kill(H.signals.SIGINT)
      H.expect(p, "interrupted!")
      assert.are.equal(1, p:wait(10))
      p:close()
    end)
  end)
end)
