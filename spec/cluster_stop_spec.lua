-- Stopping work on a cluster, from the worker's side: timeouts of nodes
-- stuck in Lua or in C, runs cancelled by their driver's Ctrl-C or death,
-- a 1-CPU worker's failures reported at once, SIGTERM with a grace period,
-- a worker whose head dies, and a worker's memory after a large result.
-- Real heads, workers and drivers, real signals; heartbeats of 1 s.
local ff = require "functionfuse"
local core = require "functionfuse.core"
local ClusterWorkflow = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
local H = require "spec.helper"

local C = require "spec.cluster_helper"
local stop_all, wait_file, cluster, script = C.stop_all, C.wait_file, C.cluster, C.script

local FAST = { "--heartbeat-timeout", "1" }

local sum = ff.workflow("sum", function(a, b) return a + b end)

local function run(node, address, token, name, remote_args)
  local wf = ClusterWorkflow(node, { workflow_name = name or "w",
    cluster_init_args = { address = address, token_file = token } })
  if remote_args then wf:query("^.*$"):set_remote_args(remote_args) end
  return wf:run()
end

-- Waits until the cluster has n workers.
local function wait_workers(address, token, n)
  local client = core.cluster_connect(address, { token_file = token })
  for _ = 1, 400 do
    if #client:status().places == n then break end
    core.sleep(0.025)
  end
  local got = #client:status().places
  client:close()
  assert.are.equal(n, got)
end

-- Seconds a sum(3, 4) run takes: how soon the cluster serves again.
local function next_run(address, token)
  local t0 = core.monotime()
  assert.are.equal(7, run(sum(3, 4), address, token, "next"))
  return core.monotime() - t0
end

-- A driver script in its own process (a pty), which runs a node that
-- writes `started` and then calls body (Lua source), with remote args
-- (Lua source of a table) if given.
local function driver(address, token, started, body, remote_args)
  local f = script(([[
    local ff = require "functionfuse"
    local CW = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
    local stuck = ff.workflow("stuck", function(path)
      local f = io.open(path .. ".tmp", "w")
      f:write("x")
      f:close()
      os.rename(path .. ".tmp", path)
      %s
    end)
    local wf = CW(stuck(%q), { workflow_name = "d",
      cluster_init_args = { address = %q, token_file = %q } })
    wf:query("^.*$"):set_remote_args(%s)
    wf:run()
  ]]):format(body, started, address, token, remote_args or "{}"))
  local p = H.fftest.pty { argv = { H.bin, f }, env = { TERM = "dumb" } }
  C.procs[#C.procs + 1] = p
  return p
end

-- How many workers the head's log says joined (a worker that replaces
-- its process joins again, as a new place).
local function joins(log)
  local k = 0
  for _ in (H.read(log) or ""):gmatch("worker [^\n]* joined with") do k = k + 1 end
  return k
end

-- Waits until n workers joined; returns the seconds.
local function wait_joins(log, n)
  local t0 = core.monotime()
  for _ = 1, 500 do
    if joins(log) >= n then return core.monotime() - t0 end
    core.sleep(0.01)
  end
  error("fewer than " .. n .. " workers joined: " .. (H.read(log) or ""))
end

local function rss_kib(pid)
  local s = H.read("/proc/" .. pid .. "/status")
  return tonumber(s:match("VmRSS:%s*(%d+) kB"))
end

