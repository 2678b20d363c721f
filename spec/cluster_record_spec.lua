-- What a cluster run leaves behind: wf.last_run with per-node times from
-- the head (RUN_TIMES), where each node ran, the progress the head sends
-- (PROGRESS), the run's record in a storage, and wf:cluster_info().
local ff = require "functionfuse"
local ClusterWorkflow = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
local storage_factory = require("functionfuse.storage").storage_factory
local H = require "spec.helper"

local C = require "spec.cluster_helper"

-- Busy for s seconds (CPU time: the worker's Lua state is not interrupted).
local function spin(s)
  local t = os.clock() + s
  while os.clock() < t do end -- luacheck: ignore 563
end

describe("a cluster run's record", function()
  after_each(function()
    C.stop_all()
    H.cleanup()
  end)

  it("has every node's state, times, worker and machine, as the placements say", function()
    local address, token, ps = C.cluster { { cpus = 1 }, { cpus = 1 } }
    local pids = { [tostring(ps[1]:pid())] = true, [tostring(ps[2]:pid())] = true }
    local work = ff.workflow("work", function(i)
      local t = os.clock() + 0.05
      while os.clock() < t do end -- luacheck: ignore 563
      return i
    end)
    local parts = {}
    for i = 1, 6 do parts[i] = work(i) end
    local total = ff.workflow("total", function(...) return select("#", ...) end)(table.unpack(parts))
    total:set_name("total")
    local wf = ClusterWorkflow(total, { workflow_name = "rec", quiet = true,
                                       cluster_init_args = { address = address, token_file = token } })
    assert.are.equal(6, wf:run())
    local lr = wf.last_run
    assert.are.equal("cluster", lr.backend)
    assert.is_true(lr.ok)
    assert.are.equal(7, lr.computed)
    assert.are.equal(0, lr.failed)
    assert.are.equal(0, lr.retried)
    assert.are.equal(address, lr.cluster.address)
    assert.are.equal(token, lr.cluster.token_file)
    local rec = lr.nodes
    assert.are.equal(7, #rec)
    local workers, last_end = {}, 0
    for i = 1, #rec do
      local n = rec[i]
      assert.are.equal("computed", n.state)
      assert.are.equal(1, n.attempts)
      assert.is_false(n.loaded)
      assert.truthy(n.queued <= n.started and n.started <= n.finished, n.name)
      assert.truthy(n.finished <= lr.elapsed, n.name)
      assert.are.equal(lr.placement[n.name], n.worker)
      assert.truthy(pids[n.worker:match(":(%d+)$")], n.worker)
      assert.are.equal(n.worker:match("^(.*):%d+$"), n.machine)
      workers[n.worker] = true
      if n.name ~= "total" then last_end = math.max(last_end, n.finished) end
      -- The spinning nodes ran at least as long as they spun.
      if n.name ~= "total" then assert.truthy(n.finished - n.started >= 0.04, n.name) end
    end
    -- Both workers took part, and the gather started after every part ended.
    local nworkers = 0
    for _ in pairs(workers) do nworkers = nworkers + 1 end
    assert.are.equal(2, nworkers)
    assert.truthy(rec.total.started >= last_end)
    -- export() gives the same as indexing.
    local e = rec:export()
    assert.are.equal("cluster", e.backend)
    assert.are.equal(2, #e.workers)
    for i = 1, #rec do
      assert.are.equal(rec[i].name, e.names[i])
      assert.are.equal(rec[i].worker, e.workers[e.worker[i]].name)
      assert.are.equal(rec[i].started, e.started[i])
    end
    assert.are.equal(6, #e.parents[#rec])
  end)

  it("marks failures and the nodes they kept from running, with keep_going", function()
    local address, token = C.cluster { { cpus = 2 } }
    local f = ff.workflow("f", function(x) if x == 2 then error("no two") end return x end)
    local g = ff.workflow("g", function(x) return x end)
    local leaves = {}
    for i = 1, 3 do leaves[i] = g(f(i):set_name("f" .. i)):set_name("g" .. i) end
    leaves[4] = { workflow_name = "kg", quiet = true,
                  cluster_init_args = { address = address, token_file = token } }
    local wf = ClusterWorkflow(table.unpack(leaves))
    local ok, err = pcall(wf.run, wf, { keep_going = true })
    assert.is_false(ok)
    local lr = wf.last_run
    assert.is_false(lr.ok)
    assert.are.equal(err, lr.error)
    assert.are.equal(1, lr.failed)
    assert.are.equal("failed", lr.nodes.f2.state)
    assert.are.equal("skipped", lr.nodes.g2.state)
    assert.is_nil(lr.nodes.g2.started)
    assert.are.equal("computed", lr.nodes.g3.state)
    assert.are.equal("f2", lr.failures[1].node)
    assert.matches("no two", lr.failures[1].error)
  end)

  it("is saved with a storage on the driver's machine, and fflua report draws its workers", function()
    local address, token = C.cluster { { cpus = 1, this_machine = true }, { cpus = 1, this_machine = true } }
    local dir = H.tmpdir()
    local work = ff.workflow("work", function(i) spin(0.02); return i end)
    local parts = {}
    for i = 1, 4 do parts[i] = work(i) end
    parts[#parts + 1] = { workflow_name = "saved", quiet = true,
                          cluster_init_args = { address = address, token_file = token } }
    local wf = ClusterWorkflow(table.unpack(parts))
    wf:set_storage(storage_factory { kind = "file", options = { path = dir .. "/st" } })
    wf:run()
    local rec = assert(require("functionfuse.storage").run_record(dir .. "/st", "saved"))
    assert.are.equal("cluster", rec.backend)
    assert.are.equal(4, rec.computed)
    assert.are.equal(address, rec.cluster.address)
    assert.are.equal(2, #rec.workers)
    local r = H.fflua({ "report", dir .. "/st", "saved", "-o", dir .. "/r.html" })
    assert.are.equal(0, r.code, r.stderr)
    local page = assert(H.read(dir .. "/r.html"))
    local bars = 0
    for _ in page:gmatch('class="tl%-node') do bars = bars + 1 end
    assert.are.equal(4, bars)
    -- Run again: everything loads; the newest record says so.
    wf:run()
    rec = assert(require("functionfuse.storage").run_record(dir .. "/st", "saved"))
    assert.are.equal(0, rec.computed)
    assert.are.equal(4, rec.loaded)
  end)

  it("tells where the local cluster is, so that fflua status reaches it", function()
    local wf = ClusterWorkflow(ff.workflow("one", function() return 1 end)(),
                               { workflow_name = "info", quiet = true,
                                 cluster_init_args = { num_workers = 1 } })
    local info = wf:cluster_info()
    assert.is_true(info["local"])
    assert.are.equal(require("functionfuse.backends.builtin.clusterback").local_address(),
                     info.address)
    local st = assert(io.popen("stat -c %a '" .. info.token_file .. "'"))
    assert.are.equal("600", st:read("l"))
    st:close()
    local r = H.fflua({ "status", "--address", info.address, "--token-file", info.token_file })
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("1 worker", r.stdout)
    assert.are.equal(1, wf:run())
    assert.are.same(info, wf.last_run.cluster)
  end)

  it("shows the head's progress on a terminal", function()
    local address, token = C.cluster { { cpus = 2 } }
    local dir = H.tmpdir()
    local script = H.write(dir .. "/prog.lua", ([[
      local ff = require "functionfuse"
      local ClusterWorkflow = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
      local work = ff.workflow("work", function(i)
        local t = os.clock() + 0.1
        while os.clock() < t do end
        return i
      end)
      local parts = {}
      for i = 1, 16 do parts[i] = work(i) end
      parts[#parts + 1] = { workflow_name = "prog",
                            cluster_init_args = { address = %q, token_file = %q } }
      ClusterWorkflow(table.unpack(parts)):run()
      io.stdout:write("DONE\n")
    ]]):format(address, token))
    local p = H.fftest.pty { argv = { H.bin, script }, cwd = dir, env = { TERM = "dumb" } }
    local seen = H.expect(p, "DONE", 60)
    p:close()
    -- Some line counted nodes done on the workers before the end.
    local most = 0
    for d in seen:gmatch("fflua: 'prog': (%d+)/16 nodes") do most = math.max(most, tonumber(d)) end
    assert.truthy(most > 0, seen)
    -- The line is gone before the script's next output.
    assert.truthy(seen:find("\r\27%[KDONE"), seen)
  end)
end)
