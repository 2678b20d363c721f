-- wf.last_run after a local run: the counts, the per-node record
-- (functionfuse.RunRecord: rec[i], rec[name], export, count, encode), its
-- saved form (core.decode_run), the run records a storage keeps
-- (keep_runs, storage.run_record) and what fflua store / fflua report make
-- of them. Times are compared with each other, never with a clock.
local ff = require "functionfuse"
local core = require "functionfuse.core"
local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow
local storage = require "functionfuse.storage"
local report = require "functionfuse.cli.report"
local H = require "spec.helper"

--- Works for s seconds of this process's CPU time: at least s seconds of
-- wall clock, whatever else the machine does.
local function spin(s)
  local t = os.clock() + s
  while os.clock() < t do end
end

local inc = ff.workflow(function(x) return (x or 0) + 1 end)
local boom = ff.workflow(function() error("boom") end)

--- A chain named c1 .. cn of inc nodes; returns the nodes.
local function chain(n, prefix)
  local c = { inc():set_name((prefix or "c") .. 1) }
  for i = 2, n do c[i] = inc(c[i - 1]):set_name((prefix or "c") .. i) end
  return c
end

local function new_storage(dir, keep_runs)
  return storage.storage_factory { kind = "file", options = { path = dir, keep_runs = keep_runs } }
end

--- The counts of a last_run (or of a saved record).
local function counts(lr)
  return { ok = lr.ok, computed = lr.computed, loaded = lr.loaded, skipped = lr.skipped,
           failed = lr.failed, retried = lr.retried, damaged = lr.damaged }
end

local function states(rec)
  local s = {}
  for i = 1, #rec do s[rec[i].name] = rec[i].state end
  return s
end

--- Checks what holds for the times of every node of a local run: a node
-- that ran has queued <= started <= finished <= the run's elapsed, and
-- starts no sooner than the node before it in run order finished (one
-- node at a time); a node that did not run has no times and no worker.
local function check_times(lr)
  local rec = lr.nodes
  local prev_end = 0
  for i = 1, #rec do
    local n = rec[i]
    if n.state == "computed" or n.state == "failed" then
      assert.is_number(n.started, n.name)
      assert.is_true(n.queued <= n.started, n.name)
      assert.is_true(n.started <= n.finished, n.name)
      assert.is_true(n.finished <= lr.elapsed, n.name)
      assert.is_true(n.started >= prev_end, n.name)
      prev_end = n.finished
      local host, pid = n.worker:match("^(.+):(%d+)$")
      assert.truthy(pid, n.worker)
      assert.are.equal(host, n.machine)
    else
      assert.is_nil(n.queued, n.name)
      assert.is_nil(n.started, n.name)
      assert.is_nil(n.finished, n.name)
      assert.is_nil(n.worker, n.name)
    end
    assert.are.equal(n.state == "loaded", n.loaded, n.name)
  end
end