describe("cluster stop", function()
  after_each(function()
    stop_all()
    H.cleanup()
  end)

  it("stops a node past its timeout_s, in Lua or stuck in a C call, and serves on", function()
    local log = H.tmpdir() .. "/head.log"
    local address, token, ps = cluster({ { cpus = 1 } }, { head_args = FAST, log = log })
    local pid = ps[1]:pid()
    local spin = ff.workflow("spin", function() while true do end end)
    local nap = ff.workflow("nap", function() os.execute("sleep 60") end)
    for i, case in ipairs { { spin, "spin_0000" }, { nap, "nap_0000" } } do
      local t0 = core.monotime()
      local ok, err = pcall(run, case[1](), address, token, "w",
                            { timeout_s = 1, max_retries = 0 })
      local took = core.monotime() - t0
      print(("\n%s: failed after %.2f s (timeout 1 s)"):format(case[2], took))
      assert.is_false(ok)
      assert.matches("node '" .. case[2] .. "' (function", tostring(err), 1, true)
      assert.matches("it ran longer than its timeout_s (1 s) and was stopped on worker ",
                     tostring(err), 1, true)
      assert.is_true(took < 3, "took " .. took)
      -- Only the one stuck in C made its worker replace its process.
      local free = wait_joins(log, i)
      local again = next_run(address, token)
      print(("  the worker was free %.3f s later; the next run took %.3f s"):format(free, again))
      assert.is_true(free < 1.5, "took " .. free)
      assert.is_true(again < 0.5, "took " .. again)
    end
    -- The stuck one made the worker replace its process: the same pid.
    assert.is_nil((ps[1]:wait(0)))
    assert.are.equal(pid, ps[1]:pid())
  end)

  it("retries a node that timed out in a C sleep on its first attempt", function()
    local address, token = cluster({ { cpus = 1 }, { cpus = 1 } }, { head_args = FAST })
    local flag = H.tmpdir() .. "/once"
    local once = ff.workflow("once", function(path, x)
      local f = io.open(path)
      if not f then
        f = io.open(path, "w")
        f:write("1")
        f:close()
        require("functionfuse.core").sleep(60)
      else
        f:close()
      end
      return x * 2
    end)
    local t0 = core.monotime()
    assert.are.equal(42, run(once(flag, 21), address, token, "w",
                             { timeout_s = 1, max_retries = 1 }))
    local took = core.monotime() - t0
    print(("\nsucceeded on its second attempt after %.2f s (timeout 1 s)"):format(took))
    assert.is_true(took < 4, "took " .. took)
  end)

  it("cancels a node looping in Lua when its driver is interrupted; the next run starts at once",
     function()
    local address, token = cluster({ { cpus = 1 } }, { head_args = FAST })
    local started = H.tmpdir() .. "/started"
    local d = driver(address, token, started, "while true do end")
    wait_file(started)
    d:kill(H.signals.SIGINT)
    local code = d:wait(5)
    assert.is_not_nil(code)
    local again = next_run(address, token)
    print(("\nthe next run took %.3f s"):format(again))
    assert.is_true(again < 1, "took " .. again)
  end)

  it("frees a worker within 1 s of its driver's kill -9, though the node sleeps in C", function()
    local log = H.tmpdir() .. "/head.log"
    local address, token, ps = cluster({ { cpus = 1 } }, { head_args = FAST, log = log })
    local pid = ps[1]:pid()
    local started = H.tmpdir() .. "/started"
    local d = driver(address, token, started, 'require("functionfuse.core").sleep(60)')
    wait_file(started)
    local t0 = core.monotime()
    d:kill(H.signals.SIGKILL)
    d:wait(5)
    wait_joins(log, 2)
    local free = core.monotime() - t0
    local again = next_run(address, token)
    print(("\nthe worker was free %.3f s after the driver's death; the next run took %.3f s")
      :format(free, again))
    assert.is_true(free < 1, "took " .. free)
    assert.is_true(again < 0.5, "took " .. again)
    assert.are.equal(pid, ps[1]:pid())
    assert.is_nil((ps[1]:wait(0)))
  end)

  it("reports a 1-CPU worker's failing node at once while later nodes are queued", function()
    local address, token = cluster({ { cpus = 1 } }, { head_args = FAST })
    local fail = ff.workflow("fail", function()
      require("functionfuse.core").sleep(0.3)
      error("boom")
    end)
    local slow = ff.workflow("slow", function(i)
      local t = os.clock() + 3
      while os.clock() < t do end
      return i
    end)
    local gather = ff.workflow("gather", function(...) return select("#", ...) end)
    local f = fail()
    local leaf = gather(f, slow(1), slow(2), slow(3), slow(4))
    local t0 = core.monotime()
    local ok, err = pcall(run, leaf, address, token)
    local took = core.monotime() - t0
    print(("\nthe failure arrived after %.2f s"):format(took))
    assert.is_false(ok)
    assert.matches("boom", tostring(err))
    assert.is_true(took < 1.5, "took " .. took)
    local again = next_run(address, token)
    print(("  the next run took %.3f s"):format(again))
    assert.is_true(again < 1, "took " .. again)
  end)

  it("on SIGTERM finishes its running node within the grace period, then leaves", function()
    local address, token, ps = cluster({ { cpus = 1, args = { "--grace", "5" } } },
                                       { head_args = FAST })
    local started = H.tmpdir() .. "/started"
    local bg = H.write(H.tmpdir() .. "/bg.sh", ([[
      for i in $(seq 800); do [ -e '%s' ] && break; sleep 0.025; done
      kill -TERM %d
    ]]):format(started, ps[1]:pid()))
    C.procs[#C.procs + 1] = H.fftest.pty { argv = { "/bin/sh", bg }, env = { TERM = "dumb" } }
    local slow = ff.workflow("slowly", function(path, x)
      local f = io.open(path, "w")
      f:write("x")
      f:close()
      require("functionfuse.core").sleep(1)
      return x + 1
    end)
    assert.are.equal(42, run(slow(started, 41), address, token))
    local code = ps[1]:wait(3)
    assert.are.equal(0, code)
  end)

  it("hands back a node still running when its grace period ends, and exits", function()
    local address, token, ps = cluster({ { cpus = 1, args = { "--grace", "0.5" } } },
                                       { head_args = FAST })
    local started = H.tmpdir() .. "/started"
    local d = driver(address, token, started, 'require("functionfuse.core").sleep(60)')
    wait_file(started)
    local t0 = core.monotime()
    ps[1]:kill(H.signals.SIGTERM)
    local code = ps[1]:wait(5)
    local took = core.monotime() - t0
    print(("\nthe worker left %.2f s after SIGTERM (grace 0.5 s)"):format(took))
    assert.are.equal(0, code)
    assert.is_true(took < 2.5, "took " .. took)
    d:kill(H.signals.SIGKILL)
  end)

  it("stopping, leaves rather than replace its process for a node stuck past its timeout",
     function()
    local log = H.tmpdir() .. "/head.log"
    local address, token, ps = cluster({ { cpus = 1, args = { "--grace", "30" } } },
                                       { head_args = FAST, log = log })
    local started = H.tmpdir() .. "/started"
    local d = driver(address, token, started, 'require("functionfuse.core").sleep(60)',
                     "{ timeout_s = 1, max_retries = 0 }")
    wait_file(started)
    local t0 = core.monotime()
    ps[1]:kill(H.signals.SIGTERM)
    -- Past its timeout (1 s) and the 0.5 s a stuck node gets, it leaves,
    -- long before its grace period of 30 s ends.
    local code = ps[1]:wait(10)
    local took = core.monotime() - t0
    print(("\nthe worker left %.2f s after SIGTERM"):format(took))
    assert.are.equal(0, code)
    assert.is_true(took < 5, "took " .. took)
    assert.are.equal(1, joins(log), H.read(log))
    d:kill(H.signals.SIGKILL)
  end)

  it("with --reconnect 0 exits within the heartbeat timeout when its head dies mid-node",
     function()
    local address, token, ps, head = cluster({ { cpus = 1, args = { "--reconnect", "0" } } },
                                             { head_args = FAST })
    local started = H.tmpdir() .. "/started"
    local d = driver(address, token, started, "while true do end")
    wait_file(started)
    local t0 = core.monotime()
    head:kill(H.signals.SIGKILL)
    local code = ps[1]:wait(5)
    local took = core.monotime() - t0
    print(("\nthe worker exited %.2f s after its head's death"):format(took))
    assert.is_not_nil(code)
    assert.is_true(took < 1, "took " .. took)
    d:kill(H.signals.SIGKILL)
  end)

  it("joins its head again after a SIGSTOP longer than the heartbeat timeout", function()
    local address, token, ps = cluster({ { cpus = 1 } }, { head_args = FAST })
    local pid = ps[1]:pid()
    assert(os.execute("kill -STOP " .. pid))
    core.sleep(2)
    assert(os.execute("kill -CONT " .. pid))
    local t0 = core.monotime()
    wait_workers(address, token, 1)
    next_run(address, token)
    local took = core.monotime() - t0
    print(("\njoined again and ran a node %.3f s after SIGCONT"):format(took))
    assert.is_true(took < 3, "took " .. took)
    assert.are.equal(pid, ps[1]:pid())
  end)

  it("gives its memory back after a 200 MB result", function()
    -- The default heartbeat: a 200 MB frame on a busy machine may take
    -- longer than 1 s to cross.
    local address, token, ps = cluster({ { cpus = 1 } })
    local pid = ps[1]:pid()
    assert.are.equal(7, run(sum(3, 4), address, token))
    local idle = rss_kib(pid)
    local big = ff.workflow("big", function(n) return string.rep("x", n) end)
    local got = run(big(200 * 2 ^ 20 // 1), address, token)
    assert.are.equal(200 * 2 ^ 20, #got)
    got = nil -- luacheck: ignore 311
    collectgarbage()
    if H.sanitize then
      pending("AddressSanitizer keeps freed memory in quarantine: the RSS says nothing here " ..
              "(the 200 MB result crossed all the same)")
    end
    local after
    for _ = 1, 40 do
      after = rss_kib(pid)
      if after <= 2 * idle then break end
      core.sleep(0.05)
    end
    print(("\nworker RSS: idle %.1f MiB, after a 200 MB result %.1f MiB"):format(
      idle / 1024, after / 1024))
    assert.is_true(after <= 2 * idle, ("idle %d KiB, after %d KiB"):format(idle, after))
  end)
end)
