-- Machines: the workers of one host share its resources (all but CPU), as a
-- Ray node's resources are the host's; a worker may count as a machine of
-- its own; the local cluster's num_cpus and resources are the machine's.
local ff = require "functionfuse"
local core = require "functionfuse.core"
local ClusterWorkflow = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
local H = require "spec.helper"
local C = require "spec.cluster_helper"

local most_at_once = C.most_at_once

-- n nodes that each hold a span of 0.4 s, with remote args ra.
local function spans_run(address, token, n, ra)
  local task = ff.workflow("task", function(i)
    local c = require "functionfuse.core"
    local t0 = c.monotime()
    c.sleep(0.4)
    return { i, t0, c.monotime() }
  end)
  local leaves = {}
  for i = 1, n do leaves[i] = task(i) end
  leaves[#leaves + 1] = { workflow_name = "spans",
                          cluster_init_args = { address = address, token_file = token } }
  local wf = ClusterWorkflow(table.unpack(leaves))
  wf:query(".*"):set_remote_args(ra)
  return { wf:run() }
end

describe("machines", function()
  after_each(function()
    C.stop_all()
    H.cleanup()
  end)

  it("share a host's resources among its workers; CPUs stay each worker's", function()
    local address, token = C.cluster {
      { cpus = 1, resources = '{"_disk": 1}', this_machine = true },
      { cpus = 1, resources = '{"_disk": 1}', this_machine = true },
    }
    -- One disk for the host: never two nodes holding it at once.
    assert.are.equal(1, most_at_once(spans_run(address, token, 4, { resources = { _disk = 1 } })))
    -- Two workers of one CPU each: CPU-only nodes run two at once.
    assert.are.equal(2, most_at_once(spans_run(address, token, 4, { num_cpus = 1 })))
    local r = H.fflua { "status", "--address", address, "--token-file", token }
    assert.are.equal(0, r.code, r.stderr)
    local lines = {}
    for l in r.stdout:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.are.equal(4, #lines, r.stdout)
    assert.matches(": 1 machine, 2 workers; tasks: 0 queued, 0 running, 8 finished$", lines[1])
    assert.matches("^  machine %x%x%x%x%x%x%x%x %(.+%): _disk 1/1 free$", lines[2])
    assert.matches("^    .+:%d+: 0 running; CPU 1/1 free$", lines[3])
    assert.matches("^    .+:%d+: 0 running; CPU 1/1 free$", lines[4])
  end)

  it("take resources a later worker adds, and refuse one that disagrees", function()
    local dir = H.tmpdir()
    local log = dir .. "/head.log"
    local address, token = C.cluster({
      { cpus = 1, resources = '{"_disk": 1}', this_machine = true },
      { cpus = 1, resources = '{"gpu": 2}', this_machine = true },
    }, { log = log })
    local client = core.cluster_connect(address, { token_file = token })
    local st = client:status()
    client:close()
    assert.are.equal(2, #st.places)
    assert.are.equal(st.places[1].machine, st.places[2].machine)
    assert.matches("^%x+$", st.places[1].machine)
    assert.are.equal(32, #st.places[1].machine)
    for _, p in ipairs(st.places) do
      assert.are.same({ total = 1, free = 1 }, p.resources._disk)
      assert.are.same({ total = 2, free = 2 }, p.resources.gpu)
    end
    local r = H.fflua({ "worker", "--address", address, "--token-file", token,
                        "--num-cpus", "1", "--resources", '{"_disk": 2}' }, { timeout = 20 })
    assert.are.equal(1, r.code)
    local why = "declares 2 of '_disk', but the other workers of its machine declared 1: " ..
                "a machine's resources are shared by its workers, so give each of them the " ..
                "same amounts (or none)"
    assert.matches("the head refused this worker: worker .+:%d+ " .. why:gsub("%p", "%%%0"), r.stderr)
    assert.truthy(H.read(log):find(why, 1, true))
  end)

  it("have workers that say when they join and leave", function()
    local address, token = C.cluster {}
    local log = H.tmpdir() .. "/worker.log"
    local w = C.start_sh({ "worker", "--address", address, "--token-file", token, "--num-cpus", "2" }, log)
    local line = C.wait_file(log)
    assert.matches("^fflua worker: joining the head at " .. address:gsub("%p", "%%%0") ..
                   " as .+:" .. w:pid() .. " with 2 CPUs %(machine %x%x%x%x%x%x%x%x%)$", line)
    w:kill(H.signals.SIGTERM)
    w:wait(10)
    local lines = C.lines_of(log)
    assert.are.equal("fflua worker: left the head at " .. address .. ": terminated", lines[2])
    assert.are.equal(2, #lines)
    local q = H.tmpdir() .. "/quiet.log"
    local wq = C.start_sh({ "worker", "--address", address, "--token-file", token, "-q" }, q)
    local client = core.cluster_connect(address, { token_file = token })
    local joined
    for _ = 1, 400 do
      joined = #client:status().places == 1
      if joined then break end
      core.sleep(0.025)
    end
    client:close()
    assert.is_true(joined)
    wq:kill(H.signals.SIGTERM)
    wq:wait(10)
    assert.are.equal("", H.read(q) or "")
  end)

  it("count a worker started with --own-machine as a machine of its own", function()
    local address, token = C.cluster {
      { cpus = 1, resources = '{"_disk": 1}' },
      { cpus = 1, resources = '{"_disk": 1}' },
    }
    -- Two machines, a disk each: two nodes hold a disk at once.
    assert.are.equal(2, most_at_once(spans_run(address, token, 4, { resources = { _disk = 1 } })))
    local r = H.fflua { "status", "--address", address, "--token-file", token }
    assert.matches(": 2 machines, 2 workers;", r.stdout)
  end)

  it("is what the local cluster's num_cpus and resources describe", function()
    local dir = H.tmpdir()
    local script = C.script [[
      local ff = require "functionfuse"
      local cb = require "functionfuse.backends.builtin.clusterback"
      local task = ff.workflow("task", function(i)
        local c = require "functionfuse.core"
        local t0 = c.monotime()
        c.sleep(0.4)
        return { i, t0, c.monotime() }
      end)
      local leaves = {}
      for i = 1, 4 do leaves[i] = task(i) end
      leaves[#leaves + 1] = { workflow_name = "model",
                              cluster_init_args = { num_cpus = 2, resources = { _model = 1 } } }
      local wf = cb.ClusterWorkflow(table.unpack(leaves))
      wf:query(".*"):set_remote_args { resources = { _model = 1 } }
      local spans = { wf:run() }
      local st = wf:_client():status()
      local out = io.open(arg[1], "w")
      for _, s in ipairs(spans) do out:write(("%d %.6f %.6f\n"):format(s[1], s[2], s[3])) end
      out:write("places ", #st.places, "\n")
      for _, p in ipairs(st.places) do
        out:write(("place %s %g %g\n"):format(p.machine, p.resources.CPU.total,
                                              p.resources._model.total))
      end
      out:close()
    ]]
    local r = H.fflua({ script, dir .. "/out" }, { timeout = 60 })
    assert.are.equal(0, r.code, r.stderr)
    local spans, places, machines = {}, 0, {}
    for l in H.read(dir .. "/out"):gmatch("[^\n]+") do
      local i, a, b = l:match("^(%d+) (%S+) (%S+)$")
      if i then spans[#spans + 1] = { tonumber(i), tonumber(a), tonumber(b) } end
      places = tonumber(l:match("^places (%d+)$")) or places
      local m, cpu, model = l:match("^place (%x+) (%S+) (%S+)$")
      if m then
        machines[m] = true
        assert.are.equal("1", cpu)
        assert.are.equal("1", model)
      end
    end
    assert.are.equal(4, #spans)
    -- num_cpus = 2: two workers of one CPU, on one machine with one _model.
    assert.are.equal(2, places)
    local nmachines = 0
    for _ in pairs(machines) do nmachines = nmachines + 1 end
    assert.are.equal(1, nmachines)
    assert.are.equal(1, most_at_once(spans))
  end)

  it("shares the local cluster's num_cpus out among num_workers, or says why not", function()
    local script = C.script [[
      local ff = require "functionfuse"
      local cb = require "functionfuse.backends.builtin.clusterback"
      local f = ff.workflow("f", function() return 1 end)
      local wf = cb.ClusterWorkflow(f(), { workflow_name = "w",
        cluster_init_args = { num_cpus = 1, num_workers = 3 } })
      local ok, err = pcall(wf.run, wf)
      print(ok, err)
    ]]
    local r = H.fflua({ script }, { timeout = 30 })
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("num_cpus %(1%) cannot be shared out evenly among 3 workers %(to 4 " ..
                   "decimals%): give num_workers a divisor of it", r.stdout)
  end)
end)
