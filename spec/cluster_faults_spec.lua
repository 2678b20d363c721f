-- Faults on a cluster, from the head's side: workers killed, stopped and
-- cut off mid-run, poison tasks, retries, keep going, rebuilt actors and
-- a head that dies. Real heads and workers, real signals and sockets;
-- heartbeats of 1 s so that each spec takes seconds.
local ff = require "functionfuse"
local core = require "functionfuse.core"
local ClusterWorkflow = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow
local H = require "spec.helper"

local C = require "spec.cluster_helper"
local start, stop_all, wait_file, cluster, script = C.start, C.stop_all, C.wait_file, C.cluster,
  C.script

local FAST = { "--heartbeat-timeout", "1" }

-- A graph with independent work and one slow node in the middle, which
-- writes its worker's pid to `started` when it begins, and returns it
-- with its value. Returns the leaf.
local sq = ff.workflow("sq", function(x) return x * x end)
local add = ff.workflow("add", function(a, b) return a + b end)
local slow = ff.workflow("slow", function(path, x, secs)
  local c = require "functionfuse.core"
  if path then
    local f = io.open(path .. ".tmp", "w")
    f:write(c.getpid())
    f:close()
    os.rename(path .. ".tmp", path)
  end
  c.sleep(secs)
  return { value = x + 1, pid = c.getpid() }
end)
local value = ff.workflow("value", function(t) return t.value end)
local pid_of = ff.workflow("pid_of", function(t) return t.pid end)

local function graph(started, secs)
  local total = sq(1)
  for i = 2, 12 do total = add(total, sq(i)) end
  local s = slow(started, total, secs)
  local after = add(value(s), sq(3))
  return after, pid_of(s)
end

-- The result of the graph run locally: what a cluster run must give,
-- faults or not.
local function clean()
  local leaf = graph(nil, 0)
  return LocalWorkflow(leaf, { workflow_name = "clean" }):run()
end

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

