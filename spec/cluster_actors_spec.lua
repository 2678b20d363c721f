-- Actors: class nodes on a cluster. The constructor runs on one worker,
-- the instance stays in that worker's Lua state, and its method calls run
-- there in program order; real heads and workers on 127.0.0.1.
local ff = require "functionfuse"
local core = require "functionfuse.core"
local ClusterWorkflow = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow
local H = require "spec.helper"

local C = require "spec.cluster_helper"
local start, stop_all, wait_file, cluster, script = C.start, C.stop_all, C.wait_file, C.cluster,
  C.script

-- functionfuse's IncrementalSum (tests/built-in/actors/test_ray_workflow.py).
local IncrementalSum = ff.workflow("IncrementalSum", {
  __init = function(self, start_at) self.start = start_at end,
  add = function(self, n)
    self.start = self.start + n
    return self.start
  end,
})
local minus = ff.workflow("minus", function(a, b) return a - b end)

-- test1: default names.
local function test1()
  local one = minus(4, 3)
  local incremental_sum = IncrementalSum(one)
  local two = minus(3, one)
  local calls = { incremental_sum:add(two), incremental_sum:add(two) }
  local six = incremental_sum:add(one)
  calls[3] = six
  return minus(six, 2), incremental_sum, calls
end

-- test2: every node named.
local function test2()
  local one = minus(4, 3):set_name("four_minus_three")
  local incremental_sum = IncrementalSum(one):set_name("IncrementalSum")
  local two = minus(3, one):set_name("three_minus_one")
  incremental_sum:add(two):set_name("one_plus_two")
  incremental_sum:add(two):set_name("three_plus_two")
  local six = incremental_sum:add(one):set_name("five_plus_one")
  return minus(six, 2):set_name("six_minus_two")
end

-- Runs both tests on a cluster (args: cluster_init_args) and checks 4,
-- and that the constructor and its calls ran on one worker.
local function incremental_sum_on(args)
  local result, incremental_sum, calls = test1()
  local wf = ClusterWorkflow(result, { workflow_name = "first", cluster_init_args = args })
  assert.are.equal(4, wf:run())
  local where = wf.last_run.placement
  local home = where[incremental_sum:get_name()]
  assert.is_string(home)
  for _, call in ipairs(calls) do
    assert.matches("^IncrementalSum%.add_%d+$", call:get_name())
    assert.are.equal(home, where[call:get_name()], call:get_name())
  end
  wf = ClusterWorkflow(test2(), { workflow_name = "first", cluster_init_args = args })
  assert.are.equal(4, wf:run())
  where = wf.last_run.placement
  for _, name in ipairs { "one_plus_two", "three_plus_two", "five_plus_one" } do
    assert.are.equal(where.IncrementalSum, where[name], name)
  end
  assert.are.same({ "four_minus_three", "IncrementalSum", "three_minus_one", "one_plus_two",
                    "three_plus_two", "five_plus_one", "six_minus_two" }, wf:names())
end