describe("wf.last_run", function()
  after_each(H.cleanup)

  it("counts a run without a storage and times its nodes in run order", function()
    local c = chain(4)
    local side = inc(c[1]):set_name("side")
    local wf = LocalWorkflow(c[4], side, { workflow_name = "plain", quiet = true })
    local before = os.time()
    local r4, rs = wf:run()
    local after = os.time()
    assert.are.equal(4, r4)
    assert.are.equal(2, rs)
    local lr = wf.last_run
    assert.are.equal("plain", lr.workflow)
    assert.are.equal("local", lr.backend)
    assert.are.same({ ok = true, computed = 5, loaded = 0, skipped = 0, failed = 0, retried = 0, damaged = 0 },
                    counts(lr))
    assert.are.same({}, lr.failures)
    assert.is_nil(lr.error)
    assert.is_true(lr.started_at >= before and lr.started_at < after + 1)
    local rec = lr.nodes
    assert.matches("^functionfuse%.RunRecord: 5 nodes, local", tostring(rec))
    assert.are.equal(5, #rec)
    assert.are.equal(lr.started_at, rec.started_at)
    assert.are.equal(lr.elapsed, rec.elapsed)
    assert.are.equal("local", rec.backend)
    local names = {}
    for i = 1, #rec do names[i] = rec[i].name end
    assert.are.same({ "c1", "c2", "c3", "c4", "side" }, names)
    assert.are.equal(5, rec:count("computed"))
    check_times(lr)
    -- A node is ready when its last parent finished: in a chain, when it
    -- starts; side waited for c2 .. c4 after c1 finished.
    for i = 2, 4 do
      assert.are.equal(rec["c" .. (i - 1)].finished, rec["c" .. i].queued)
      assert.is_true(rec["c" .. i].started >= rec["c" .. (i - 1)].finished)
    end
    assert.are.equal(rec.c1.finished, rec.side.queued)
    assert.is_true(rec.side.started >= rec.c4.finished)
    -- One worker: this process.
    for i = 2, #rec do assert.are.equal(rec[1].worker, rec[i].worker) end
  end)

  it("shows a node that works longer with a longer duration", function()
    local quick = ff.workflow(function(x) spin(0.004); return x end)
    local slow = ff.workflow(function(x) spin(0.08); return x end)
    local q = {}
    for i = 1, 5 do q[i] = quick(i):set_name("q" .. i) end
    local s = slow(q[3]):set_name("slow")
    local wf = LocalWorkflow(s, q[1], q[2], q[4], q[5], { workflow_name = "durations", quiet = true })
    wf:run()
    local rec = wf.last_run.nodes
    local function dur(n) return n.finished - n.started end
    local d = {}
    for i = 1, 5 do d[i] = dur(rec["q" .. i]) end
    table.sort(d)
    -- 20 times the work; the median of the quick ones shrugs off one that
    -- the machine held up.
    assert.is_true(dur(rec.slow) > 4 * d[3], ("slow %.4f s, quick median %.4f s"):format(dur(rec.slow), d[3]))
    -- One node at a time: the run took at least the sum of its nodes.
    local sum = dur(rec.slow)
    for i = 1, 5 do sum = sum + d[i] end
    assert.is_true(wf.last_run.elapsed >= sum)
  end)

  it("with a storage: computed, then loaded without times, then only the new node computed", function()
    local st = new_storage(H.tmpdir())
    local function once(extra)
      local c = chain(3)
      local leaf = extra and inc(c[3]):set_name("d") or c[3]
      local wf = LocalWorkflow(leaf, { workflow_name = "stored", quiet = true })
      wf:set_storage(st)
      wf:run()
      check_times(wf.last_run)
      return wf.last_run
    end
    local lr1 = once()
    assert.are.same({ ok = true, computed = 3, loaded = 0, skipped = 0, failed = 0, retried = 0, damaged = 0 },
                    counts(lr1))
    assert.are.same({ c1 = "computed", c2 = "computed", c3 = "computed" }, states(lr1.nodes))
    local lr2 = once()
    -- Every result is in the storage: the count says so; the record tells
    -- the leaf, which was read, from the others, which were not needed.
    assert.are.same({ ok = true, computed = 0, loaded = 3, skipped = 0, failed = 0, retried = 0, damaged = 0 },
                    counts(lr2))
    assert.are.same({ c1 = "stored", c2 = "stored", c3 = "loaded" }, states(lr2.nodes))
    assert.are.equal(1, lr2.nodes:count("loaded"))
    assert.are.equal(2, lr2.nodes:count("stored"))
    assert.is_true(lr2.nodes.c3.loaded)
    assert.is_false(lr2.nodes.c1.loaded)
    local lr3 = once(true)
    assert.are.equal(1, lr3.computed)
    assert.are.same({ c1 = "stored", c2 = "stored", c3 = "loaded", d = "computed" }, states(lr3.nodes))
    assert.are.equal(lr3.nodes.c3.queued ~= nil, false)
    assert.is_true(lr3.nodes.d.queued <= lr3.nodes.d.started)
  end)

  describe("after a failed run", function()
    local function failing()
      local ok1 = inc():set_name("ok1")
      local bad = boom(ok1):set_name("bad")
      local after = inc(bad):set_name("after")
      local indep = inc():set_name("indep")
      return after, indep
    end

    it("has ok = false, the failing node named and the nodes after it not run", function()
      local after, indep = failing()
      local wf = LocalWorkflow(after, indep, { workflow_name = "fails", quiet = true })
      local ok, err = pcall(wf.run, wf)
      assert.is_false(ok)
      local lr = wf.last_run
      assert.are.same({ ok = false, computed = 1, loaded = 0, skipped = 0, failed = 1, retried = 0, damaged = 0 },
                      counts(lr))
      assert.are.equal(err, lr.error)
      assert.are.equal(1, #lr.failures)
      assert.are.equal("bad", lr.failures[1].node)
      assert.matches("^node 'bad' %(function 'boom' defined at .-%) failed: .-: boom$", lr.failures[1].error)
      assert.matches("stack traceback:", lr.failures[1].traceback)
      assert.are.same({ ok1 = "computed", bad = "failed", after = "notrun", indep = "notrun" }, states(lr.nodes))
      check_times(lr)
      assert.is_true(lr.nodes.bad.started >= lr.nodes.ok1.finished)
    end)

    it("with keep_going has the dependants skipped and the rest computed", function()
      local after, indep = failing()
      local bad2 = boom():set_name("bad2")
      local wf = LocalWorkflow(after, indep, bad2, { workflow_name = "fails", quiet = true })
      local ok, err = pcall(wf.run, wf, { keep_going = true })
      assert.is_false(ok)
      local lr = wf.last_run
      assert.are.same({ ok = false, computed = 2, loaded = 0, skipped = 1, failed = 2, retried = 0, damaged = 0 },
                      counts(lr))
      assert.are.equal(err, lr.error)
      assert.are.same({ ok1 = "computed", bad = "failed", after = "skipped", indep = "computed", bad2 = "failed" },
                      states(lr.nodes))
      check_times(lr)
      assert.are.equal(2, #lr.failures)
      assert.are.equal("bad", lr.failures[1].node)
      assert.are.equal("bad2", lr.failures[2].node)
      assert.matches("^node 'bad2' %(function 'boom' defined at .-%) failed: .-: boom$", lr.failures[2].error)
      -- Each failure has its node's own message, not the run's summary.
      assert.matches("^node 'bad' %(function 'boom' defined at .-%) failed: .-: boom$", lr.failures[1].error)
    end)

    it("replaces the last_run of the run before", function()
      local fail = false
      local maybe = ff.workflow(function() if fail then error("now it fails") end return 1 end)
      local wf = LocalWorkflow(maybe():set_name("m"), { workflow_name = "again", quiet = true })
      wf:run()
      local first = wf.last_run
      assert.is_true(first.ok)
      fail = true
      assert.is_false(pcall(wf.run, wf))
      assert.are_not.equal(first, wf.last_run)
      assert.is_false(wf.last_run.ok)
      assert.are.equal("failed", wf.last_run.nodes.m.state)
      fail = false
      wf:run()
      assert.is_true(wf.last_run.ok)
      assert.are.same({}, wf.last_run.failures)
      -- A run refused before its nodes start replaces it too.
      assert.is_false(pcall(wf.run, wf, { keep_goin = true }))
      assert.is_false(wf.last_run.ok)
      assert.are.same({ 0, 0, 0 }, { wf.last_run.computed, wf.last_run.loaded, wf.last_run.failed })
      assert.is_nil(wf.last_run.nodes)
    end)
  end)

  describe("the per-node record", function()
    local function sample()
      local c = chain(3)
      local j = ff.workflow(function(a, b) return a + b end)(c[1], c[3]):set_name("join")
      local bad = boom(c[2]):set_name("bad")
      local wf = LocalWorkflow(j, bad, { workflow_name = "sample", quiet = true })
      pcall(wf.run, wf, { keep_going = true })
      return wf.last_run
    end

    it("gives the same node by name and by position, and nil for no such node", function()
      local rec = sample().nodes
      assert.are.equal(5, #rec)
      for i = 1, #rec do
        assert.are.same(rec[i], rec[rec[i].name])
      end
      assert.is_nil(rec.nope)
      assert.is_nil(rec[""])
      assert.is_nil(rec[0])
      assert.is_nil(rec[-1])
      assert.is_nil(rec[#rec + 1])
      assert.is_nil(rec[1.5])
      assert.is_nil(rec[true])
      local total = 0
      for _, s in ipairs { "computed", "loaded", "failed", "skipped", "stored", "notrun" } do
        total = total + rec:count(s)
      end
      assert.are.equal(#rec, total)
      assert.are.equal(1, rec:count("failed"))
      assert.has_error(function() rec:count("bogus") end, "bad argument #1 to 'count' (invalid option 'bogus')")
    end)

    it("exports columns that agree with indexing", function()
      local lr = sample()
      local rec = lr.nodes
      local e = rec:export()
      assert.are.equal("local", e.backend)
      assert.are.equal(lr.started_at, e.started_at)
      assert.are.equal(lr.elapsed, e.elapsed)
      assert.are.equal(0, e.retried)
      assert.are.equal(1, #e.workers)
      for _, col in ipairs { "names", "parents", "state", "queued", "started", "finished", "worker" } do
        assert.are.equal(#rec, #e[col], col)
      end
      local pos = {}
      for i = 1, #rec do pos[e.names[i]] = i end
      for i = 1, #rec do
        local n = rec[i]
        assert.are.equal(n.name, e.names[i])
        assert.are.equal(n.state, e.state[i])
        assert.are.equal(n.queued or false, e.queued[i])
        assert.are.equal(n.started or false, e.started[i])
        assert.are.equal(n.finished or false, e.finished[i])
        if n.worker then
          assert.are.equal(n.worker, e.workers[e.worker[i]].name)
          assert.are.equal(n.machine, e.workers[e.worker[i]].machine)
        else
          assert.are.equal(0, e.worker[i])
        end
      end
      assert.are.same({}, e.parents[pos.c1])
      assert.are.same({ pos.c1 }, e.parents[pos.c2])
      assert.are.same({ pos.c2 }, e.parents[pos.bad])
      local jp = e.parents[pos.join]
      table.sort(jp)
      assert.are.same({ pos.c1, pos.c3 }, jp)
    end)

    it("survives its workflow and nodes being collected", function()
      local rec
      do
        local c = chain(3, "gc")
        -- Not a leaf, but a descendant of the root: it runs.
        local side = inc(c[1]):set_name("gc_side")
        local wf = LocalWorkflow(c[3], { workflow_name = "gc", quiet = true })
        wf:run()
        rec = wf.last_run.nodes
        assert.is_number(wf.last_run.nodes[side:get_name()].finished)
      end
      collectgarbage()
      collectgarbage()
      -- New nodes could take the ids of collected ones.
      local keep = {}
      for i = 1, 50 do keep[i] = inc(i):set_name("new" .. i) end
      collectgarbage()
      assert.are.equal(50, #keep)
      local names = {}
      for i = 1, #rec do names[i] = rec[i].name end
      assert.are.same({ "gc1", "gc2", "gc3", "gc_side" }, names)
      assert.are.same(names, rec:export().names)
      assert.are.same(names, core.decode_run(rec:encode({})).names)
    end)
  end)

  describe("the saved form", function()
    local function sample()
      local c = chain(3)
      local bad = boom(c[2]):set_name("bad")
      local skip = inc(bad):set_name("skip")
      local wf = LocalWorkflow(c[3], skip, { workflow_name = "saved", quiet = true })
      pcall(wf.run, wf, { keep_going = true })
      return wf.last_run
    end

    it("round-trips through encode and decode_run", function()
      local lr = sample()
      local rec = lr.nodes
      local meta = { version = 1, workflow = "saved", ok = false, computed = lr.computed, failed = lr.failed,
                     skipped = lr.skipped, failures = { { node = "bad", error = "boom", traceback = "tb" } } }
      local d = core.decode_run(rec:encode(meta))
      local e = rec:export()
      assert.are.equal("local", d.backend)
      assert.are.equal(lr.started_at, d.started_at)
      assert.are.equal(lr.elapsed, d.elapsed)
      assert.are.equal(0, d.retried)
      for k, v in pairs(meta) do assert.are.same(v, d[k], k) end
      for _, col in ipairs { "names", "parents", "state", "worker", "workers" } do
        assert.are.same(e[col], d[col], col)
      end
      -- Times are kept in nanoseconds: the same to far below a microsecond.
      for _, col in ipairs { "queued", "started", "finished" } do
        assert.are.equal(#e[col], #d[col], col)
        for i = 1, #e[col] do
          if e[col][i] == false then
            assert.is_false(d[col][i], col .. i)
          else
            assert.is_true(math.abs(e[col][i] - d[col][i]) < 1e-8, col .. i)
          end
        end
      end
      -- The page can be made from it.
      assert.matches("<h1>Run of <span class=\"wf\">saved</span>", report.html(d))
    end)

    it("refuses a meta table it cannot encode, naming what", function()
      local rec = sample().nodes
      assert.has_error(function() rec:encode({ f = print }) end,
                       "cannot save the run's record: a function cannot be stored (at .f)")
    end)

    it("refuses truncated and altered bytes with an error, never a crash", function()
      local bytes = sample().nodes:encode({ workflow = "saved", ok = false,
                                            failures = { { node = "bad", error = "boom" } } })
      assert.has_error(function() core.decode_run("") end, "not a run record")
      assert.has_error(function() core.decode_run("FFRUN2\n" .. bytes:sub(8)) end, "not a run record")
      for len = 0, #bytes - 1 do
        local ok, err = pcall(core.decode_run, bytes:sub(1, len))
        assert.is_false(ok, len)
        assert.are.equal(len < 7 and "not a run record" or "a damaged run record", err, len)
      end
      math.randomseed(7)
      local accepted = 0
      for _ = 1, 3000 do
        local b = { bytes:byte(1, -1) }
        for _ = 1, math.random(1, 3) do
          local i = math.random(#b)
          b[i] = b[i] ~ (1 << math.random(0, 7))
        end
        local ok, d = pcall(core.decode_run, string.char(table.unpack(b)))
        if ok then
          -- Bytes that still decode give a record of the same shape, which
          -- the page either takes or refuses by name.
          accepted = accepted + 1
          for _, col in ipairs { "parents", "state", "queued", "started", "finished", "worker" } do
            assert.are.equal(#d.names, #d[col], col)
          end
          local hok, herr = pcall(report.html, d)
          assert.is_true(hok or tostring(herr):find("bad run record", 1, true) ~= nil, tostring(herr))
        else
          assert.is_true(d == "a damaged run record" or d == "not a run record", tostring(d))
        end
      end
      assert.is_true(accepted < 3000)
    end)
  end)

  describe("run records in the storage", function()
    local function run_on(st, extra, name)
      local c = chain(2, "s")
      local leaf = extra and inc(c[2]):set_name(extra) or c[2]
      local wf = LocalWorkflow(leaf, { workflow_name = name or "kept", quiet = true })
      wf:set_storage(st)
      wf:run()
      return wf.last_run
    end

    it("keeps the latest 10 by default, read back newest first", function()
      local dir = H.tmpdir()
      local st = new_storage(dir)
      local runs = {}
      for i = 1, 12 do runs[i] = run_on(st, i > 1 and ("x" .. i) or nil) end
      st:flush()
      for n = 1, 10 do
        local r, err = storage.run_record(dir, "kept", n)
        assert.is_table(r, err)
        local lr = runs[13 - n]
        assert.are.equal(lr.started_at, r.started_at)
        assert.are.equal(lr.elapsed, r.elapsed)
        assert.are.same(counts(lr), counts(r))
        assert.are.equal("kept", r.workflow)
        assert.are.same(lr.nodes:export().names, r.names)
        assert.are.same(lr.nodes:export().state, r.state)
      end
      assert.are.same({ computed = 1, loaded = 2 }, { computed = runs[12].computed, loaded = runs[12].loaded })
      assert.are.equal(1, storage.run_record(dir, "kept").computed)
      local r, err = storage.run_record(dir, "other")
      assert.is_nil(r)
      assert.are.equal(("storage '%s' has no saved run of workflow 'other'"):format(dir), err)
      -- Listings leave the records out.
      assert.are.same({ "s1", "s2", "x10", "x11", "x12", "x2", "x3", "x4", "x5", "x6", "x7", "x8", "x9" },
                      st:list_tasks("kept", "*"))
      r, err = storage.run_record(dir, "kept", 11)
      assert.is_nil(r)
      assert.are.equal(("storage '%s' keeps 10 saved runs of workflow 'kept', not 11"):format(dir), err)
    end)

    it("keeps keep_runs of them", function()
      local dir = H.tmpdir()
      local st = new_storage(dir, 2)
      for _ = 1, 4 do run_on(st) end
      local latest = run_on(st, "y")
      st:flush()
      assert.are.equal(latest.started_at, storage.run_record(dir, "kept", 1).started_at)
      assert.are.equal(1, storage.run_record(dir, "kept", 1).computed)
      assert.are.equal(0, storage.run_record(dir, "kept", 2).computed)
      local r, err = storage.run_record(dir, "kept", 3)
      assert.is_nil(r)
      assert.are.equal(("storage '%s' keeps 2 saved runs of workflow 'kept', not 3"):format(dir), err)
    end)

    it("keeps none with keep_runs = 0, and drops those saved before", function()
      local dir = H.tmpdir()
      local st = new_storage(dir)
      run_on(st)
      st:flush()
      assert.is_table(storage.run_record(dir, "kept"))
      st:close()
      st = new_storage(dir, 0)
      run_on(st)
      run_on(st, nil, "none")
      st:flush()
      for _, wf in ipairs { "kept", "none" } do
        local r, err = storage.run_record(dir, wf)
        assert.is_nil(r)
        assert.are.equal(("storage '%s' has no saved run of workflow '%s'"):format(dir, wf), err)
      end
    end)

    it("saves the record of a failed run", function()
      local dir = H.tmpdir()
      local st = new_storage(dir)
      local bad = boom(inc():set_name("ok1")):set_name("bad")
      local wf = LocalWorkflow(inc(bad):set_name("after"), inc():set_name("indep"),
                               { workflow_name = "failing", quiet = true })
      wf:set_storage(st)
      assert.is_false(pcall(wf.run, wf, { keep_going = true }))
      st:flush()
      local r = assert(storage.run_record(dir, "failing"))
      assert.are.same(counts(wf.last_run), counts(r))
      assert.is_false(r.ok)
      assert.are.equal("bad", r.failures[1].node)
      assert.are.same({ "computed", "failed", "skipped", "computed" }, r.state)
      assert.matches("<span class=\"status bad\">failed</span>", report.html(r))
    end)
  end)

  describe("on the command line", function()
    local script = [[
local ff = require "functionfuse"
local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow
local st = require("functionfuse.storage").storage_factory { kind = "file", options = { path = "st" } }
local inc = ff.workflow(function(x) return (x or 0) + 1 end)
local a = inc():set_name("a")
local leaves = {}
if arg[1] == "fail" then -- it fails before b runs
  leaves[1] = ff.workflow(function() error("boom") end)(a):set_name("bad")
end
leaves[#leaves + 1] = inc(a):set_name("b")
leaves[#leaves + 1] = { workflow_name = arg[1] == "fail" and "clifail" or "cli", quiet = true }
local wf = LocalWorkflow(table.unpack(leaves))
wf:set_storage(st)
wf:run()
]]

    it("fflua store ls does not show the run records", function()
      local dir = H.tmpdir()
      H.write(dir .. "/w.lua", script)
      for _ = 1, 2 do assert.are.equal(0, H.fflua({ "w.lua" }, { cwd = dir }).code) end
      assert.is_table(storage.run_record(dir .. "/st", "cli", 2))
      local r = H.fflua({ "store", "ls", "st" }, { cwd = dir })
      assert.are.equal(0, r.code, r.stderr)
      assert.matches("\ncli +2 ", r.stdout)
      for _, args in ipairs { { "store", "ls", "st", "cli" }, { "store", "ls", "st", "cli", "*" } } do
        r = H.fflua(args, { cwd = dir })
        assert.are.equal(0, r.code, r.stderr)
        local tasks = {}
        for line in r.stdout:gmatch("[^\n]+") do tasks[#tasks + 1] = line:match("^(%S+)") end
        assert.are.same({ "TASK", "a", "b" }, tasks)
        assert.is_nil(r.stdout:find("\0", 1, true))
      end
      r = H.fflua({ "store", "check", "st" }, { cwd = dir })
      assert.are.equal(0, r.code, r.stdout .. r.stderr)
    end)

    it("fflua report writes a page about a stored run", function()
      local dir = H.tmpdir()
      H.write(dir .. "/w.lua", script)
      for _ = 1, 2 do assert.are.equal(0, H.fflua({ "w.lua" }, { cwd = dir }).code) end
      assert.are_not.equal(0, H.fflua({ "w.lua", "fail" }, { cwd = dir }).code)
      local r = H.fflua({ "report", "st", "cli", "--run", "2", "-o", "ok.html" }, { cwd = dir })
      assert.are.equal(0, r.code, r.stderr)
      local page = H.read(dir .. "/ok.html")
      assert.matches("<title>fflua report: cli</title>", page, 1, true)
      assert.matches("<span class=\"status ok\">succeeded</span>", page, 1, true)
      r = H.fflua({ "report", "st", "cli", "--run", "3" }, { cwd = dir })
      assert.are.equal(1, r.code)
      assert.are.equal("fflua report: storage 'st' keeps 2 saved runs of workflow 'cli', not 3\n", r.stderr)
      -- A run that stopped at its failure: the nodes after it did not run.
      assert.are.same({ "computed", "failed", "notrun" }, storage.run_record(dir .. "/st", "clifail").state)
      r = H.fflua({ "report", "st", "clifail", "-o", "bad.html" }, { cwd = dir })
      assert.are.equal(0, r.code, r.stderr)
      assert.matches("<span class=\"status bad\">failed</span>", H.read(dir .. "/bad.html"), 1, true)
    end)
  end)

  it("keeps the last_run of a run inside a node apart from the outer one's", function()
    local inner_wf
    local outer = ff.workflow(function(x)
      local g = ff.workflow(function(y) spin(0.01); return y * 2 end)
      inner_wf = LocalWorkflow(inc(g(x):set_name("g")):set_name("h"), { workflow_name = "inner", quiet = true })
      return inner_wf:run()
    end)
    local wf = LocalWorkflow(inc(outer(5):set_name("outer")):set_name("after"),
                             { workflow_name = "outer", quiet = true })
    assert.are.equal(12, wf:run())
    local o, i = wf.last_run, inner_wf.last_run
    assert.are.equal("outer", o.workflow)
    assert.are.equal("inner", i.workflow)
    assert.are.same({ outer = "computed", after = "computed" }, states(o.nodes))
    assert.are.same({ g = "computed", h = "computed" }, states(i.nodes))
    assert.are.equal(2, o.computed)
    assert.are.equal(2, i.computed)
    check_times(o)
    check_times(i)
    -- The inner run happened within the outer node.
    local on = o.nodes.outer
    assert.is_true(i.elapsed <= on.finished - on.started)
    assert.is_true(i.started_at >= o.started_at)
  end)

  it("refuses bad option values, naming the option", function()
    local n = inc()
    for _, v in ipairs { -1, 0, 0.05, "yes", 0 / 0, {}, 86401, math.huge } do
      assert.has_error(function() LocalWorkflow(n, { workflow_name = "w", progress = v }) end,
                       "LocalWorkflow: option 'progress' must be a boolean or a number of seconds between "
                       .. "lines (from 0.1 to 86400)")
    end
    for _, v in ipairs { true, false, 0.5, 3 } do
      assert.is_table(LocalWorkflow(n, { workflow_name = "w", progress = v }))
    end
    local dir = H.tmpdir()
    for _, v in ipairs { -1, 1.5, "2", true, false } do
      assert.has_error(function() new_storage(dir, v) end,
                       "storage_factory: options.keep_runs must be a whole number >= 0 (0: keep no run records)")
    end
    assert.are.equal(3, new_storage(dir, 3).keep_runs)
    assert.are.equal(storage.KEEP_RUNS, new_storage(dir).keep_runs)
  end)
end)