describe("cluster faults", function()
  after_each(function()
    stop_all()
    H.cleanup()
  end)

  it("redoes the task of a worker killed with -9 mid-task: the result is a clean run's", function()
    local log = H.tmpdir() .. "/head.log"
    local address, token = cluster({ { cpus = 1 }, { cpus = 1 } }, { log = log, head_args = FAST })
    local started = H.tmpdir() .. "/started"
    background(([[
      for i in $(seq 800); do [ -e '%s' ] && break; sleep 0.025; done
      kill -9 "$(cat '%s')"
    ]]):format(started, started))
    local leaf = graph(started, 1)
    local wf = ClusterWorkflow(leaf, { workflow_name = "killed",
      cluster_init_args = { address = address, token_file = token } })
    local t0 = os.time()
    local got = wf:run()
    assert.are.equal(clean(), got)
    assert.is_true(os.time() - t0 < 15)
    local text = H.read(log)
    assert.matches("node 'slow_%d+' was lost with worker [^ ]+: it runs again %(attempt 2 of 4%)",
                   text)
  end)

  it("takes a stopped worker for lost within the heartbeat timeout and never uses its late result",
     function()
    local log = H.tmpdir() .. "/head.log"
    local address, token, ps = cluster({ { cpus = 1 }, { cpus = 1 } },
                                       { log = log, head_args = FAST })
    local started = H.tmpdir() .. "/started"
    local stopped_at = H.tmpdir() .. "/stopped"
    -- Stop the worker of the slow node, and let it go on 1.5 s later,
    -- while the other worker runs the node again: its own result, when
    -- it comes, must not count.
    background(([[
      for i in $(seq 800); do [ -e '%s' ] && break; sleep 0.025; done
      pid=$(cat '%s')
      kill -STOP "$pid"
      echo "$pid" > '%s'
      sleep 1.5
      kill -CONT "$pid"
    ]]):format(started, started, stopped_at))
    local leaf, pid = graph(started, 2)
    local wf = ClusterWorkflow(leaf, pid, { workflow_name = "stopped",
      cluster_init_args = { address = address, token_file = token } })
    local t0 = os.time()
    local got = { wf:run() }
    local took = os.time() - t0
    local victim = tonumber(wait_file(stopped_at))
    assert.are.equal(clean(), got[1])
    local other = ps[1]:pid() == victim and ps[2]:pid() or ps[1]:pid()
    assert.are.equal(other, got[2])
    -- 2 s on the stopped worker at most, 1 s to notice, 2 s again.
    assert.is_true(took <= 9, "took " .. took)
    assert.matches("head: [^ ]+:" .. victim .. ": it sent nothing for 1%.%d s: disconnected",
                   H.read(log))
  end)

  it("notices a worker whose network link goes down, and redoes its work", function()
    local ns = "ffh" .. core.getpid()
    local net = 10 + core.getpid() % 200
    local here, there = "10.213." .. net .. ".1", "10.213." .. net .. ".2"
    local ok = os.execute("ip netns add " .. ns .. " 2>/dev/null")
    if not ok then
      pending("no network namespaces here ('ip netns add' failed): needs root and a kernel "
              .. "that allows them")
      return
    end
    local function sh(cmd) assert(os.execute(cmd), cmd) end
    finally(function()
      os.execute("ip link del " .. ns .. "a 2>/dev/null")
      os.execute("ip netns del " .. ns .. " 2>/dev/null")
    end)
    sh(("ip link add %sa type veth peer name %sb"):format(ns, ns))
    sh(("ip link set %sb netns %s"):format(ns, ns))
    sh(("ip addr add %s/24 dev %sa && ip link set %sa up"):format(here, ns, ns))
    sh(("ip netns exec %s ip addr add %s/24 dev %sb"):format(ns, there, ns))
    sh(("ip netns exec %s ip link set %sb up && ip netns exec %s ip link set lo up")
       :format(ns, ns, ns))
    local dir = H.tmpdir()
    local token = H.write(dir .. "/token", core.token_new() .. "\n")
    assert(os.execute("chmod 600 '" .. token .. "'"))
    local log = dir .. "/head.log"
    C.start_sh({ "head", "--host", here, "--port", "0", "--num-cpus", "0", "--token-file", token,
                 "--ready-file", dir .. "/ready", "--heartbeat-timeout", "1" }, log)
    local address = wait_file(dir .. "/ready")
    -- The worker behind the link is alone at first, so the slow node runs
    -- there; the other joins once it started.
    local p = H.fftest.pty { argv = { "ip", "netns", "exec", ns, H.bin, "worker", "--address",
      address, "--token-file", token, "--num-cpus", "1", "--own-machine" },
      env = { TERM = "dumb" } }
    C.procs[#C.procs + 1] = p
    local client = core.cluster_connect(address, { token_file = token })
    wait_for(function() return #client:status().places == 1 end, 10, "the worker behind the link")
    client:close()
    local started = dir .. "/started"
    background(([[
      for i in $(seq 800); do [ -e '%s' ] && break; sleep 0.025; done
      '%s' worker --address '%s' --token-file '%s' --num-cpus 1 --own-machine &
      sleep 0.5
      ip netns exec %s ip link set %sb down
      wait
    ]]):format(started, H.bin, address, token, ns, ns))
    local leaf, pid = graph(started, 1)
    local wf = ClusterWorkflow(leaf, pid, { workflow_name = "cut",
      cluster_init_args = { address = address, token_file = token } })
    local t0 = os.time()
    local got = { wf:run() }
    assert.are.equal(clean(), got[1])
    assert.are_not.equal(p:pid(), got[2])
    assert.is_true(os.time() - t0 < 12)
    assert.matches(":" .. p:pid() .. ": it sent nothing for 1%.%d s: disconnected", H.read(log))
  end)

  it("fails a poison task after max_retries deaths, naming each worker, and goes on serving",
     function()
    local r = H.fflua({ script [[
      local ff = require "functionfuse"
      local CW = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
      local args = { num_workers = 2 }
      local poison = ff.workflow("poison", function()
        local c = require "functionfuse.core"
        c.kill(c.getpid(), 9)
        c.sleep(30)
      end)
      local sum = ff.workflow("sum", function(a, b) return a + b end)
      local function try(node)
        local w = CW(node, { workflow_name = "w", cluster_init_args = args })
        local ok, r = pcall(w.run, w)
        print(ok, (tostring(r):gsub("\n.*", "")))
      end
      try(poison())
      try(sum(3, 4))
    ]] }, { env = { FFLUA_BIN = H.bin }, timeout = 60 })
    assert.are.equal(0, r.code, r.stderr)
    local out = {}
    for l in r.stdout:gmatch("[^\n]+") do out[#out + 1] = l end
    assert.are.equal(2, #out, r.stdout .. r.stderr)
    local n, list = out[1]:match("^false\tnode 'poison_0000' %(function 'poison' defined at " ..
                                 ".-%) failed: its worker was lost on each of its (%d+) " ..
                                 "attempts: (.*)$")
    assert.is_string(list, out[1])
    -- 1 + max_retries (3) starts, each counted even when the worker died
    -- before its STARTED got out (the task was the oldest it had).
    n = tonumber(n)
    assert.are.equal(4, n, out[1])
    local pids = {}
    for pid in list:gmatch("[^ ]+:(%d+) ended: killed by signal 9") do pids[pid] = true end
    local distinct = 0
    for _ in pairs(pids) do distinct = distinct + 1 end
    assert.are.equal(n, distinct, list)
    assert.are.equal("true\t7", out[2])
  end)

  it("retries a node's error only with retry_exceptions", function()
    local address, token = cluster({ { cpus = 1 } }, { head_args = FAST })
    local dir = H.tmpdir()
    local flaky = ff.workflow("flaky", function(path)
      local f = io.open(path)
      local n = f and tonumber(f:read("a")) or 0
      if f then f:close() end
      f = io.open(path, "w")
      f:write(n + 1)
      f:close()
      if n < 2 then error("flaky failure " .. n) end
      return n
    end)
    local args = { address = address, token_file = token }
    local plain = flaky(dir .. "/a")
    local ok, err = pcall(function()
      return ClusterWorkflow(plain, { workflow_name = "a", cluster_init_args = args }):run()
    end)
    assert.is_false(ok)
    assert.matches("flaky failure 0", tostring(err))
    assert.are.equal("1", H.read(dir .. "/a"))
    local retried = flaky(dir .. "/b")
    local wf = ClusterWorkflow(retried, { workflow_name = "b", cluster_init_args = args })
    wf:query("^flaky.*$"):set_remote_args { retry_exceptions = true, max_retries = 2 }
    assert.are.equal(2, wf:run())
    assert.are.equal("3", H.read(dir .. "/b"))
  end)

  it("keeps going past failed nodes, running every branch that does not depend on them",
     function()
    local address, token = cluster({ { cpus = 1 }, { cpus = 1 } }, { head_args = FAST })
    local dir = H.tmpdir()
    local boom = ff.workflow("boom", function(x) error("boom " .. x) end)
    local mark = ff.workflow("mark", function(path, x)
      local f = io.open(path, "w")
      f:write(x)
      f:close()
      return x
    end)
    local a = boom(1)
    local b = boom(2)
    local never = mark(dir .. "/never", add(a, b))
    local fine = mark(dir .. "/fine", add(sq(3), 1))
    local wf = ClusterWorkflow(never, fine, { workflow_name = "kg",
      cluster_init_args = { address = address, token_file = token } })
    local ok, err = pcall(wf.run, wf, { keep_going = true })
    assert.is_false(ok)
    err = tostring(err)
    assert.matches("boom_0000", err)
    assert.matches("boom_0001", err)
    assert.are.equal("10", H.read(dir .. "/fine"))
    assert.is_nil(H.read(dir .. "/never"))
  end)

  it("rebuilds an actor with max_restarts after its worker is killed with -9", function()
    local address, token, ps = cluster({ { cpus = 1 }, { cpus = 1 } }, { head_args = FAST })
    local dir = H.tmpdir()
    local Counter = ff.workflow("Counter", {
      __init = function(self, start_at) self.n = start_at end,
      add = function(self, k, path, secs)
        local c = require "functionfuse.core"
        self.n = self.n + k
        if path then
          local f = io.open(path .. ".tmp", "w")
          f:write(c.getpid())
          f:close()
          os.rename(path .. ".tmp", path)
          c.sleep(secs)
        end
        return self.n
      end,
    })
    local started = dir .. "/started"
    local c = Counter(sq(2))
    c:add(1)
    c:add(2)
    local last = c:add(10, started, 1)
    local wf = ClusterWorkflow(last, { workflow_name = "actor",
      cluster_init_args = { address = address, token_file = token } })
    wf:query("^Counter_.*$"):set_remote_args { max_restarts = 1 }
    background(([[
      for i in $(seq 800); do [ -e '%s' ] && break; sleep 0.025; done
      kill -9 "$(cat '%s')"
    ]]):format(started, started))
    -- 4 + 1 + 2 + 10, the calls before the lost one replayed in order.
    assert.are.equal(17, wf:run())
    assert.is_table(ps)
  end)

  it("has hand-started workers join a new head at the same address after a kill -9", function()
    local address, token, _, head = cluster({ { cpus = 1, args = { "--reconnect", "30" } },
                                              { cpus = 1, args = { "--reconnect", "30" } } },
                                            { head_args = FAST })
    local port = address:match(":(%d+)$")
    head:kill(H.signals.SIGKILL)
    head:wait(10)
    local dir = H.tmpdir()
    start({ "head", "--port", port, "--num-cpus", "0", "--token-file", token,
            "--ready-file", dir .. "/ready", "--heartbeat-timeout", "1" })
    assert.are.equal(address, wait_file(dir .. "/ready"))
    local client = core.cluster_connect(address, { token_file = token })
    wait_for(function() return #client:status().places == 2 end, 15, "the workers' return")
    client:close()
    local leaf = graph(nil, 0)
    assert.are.equal(clean(), ClusterWorkflow(leaf, { workflow_name = "again",
      cluster_init_args = { address = address, token_file = token } }):run())
  end)

  it("on SIGTERM fails the run in progress with the head's reason; its workers wait for a new one",
     function()
    local address, token, ps, head = cluster({ { cpus = 1, args = { "--reconnect", "30" } } },
                                             { head_args = FAST })
    local started = H.tmpdir() .. "/started"
    background(([[
      for i in $(seq 800); do [ -e '%s' ] && break; sleep 0.025; done
      kill -TERM %d
    ]]):format(started, head:pid()))
    local leaf = graph(started, 30)
    local t0 = core.monotime()
    local ok, err = pcall(function()
      return ClusterWorkflow(leaf, { workflow_name = "term",
        cluster_init_args = { address = address, token_file = token } }):run()
    end)
    assert.is_false(ok)
    assert.matches("the head at " .. address:gsub("%p", "%%%0") ..
                   " is stopping: the head was terminated", tostring(err))
    assert.is_true(core.monotime() - t0 < 10)
    assert.are.equal(0, (head:wait(10)))
    -- The hand-started worker is still there, trying to reach a head.
    assert.is_nil((ps[1]:wait(0.3)))
  end)

  it("cancels a killed driver's task, even stuck in C, and serves the next driver at once",
     function()
    local address, token = cluster({ { cpus = 1 } }, { head_args = FAST })
    local started = H.tmpdir() .. "/started"
    local driver = H.fftest.pty { argv = { H.bin, script(([[
      local ff = require "functionfuse"
      local CW = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
      local stuck = ff.workflow("stuck", function(path)
        local c = require "functionfuse.core"
        local f = io.open(path, "w")
        f:close()
        c.sleep(60)
      end)
      CW(stuck(%q), { workflow_name = "stuck",
        cluster_init_args = { address = %q, token_file = %q } }):run()
    ]]):format(started, address, token)) }, env = { TERM = "dumb", FFLUA_BIN = H.bin } }
    C.procs[#C.procs + 1] = driver
    wait_for(function() return io.open(started) ~= nil end, 20, "the stuck node")
    driver:kill(H.signals.SIGKILL)
    driver:wait(10)
    -- The only worker's CPU was the stuck node's: the next run needs it
    -- back, which takes the worker's grace (0.5 s) and a new process.
    local t0 = os.time()
    assert.are.equal(9, ClusterWorkflow(add(4, 5), { workflow_name = "next",
      cluster_init_args = { address = address, token_file = token } }):run())
    assert.is_true(os.time() - t0 <= 4)
  end)

  it("refuses to listen beyond loopback without a token file", function()
    local r = H.fflua({ "head", "--host", "0.0.0.0", "--port", "0", "--num-cpus", "0" },
                      { env = { FFLUA_TOKEN = "" } })
    assert.are_not.equal(0, r.code)
    assert.matches("fflua head: cannot listen on 0%.0%.0%.0:0: 0%.0%.0%.0 is not a loopback " ..
                   "address: give %-%-token%-file FILE", r.stderr)
    r = H.fflua({ "head", "--heartbeat-timeout", "0.05" })
    assert.are.equal(2, r.code)
    assert.matches("bad %-%-heartbeat%-timeout '0%.05': a number of seconds from 0%.1 to 3600 " ..
                   "expected", r.stderr)
  end)
end)