-- A class whose calls append to a list they return, and say where they ran.
local Log = ff.workflow("Log", {
  __init = function(self, tag) self.tag = tag; self.items = {} end,
  push = function(self, x)
    self.items[#self.items + 1] = x
    return self.tag .. ":" .. table.concat(self.items, ",")
  end,
})

-- Two logs, many calls each, and plain work beside them: in program order,
-- each its own state, whatever runs at the same time.
local function two_logs()
  local a, b = Log("a"), Log("b")
  local slow = ff.workflow("slow", function(x) require("functionfuse.core").sleep(0.01); return x end)
  local pushes, others = {}, {}
  for i = 1, 20 do
    pushes[#pushes + 1] = a:push(i)
    pushes[#pushes + 1] = b:push(slow(i))
    others[#others + 1] = slow(i)
  end
  local leaves = {}
  for _, n in ipairs(pushes) do leaves[#leaves + 1] = n end
  for _, n in ipairs(others) do leaves[#leaves + 1] = n end
  return leaves
end

local function check_logs(results)
  local la, lb = {}, {}
  for i = 1, 20 do
    la[#la + 1] = i
    lb[#lb + 1] = i
    assert.are.equal("a:" .. table.concat(la, ","), results[2 * i - 1])
    assert.are.equal("b:" .. table.concat(lb, ","), results[2 * i])
    assert.are.equal(i, results[40 + i])
  end
end

describe("actors", function()
  after_each(function()
    stop_all()
    H.cleanup()
  end)

  it("give IncrementalSum's 4 on LocalWorkflow, and two logs keep their own order", function()
    assert.are.equal(4, LocalWorkflow(test1(), { workflow_name = "first" }):run())
    assert.are.equal(4, LocalWorkflow(test2(), { workflow_name = "first" }):run())
    local leaves = two_logs()
    leaves[#leaves + 1] = { workflow_name = "logs" }
    check_logs { LocalWorkflow(table.unpack(leaves)):run() }
  end)

  it("give IncrementalSum's 4 on a local cluster of two workers", function()
    incremental_sum_on { num_workers = 2, num_cpus = 2 }
    local leaves = two_logs()
    leaves[#leaves + 1] = { workflow_name = "logs", cluster_init_args = { num_workers = 2, num_cpus = 2 } }
    check_logs { ClusterWorkflow(table.unpack(leaves)):run() }
  end)

  it("give IncrementalSum's 4 on a head with two workers, each actor on one worker", function()
    local address, token = cluster { { cpus = 1 }, { cpus = 1 } }
    local args = { address = address, token_file = token }
    incremental_sum_on(args)
    local leaves = two_logs()
    leaves[#leaves + 1] = { workflow_name = "logs", cluster_init_args = args }
    local wf = ClusterWorkflow(table.unpack(leaves))
    check_logs { wf:run() }
    local where = wf.last_run.placement
    local seen = {}
    for name, w in pairs(where) do
      local actor = name:match("^Log_(%d+)$")
      if actor then seen[#seen + 1] = w end
    end
    assert.are.equal(2, #seen)
    for i = 1, 40 do -- the calls of a and b alternate
      local name = leaves[i]:get_name()
      assert.matches("^Log%.push_%d+$", name)
      assert.are.equal(where[leaves[i % 2 == 1 and 1 or 2]:get_name()], where[name], name)
    end
    assert.is_true(where[leaves[1]:get_name()] == seen[1] or where[leaves[1]:get_name()] == seen[2])
  end)

  it("run on a worker with two CPUs (threads) as on one with one (inline)", function()
    local address, token = cluster { { cpus = 2 } }
    local args = { address = address, token_file = token }
    incremental_sum_on(args)
    for _ = 1, 3 do
      local leaves = two_logs()
      leaves[#leaves + 1] = { workflow_name = "logs", cluster_init_args = args }
      check_logs { ClusterWorkflow(table.unpack(leaves)):run() }
    end
  end)

  it("run an actor's calls beside other work on the worker's other thread", function()
    local address, token = cluster { { cpus = 2 } }
    local Clock = ff.workflow("Clock", {
      __init = function(self) self.calls = 0 end,
      tick = function(self)
        local c = require "functionfuse.core"
        self.calls = self.calls + 1
        local t0 = c.monotime()
        c.sleep(0.2)
        return { self.calls, t0, c.monotime() }
      end,
    })
    local busy = ff.workflow("busy", function(i)
      local c = require "functionfuse.core"
      local t0 = c.monotime()
      c.sleep(0.2)
      return { i, t0, c.monotime() }
    end)
    local clock = Clock()
    local leaves = {}
    for i = 1, 3 do
      leaves[#leaves + 1] = clock:tick()
      leaves[#leaves + 1] = busy(i)
    end
    leaves[#leaves + 1] = { workflow_name = "beside",
                            cluster_init_args = { address = address, token_file = token } }
    local spans = { ClusterWorkflow(table.unpack(leaves)):run() }
    local ticks, busies = {}, {}
    for i = 1, 6, 2 do ticks[#ticks + 1] = spans[i]; busies[#busies + 1] = spans[i + 1] end
    -- The calls one after the other, in order; the plain nodes beside them.
    assert.are.same({ 1, 2, 3 }, { ticks[1][1], ticks[2][1], ticks[3][1] })
    assert.are.equal(1, C.most_at_once(ticks))
    assert.is_true(ticks[1][3] <= ticks[2][2] and ticks[2][3] <= ticks[3][2])
    local all = {}
    for _, sp in ipairs(ticks) do all[#all + 1] = sp end
    for _, sp in ipairs(busies) do all[#all + 1] = sp end
    assert.are.equal(2, C.most_at_once(all))
  end)

  it("drop an instance once its last call finished, or when its run failed", function()
    local address, token = cluster { { cpus = 1 }, { cpus = 2 } }
    local dir = H.tmpdir()
    -- An instance says when it is collected.
    local Held = {}
    Held.__index = Held
    function Held:__init(path) self.path = path end
    function Held:put(x)
      if x == "boom" then error("boom") end
      return x
    end
    function Held:__gc()
      local f = io.open(self.path, "w")
      f:write("collected\n")
      f:close()
    end
    Held = ff.workflow("Held", Held)
    local args = { address = address, token_file = token }
    local leaves = {}
    for i = 1, 4 do
      local h = Held(dir .. "/ok" .. i)
      h:put(1)
      leaves[#leaves + 1] = h:put(2)
    end
    leaves[#leaves + 1] = { workflow_name = "held", cluster_init_args = args }
    assert.are.same({ 2, 2, 2, 2 }, { ClusterWorkflow(table.unpack(leaves)):run() })
    for i = 1, 4 do assert.are.equal("collected", wait_file(dir .. "/ok" .. i)) end
    -- A failed call: the run ends with a call left, and the instance goes too.
    local h = Held(dir .. "/failed")
    h:put("boom")
    local wf = ClusterWorkflow(h:put(3), { workflow_name = "held", cluster_init_args = args })
    local ok, err = pcall(wf.run, wf)
    assert.is_false(ok)
    assert.matches("boom", tostring(err))
    assert.are.equal("collected", wait_file(dir .. "/failed"))
  end)

  it("ship a class defined in a module by name", function()
    local address, token, ps = cluster { { cpus = 2 }, { cpus = 1 } }
    local Counter = ff.workflow("Counter", require "spec.helpers.actor_counter")
    local c = Counter(10)
    c:add(1)
    c:add(2)
    local last = c:add(3)
    local wf = ClusterWorkflow(last, { workflow_name = "module",
      cluster_init_args = { address = address, token_file = token } })
    wf:query("^Counter_.*$"):set_remote_args { num_cpus = 2 } -- the worker with 2 CPUs
    local r = wf:run()
    assert.are.equal(16, r.n)
    assert.are.equal("1,2,3", r.seen)
    assert.are.equal(ps[1]:pid(), r.pid)
    assert.matches(":" .. ps[1]:pid() .. "$", wf.last_run.placement[last:get_name()])
    -- The same on LocalWorkflow, in this process.
    r = LocalWorkflow(last, { workflow_name = "module" }):run()
    assert.are.same({ 16, "1,2,3", core.getpid() }, { r.n, r.seen, r.pid })
  end)

  it("refuse, before the run, an instance passed to a plain node or asked as a result", function()
    local address, token = cluster { { cpus = 1 } }
    local args = { address = address, token_file = token }
    local show = ff.workflow("show", function(x) return tostring(x) end)
    local log = Log("x"):set_name("the_log")
    local shown = show(log.node)
    local wf = ClusterWorkflow(shown, { workflow_name = "bad", cluster_init_args = args })
    local ok, err = pcall(wf.run, wf)
    assert.is_false(ok)
    assert.matches("^node 'show_%d+' %(function 'show' defined at [^)]*%): it takes the actor " ..
                   "'the_log' %(a class instance%) as an argument, but an actor stays on the " ..
                   "worker that made it and only its own method calls can use it$", tostring(err))
    -- Locally, the instance is a value like any.
    assert.matches("^table: ", LocalWorkflow(show(Log("y").node), { workflow_name = "ok" }):run())
    ok, err = pcall(function()
      return ClusterWorkflow(Log("z"):set_name("alone").node,
                             { workflow_name = "bad", cluster_init_args = args }):run()
    end)
    assert.is_false(ok)
    assert.matches("^node 'alone' %(function 'Log' defined at [^)]*%): it makes an actor %(a " ..
                   "class instance%), which stays on the worker that made it: it cannot be a " ..
                   "result of a run on a cluster; give its method calls instead$", tostring(err))
  end)

  it("fail the run, naming the actor and its worker, when that worker dies with calls left", function()
    local address, token, ps = cluster { { cpus = 1, resources = '{"home": 1}' }, { cpus = 1 } }
    local dir = H.tmpdir()
    local driver = start { script [[
      local ff = require "functionfuse"
      local CW = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
      local address, token, dir = ...
      local Slow = ff.workflow("Slow", {
        __init = function(self) self.n = 0 end,
        step = function(self)
          local c = require "functionfuse.core"
          self.n = self.n + 1
          if self.n == 2 then
            local f = io.open(dir .. "/started", "w"); f:write("1\n"); f:close()
            while true do c.sleep(0.01) end
          end
          return self.n
        end,
      })
      local s = Slow():set_name("the_slow_one")
      s:step()
      s:step()
      local last = s:step()
      local wf = CW(last, { workflow_name = "lost",
                            cluster_init_args = { address = address, token_file = token } })
      wf:query("^the_slow_one$"):set_remote_args { resources = { home = 1 } }
      local ok, err = pcall(wf.run, wf)
      print("RESULT", ok, err)
    ]], address, token, dir }
    wait_file(dir .. "/started")
    local pid = ps[1]:pid()
    ps[1]:kill(H.signals.SIGKILL)
    ps[1]:wait(10)
    local found, seen = driver:expect("RESULT", 30)
    assert.is_true(found, "the run did not end: " .. seen)
    local _, line = driver:expect("\n", 10)
    assert.matches("^\tfalse\tnode 'Slow.step_0001' %(function 'Slow.step' defined at .-%) " ..
                   "failed: its actor 'the_slow_one' was lost: the worker holding it %([^)]*:" ..
                   pid .. "%) left the cluster\r?\n$", line)
    -- The cluster goes on with the other worker.
    local wf = ClusterWorkflow(test1(), { workflow_name = "after",
      cluster_init_args = { address = address, token_file = token } })
    assert.are.equal(4, wf:run())
  end)
end)
