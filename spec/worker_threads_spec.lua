-- A worker with several CPUs runs tasks in several threads at once, each
-- thread with a Lua state of its own, and hands results between them. The
-- ThreadSanitizer build runs this spec (tsan:spec:worker_threads) to check
-- the worker's threads and the head.
local ff = require "functionfuse"
local ClusterWorkflow = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
local H = require "spec.helper"

-- One local cluster for the file: a head and one worker with 4 CPUs.
local function cluster_opts(name)
  return { workflow_name = name, cluster_init_args = { num_workers = 1, num_cpus = 4 } }
end

describe("a worker with 4 CPUs", function()
  after_each(H.cleanup)

  it("runs 4 tasks at once, each in its own thread", function()
    local dir = H.tmpdir()
    -- Each task says it started, then waits until all 4 have: tasks run
    -- one after the other would never meet.
    local meet = ff.workflow("meet", function(d, i, n)
      local core = require "functionfuse.core"
      io.open(d .. "/started." .. i, "w"):close()
      for _ = 1, 3000 do -- up to 30 s
        local all = true
        for j = 1, n do
          local f = io.open(d .. "/started." .. j)
          if f then f:close() else all = false end
        end
        if all then return { i = i, state = tostring(_G):match("0x%x+") or tostring(_G) } end
        core.sleep(0.01)
      end
      error("task " .. i .. " never met the others")
    end)
    local leaves = {}
    for i = 1, 4 do leaves[i] = meet(dir, i, 4) end
    leaves[#leaves + 1] = cluster_opts("meet")
    local got = { ClusterWorkflow(table.unpack(leaves)):run() }
    local states = {}
    for i = 1, 4 do
      assert.are.equal(i, got[i].i)
      states[got[i].state] = true
    end
    -- Four tasks running at once ran in four Lua states.
    local n = 0
    for _ in pairs(states) do n = n + 1 end
    assert.are.equal(4, n)
  end)

  it("passes results between its threads through a tree of dependent tasks", function()
    local leaf = ff.workflow("leaf", function(i)
      local t = {}
      for k = 1, 200 do t[k] = i * k end
      return t
    end)
    local sum = ff.workflow("sum", function(a, b)
      local s = type(a) == "table" and 0 or a
      if type(a) == "table" then for _, v in ipairs(a) do s = s + v end end
      if type(b) == "table" then for _, v in ipairs(b) do s = s + v end else s = s + b end
      return s
    end)
    local level = {}
    for i = 1, 64 do level[i] = leaf(i) end
    while #level > 1 do
      local up = {}
      for i = 1, #level, 2 do up[#up + 1] = sum(level[i], level[i + 1]) end
      level = up
    end
    local wf = ClusterWorkflow(level[1], cluster_opts("tree"))
    -- sum over i = 1..64 and k = 1..200 of i * k
    assert.are.equal((64 * 65 // 2) * (200 * 201 // 2), wf:run())
    assert.are.equal(wf:run(), wf:run()) -- and again, on the same worker
  end)
end)
