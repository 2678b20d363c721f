-- Faults on a cluster, from the driver's side: the remote args and run
-- options of faults, the errors a user reads, a head that stops answering
-- or dies, a driver that dies or is interrupted. Real heads, workers and
-- drivers; heartbeats of 1 s so that each spec takes seconds.
local ff = require "functionfuse"
local core = require "functionfuse.core"
local ClusterWorkflow = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
local H = require "spec.helper"

local C = require "spec.cluster_helper"
local stop_all, cluster, script = C.stop_all, C.cluster, C.script

local FAST = { "--heartbeat-timeout", "1" }

-- Runs shell text in the background (a pty), remembered for stop_all.
local function background(text)
  local f = H.write(H.tmpdir() .. "/bg.sh", text)
  local p = H.fftest.pty { argv = { "/bin/sh", f }, env = { TERM = "dumb" } }
  C.procs[#C.procs + 1] = p
  return p
end

local function wait_for(pred, secs, what)
  for _ = 1, math.floor(secs / 0.025) do
    if pred() then return end
    core.sleep(0.025)
  end
  error("never happened: " .. what, 2)
end

-- Whether process pid is gone (no such process, or a zombie nobody reaped).
local function gone(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return true end
  local st = f:read("a")
  f:close()
  return st:match("^%d+ %b() (%a)") == "Z"
end

-- The children of process pid.
local function children(pid)
  local t = {}
  local p = io.popen("ls /proc")
  for d in p:lines() do
    if d:match("^%d+$") then
      local f = io.open("/proc/" .. d .. "/stat")
      local st = f and f:read("a")
      if f then f:close() end
      if st and tonumber(st:match("^%d+ %b() %a (%d+)")) == pid then t[#t + 1] = tonumber(d) end
    end
  end
  p:close()
  return t
end

local function err_of(f, ...)
  local ok, e = pcall(f, ...)
  assert.is_false(ok, "expected an error")
  return e
end

describe("cluster driver faults", function()
  after_each(function()
    stop_all()
    H.cleanup()
  end)

  describe("remote args and options", function()
    local sum = ff.workflow("sum", function(a, b) return a + b end)
    local Cls = ff.workflow("Cls", { __init = function(self) self.n = 0 end,
                                     get = function(self) return self.n end })
    local function wf()
      local obj = Cls()
      local leaf = sum(sum(1, 2), obj:get())
      return ClusterWorkflow(leaf, { workflow_name = "opts" })
    end

    it("refuses bad values, naming the key", function()
      local w = wf()
      local function msg(args) return err_of(function() w:query("sum.*"):set_remote_args(args) end) end
      assert.matches("set_remote_args: max_retries must be an integer from 0 to 1000, got %-1 " ..
                     "%(Ray's %-1, retry for ever, is refused", msg { max_retries = -1 })
      assert.matches("max_retries must be an integer from 0 to 1000, got 1.5$", msg { max_retries = 1.5 })
      assert.matches("max_retries must be an integer from 0 to 1000, got 1001$", msg { max_retries = 1001 })
      assert.matches("retry_exceptions must be a boolean, got string", msg { retry_exceptions = "yes" })
      assert.matches("timeout_s must be a number of seconds > 0, got 0$", msg { timeout_s = 0 })
      assert.matches("timeout_s must be a number of seconds > 0, got %-?nan", msg { timeout_s = 0 / 0 })
      assert.matches("unknown remote arg 'max_retry' %(did you mean 'max_retries'%?%)",
                     msg { max_retry = 1 })
      assert.matches("set_remote_args: max_restarts is for class nodes %(actors%), and node " ..
                     "'sum_%d+' is a plain function's", msg { max_restarts = 1 })
      assert.matches("Ray's max_task_retries is not taken", msg { max_task_retries = 1 })
      -- Good ones pass, max_restarts on the class's nodes too.
      w:query("sum.*"):set_remote_args { max_retries = 0, retry_exceptions = true, timeout_s = 2.5 }
      w:query("Cls.*"):set_remote_args { max_restarts = 2, max_retries = 1 }
    end)

    it("refuses a bad keep_going and a bad heartbeat_timeout_s", function()
      local w = wf()
      assert.matches("bad option 'keep_going' %(a boolean expected%)",
                     err_of(w.run, w, { keep_going = 1 }))
      assert.matches("unknown option 'keep_goin' %(did you mean 'keep_going'%?%)",
                     err_of(w.run, w, { keep_goin = true }))
      local leaf = sum(1, 2)
      assert.matches("cluster_init_args.heartbeat_timeout_s must be a number of seconds from 0.1 to 3600",
        err_of(ClusterWorkflow, leaf, { workflow_name = "x", cluster_init_args = { heartbeat_timeout_s = 0 } }))
      assert.matches("heartbeat_timeout_s is for a local cluster",
        err_of(ClusterWorkflow, leaf, { workflow_name = "x",
          cluster_init_args = { address = "127.0.0.1:1", heartbeat_timeout_s = 1 } }))
    end)
  end)

  it("LocalWorkflow keep_going: the same list, every independent node run", function()
    local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow
    local ok = ff.workflow("ok", function(x) return x * 2 end)
    local fail = ff.workflow("fail", function(x) error("no " .. x) end)
    local after = ff.workflow("after", function(x) return x end)
    local join = ff.workflow("join", function(...) return select("#", ...) end)
    local ran = {}
    local log = ff.workflow("log", function(x) ran[#ran + 1] = x; return x end)
    local leaf = join(after(fail(1)), after(after(fail(2))), log(ok(21)))
    local w = LocalWorkflow(leaf, { workflow_name = "lkg" })
    local e = err_of(w.run, w, { keep_going = true })
    assert.matches("^2 nodes failed, and 4 nodes that depend on them did not run %(keep_going%):\n" ..
                   "node 'fail_%d+' %([^)]+%) failed: [^\n]*no 1\nnode 'fail_%d+' %([^)]+%) " ..
                   "failed: [^\n]*no 2$", tostring(e))
    assert.are.same({ 42 }, ran)
    assert.are.equal(2, #e.failures)
    assert.are.equal(4, e.skipped)
    assert.matches("^node 'fail_%d+' %([^)]+%) failed: [^\n]*no 1\nstack traceback:", tostring(err_of(w.run, w)))
    assert.matches("LocalWorkflow:run: unknown option 'keep_goin' %(did you mean 'keep_going'%?%)",
                   err_of(w.run, w, { keep_goin = true }))
  end)

  describe("the errors a user reads", function()
    local address, token
    before_each(function()
      address, token = cluster({ { cpus = 1 }, { cpus = 1 } }, { head_args = FAST })
    end)
    local function cwf(leaf, name)
      return ClusterWorkflow(leaf, { workflow_name = name,
        cluster_init_args = { address = address, token_file = token } })
    end

    it("a Lua error: node, function, error, worker, traceback; attempts when retried", function()
      local bad = ff.workflow("bad", function(x) error("boom " .. x) end)
      local w = cwf(bad(7), "err")
      local e = err_of(w.run, w)
      local m = tostring(e)
      assert.matches("^node 'bad_%d+' %(function 'bad' defined at [^)]+%) failed: [^\n]*boom 7\n", m)
      assert.matches("\n%(on worker [^\n]+:%d+", m)
      assert.matches("\nstack traceback:\n", m)
      assert.are.equal("bad", e.func)
      assert.matches("boom 7$", e.value)
      w:query("bad.*"):set_remote_args { retry_exceptions = true, max_retries = 2 }
      m = tostring(err_of(w.run, w))
      assert.matches("boom 7\n%(on worker [^\n]+%)\n%(it failed on each of its 3 attempts%)\n", m)
    end)

    it("a node whose worker dies each time it runs: lost, naming the workers", function()
      local poison = ff.workflow("poison", function()
        local c = require "functionfuse.core"
        c.kill(c.getpid(), 9)
        c.sleep(5)
      end)
      local w = cwf(poison(), "lost")
      w:query(".*"):set_remote_args { max_retries = 1 }
      local t0 = core.monotime()
      local m = tostring(err_of(w.run, w))
      assert.matches("^node 'poison_%d+' %(function 'poison' defined at [^)]+%) failed: its worker " ..
                     "was lost on each of its 2 attempts: [^\n]+:%d+ [^;]+; [^\n]+:%d+ ", m)
      assert.is_true(core.monotime() - t0 < 5, "it took " .. (core.monotime() - t0))
    end)

    it("keep_going: every independent branch runs, then one error lists the failures", function()
      local ok = ff.workflow("ok", function(x) return x * 2 end)
      local fail = ff.workflow("fail", function(x) error("no " .. x) end)
      local after = ff.workflow("after", function(x) return x end)
      local join = ff.workflow("join", function(...) return select("#", ...) end)
      local a, b = fail(1), fail(2)
      local good = ok(21)
      local leaf = join(after(a), after(after(b)), good)
      local w = cwf(leaf, "kg")
      local e = err_of(w.run, w, { keep_going = true })
      local m = tostring(e)
      assert.matches("^2 nodes failed, and 4 nodes that depend on them did not run %(keep_going%):\n", m)
      assert.matches("\nnode 'fail_%d+' %([^)]+%) failed: [^\n]*no 1\n", m)
      assert.matches("\nnode 'fail_%d+' %([^)]+%) failed: [^\n]*no 2\n", m)
      assert.is_nil(m:find("stack traceback", 1, true))
      assert.are.equal(2, #e.failures)
      assert.are.equal(4, e.skipped)
      assert.matches("stack traceback:", e.failures[1].traceback)
      -- Without keep_going, the first failure is the error.
      m = tostring(err_of(w.run, w))
      assert.matches("^node 'fail_%d+' %([^)]+%) failed: [^\n]*no [12]\n", m)
    end)
  end)

  it("keep_going with a storage: what completed is stored", function()
    local dir = H.tmpdir()
    local out = H.fflua({ script([[
      local ff = require "functionfuse"
      local ClusterWorkflow = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
      local storage_factory = require("functionfuse.storage").storage_factory
      local ok = ff.workflow("ok", function(x) return x * 2 end)
      local fail = ff.workflow("fail", function() error("no") end)
      local join = ff.workflow("join", function(a, b) return a + b end)
      local leaf = join(ok(1), fail())
      local wf = ClusterWorkflow(leaf, { workflow_name = "kgs", quiet = true,
        cluster_init_args = { num_workers = 1, heartbeat_timeout_s = 1 } })
      wf:set_storage(storage_factory { kind = "file", options = { path = arg[1] } })
      assert(not pcall(wf.run, wf, { keep_going = true }))
      local st = storage_factory { kind = "file", options = { path = arg[1] } }
      local names = st:list_tasks("kgs")
      table.sort(names)
      print(table.concat(names, " "))
    ]]), dir .. "/st" }, { timeout = 60 })
    assert.are.equal(0, out.code, out.stderr)
    assert.matches("^ok_%d+\n$", out.stdout)
  end)

  it("a head that stops answering (SIGSTOP) fails the run within its heartbeat timeout", function()
    local address, token, _, hp = cluster({ { cpus = 1 } }, { head_args = FAST })
    local slow = ff.workflow("slow", function() require("functionfuse.core").sleep(4); return 1 end)
    local w = ClusterWorkflow(slow(), { workflow_name = "stop",
      cluster_init_args = { address = address, token_file = token } })
    background(("sleep 0.5; kill -STOP %d"):format(hp:pid()))
    local t0 = core.monotime()
    local m = tostring(err_of(w.run, w))
    local took = core.monotime() - t0
    os.execute("kill -CONT " .. hp:pid())
    assert.are.equal(("the head at %s stopped answering (nothing for 1.0 s)"):format(address), m)
    assert.is_true(took < 0.5 + 1 + 1, "it took " .. took)
  end)

  it("kill -9 of the head: a clear error at once; a new head at that address resumes from storage",
     function()
    local address, token, _, hp = cluster({ { cpus = 1, resources = '{"_disk": 1}' } },
                                          { head_args = FAST })
    local dir = H.tmpdir()
    local started = dir .. "/started"
    local text = ([[
      local ff = require "functionfuse"
      local ClusterWorkflow = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
      local storage_factory = require("functionfuse.storage").storage_factory
      local first = ff.workflow("first", function() return 20 end)
      local second = ff.workflow("second", function(x, path)
        local c = require "functionfuse.core"
        if path ~= "" then local f = io.open(path, "w"); f:write("1"); f:close(); c.sleep(30) end
        return x + 1
      end)
      local wf = ClusterWorkflow(second(first(), arg[1]), { workflow_name = "resume", quiet = true,
        cluster_init_args = { address = %q, token_file = %q } })
      wf:set_storage(storage_factory { kind = "cluster", options = { path = %q,
        remote_args = { resources = { _disk = 1 } } } })
      local ok, r = pcall(wf.run, wf)
      print(ok, r, wf.last_run and wf.last_run.loaded, wf.last_run and wf.last_run.computed)
    ]]):format(address, token, dir .. "/st")
    local s = script(text)
    local drv = C.start({ s, started })
    wait_for(function() return io.open(started) ~= nil end, 20, "the slow node started")
    local t0 = core.monotime()
    hp:kill(H.signals.SIGKILL)
    local seen = H.expect(drv, "\n", 5)
    assert.is_true(core.monotime() - t0 < 1 + 1, "it took " .. (core.monotime() - t0))
    assert.matches("false\tthe head at " .. address:gsub("%p", "%%%0") .. " closed the connection", seen)
    -- A new head at the same address; the worker started by hand comes back.
    local port = address:match(":(%d+)$")
    local hdir = H.tmpdir()
    C.start({ "head", "--port", port, "--num-cpus", "0", "--token-file", token,
              "--ready-file", hdir .. "/ready", "--heartbeat-timeout", "1" })
    C.wait_file(hdir .. "/ready")
    local client = core.cluster_connect(address, { token_file = token })
    wait_for(function() return #client:status().places == 1 end, 20, "the worker reconnected")
    client:close()
    local r = H.fflua({ s, "" }, { timeout = 30 })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("true\t21\t1\t1\n", r.stdout)
  end)

  it("the head's memory returns to within 2x of idle after a 200 MB result", function()
    -- The default heartbeat: 200 MB take a while on a loaded machine.
    local address, token, _, hp = cluster({ { cpus = 1 } })
    local function rss(pid)
      local st = assert(io.open("/proc/" .. pid .. "/status")):read("a")
      return tonumber(st:match("VmRSS:%s*(%d+) kB"))
    end
    local big = ff.workflow("big", function(n) return string.rep("x", n << 20) end)
    local w = ClusterWorkflow(big(1), { workflow_name = "rss",
      cluster_init_args = { address = address, token_file = token } })
    w:run() -- warm: every buffer of a small run made
    local idle = rss(hp:pid())
    w = ClusterWorkflow(big(200), { workflow_name = "rss",
      cluster_init_args = { address = address, token_file = token } })
    assert.are.equal(200 << 20, #w:run())
    collectgarbage()
    local after
    for _ = 1, 200 do
      after = rss(hp:pid())
      if after <= 2 * idle then break end
      core.sleep(0.025)
    end
    assert.is_true(after <= 2 * idle, ("idle %d kB, after %d kB"):format(idle, after))
  end)

  it("kill -9 of a driver: its local head and workers are gone within 1 s", function()
    local dir = H.tmpdir()
    local started = dir .. "/started"
    local s = script(([[
      local ff = require "functionfuse"
      local ClusterWorkflow = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
      local spin = ff.workflow("spin", function()
        local f = io.open(%q, "w"); f:write("1"); f:close()
        while true do end
      end)
      ClusterWorkflow(spin(), { workflow_name = "spin",
        cluster_init_args = { num_workers = 2, heartbeat_timeout_s = 1 } }):run()
    ]]):format(started))
    local drv = C.start({ s })
    wait_for(function() return io.open(started) ~= nil end, 20, "the node started")
    local heads = children(drv:pid())
    assert.are.equal(1, #heads)
    local workers = children(heads[1])
    assert.are.equal(2, #workers)
    drv:kill(H.signals.SIGKILL)
    local t0 = core.monotime()
    local all = { heads[1], workers[1], workers[2] }
    wait_for(function()
      for _, pid in ipairs(all) do if not gone(pid) then return false end end
      return true
    end, 3, "the local cluster ended")
    assert.is_true(core.monotime() - t0 < 1, "it took " .. (core.monotime() - t0))
  end)

  it("Ctrl-C in the REPL cancels the run, and the next run starts at once", function()
    local address, token = cluster({ { cpus = 1 } }, { head_args = FAST })
    local p = H.pty({}, {})
    C.procs[#C.procs + 1] = p
    H.type(p, ("CW = require('functionfuse.backends.builtin.clusterback').ClusterWorkflow; " ..
               "ia = { address = %q, token_file = %q }\r"):format(address, token))
    H.type(p, "spin = ff.workflow('spin', function() while true do end end)\r")
    H.type(p, "quick = ff.workflow('quick', function() return 42 end)\r")
    H.type(p, "CW(spin(), { workflow_name = 'a', cluster_init_args = ia }):run()\r")
    p:expect("never printed", 1.0)
    p:kill(H.signals.SIGINT)
    H.expect(p, "interrupted", 5)
    H.expect(p, "> ")
    local t0 = core.monotime()
    H.type(p, "CW(quick(), { workflow_name = 'b', cluster_init_args = ia }):run()\r")
    H.expect(p, "42", 10)
    assert.is_true(core.monotime() - t0 < 2, "the second run took " .. (core.monotime() - t0))
  end)
end)
