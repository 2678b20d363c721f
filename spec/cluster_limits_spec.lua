-- The cluster at its limits: messages near the frame limit, results of
-- hundreds of MiB, a worker short of memory, a driver killed mid-stream.
-- Apart from cluster_spec.lua because moving that much memory takes time
-- (tens of seconds here), which ctest can spend alongside other specs.
local ff = require "functionfuse"
local ClusterWorkflow = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
local H = require "spec.helper"
local C = require "spec.cluster_helper"
local procs, start, cluster, wait_file, script = C.procs, C.start, C.cluster, C.wait_file, C.script

-- Issue 9: nothing a peer, a driver or a value does takes the head down,
-- and every failure reaches the driver.
describe("cluster limits", function()
  after_each(function()
    C.stop_all()
    H.cleanup()
  end)

  it("survives a driver killed while results stream to it, and serves the next driver", function()
    local address, token, ps = cluster { { cpus = 2 } }
    local dir = H.tmpdir()
    local driver = start { script [[
      local ff = require "functionfuse"
      local CW = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
      local address, token, dir = ...
      local big = ff.workflow("big", function(i, d)
        local f = io.open(d .. "/" .. i, "w"); f:write(i, "\n"); f:close()
        return string.rep(string.char(64 + i % 26), 8 << 20)
      end)
      local leaves = {}
      for i = 1, 60 do leaves[i] = big(i, dir) end
      leaves[#leaves + 1] = { workflow_name = "stream",
                              cluster_init_args = { address = address, token_file = token } }
      CW(table.unpack(leaves)):run()
    ]], address, token, dir }
    wait_file(dir .. "/20") -- results are streaming to the driver
    driver:kill(H.signals.SIGKILL)
    driver:wait(10)
    local head = procs[1]
    assert.is_nil((head:wait(0.5)), "the head exited")
    local big = ff.workflow("big", function(i) return string.rep(string.char(64 + i), 8 << 20) end)
    local wf = ClusterWorkflow(big(1), big(2), big(3), { workflow_name = "next",
      cluster_init_args = { address = address, token_file = token } })
    local r = { wf:run() }
    assert.are.equal(3, #r)
    for i = 1, 3 do assert.is_true(r[i] == string.rep(string.char(64 + i), 8 << 20)) end
    assert.matches(":" .. ps[1]:pid() .. "$", wf.last_run.placement["big_0000"])
  end)

  it("fails a node whose parents' results cannot fit in one message, and goes on serving", function()
    local address, token = cluster { { cpus = 1, resources = '{"a": 1}' },
                                     { cpus = 1, resources = '{"b": 1}' } }
    local args = { address = address, token_file = token }
    local part = ff.workflow("part", function(i) return string.rep(tostring(i), 86 << 20) end)
    local join = ff.workflow("join", function(x, y, z) return #x + #y + #z end)
    local wf = ClusterWorkflow(join(part(1), part(2), part(3)), { workflow_name = "wide",
                                                                  cluster_init_args = args })
    wf:query("^part.*$"):set_remote_args { resources = { a = 1 } }
    wf:query("^join.*$"):set_remote_args { resources = { b = 1 } }
    local ok, err = pcall(wf.run, wf)
    assert.is_false(ok)
    assert.matches("node 'join_0000' %(function 'join' defined at .-%) failed: it cannot be " ..
                   "sent to a worker: its parents' results %(258%.0 MiB%) and its arguments " ..
                   "%(0%.0 MiB%) take more than the 256 MiB one message may carry$", err)
    local sum = ff.workflow(function(a, b) return a + b end)
    local both = ClusterWorkflow(sum(1, 2), sum(3, 4), { workflow_name = "after",
                                                        cluster_init_args = args })
    both:query("^.*_0000$"):set_remote_args { resources = { a = 1 } }
    both:query("^.*_0001$"):set_remote_args { resources = { b = 1 } }
    assert.are.same({ 3, 7 }, { both:run() })
  end)

  it("fails a node whose result its worker cannot allocate, with a clear error", function()
    if H.sanitize then
      pending("ulimit -v cannot limit a process under AddressSanitizer, which reserves " ..
              "terabytes of address space for its shadow memory")
      return
    end
    local address, token = cluster { { cpus = 1, ulimit_v = 700000 } }
    local big = ff.workflow("big", function(n) return string.rep("x", n << 20) end)
    local wf = ClusterWorkflow(big(200), { workflow_name = "mem",
      cluster_init_args = { address = address, token_file = token } })
    local ok, err = pcall(wf.run, wf)
    assert.is_false(ok)
    assert.matches("node 'big_0000' %(function 'big' defined at .-%) failed: the worker has " ..
                   "not enough memory to send its result %(200%.0 MiB%)\n%(on worker [^\n]+:%d+%)$", err)
    -- The worker is still there and serves the next run.
    local small = ClusterWorkflow(big(1), { workflow_name = "small",
      cluster_init_args = { address = address, token_file = token } })
    assert.are.equal(1 << 20, #small:run())
  end)

  it("sends a run's arguments in parts that each fit in one message", function()
    -- A long heartbeat: a head that copies 250 MiB under AddressSanitizer
    -- on a loaded machine can be silent for more than the default 5 s.
    local address, token = cluster({ { cpus = 1 } }, { head_args = { "--heartbeat-timeout", "60" } })
    local args = { address = address, token_file = token }
    local len = ff.workflow("len", function(s, t) return #s + #(t or "") end)
    local a, b = ("a"):rep(7 << 20), ("b"):rep(250 << 20)
    -- One node's arguments that take more than a message: a clear error.
    local one = ClusterWorkflow(len(b, a), { workflow_name = "one", cluster_init_args = args })
    local ok, err = pcall(one.run, one)
    assert.is_false(ok)
    assert.matches("node 'len_0000' %(function 'len' defined at .-%): its arguments take " ..
                   "257%.0 MiB, more than the 256 MiB one message may carry: pass large " ..
                   "inputs through a storage or a file$", err)
    -- 7 MiB, then 250 MiB: each fits in a message, both together do not.
    local wf = ClusterWorkflow(len(a), len(b), { workflow_name = "parts", cluster_init_args = args })
    assert.are.same({ 7 << 20, 250 << 20 }, { wf:run() })
  end)
  it("keeps serving a driver after refusing a run sent in several parts", function()
    local address, token = cluster { { cpus = 1 } }
    local f = ff.workflow("f", function(x) return x end)
    local ns = {}
    for i = 1, 5000 do ns[i] = f(i):set_name("n" .. i) end -- two SUBMIT parts
    local count = ff.workflow("count", function(...) return select("#", ...) end)
    local wf = ClusterWorkflow(count(table.unpack(ns)), { workflow_name = "parts",
      cluster_init_args = { address = address, token_file = token } })
    wf:query("^n1$"):set_remote_args { resources = { _nope = 1 } }
    local ok, err = pcall(wf.run, wf)
    assert.is_false(ok)
    assert.matches("node 'n1' asks for 1 of '_nope'", tostring(err))
    -- The parts still on the way when the head refused the first one are
    -- dropped quietly: the connection stays, and the next run runs.
    wf:query("^n1$"):set_remote_args {}
    assert.are.equal(5000, wf:run())
  end)
end)
