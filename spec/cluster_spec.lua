-- The cluster: a real head and real workers on 127.0.0.1, authenticated,
-- placing tasks by resources, shipping closures, refusing strangers.
local ff = require "functionfuse"
local core = require "functionfuse.core"
local plugins = require "functionfuse.backends.plugins"
local ClusterWorkflow = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow
local H = require "spec.helper"

local C = require "spec.cluster_helper"
local procs, start, start_sh, stop_all, wait_file, cluster, lines_of, script =
  C.procs, C.start, C.start_sh, C.stop_all, C.wait_file, C.cluster, C.lines_of, C.script

local most_at_once = C.most_at_once

describe("cluster", function()
  after_each(function()
    stop_all()
    H.cleanup()
  end)

  it("places a node that needs a custom resource only where it is", function()
    local address, token, ps = cluster {
      { cpus = 2, resources = '{"custom_resource": 1}' },
      { cpus = 2 },
    }
    local with = tostring(ps[1]:pid())
    local sum = ff.workflow("sum", function(a, b) return a + b end)
    local leaves = {}
    for i = 1, 6 do leaves[i] = sum(sum(i, 1):set_name("plain" .. i), 1):set_name("special" .. i) end
    leaves[#leaves + 1] = { workflow_name = "placement",
                            cluster_init_args = { address = address, token_file = token } }
    local wf = ClusterWorkflow(table.unpack(leaves))
    wf:query("^special.*$"):set_remote_args { resources = { custom_resource = 0.1 } }
    -- (placement checked below)
    wf:query("^plain.*$"):set_remote_args { num_cpus = 1 }
    local r = { wf:run() }
    assert.are.same({ 3, 4, 5, 6, 7, 8 }, r)
    local where = wf.last_run.placement
    for i = 1, 6 do
      assert.matches(":" .. with .. "$", where["special" .. i])
      assert.is_string(where["plain" .. i])
    end
  end)

  it("runs the whole workflow of the given node, the nodes below it included", function()
    local address, token, ps = cluster {
      { cpus = 1 },
      { cpus = 1, resources = '{"gpu": 1}' },
    }
    local with = tostring(ps[2]:pid())
    local load = ff.workflow("load", function() return 10 end)
    local train = ff.workflow("train", function(m, d) return m * d end)
    local total = ff.workflow("total", function(t) return t[1] + t[2] + t.x end)
    local data = load()
    local models = {}
    for m = 1, 3 do models[m] = train(m, data):set_name("model" .. m) end
    local sum = total { models[1], models[2], x = models[3] } -- a table of nodes, copied
    models = nil -- luacheck: ignore 311 (the models are kept by their graph alone)
    collectgarbage("collect")
    local wf = ClusterWorkflow(data, sum, { workflow_name = "whole",
                                       cluster_init_args = { address = address, token_file = token } })
    assert.are.equal(3, #wf:query("^model.*$"):set_remote_args { resources = { gpu = 0.5 } })
    assert.are.same({ 10, 60 }, { wf:run() })
    local where = wf.last_run.placement
    assert.is_string(where.load_0000)
    for m = 1, 3 do assert.matches(":" .. with .. "$", where["model" .. m]) end
  end)

  it("runs a big workflow sent in several parts, dependencies across parts", function()
    local address, token = cluster { { cpus = 1 }, { cpus = 1 } }
    local inc = ff.workflow("inc", function(x) return x + 1 end)
    local sumall = ff.workflow("sumall", function(t) local s = 0 for _, v in ipairs(t) do s = s + v end return s end)
    local x = inc(0)
    for _ = 2, 9000 do x = inc(x) end -- a chain across parts of 4096 tasks
    local xs = {}
    for i = 1, 9000 do xs[i] = inc(i) end
    local total = sumall(xs)
    local wf = ClusterWorkflow(x, total, { workflow_name = "big",
      cluster_init_args = { address = address, token_file = token } })
    local a, b = wf:run()
    assert.are.equal(9000, a)
    assert.are.equal(9000 * 9001 // 2 + 9000, b)
  end)

  it("runs at most as many tasks at once as a fractional resource allows", function()
    local address, token = cluster { { cpus = 16, resources = '{"slot": 1}' } }
    local task = ff.workflow("task", function(i)
      local t0 = require("functionfuse.core").monotime()
      require("functionfuse.core").sleep(0.8)
      return { i, t0, require("functionfuse.core").monotime() }
    end)
    local leaves = {}
    for i = 1, 11 do leaves[i] = task(i) end
    leaves[#leaves + 1] = { workflow_name = "frac",
                            cluster_init_args = { address = address, token_file = token } }
    local wf = ClusterWorkflow(table.unpack(leaves))
    wf:query(".*"):set_remote_args { num_cpus = 0, resources = { slot = 0.1 } }
    -- The most tasks running at one moment: exactly ten (10 x 0.1 = 1).
    assert.are.equal(10, most_at_once { wf:run() })
  end)

  it("runs a node on a worker with the CPUs it asks for, never on a smaller one", function()
    local address, token, ps = cluster { { cpus = 1 }, { cpus = 4 } }
    local big = tostring(ps[2]:pid())
    local f = ff.workflow("f", function(i) return i end)
    local leaves = {}
    for i = 1, 4 do leaves[i] = f(i) end
    leaves[#leaves + 1] = { workflow_name = "cpus",
                            cluster_init_args = { address = address, token_file = token } }
    local wf = ClusterWorkflow(table.unpack(leaves))
    wf:query(".*"):set_remote_args { num_cpus = 3 }
    assert.are.same({ 1, 2, 3, 4 }, { wf:run() })
    for name, where in pairs(wf.last_run.placement) do
      assert.matches(":" .. big .. "$", where, nil, name)
    end
    local w5 = ClusterWorkflow(f(5), { workflow_name = "cpus5",
      cluster_init_args = { address = address, token_file = token } })
    w5:query(".*"):set_remote_args { num_cpus = 5 }
    local ok, err = pcall(w5.run, w5)
    assert.is_false(ok)
    assert.matches("asks for 5 of 'CPU', but no node of the cluster has more than 4", err, 1, true)
  end)

  it("serves the next run on the same connection after a run with several failures", function()
    local address, token = cluster { { cpus = 2 } }
    local args = { address = address, token_file = token }
    local bad = ff.workflow("bad", function(x) error("bad " .. x) end)
    local ok = pcall(function() return ClusterWorkflow(bad(1), bad(2), bad(3),
      { workflow_name = "b", cluster_init_args = args }):run() end)
    assert.is_false(ok)
    local sum = ff.workflow(function(a, b) return a + b end)
    assert.are.equal(7, ClusterWorkflow(sum(3, 4), { workflow_name = "ok", cluster_init_args = args }):run())
    assert.has_error(function()
      ClusterWorkflow(sum(1, 1), { workflow_name = "st", cluster_init_args = args }):set_storage({})
    end)
  end)

  it("keeps at most max_pending_tasks tasks of a run out at once", function()
    local address, token = cluster { { cpus = 8 } }
    local task = ff.workflow("task", function(i)
      local c = require("functionfuse.core")
      local t0 = c.monotime()
      c.sleep(0.4)
      return { i, t0, c.monotime() }
    end)
    local leaves = {}
    for i = 1, 7 do leaves[i] = task(i) end
    leaves[#leaves + 1] = { workflow_name = "pending",
                            cluster_init_args = { address = address, token_file = token } }
    assert.are.equal(3, most_at_once { ClusterWorkflow(table.unpack(leaves)):run { max_pending_tasks = 3 } })
    assert.has_error(function() ClusterWorkflow(task(1), { workflow_name = "x",
      cluster_init_args = { address = address, token_file = token } }):run { max_pending_tasks = 0 } end)
  end)

  it("runs nothing of a big run whose last part cannot run", function()
    local address, token = cluster { { cpus = 1 } }
    local dir = H.tmpdir()
    local touch = ff.workflow("touch", function(d, i) io.open(d .. "/" .. i, "w"):close(); return i end)
    local leaves = {}
    for i = 1, 5000 do leaves[i] = touch(dir, i) end -- two parts: 4096 + 904
    leaves[#leaves + 1] = { workflow_name = "late",
                            cluster_init_args = { address = address, token_file = token } }
    local wf = ClusterWorkflow(table.unpack(leaves))
    wf:query("^touch_4999$"):set_remote_args { resources = { gpu = 1 } }
    local ok, err = pcall(wf.run, wf)
    assert.is_false(ok)
    assert.matches("node 'touch_4999' asks for 1 of 'gpu'", err, 1, true)
    core.sleep(0.2)
    assert.is_nil(io.open(dir .. "/1"), "a task of the first part ran")
  end)

  it("fails a request no node can satisfy before running anything", function()
    local address, token = cluster { { cpus = 1, resources = '{"gpu": 1}' } }
    local ran = H.tmpdir() .. "/ran"
    local f = ff.workflow("f", function(path) io.open(path, "w"):close(); return 1 end)
    local big = ff.workflow("big", function(x) return x end)
    local wf = ClusterWorkflow(big(f(ran)), { workflow_name = "inf",
      cluster_init_args = { address = address, token_file = token } })
    wf:query("big.*"):set_remote_args { resources = { gpu = 2 } }
    local ok, err = pcall(wf.run, wf)
    assert.is_false(ok)
    assert.matches("node 'big_0000' asks for 2 of 'gpu', but no node of the cluster has more than 1",
                   err, 1, true)
    assert.is_nil(io.open(ran))
  end)

  it("gives the same results and seeds as LocalWorkflow (sums and plugins)", function()
    local address, token = cluster { { cpus = 2 }, { cpus = 2 } }
    local args = { address = address, token_file = token }
    local sum = ff.workflow(function(a, b) return a + b end)
    local node1 = sum(1, 1):set_name("node1")
    local node2 = sum(node1, 1):set_name("node2")
    local wf = ClusterWorkflow(node2, { workflow_name = "sums", ray_init_args = args })
    wf:query("^.*node1.*$"):set_remote_args { num_cpus = 1 }
    assert.are.equal(3, wf:run())

    local draw = ff.workflow("draw", function(tag) return { tag, math.random(1 << 30) } end)
    local leaves = {}
    for i = 1, 6 do leaves[i] = draw(i) end
    local function make(cls, opts)
      local t = { table.unpack(leaves) }
      t[#t + 1] = opts
      local w = cls(table.unpack(t))
      w:set_plugin(".*", plugins.PluginCollection {
        plugins.InitializerPlugin(function() end),
        plugins.RandomStatePlugin { min = 100, max = 1000, seed = 100 },
      })
      return w
    end
    local cw = make(ClusterWorkflow, { workflow_name = "p", cluster_init_args = args })
    local remote = { cw:run() }
    local here = { make(LocalWorkflow, { workflow_name = "p" }):run() }
    assert.are.same(here, remote)
    -- A second run of the same workflow starts its plugins afresh.
    assert.are.same(remote, { cw:run() })
  end)

  it("ships closures with numbers, tables, math and a required module", function()
    local address, token = cluster { { cpus = 1 } }
    local pretty = require "functionfuse._pretty"
    local k, cfg = 7, { mult = 3, names = { "a", "b" } }
    local function helper(x) return x * cfg.mult end
    local f = ff.workflow("f", function(x)
      return helper(x) + k + math.floor(2.9) + #cfg.names + #pretty.format({ 1 }) + #string.rep("z", 2)
    end)
    local wf = ClusterWorkflow(f(5), { workflow_name = "cl",
      cluster_init_args = { address = address, token_file = token } })
    local expect = 5 * 3 + 7 + 2 + 2 + #pretty.format({ 1 }) + 2
    assert.are.equal(expect, wf:run())
    -- What cannot ship fails before anything runs, naming node and upvalue.
    local co = coroutine.create(print)
    local g = ff.workflow("g", function() return co end)
    local bad = ClusterWorkflow(g(), { workflow_name = "cl2",
      cluster_init_args = { address = address, token_file = token } })
    local ok, err = pcall(bad.run, bad)
    assert.is_false(ok)
    assert.matches("node 'g_0000' %(function 'g' defined at .-%): its function cannot be shipped: " ..
                   "a thread cannot be shipped %(at upvalue 'co'%)", err)
  end)

  it("gives a node the driver's module globals, and keeps shared upvalues shared", function()
    local address, token = cluster { { cpus = 1 } }
    -- A global holding a module, as the REPL's ff or `fflua -l name=module`.
    _G.cluster_spec_pretty = require "functionfuse._pretty"
    local n = 0
    local function bump() n = n + 1; return n end
    local function read() return n end
    local f = ff.workflow("f", function()
      return { cluster_spec_pretty.format({ 1 }), bump(), read() } -- luacheck: ignore
    end)
    local wf = ClusterWorkflow(f(), { workflow_name = "world",
      cluster_init_args = { address = address, token_file = token } })
    local ok, r = pcall(wf.run, wf)
    _G.cluster_spec_pretty = nil
    assert.is_true(ok, r)
    assert.are.same({ require("functionfuse._pretty").format({ 1 }), 1, 1 }, r)
  end)

  it("ships arguments and results nested as deep as a local run allows", function()
    local address, token = cluster { { cpus = 1 } }
    local depth = ff.workflow("depth", function(t)
      local d = 0
      while t do d = d + 1; t = t.a end
      return d
    end)
    local same = ff.workflow("same", function(t) return t end)
    local args = { address = address, token_file = token }
    assert.are.equal(1000, ClusterWorkflow(depth(H.nested(1000, "a")), { workflow_name = "deep",
      cluster_init_args = args }):run())
    local back = ClusterWorkflow(same(H.nested(1000, "a", true)), { workflow_name = "deep2",
      cluster_init_args = args }):run()
    assert.are.same(H.nested(1000, "a", true), back)
  end)

  it("reports a failing node with its error, its worker and working directory, and traceback", function()
    local address, token, ps = cluster { { cpus = 1 } }
    local bad = ff.workflow("bad", function(x) error("no good: " .. x) end)
    local wf = ClusterWorkflow(bad(41), { workflow_name = "fail",
      cluster_init_args = { address = address, token_file = token } })
    local ok, err = pcall(wf.run, wf)
    assert.is_false(ok)
    assert.matches("node 'bad_0000' %(function 'bad' defined at .-%) failed: .-no good: 41\n" ..
                   "%(on worker [^\n]+:" .. ps[1]:pid() .. ", working directory " ..
                   io.popen("pwd"):read("l"):gsub("%p", "%%%0") .. "%)\nstack traceback:", tostring(err))
    -- The error object: what crosses the wire is the error's text, which
    -- is its value; the traceback is apart.
    assert.are.equal("bad_0000", err.node)
    assert.are.equal("bad", err.func)
    assert.matches("cluster_spec%.lua:%d+$", err.where)
    assert.matches("^[^\n]*cluster_spec%.lua:%d+: no good: 41$", err.value)
    assert.matches("^stack traceback:\n", err.traceback)
    local obj = ff.workflow("obj", function() error({ code = 42 }) end)
    wf = ClusterWorkflow(obj(), { workflow_name = "fail",
      cluster_init_args = { address = address, token_file = token } })
    ok, err = pcall(wf.run, wf)
    assert.is_false(ok)
    assert.are.equal("(error object is a table value)", err.value)
    assert.matches("^node 'obj_0000' %(function 'obj' defined at .-%) failed: %(error object is a " ..
                   "table value%)\n%(on worker [^\n]+%)\nstack traceback:\n", tostring(err))
  end)

  it("fails the run when a worker dies under a task it may not retry, and goes on serving", function()
    local address, token, ps = cluster { { cpus = 1 }, { cpus = 1 } }
    local started = H.tmpdir() .. "/started"
    local slow = ff.workflow("slow", function(path)
      local f = io.open(path .. ".tmp", "w")
      f:write(require("functionfuse.core").getpid())
      f:close()
      os.rename(path .. ".tmp", path)
      require("functionfuse.core").sleep(30)
      return 1
    end)
    local wf = ClusterWorkflow(slow(started), { workflow_name = "lost",
      cluster_init_args = { address = address, token_file = token } })
    wf:query("^slow.*$"):set_remote_args { max_retries = 0 }
    -- Kill the worker that took the task (it wrote its pid), from a helper
    -- process, once the task started.
    local killer = H.write(H.tmpdir() .. "/kill.sh", ([[
      for i in $(seq 400); do [ -e '%s' ] && break; sleep 0.025; done
      kill -9 "$(cat '%s')"
    ]]):format(started, started))
    local k = H.fftest.pty { argv = { "/bin/sh", killer }, env = { TERM = "dumb" } }
    procs[#procs + 1] = k
    local ok, err = pcall(wf.run, wf)
    assert.is_false(ok)
    assert.matches("node 'slow_0000' %(function 'slow' defined at .-%) failed: the worker " ..
                   "running it %(.-:%d+%) left the cluster$", err)
    local sum = ff.workflow(function(a, b) return a + b end)
    assert.are.equal(9, ClusterWorkflow(sum(4, 5), { workflow_name = "still",
      cluster_init_args = { address = address, token_file = token } }):run())
    assert.is_table(ps)
  end)

  it("refuses a wrong token and a garbage speaker, and keeps serving others", function()
    local address, token = cluster { { cpus = 1 } }
    local ok, err = pcall(core.cluster_connect, address, { token = ("x"):rep(32) })
    assert.is_false(ok)
    assert.matches("refused the connection: authentication failed", err, 1, true)
    -- Bytes that are not frames, then an oversized frame header.
    local host, port = address:match("^(.*):(%d+)$")
    for _, junk in ipairs { "GET / HTTP/1.0\\r\\n\\r\\n", "\\xff\\xff\\xff\\x7f\\x01" } do
      local r = H.run({ "bash", "-c", ("exec 3<>/dev/tcp/%s/%s; printf '%s' >&3; sleep 0.2"):format(host, port, junk) })
      assert.are.equal(0, r.code, r.stderr)
    end
    local sum = ff.workflow(function(a, b) return a + b end)
    assert.are.equal(5, ClusterWorkflow(sum(2, 3), { workflow_name = "after",
      cluster_init_args = { address = address, token_file = token } }):run())
  end)

  it("refuses bad worker resources before joining", function()
    local r = H.fflua({ "worker", "--address", "127.0.0.1:1", "--resources", '{"gpu": 0.333333}' },
                      { env = { FFLUA_TOKEN = core.token_new() } })
    assert.are.equal(2, r.code)
    assert.matches("bad amount for 'gpu'", r.stderr, 1, true)
    r = H.fflua({ "worker", "--address", "127.0.0.1:1", "--resources", '{"a": 1, "a": 2}' },
                { env = { FFLUA_TOKEN = core.token_new() } })
    assert.are.equal(2, r.code)
  end)

  it("disconnects a peer that does not finish the handshake in time", function()
    local dir = H.tmpdir()
    local token = H.write(dir .. "/t", core.token_new())
    assert(os.execute("chmod 600 '" .. token .. "'"))
    start { "head", "--port", "0", "--num-cpus", "0", "--token-file", token,
            "--ready-file", dir .. "/ready", "--handshake-timeout", "0.3" }
    local address = wait_file(dir .. "/ready")
    local host, port = address:match("^(.*):(%d+)$")
    -- Connect, say nothing: the head's HELLO comes, then the end of the stream.
    local r = H.run({ "bash", "-c", ("exec 3<>/dev/tcp/%s/%s; timeout 10 cat <&3 >/dev/null"):format(host, port) })
    assert.are.equal(0, r.code, "the head kept a silent peer: " .. r.stderr)
  end)

  it("says so when its port is taken", function()
    local address = cluster { { cpus = 1 } }
    local port = address:match(":(%d+)$")
    local r = H.fflua({ "head", "--port", port, "--num-cpus", "0" }, { timeout = 20 })
    assert.are.equal(1, r.code)
    assert.matches("cannot listen on 127.0.0.1:" .. port .. ": address already in use", r.stderr, 1, true)
  end)

  it("refuses a token file others can read", function()
    local dir = H.tmpdir()
    local token = H.write(dir .. "/open.token", core.token_new())
    assert(os.execute("chmod 644 '" .. token .. "'"))
    local r = H.fflua({ "head", "--port", "0", "--token-file", token }, { timeout = 20 })
    assert.are.equal(2, r.code)
    assert.matches("may be read by others %(mode 644%): chmod 600 it", r.stderr)
  end)

  it("shows the cluster with fflua status, and stops on SIGTERM", function()
    local address, token, ps = cluster { { cpus = 2, resources = '{"_disk": 1}' } }
    local r = H.fflua { "status", "--address", address, "--token-file", token }
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("cluster at " .. address:gsub("%p", "%%%0") ..
                   ": 1 machine, 1 worker; tasks: 0 queued, 0 running", r.stdout)
    assert.matches("CPU 2/2 free", r.stdout, 1, true)
    assert.matches("_disk 1/1 free", r.stdout, 1, true)
    -- The same from Lua, through a client that shows where it is connected
    -- and closes as a to-be-closed variable.
    do
      local c <close> = core.cluster_connect(address, { role = "status", token_file = token })
      assert.are.equal("functionfuse.ClusterClient: " .. address, tostring(c))
      assert.are.equal(1, #c:status().places)
      getmetatable(c).__close(c)
      assert.are.equal("functionfuse.ClusterClient (closed)", tostring(c))
      assert.has_error(function() c:status() end, "the cluster connection is closed")
    end
    ps[1]:kill(H.signals.SIGTERM)
    local code = ps[1]:wait(10)
    assert.are.equal(0, code)
    local head = procs[1]
    head:kill(H.signals.SIGTERM)
    assert.are.equal(0, (head:wait(10)))
  end)

  it("keeps the REPL's local cluster through a Ctrl-C at the prompt", function()
    local p = H.pty({}, { env = { FFLUA_BIN = H.bin } })
    procs[#procs + 1] = p
    H.expect(p, "> ")
    local CW = 'require("functionfuse.backends.builtin.clusterback").ClusterWorkflow'
    H.type(p, ("s = ff.workflow(function(a, b) return a + b end); print('R' .. %s(s(20, 1), " ..
               "{ workflow_name = 'r' }):run())\r"):format(CW))
    H.expect(p, "R21", 30)
    H.expect(p, "> ")
    H.type(p, "\3") -- Ctrl-C: SIGINT to the terminal's foreground group
    H.expect(p, "> ")
    H.type(p, ("print('R' .. %s(s(30, 2), { workflow_name = 'r2' }):run())\r"):format(CW))
    H.expect(p, "R32", 30)
    H.quit(p)
  end)

  it("starts a local cluster when no address is given, and reuses it", function()
    local sum = ff.workflow(function(a, b) return a + b end)
    local wf = ClusterWorkflow(sum(sum(1, 1), 1), { workflow_name = "local" })
    assert.are.equal(3, wf:run())
    local address = require("functionfuse.backends.builtin.clusterback").local_address()
    assert.is_string(address)
    local wf2 = ClusterWorkflow(sum(10, 1), { workflow_name = "again" })
    assert.are.equal(11, wf2:run())
    assert.are.equal(address, require("functionfuse.backends.builtin.clusterback").local_address())
    assert.is_nil(wf2:run { return_results = false })
    local ok, err = pcall(ClusterWorkflow(sum(1, 2), { workflow_name = "x",
      cluster_init_args = { num_workers = 5 } }).run,
      ClusterWorkflow(sum(1, 2), { workflow_name = "x", cluster_init_args = { num_workers = 5 } }))
    assert.is_false(ok)
    assert.matches("ignore_reinit_error", err, 1, true)
    assert.are.equal(3, ClusterWorkflow(sum(1, 2), { workflow_name = "x",
      cluster_init_args = { num_workers = 5, ignore_reinit_error = true } }):run())
  end)
end)

-- Issue 9: nothing a peer, a driver or a value does takes the head down,
-- and every failure reaches the driver.
describe("cluster hardening", function()
  after_each(function()
    stop_all()
    H.cleanup()
  end)

  it("refuses a token file that is a FIFO or holds unprintable bytes", function()
    local dir = H.tmpdir()
    local fifo = dir .. "/fifo.token"
    assert(os.execute("mkfifo -m 600 '" .. fifo .. "'"))
    local nul = H.write(dir .. "/nul.token", ("a"):rep(26) .. "\0tail\n")
    assert(os.execute("chmod 600 '" .. nul .. "'"))
    for _, case in ipairs {
      { fifo, "the token file '" .. fifo .. "' is not a regular file" },
      { nul, "the token in '" .. nul .. "' holds an unprintable byte (0x00 at offset 26): " ..
             "a token is printable ASCII text" },
    } do
      local r = H.fflua({ "head", "--port", "0", "--num-cpus", "0", "--token-file", case[1] },
                        { timeout = 20 })
      assert.are.equal(2, r.code, r.stderr)
      assert.are.equal("fflua head: " .. case[2] .. "\n", r.stderr)
      r = H.fflua({ "worker", "--address", "127.0.0.1:1", "--token-file", case[1] },
                  { timeout = 20 })
      assert.are.equal(2, r.code, r.stderr)
      assert.are.equal("fflua worker: " .. case[2] .. "\n", r.stderr)
      local ok, err = pcall(core.cluster_connect, "127.0.0.1:1", { token_file = case[1] })
      assert.is_false(ok)
      assert.are.equal(case[2], err)
    end
    local r = H.fflua({ "worker", "--address", "127.0.0.1:1" },
                      { env = { FFLUA_TOKEN = ("b"):rep(20) .. "\27[2J" }, timeout = 20 })
    assert.are.equal(2, r.code)
    assert.are.equal("fflua worker: FFLUA_TOKEN holds an unprintable byte (0x1b at offset 20): " ..
                     "a token is printable ASCII text\n", r.stderr)
    local ok, err = pcall(core.cluster_connect, "127.0.0.1:1", { token = ("c"):rep(20) .. "\n\0" })
    assert.is_false(ok)
    assert.are.equal("bad option 'token' (it holds an unprintable byte (0x0a at offset 20): " ..
                     "a token is printable ASCII text)", err)
  end)

  it("refuses numeric options that are not numbers in range", function()
    local token = { FFLUA_TOKEN = core.token_new() }
    for _, case in ipairs {
      { "head", "--handshake-timeout", "0", "a number of seconds from 0.01 to 3600" },
      { "head", "--handshake-timeout", "0.0001", "a number of seconds from 0.01 to 3600" },
      { "head", "--handshake-timeout", "nan", "a number of seconds from 0.01 to 3600" },
      { "head", "--handshake-timeout", "inf", "a number of seconds from 0.01 to 3600" },
      { "head", "--handshake-timeout", "-1", "a number of seconds from 0.01 to 3600" },
      { "head", "--num-cpus", "nan", "a number of CPUs from 0 to 4096, with at most 4 decimals" },
      { "head", "--num-cpus", "-1", "a number of CPUs from 0 to 4096, with at most 4 decimals" },
      { "head", "--num-cpus", "1e9", "a number of CPUs from 0 to 4096, with at most 4 decimals" },
      { "head", "--num-cpus", "0.33333", "a number of CPUs from 0 to 4096, with at most 4 decimals" },
      { "head", "--port", "nan", "an integer from 0 to 65535" },
      { "head", "--port", "80.5", "an integer from 0 to 65535" },
      { "head", "--port", "0x50", "an integer from 0 to 65535" },
      { "head", "--port", "70000", "an integer from 0 to 65535" },
      { "head", "--workers", "-1", "an integer from 0 to 1024" },
      { "head", "--workers", "2000", "an integer from 0 to 1024" },
      { "worker", "--num-cpus", "inf", "a number of CPUs from 0 to 4096, with at most 4 decimals" },
      { "worker", "--num-cpus", "nan", "a number of CPUs from 0 to 4096, with at most 4 decimals" },
    } do
      -- (Settings that would be harmless come first, the bad one last.)
      local args = case[1] == "head" and { "head", "--port", "0", "--num-cpus", "0" }
                   or { "worker", "--address", "127.0.0.1:1" }
      args[#args + 1] = case[2]
      args[#args + 1] = case[3]
      local r = H.fflua(args, { env = token, timeout = 5 })
      assert.are.equal(2, r.code, table.concat(args, " "))
      assert.are.equal(("fflua %s: bad %s '%s': %s expected\n"):format(case[1], case[2], case[3],
                                                                        case[4]), r.stderr)
    end
    local r = H.fflua({ "head", "--port", "0" }, { env = { FFLUA_PARENT_PID = "12x" }, timeout = 20 })
    assert.are.equal(2, r.code)
    assert.are.equal("fflua head: bad FFLUA_PARENT_PID '12x': a process id expected\n", r.stderr)
    -- The driver's side.
    for _, t in ipairs { 0 / 0, math.huge, -1, 0 } do
      local ok, err = pcall(core.cluster_connect, "127.0.0.1:1", { token = core.token_new(), timeout = t })
      assert.is_false(ok)
      assert.are.equal(("bad option 'timeout' (a number of seconds from 0.01 to 3600 expected, " ..
                        "got %s)"):format(tostring(t)), err)
    end
    assert.has_error(function() core.sleep(0 / 0) end,
                     "bad argument #1 to 'sleep' (a finite non-negative number of seconds expected)")
    local sum = ff.workflow(function(a, b) return a + b end)
    for _, case in ipairs {
      { { num_workers = 0 }, "num_workers must be an integer from 1 to 1024" },
      { { num_workers = 5000 }, "num_workers must be an integer from 1 to 1024" },
      { { num_cpus = 0 / 0 }, "num_cpus must be a number from 0 to 4096 with at most 4 decimals" },
      { { num_cpus = -2 }, "num_cpus must be a number from 0 to 4096 with at most 4 decimals" },
      { { resources = { gpu = 0 / 0 } }, "resources must map names to non-negative numbers " ..
                                          "with at most 4 decimals" },
      { { resources = { gpu = math.huge } }, "resources must map names to non-negative numbers " ..
                                              "with at most 4 decimals" },
    } do
      local wf = ClusterWorkflow(sum(1, 2), { workflow_name = "opt", cluster_init_args = case[1] })
      local ok, err = pcall(wf.run, wf)
      assert.is_false(ok)
      assert.matches("ClusterWorkflow: " .. case[2], err, 1, true)
    end
    local address, token_file = cluster {}
    for _, ra in ipairs { { num_cpus = 0 / 0 }, { num_cpus = math.huge }, { num_cpus = -1 } } do
      local wf = ClusterWorkflow(sum(1, 2), { workflow_name = "ra",
        cluster_init_args = { address = address, token_file = token_file } })
      wf:query(".*"):set_remote_args(ra)
      local ok, err = pcall(wf.run, wf)
      assert.is_false(ok)
      assert.matches("): bad remote args: num_cpus must be a non-negative number with at most 4 " ..
                     "decimals", err, 1, true)
    end
  end)

  it("writes what an unauthenticated peer says on one escaped line", function()
    local log = H.tmpdir() .. "/head.log"
    local address = cluster({}, { log = log })
    local host, port = address:match("^(.*):(%d+)$")
    local reason = "x\nfflua head: worker evil:666 joined with 1 CPUs (place 9)\n\27[31mred\255"
    local frame = H.write(H.tmpdir() .. "/refuse", string.pack("<I4B", #reason + 2, 4) ..
                                                   string.char(#reason) .. reason)
    local r = H.run({ "bash", "-c", ("exec 3<>/dev/tcp/%s/%s; cat '%s' >&3; sleep 0.3")
                                    :format(host, port, frame) })
    assert.are.equal(0, r.code, r.stderr)
    local found
    for _ = 1, 100 do
      found = (H.read(log) or ""):find("the peer gave up:", 1, true)
      if found then break end
      core.sleep(0.02)
    end
    local lines = lines_of(log)
    assert.are.equal(1, #lines, H.read(log))
    assert.matches("^fflua net: 127%.0%.0%.1:%d+: the peer gave up: " ..
                   ("x\\nfflua head: worker evil:666 joined with 1 CPUs (place 9)\\n\\x1b[31mred\\xff")
                     :gsub("%p", "%%%0") .. "$", lines[1])
  end)

  it("writes a bounded number of lines for unauthenticated connection churn", function()
    local log = H.tmpdir() .. "/head.log"
    local address = cluster({}, { log = log })
    local host, port = address:match("^(.*):(%d+)$")
    -- 300 connections that read a byte of the HELLO and close (a reset),
    -- then 300 with a wrong token (refused).
    local r = H.run({ "bash", "-c", ("for i in $(seq 300); do exec 3<>/dev/tcp/%s/%s; " ..
                                     "read -r -N 1 -t 5 x <&3; exec 3>&-; done"):format(host, port) })
    assert.are.equal(0, r.code, r.stderr)
    for _ = 1, 300 do
      assert.is_false((pcall(core.cluster_connect, address, { token = ("x"):rep(32) })))
    end
    -- Every connection is accounted for, in a line of its own or in a
    -- summary of suppressed lines (one every 2 s while they come, so a
    -- slow machine sees more than one).
    local lines, accounted, summaries
    for _ = 1, 300 do
      lines, accounted, summaries = lines_of(log), 0, 0
      for _, l in ipairs(lines) do
        local n = l:match("^fflua net: (%d+) more lines about unauthenticated connections suppressed$")
        if n then
          accounted, summaries = accounted + tonumber(n), summaries + 1
        elseif l:find("^fflua net: ") then
          accounted = accounted + 1
        end
      end
      if accounted >= 600 then break end
      core.sleep(0.05)
    end
    assert.is_true(summaries >= 1)
    assert.is_true(#lines <= 20, #lines .. " lines:\n" .. table.concat(lines, "\n"))
    assert.is_true(accounted >= 600, accounted .. " accounted for:\n" .. table.concat(lines, "\n"))
  end)

  it("keeps a local cluster's workers: os.exit in a node fails it, a dead worker is replaced", function()
    local r = H.fflua({ script [[
      local ff = require "functionfuse"
      local CW = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
      local args = { num_workers = 2 }
      local bye = ff.workflow("bye", function() os.exit(3) end)
      local die = ff.workflow("die", function()
        local c = require "functionfuse.core"
        c.kill(c.getpid(), 9)
        c.sleep(30)
      end)
      local sum = ff.workflow("sum", function(a, b) return a + b end)
      local function try(node)
        local w = CW(node, { workflow_name = "w", cluster_init_args = args })
        w:query("^die.*$"):set_remote_args { max_retries = 0 }
        local ok, r = pcall(w.run, w)
        print(ok, (tostring(r):gsub("\n.*", "")))
      end
      try(bye())
      try(bye())
      try(sum(1, 2))
      try(die())
      try(die())
      try(die())
      try(sum(3, 4))
    ]] }, { env = { FFLUA_BIN = H.bin }, timeout = 60 })
    assert.are.equal(0, r.code, r.stderr)
    local out = {}
    for l in r.stdout:gmatch("[^\n]+") do out[#out + 1] = l end
    assert.are.equal(7, #out, r.stdout .. r.stderr)
    for i = 1, 2 do
      assert.matches("^false\tnode 'bye_000" .. (i - 1) .. "' %(function 'bye' defined at " ..
                     ".-:4%) failed: .-driver%.lua:4: os%.exit called in node 'bye_000" ..
                     (i - 1) .. "': a node cannot end its worker's process$", out[i])
    end
    assert.are.equal("true\t3", out[3])
    for i = 4, 6 do
      assert.matches("^false\tnode 'die_000" .. (i - 4) .. "' %(function 'die' defined at " ..
                     ".-%) failed: the worker process running it %([^)]+:%d+%) ended: killed " ..
                     "by signal 9$", out[i])
    end
    assert.are.equal("true\t7", out[7])
  end)

  it("restarts a head's local worker that ends, backing off, and gives up on a crash loop", function()
    local dir = H.tmpdir()
    local log = dir .. "/head.log"
    local token = H.write(dir .. "/t", core.token_new())
    assert(os.execute("chmod 600 '" .. token .. "'"))
    start_sh({ "head", "--port", "0", "--num-cpus", "1", "--token-file", token,
               "--ready-file", dir .. "/ready" }, log)
    local address = wait_file(dir .. "/ready")
    local args = { address = address, token_file = token }
    local client = core.cluster_connect(address, { token_file = token })
    local function places(n) -- waits until the cluster has n workers
      for _ = 1, 400 do
        local ps = client:status().places
        if #ps == n then return ps end
        core.sleep(0.025)
      end
      error("the cluster never had " .. n .. " workers")
    end
    local sum = ff.workflow("sum", function(a, b) return a + b end)
    local pids = {}
    for i = 1, 5 do
      pids[i] = tonumber(places(1)[1].name:match(":(%d+)$"))
      core.kill(pids[i], 9)
      places(0)
      if i == 1 then -- a run while the worker is gone waits for the next one
        assert.are.equal(3, ClusterWorkflow(sum(1, 2), { workflow_name = "wait",
                                                          cluster_init_args = args }):run())
      end
    end
    for _ = 1, 200 do
      if (H.read(log) or ""):find("no other starts", 1, true) then break end
      core.sleep(0.025)
    end
    client:close()
    local wf = ClusterWorkflow(sum(3, 4), { workflow_name = "none", cluster_init_args = args })
    local ok, err = pcall(wf.run, wf)
    assert.is_false(ok)
    assert.matches("cannot run workflow: node 'sum_0001' cannot run: the cluster has no workers$",
                   err)
    local expect = {}
    for i, delay in ipairs { "0.1", "0.2", "0.4", "0.8" } do
      expect[i] = ("fflua head: local worker %d ended: killed by signal 9; another starts in %s s")
                  :format(pids[i], delay)
    end
    expect[5] = ("fflua head: local worker %d ended: killed by signal 9, 5 times in a row " ..
                 "within 10 s of starting: no other starts"):format(pids[5])
    local got = {}
    for _, l in ipairs(lines_of(log)) do
      if l:find("local worker", 1, true) then got[#got + 1] = l end
    end
    assert.are.same(expect, got)
  end)

  it("fails a node that no worker left can hold once no worker joined for the heartbeat timeout",
     function()
    local address, token, ps = cluster({ { cpus = 1, resources = '{"plain": 1}' },
                                         { cpus = 1, resources = '{"gpu": 1}' } },
                                       { head_args = { "--heartbeat-timeout", "1" } })
    local dir = H.tmpdir()
    local driver = start { script [[
      local ff = require "functionfuse"
      local CW = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
      local address, token, dir = ...
      local first = ff.workflow("first", function(d)
        local c = require "functionfuse.core"
        local f = io.open(d .. "/started", "w"); f:write("1\n"); f:close()
        while not io.open(d .. "/go") do c.sleep(0.01) end
        return 1
      end)
      local gpu = ff.workflow("gpu", function(x) return x + 1 end)
      local wf = CW(gpu(first(dir)), { workflow_name = "gone",
                                       cluster_init_args = { address = address, token_file = token } })
      wf:query("^first.*$"):set_remote_args { resources = { plain = 1 } }
      wf:query("^gpu.*$"):set_remote_args { resources = { gpu = 1 } }
      local ok, err = pcall(wf.run, wf)
      print("RESULT", ok, err)
    ]], address, token, dir }
    wait_file(dir .. "/started")
    ps[2]:kill(H.signals.SIGKILL) -- the only worker with a gpu goes while 'first' runs
    ps[2]:wait(10)
    local client = core.cluster_connect(address, { token_file = token })
    for _ = 1, 400 do
      if #client:status().places == 1 then break end
      core.sleep(0.025)
    end
    client:close()
    H.write(dir .. "/go", "")
    local found, seen = driver:expect("RESULT", 30)
    assert.is_true(found, "the run did not end: " .. seen)
    local _, line = driver:expect("\n", 10)
    assert.matches("^\tfalse\tnode 'gpu_0000' %(function 'gpu' defined at .-%) failed: " ..
                   "no worker left in the cluster can hold what it asks for\r?\n$", line)
  end)

  it("says the cluster has no workers when it has none", function()
    local address, token, ps = cluster { { cpus = 1 } }
    ps[1]:kill(H.signals.SIGTERM)
    assert.are.equal(0, (ps[1]:wait(10)))
    local client = core.cluster_connect(address, { token_file = token })
    for _ = 1, 200 do
      if #client:status().places == 0 then break end
      core.sleep(0.025)
    end
    client:close()
    local sum = ff.workflow(function(a, b) return a + b end)
    local wf = ClusterWorkflow(sum(1, 2), { workflow_name = "none",
      cluster_init_args = { address = address, token_file = token } })
    local ok, err = pcall(wf.run, wf)
    assert.is_false(ok)
    assert.matches("cannot run workflow: node '.-' cannot run: the cluster has no workers$", err)
  end)

  it("keeps TCP keepalive on every connection, to notice a peer whose machine vanished", function()
    local address, token = cluster { { cpus = 1 } }
    local client = core.cluster_connect(address, { token_file = token })
    local port = ("%04X"):format(tonumber(address:match(":(%d+)$")))
    -- The kernel's table of connections: once they are idle (no data in
    -- flight, whose timer would show instead), each runs a keepalive
    -- timer (2); without keepalive, none (0).
    local timers
    for _ = 1, 100 do
      timers = {}
      for line in io.lines("/proc/net/tcp") do
        local loc, rem, st, timer = line:match("^%s*%d+: %x+:(%x+) %x+:(%x+) (%x+) %x+:%x+ (%x+):")
        if st == "01" and (loc == port or rem == port) then timers[#timers + 1] = timer end
      end
      if table.concat(timers, " ") == "02 02 02 02" then break end
      core.sleep(0.02)
    end
    client:close()
    -- Both ends of the worker's connection, and of this driver's.
    assert.are.equal("02 02 02 02", table.concat(timers, " "))
  end)

  it("refuses resource names that logs and fflua status would have to escape", function()
    local r = H.fflua({ "worker", "--address", "127.0.0.1:1", "--resources", '{"gpu\27[2J": 1}' },
                      { env = { FFLUA_TOKEN = core.token_new() }, timeout = 20 })
    assert.are.equal(2, r.code)
    assert.are.equal("fflua worker: bad resources '{\"gpu\27[2J\": 1}': a resource name is 1 to " ..
                     "128 bytes of text without control characters or backslashes\n", r.stderr)
    local address, token = cluster {}
    local sum = ff.workflow(function(a, b) return a + b end)
    for _, name in ipairs { "a\nb", ("x"):rep(129), "back\\slash" } do
      local wf = ClusterWorkflow(sum(1, 2), { workflow_name = "names",
        cluster_init_args = { address = address, token_file = token } })
      wf:query(".*"):set_remote_args { resources = { [name] = 1 } }
      local ok, err = pcall(wf.run, wf)
      assert.is_false(ok)
      assert.matches("): bad remote args: resource names must be 1 to 128 bytes of text without " ..
                     "control characters or backslashes", err, 1, true)
    end
  end)
end)
