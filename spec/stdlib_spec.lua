-- The stdlib (stdlib/*.lua): fs, shell, map, plugins, jsonl, csv, and the
-- C helpers under them (core.file_hash, core.dir_list, core.cmd_start).
local ff = require "functionfuse"
local core = require "functionfuse.core"
local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow
local storage_factory = require("functionfuse.storage").storage_factory
local fs = require "functionfuse.stdlib.fs"
local shell = require "functionfuse.stdlib.shell"
local map = require "functionfuse.stdlib.map"
local jsonl = require "functionfuse.stdlib.jsonl"
local csv = require "functionfuse.stdlib.csv"
local sp = require "functionfuse.stdlib.plugins"
local H = require "spec.helper"

local function states(wf)
  local out = {}
  local rec = wf.last_run.nodes
  for i = 1, #rec do out[rec[i].name] = rec[i].state end
  return out
end

describe("stdlib fs", function()
  after_each(H.cleanup)

  it("hashes a file's content, and names the path it cannot read", function()
    local d = H.tmpdir()
    H.write(d .. "/a", "hello")
    H.write(d .. "/b", "hello")
    assert.matches("^%x+$", fs.hash(d .. "/a"))
    assert.are.equal(32, #fs.hash(d .. "/a"))
    assert.are.equal(fs.hash(d .. "/a"), fs.hash(d .. "/b"))
    H.write(d .. "/b", "hellO")
    assert.are_not.equal(fs.hash(d .. "/a"), fs.hash(d .. "/b"))
    local big = string.rep("0123456789", 300000)
    H.write(d .. "/big", big)
    assert.are_not.equal(fs.hash(d .. "/big"), fs.hash(d .. "/a"))
    assert.has_error(function() fs.hash(d .. "/none") end,
      "cannot read '" .. d .. "/none': No such file or directory")
    assert.has_error(function() fs.read(d) end, "fs.read: cannot read '" .. d .. "': Is a directory")
    assert.are.equal(0, os.execute("mkfifo " .. d .. "/fifo") and 0)
    assert.has_error(function() fs.hash(d .. "/fifo") end, "cannot read '" .. d .. "/fifo': not a regular file")
    local content, hex = core.file_read(d .. "/a")
    assert.are.same({ "hello", fs.hash(d .. "/a") }, { content, hex })
    local h, err, name = core.file_hash(d .. "/none")
    assert.are.same({ nil, "ENOENT: cannot read '" .. d .. "/none': No such file or directory", "ENOENT" },
                    { h, err, name })
  end)

  it("editing one of three input files recomputes exactly its descendants", function()
    local d = H.tmpdir()
    for _, n in ipairs { "a", "b", "c" } do H.write(d .. "/" .. n .. ".txt", n .. " one two\n") end
    local function build()
      local upper = ff.workflow("upper", function(s) return s:upper() end)
      local join = ff.workflow("join", function(...) return table.concat({ ... }) end)
      local ups = {}
      for i, n in ipairs { "a", "b", "c" } do
        ups[i] = upper(fs.read(d .. "/" .. n .. ".txt", { name = "read_" .. n })):set_name("up_" .. n)
      end
      local wf = LocalWorkflow(join(table.unpack(ups)):set_name("join"), { workflow_name = "edit", quiet = true })
      wf:set_storage(storage_factory { kind = "file", options = { path = d .. "/st" } })
      return wf
    end
    local wf = build()
    assert.are.equal("A ONE TWO\nB ONE TWO\nC ONE TWO\n", wf:run())
    assert.are.equal(7, wf.last_run.computed)
    wf = build()
    wf:run()
    assert.are.equal(0, wf.last_run.computed)
    H.write(d .. "/b.txt", "b edited\n")
    wf = build() -- the script runs again: the hash is read anew
    assert.are.equal("A ONE TWO\nB EDITED\nC ONE TWO\n", wf:run())
    local s = states(wf)
    assert.are.same({ "computed", "computed", "computed" }, { s.read_b, s.up_b, s.join })
    for _, n in ipairs { "read_a", "up_a", "read_c", "up_c" } do
      assert.are_not.equal("computed", s[n], n)
    end
    assert.are.equal(3, wf.last_run.computed)
  end)

  it("refuses a file that changed between building and running", function()
    local d = H.tmpdir()
    H.write(d .. "/a", "one")
    local wf = LocalWorkflow(fs.read(d .. "/a"), { workflow_name = "race" })
    H.write(d .. "/a", "two")
    local ok, err = pcall(wf.run, wf)
    assert.is_false(ok)
    assert.matches("the file '" .. d:gsub("%p", "%%%0") .. "/a' changed after the workflow was built", tostring(err))
  end)

  it("globs a directory into file nodes, and writes atomically on every run", function()
    local d = H.tmpdir()
    H.write(d .. "/x.txt", "X")
    H.write(d .. "/y.txt", "Y")
    H.write(d .. "/.h.txt", "hidden")
    H.write(d .. "/z.md", "Z")
    os.execute("mkdir '" .. d .. "/sub.txt'")
    local nodes, paths = fs.glob(d .. "/*.txt", { name = "in" })
    assert.are.same({ d .. "/x.txt", d .. "/y.txt" }, paths)
    assert.are.equal("in_2", nodes[2]:get_name())
    local cat = ff.workflow("cat", function(a, b) return a .. b end)
    local w = fs.write(d .. "/out.txt", cat(nodes[1], nodes[2]))
    local wf = LocalWorkflow(w, { workflow_name = "glob", quiet = true })
    wf:set_storage(storage_factory { kind = "file", options = { path = d .. "/st" } })
    assert.are.equal(d .. "/out.txt", wf:run())
    assert.are.equal("XY", H.read(d .. "/out.txt"))
    os.remove(d .. "/out.txt")
    wf:run()
    assert.are.equal("XY", H.read(d .. "/out.txt")) -- written again, though cat was loaded
    assert.are.equal(1, wf.last_run.computed)
    local fnodes = fs.glob(d .. "/*.txt", { read = false })
    assert.are.equal(d .. "/x.txt", LocalWorkflow(fnodes[2], { workflow_name = "f" }):run())
    assert.are.same({}, (fs.glob(d .. "/*.none")))
    assert.has_error(function() fs.glob(d .. "/missing/*.txt") end,
      "fs.glob: cannot list the directory '" .. d .. "/missing': No such file or directory")
    assert.has_error(function() fs.glob(d .. "/*.txt", { raed = false }) end,
      "fs.glob: unknown option 'raed' (did you mean 'read'?)")
    local l = H.tmpdir() -- symbolic links: followed to regular files only
    H.write(l .. "/r.txt", "R")
    os.execute(("cd '%s' && ln -s r.txt s.txt && ln -s none.txt broken.txt && mkdir d && ln -s d dl.txt"):format(l))
    assert.are.same({ l .. "/r.txt", l .. "/s.txt" }, select(2, fs.glob(l .. "/*.txt")))
    local bad = LocalWorkflow(fs.write(d .. "/no/such/f", "x"), { workflow_name = "w" })
    local ok, err = pcall(bad.run, bad)
    assert.is_false(ok)
    assert.matches("cannot write '" .. d:gsub("%p", "%%%0") .. "/no/such/f': No such file or directory", err)
    assert.are.same({ "a", "b", "", "c" }, (function()
      H.write(d .. "/l", "a\r\nb\n\nc")
      return fs.lines(d .. "/l")
    end)())
  end)
end)

describe("stdlib shell", function()
  after_each(H.cleanup)

  local function run1(node) return LocalWorkflow(node, { workflow_name = "sh" }):run() end

  it("runs argv without a shell, with stdin, env and cwd", function()
    local d = H.tmpdir()
    assert.are.equal("$HOME *\n", run1(shell.run { "echo", "$HOME", "*" }))
    assert.are.equal("b\na\n", run1(shell.run({ "sort", "-r" }, { stdin = "a\nb\n" })))
    assert.are.equal("v|\n", run1(shell.run('echo "$FOO|$HOME"', { shell = true, env = { FOO = "v", HOME = false } })))
    assert.are.equal(d .. "\n", run1(shell.run({ "pwd" }, { cwd = d })))
    local up = ff.workflow("up", function(s) return s:upper() end)
    assert.are.equal("HI", run1(shell.run({ "cat" }, { stdin = up("hi") })))
    local r = run1(shell.run("echo out; echo err >&2; exit 3", { shell = true, capture = "all", check = false }))
    assert.are.same({ stdout = "out\n", stderr = "err\n", status = 3 }, r)
  end)

  it("moves large outputs on both pipes without deadlock", function()
    local big = string.rep("x", 3 * 1024 * 1024)
    local r = run1(shell.run("cat; head -c 2000000 /dev/zero >&2", { shell = true, stdin = big, capture = "all" }))
    assert.are.equal(#big, #r.stdout)
    assert.are.equal(2000000, #r.stderr)
  end)

  it("fails with the exit status and the tail of stderr", function()
    local wf = LocalWorkflow(shell.run("for i in $(seq 1 30); do echo line$i >&2; done; exit 7", { shell = true })
                             :set_name("bad"), { workflow_name = "sh" })
    local ok, err = pcall(wf.run, wf)
    assert.is_false(ok)
    err = tostring(err)
    assert.matches("node 'bad' .* failed: shell: 'for i in .*' exited with status 7; its stderr ends with:\n" ..
                   "%.%.%.\nline21\n.*line30\n", err)
    assert.not_matches("line20\n", err)
    wf = LocalWorkflow(shell.run({ "sh", "-c", "kill -TERM $$" }), { workflow_name = "sh" })
    ok, err = pcall(wf.run, wf)
    assert.is_false(ok)
    assert.matches("'sh %-c kill %-TERM %$%$' was killed by signal 15 %(its stderr is empty%)", tostring(err))
    wf = LocalWorkflow(shell.run({ "no-such-command-ff" }), { workflow_name = "sh" })
    ok, err = pcall(wf.run, wf)
    assert.is_false(ok)
    assert.matches("cannot start 'no%-such%-command%-ff': No such file or directory", tostring(err))
  end)

  it("checks its options where it is called", function()
    assert.has_error(function() shell.run("ls") end,
      "shell.run: a command line 'ls' needs shell = true (or give a list)")
    assert.has_error(function() shell.run({ "ls" }, { stdn = "x" }) end,
      "shell.run: unknown option 'stdn' (did you mean 'stdin'?)")
    assert.has_error(function() shell.run({ "ls", {} }) end, "shell.run: argv[2] is a table, not a string or node")
    assert.has_error(function() shell.run({ "ls" }, { capture = "both" }) end,
      "shell.run: capture must be \"stdout\" or \"all\", got both")
    assert.has_error(function() shell.run({ "cat" }, { inputs = { "/nonexistent/x" } }) end,
      "shell.run: input cannot read '/nonexistent/x': No such file or directory")
  end)

  it("fingerprints the content of declared inputs", function()
    local d = H.tmpdir()
    H.write(d .. "/in.txt", "1\n2\n")
    local function build()
      local n = shell.run({ "wc", "-l", "in.txt" }, { cwd = d, inputs = { d .. "/in.txt" } }):set_name("wc")
      local wf = LocalWorkflow(n, { workflow_name = "inputs", quiet = true })
      wf:set_storage(storage_factory { kind = "file", options = { path = d .. "/st" } })
      return wf
    end
    assert.are.equal("2 in.txt\n", build():run())
    local wf = build()
    wf:run()
    assert.are.equal(0, wf.last_run.computed)
    H.write(d .. "/in.txt", "1\n2\n3\n")
    wf = build()
    assert.are.equal("3 in.txt\n", wf:run())
    assert.are.equal(1, wf.last_run.computed)
  end)

  it("takes relative inputs in the command's cwd", function()
    local d = H.tmpdir()
    os.execute("mkdir " .. d .. "/sub")
    H.write(d .. "/sub/in.txt", "1\n")
    local function build()
      local n = shell.run({ "cat", "in.txt" }, { cwd = d .. "/sub", inputs = { "in.txt" } }):set_name("cat")
      local wf = LocalWorkflow(n, { workflow_name = "inputs", quiet = true })
      wf:set_storage(storage_factory { kind = "file", options = { path = d .. "/st" } })
      return wf
    end
    assert.are.equal("1\n", build():run())
    H.write(d .. "/sub/in.txt", "2\n")
    local wf = build()
    assert.are.equal("2\n", wf:run())
    assert.are.equal(1, wf.last_run.computed)
  end)

  it("kills the command when the Lua side stops, leaving no process or descriptor", function()
    local fds_before = #H.run({ "ls", "/proc/" .. core.getpid() .. "/fd" }).stdout
    local cmd = core.cmd_start { argv = { "sleep", "30" }, stdin = "x" }
    local pid = cmd:pid()
    assert.is_true(core.kill(pid, 0))
    local ok = pcall(function()
      local c <close> = cmd
      c:step(0.01)
      error("interrupted")
    end)
    assert.is_false(ok)
    assert.is_false(core.kill(pid, 0)) -- killed and reaped
    assert.has_error(function() cmd:step() end, "attempt to use a closed command")
    assert.are.equal("functionfuse.Cmd: (closed)", tostring(cmd))
    assert.are.equal(fds_before, #H.run({ "ls", "/proc/" .. core.getpid() .. "/fd" }).stdout)
  end)
end)

describe("stdlib shell processes", function()
  after_each(H.cleanup)

  local function wait_for(f)
    for _ = 1, 200 do
      local v = f()
      if v then return v end
      core.sleep(0.05)
    end
  end

  it("kills the command's process group: what a shell script started goes too", function()
    local cmd = core.cmd_start { argv = { "sleep 1000; echo done" }, shell = true }
    local pid = cmd:pid()
    local child = wait_for(function()
      return tonumber(H.run({ "pgrep", "-P", tostring(pid) }).stdout:match("%d+"))
    end)
    assert.is_truthy(child)
    assert.matches("sleep 1000", (H.read("/proc/" .. child .. "/cmdline"):gsub("%z", " ")))
    cmd:close()
    assert.is_false(core.kill(pid, 0))
    assert.is_true(wait_for(function() return not core.kill(child, 0) end))
  end)

  it("kills the command of a node stopped by its timeout on a worker", function()
    local d = H.tmpdir()
    local script = H.write(d .. "/t.lua", [[
      local core = require "functionfuse.core"
      local shell = require "functionfuse.stdlib.shell"
      local ClusterWorkflow = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
      local n = shell.run("echo $$ > pid; exec sleep 1002", { shell = true }):set_name("s")
      local wf = ClusterWorkflow(n, { workflow_name = "t", cluster_init_args = { num_workers = 1 } })
      wf:query("^s$"):set_remote_args { timeout_s = 1, max_retries = 0 }
      local ok, err = pcall(wf.run, wf)
      local f = io.open("pid")
      local pid = tonumber(f:read("a"))
      f:close()
      core.sleep(0.3)
      print(ok, tostring(err):match("timeout") ~= nil, core.kill(pid, 0))
    ]])
    local r = H.fflua({ script }, { cwd = d, timeout = 120 })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("false\ttrue\tfalse\n", r.stdout)
    local pid = tonumber(H.read(d .. "/pid"))
    if core.kill(pid, 0) then core.kill(pid, 9) end
  end)
end)

describe("stdlib map", function()
  after_each(H.cleanup)

  it("fans out, names nodes by index and gathers in order", function()
    local function sq(x) return x * x end
    local all, nodes = map.map(sq, { 1, 2, 3, 4 }, { name = "sq" })
    assert.are.equal(4, #nodes)
    local wf = LocalWorkflow(all, { workflow_name = "map" })
    assert.are.same({ "sq_1", "sq_2", "sq_3", "sq_4" }, wf:query("^sq_\\d+$"):names())
    assert.are.equal("sq_gather", all:get_name())
    assert.are.same({ 1, 4, 9, 16 }, wf:run())
    local c = map.map(sq, { 1, 2, 3, 4, 5 }, { name = "chunk", chunk = 2 })
    local wf2 = LocalWorkflow(c, { workflow_name = "chunks" })
    assert.are.same({ "chunk_1", "chunk_2", "chunk_3" }, wf2:query("^chunk_\\d+$"):names())
    assert.are.same({ 1, 4, 9, 16, 25 }, wf2:run())
    local unnamed = map(sq, { 2 })
    assert.are.equal("sq_gather", unnamed:get_name())
    local listf = ff.workflow("listf", function() return { 5, 6 } end)
    local loop = map.map(sq, listf(), { name = "dyn" })
    assert.are.equal("dyn_loop", loop:get_name())
    assert.are.same({ 25, 36 }, LocalWorkflow(loop, { workflow_name = "dyn" }):run())
    assert.has_error(function() map.map(sq, { 1 }, { chunk = 0 }) end,
      "map: option 'chunk' must be an integer >= 1, got 0")
    assert.has_error(function() map.map(sq, { 1 }, { chnk = 2 }) end,
      "map: unknown option 'chnk' (did you mean 'chunk'?)")
  end)

  it("keeps results in their items' places when fn returns nil, and wants a sequence", function()
    local function odd(x) if x % 2 == 1 then return x end end
    local c = map.map(odd, { 1, 2, 3, 4, 5 }, { name = "odd", chunk = 2 })
    local r = LocalWorkflow(c, { workflow_name = "holes" }):run()
    assert.are.same({ [1] = 1, [3] = 3, [5] = 5 }, r)
    local e = map.map(odd, { 1, 2, 3 }, { name = "odd1" })
    assert.are.same({ [1] = 1, [3] = 3 }, LocalWorkflow(e, { workflow_name = "holes1" }):run())
    assert.has_error(function() map.map(odd, { 1, nil, 3 }, { name = "x" }) end,
      "map: the list must be a sequence (items 1..n): it has holes")
    assert.has_error(function() map.map(odd, { 1, k = 2 }, { name = "x" }) end,
      "map: the list must be a sequence (items 1..n, no other keys): it has the key k")
  end)

  it("recomputes only the item that changed, over a file's lines", function()
    local d = H.tmpdir()
    H.write(d .. "/l.txt", "a\nb\nc\n")
    local function build()
      local wf = LocalWorkflow(map.lines(string.upper, d .. "/l.txt", { name = "line" }),
                               { workflow_name = "lines", quiet = true })
      wf:set_storage(storage_factory { kind = "file", options = { path = d .. "/st" } })
      return wf
    end
    assert.are.same({ "A", "B", "C" }, build():run())
    H.write(d .. "/l.txt", "a\nB2\nc\n")
    local wf = build()
    assert.are.same({ "A", "B2", "C" }, wf:run())
    local s = states(wf)
    assert.are.same({ "computed", "computed" }, { s.line_2, s.line_gather })
    assert.are.equal(2, wf.last_run.computed)
  end)
end)

describe("stdlib plugins", function()
  after_each(H.cleanup)

  it("LoggingPlugin writes a line per node start, naming it", function()
    local d = H.tmpdir()
    local f = ff.workflow("f", function(x) return x end)
    local wf = LocalWorkflow(f(f(1):set_name("one")):set_name("two"), { workflow_name = "log" })
    wf:set_plugin(".*", sp.LoggingPlugin { file = d .. "/log", prefix = "L: " })
    wf:run()
    local log = H.read(d .. "/log")
    assert.matches("^L: node 'one' starts %([^:]+:%d+, %d+%-%d+%-%d+T[%d:]+Z%)\nL: node 'two' starts ", log)
    assert.has_error(function() sp.LoggingPlugin { fille = "x" } end,
      "LoggingPlugin: unknown field 'fille' (did you mean 'file'?)")
  end)

  it("EnvPlugin gives its shell nodes' commands the variables, and nothing else", function()
    local g = ff.workflow("g", function() return os.getenv("FF_STDLIB_T") or "unset" end)
    local echo = 'printf %s "${FF_STDLIB_T-unset}${FF_STDLIB_U-}"'
    local with = shell.run(echo, { shell = true, env = { FF_STDLIB_U = "+own" } }):set_name("with_s")
    local plain = ff.workflow("plain", function(_) return "" end)(with):set_name("with_g")
    local without = shell.run(echo, { shell = true, stdin = plain }):set_name("nope")
    local wf = LocalWorkflow(g():set_name("with_os"), with, without, { workflow_name = "env" })
    wf:set_plugin("^with.*", sp.EnvPlugin { FF_STDLIB_T = "yes", FF_STDLIB_U = "no" })
    assert.are.same({ "unset", "yes+own", "unset" }, { wf:run() })
    assert.is_nil(os.getenv("FF_STDLIB_T")) -- the process's environment is untouched
    assert.is_nil(core.node_env())
    assert.is_nil(core.setenv)
    assert.has_error(function() sp.EnvPlugin { ["A=B"] = "x" } end, "EnvPlugin: 'A=B' is not a variable's name")
    assert.has_error(function() sp.EnvPlugin { A = 1 } end,
      "EnvPlugin: the value of 'A' must be a string or false, got number")
  end)

  it("TimingPlugin reports the wall time of its nodes and changes no fingerprint", function()
    local d = H.tmpdir()
    local nap = ff.workflow("nap", function(s) core.sleep(s); return s end)
    local t = sp.TimingPlugin { file = d .. "/t.tsv" }
    local wf = LocalWorkflow(nap(0.2):set_name("slow"), nap(0):set_name("fast"), { workflow_name = "time" })
    wf:set_plugin(".*", t)
    wf:run()
    local rows = t:report(wf)
    assert.are.same({ "slow", "fast" }, { rows[1].name, rows[2].name })
    assert.is_true(rows[1].seconds >= 0.2 and rows[1].seconds < 5)
    assert.matches("^slow\t0%.2%d+\tcomputed\t[^\t]+\nfast\t0%.%d+\tcomputed\t", H.read(d .. "/t.tsv"))
    assert.has_error(function() sp.TimingPlugin { fiel = "x" } end,
      "TimingPlugin: unknown field 'fiel' (did you mean 'file'?)")
    assert.is_nil(core.plugin_node())
  end)

  it("ship to cluster workers", function()
    local d = H.tmpdir()
    local script = H.write(d .. "/c.lua", [[
      local ff = require "functionfuse"
      local sp = require "functionfuse.stdlib.plugins"
      local shell = require "functionfuse.stdlib.shell"
      local ClusterWorkflow = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
      local g = ff.workflow("g", function() return os.getenv("FF_T") or "unset" end)
      local wf = ClusterWorkflow(g():set_name("g"), shell.run({ "sh", "-c", "echo $FF_T" }):set_name("s"),
        { workflow_name = "c", cluster_init_args = { num_workers = 1 } })
      wf:set_plugin(".*", require("functionfuse.backends.plugins").PluginCollection {
        sp.EnvPlugin { FF_T = "w" }, sp.LoggingPlugin { file = "log" } })
      print(wf:run())
    ]])
    local r = H.fflua({ script }, { cwd = d, timeout = 120 })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("unset\tw\n\n", r.stdout)
    assert.matches("node 'g' starts", H.read(d .. "/log"))
    assert.matches("node 's' starts", H.read(d .. "/log"))
  end)
end)

describe("stdlib jsonl and csv", function()
  after_each(H.cleanup)

  it("jsonl encodes with sorted keys and decodes integers and nulls", function()
    assert.are.equal('{"a":[1,2],"n":2,"w":"x"}\n{}\n', jsonl.encode { { w = "x", n = 2, a = { 1, 2 } }, {} })
    local recs = jsonl.decode('{"n":2,"f":1.5,"z":null}\n\n[1,"a"]\n')
    assert.are.same({ { n = 2, f = 1.5 }, { 1, "a" } }, recs)
    assert.are.equal("integer", math.type(recs[1].n))
    assert.has_error(function() jsonl.decode('{"a":1}\n{bad\n', "f.jsonl") end)
    local ok, err = pcall(jsonl.decode, '{"a":1}\n{bad\n', "f.jsonl")
    assert.is_false(ok)
    assert.matches("^jsonl: f%.jsonl:2: ", err)
    local d = H.tmpdir()
    H.write(d .. "/in.jsonl", '{"x":1}\n{"x":2}\n')
    local sum = ff.workflow("sum", function(rs) return { { total = rs[1].x + rs[2].x } } end)
    local wf = LocalWorkflow(jsonl.write(d .. "/out.jsonl", sum(jsonl.read(d .. "/in.jsonl"))), { workflow_name = "j" })
    wf:run()
    assert.are.equal('{"total":3}\n', H.read(d .. "/out.jsonl"))
  end)

  it("jsonl keeps big integers, floats, nulls in arrays and null lines; refuses mixed keys", function()
    local text = '{"a":12345678901234567,"b":0.30000000000000004,"c":[1,null,3]}\nnull\n'
    local recs = jsonl.decode(text)
    assert.are.equal(12345678901234567, recs[1].a)
    assert.are.equal("integer", math.type(recs[1].a))
    assert.are.equal(0.1 + 0.2, recs[1].b)
    assert.are.equal(jsonl.null, recs[1].c[2])
    assert.are.equal(jsonl.null, recs[2])
    assert.are.equal(text, jsonl.encode(recs))
    assert.are.equal('[12345678901234567,0.30000000000000004,0.1]\n',
                     jsonl.encode { { 12345678901234567, 0.1 + 0.2, 0.1 } })
    assert.has_error(function() jsonl.encode { { [1] = "a", ["1"] = "b" } } end,
      "jsonl: cannot encode record 1: a table with both integer and string keys")
    assert.has_error(function() jsonl.encode { { 1, nil, 3 } } end,
      "jsonl: cannot encode record 1: an array with holes (keys not 1..n): use jsonl.null")
  end)

  it("csv skips blank lines and round-trips a row of one empty field", function()
    assert.are.same({ { "a", "b" }, { "1", "2" }, { "" } }, csv.parse('a,b\n\n1,2\r\n\r\n""\n'))
    local rows = { { "a" }, { "" }, { "x", "" } }
    assert.are.same(rows, csv.parse(csv.format(rows)))
    assert.has_error(function() csv.format { {} } end, "csv: cannot format row 1: it has no fields")
  end)

  it("csv parses and formats RFC 4180 quoting", function()
    local text = 'a,b\r\n1,"x, ""y"""\n"multi\nline",\n'
    local rows = csv.parse(text)
    assert.are.same({ { "a", "b" }, { "1", 'x, "y"' }, { "multi\nline", "" } }, rows)
    assert.are.equal('a,b\r\n1,"x, ""y"""\r\n"multi\nline",\r\n', csv.format(rows))
    assert.are.same({ { a = "1", b = "2" } }, csv.parse("a,b\n1,2\n", { header = true }))
    assert.are.equal("n;w\r\n3;x\r\n", csv.format({ { w = "x", n = 3 } }, { header = { "n", "w" }, sep = ";" }))
    local ok, err = pcall(csv.parse, 'a\n"open\n', { source = "f.csv" })
    assert.is_false(ok)
    assert.are.equal("csv: f.csv:2: a quoted field is not closed", err)
    ok, err = pcall(csv.parse, 'a,b"c\n')
    assert.is_false(ok)
    assert.are.equal("csv: text:1: a quote inside an unquoted field", err)
    local d = H.tmpdir()
    H.write(d .. "/in.csv", "k,v\na,1\n")
    local wf = LocalWorkflow(csv.write(d .. "/o.csv", csv.read(d .. "/in.csv", { header = true }),
                                       { header = { "v", "k" } }), { workflow_name = "c" })
    wf:run()
    assert.are.equal("v,k\r\n1,a\r\n", H.read(d .. "/o.csv"))
  end)
end)

describe("stdlib modules", function()
  it("load from the fflua binary with no source tree", function()
    local r = H.fflua({ "-e", "for _, m in ipairs{'fs','shell','map','plugins','jsonl','csv'} do " ..
                               "assert(require('functionfuse.stdlib.' .. m)) end print(package.searchpath ~= nil)" },
                     { env = { FFLUA_TREE = "" } })
    assert.are.equal(0, r.code, r.stderr)
  end)
end)
