-- bench/cluster.lua: the cluster backend's overhead per task, against dask.
--
--   build/fflua bench/cluster.lua [scale [dask_scale]]
--
-- One local fflua cluster (a head and 2 workers of 1 CPU each, on
-- 127.0.0.1, started once and warmed up by a one-node run), then:
--   (a) independent: N = 100,000 * scale trivial nodes inc(i), gathered by
--       one node taking the table of them (the leaf); also in a second
--       shape, 100 gathers of N/100 then a final one. Throughput in tasks/s
--       = N / wall time of wf:run() (from the call to its return; it
--       includes encoding the tasks in the driver). Building the graph
--       (the nodes and the ClusterWorkflow) is timed apart.
--   (b) chain: M = 10,000 * scale steps x = inc(x), the last one the leaf;
--       latency per step = wall time of wf:run() / M.
--   (c) stored: the 100-gathers shape of (a) with a storage of kind
--       "cluster" pinned to the machine's _disk (the local cluster declares
--       { _disk = 1 }, the storage asks for 0.001): the first run computes
--       and saves every result on the _disk worker (tasks/s = N / wall),
--       the second finds them all stored and loads the leaf (nodes/s =
--       nodes / wall). Each pair runs 3 times under a fresh workflow name.
--   (d) a worker killed: the shape of (c) without storage on a cluster
--       started by hand (a head, two 1-CPU workers), without a fault, then
--       with one worker killed (SIGKILL) halfway: the time lost, against
--       the time the head took to see the worker gone (target: lost <
--       detection + 20% of the clean run).
-- Each is run REPS (5) times; the median run is judged, the best shown too
-- (on this shared VM runs are bimodal: see bench/README.md).
-- For each, the CPU time spent per task is printed too (the driver in
-- run(); the head; the workers' loop threads; their executor threads, from
-- /proc, over the runs) and how often each blocked (voluntary context
-- switches), to show which side is the bottleneck. The head's and workers'
-- loops busy-wait a little before blocking, so their CPU includes waiting.
--
-- Then bench/cluster_dask.py measures the same with dask.distributed
-- (LocalCluster(n_workers=2, threads_per_worker=1, processes=True)); its
-- counts are 100,000 and 10,000 times dask_scale (default scale / 10: at
-- about 1-2 ms per task, dask at full counts takes over 5 minutes; its cost
-- per task does not fall with N, so per-task rates compare). dask_scale 0
-- skips dask. The Python is $FFLUA_BENCH_PYTHON, else /usr/bin/python3
-- (Debian's python3-distributed), else python3 on the PATH.
--
-- Printed at the end: both side by side, how many times faster fflua is,
-- and the targets: independent >= 100,000 tasks/s and chain <= 50 us per
-- step, each >= 100x dask; a stored run >= 50,000 tasks/s and a fully
-- cached rerun >= 500,000 nodes/s.
local ff = require "functionfuse"
local core = require "functionfuse.core"
local ClusterWorkflow = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow

local scale = tonumber(arg[1]) or 1
local dask_scale = tonumber(arg[2]) or scale / 10
assert(scale > 0 and dask_scale >= 0,
       "usage: build/fflua bench/cluster.lua [scale > 0 [dask_scale >= 0]]")
local REPS = 5
local TARGET_RATE, TARGET_US, TARGET_X = 100000, 50, 100
local TARGET_STORED, TARGET_CACHED = 50000, 500000

local now = core.monotime
local function count(n) return math.max(1, math.floor(n * scale + 0.5)) end

local function gc()
  collectgarbage("collect")
  collectgarbage("collect")
end

-- The machine's CPUs, shared out; its disk, for (c).
local CLUSTER = { num_workers = 2, num_cpus = 2, resources = { _disk = 1 } }
local function opts(name) return { workflow_name = name, cluster_init_args = CLUSTER } end

---------------------------------------------------------------------------
-- CPU time of the cluster's processes, from /proc (clock ticks).

local TICK = 0.01 -- USER_HZ is 100 on Linux
do
  local p = io.popen("getconf CLK_TCK 2>/dev/null")
  local hz = p and tonumber(p:read("l") or "")
  if p then p:close() end
  if hz and hz > 0 then TICK = 1 / hz end
end

local function slurp(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- utime + stime of /proc/.../stat, in seconds.
local function stat_cpu(path)
  local s = slurp(path)
  local rest = s and s:match("%) (.*)$")
  if not rest then return 0 end
  local f = {}
  for w in rest:gmatch("%S+") do f[#f + 1] = w end
  return ((tonumber(f[12]) or 0) + (tonumber(f[13]) or 0)) * TICK
end

local procs -- { head = pid, workers = { pid, ... } }

-- The head is this process's child; the local workers are the head's.
local function find_procs()
  local p = { workers = {} }
  local function scan(parent)
    local kids = slurp(("/proc/%d/task/%d/children"):format(parent, parent)) or ""
    for pid in kids:gmatch("%d+") do
      local cmd = (slurp("/proc/" .. pid .. "/cmdline") or ""):gsub("%z", " ")
      if cmd:match("^%S*fflua head ") then
        p.head = tonumber(pid)
        scan(p.head)
      elseif cmd:match("^%S*fflua worker ") then
        p.workers[#p.workers + 1] = tonumber(pid)
      end
    end
  end
  scan(core.getpid())
  return p
end

-- Voluntary context switches (times the thread blocked) of /proc/.../status.
local function stat_vcs(path)
  return tonumber((slurp(path) or ""):match("\nvoluntary_ctxt_switches:%s*(%d+)")) or 0
end

-- A snapshot of CPU seconds (c_*) and voluntary context switches (v_*):
-- driver (this process), head, workers' loop threads (the main thread,
-- tid = pid), workers' executor threads (the others).
local function cpu_snapshot()
  local me = core.getpid()
  local s = { c_driver = os.clock(), v_driver = stat_vcs(("/proc/%d/status"):format(me)),
              c_head = 0, v_head = 0, c_loop = 0, v_loop = 0, c_exec = 0, v_exec = 0 }
  if procs.head then
    s.c_head = stat_cpu(("/proc/%d/stat"):format(procs.head))
    s.v_head = stat_vcs(("/proc/%d/status"):format(procs.head))
  end
  for _, pid in ipairs(procs.workers) do
    local ls = io.popen("ls /proc/" .. pid .. "/task 2>/dev/null")
    for tid in ls:lines() do
      local dir = ("/proc/%d/task/%s/"):format(pid, tid)
      local k = tonumber(tid) == pid and "loop" or "exec"
      s["c_" .. k] = s["c_" .. k] + stat_cpu(dir .. "stat")
      s["v_" .. k] = s["v_" .. k] + stat_vcs(dir .. "status")
    end
    ls:close()
  end
  return s
end

local function cpu_line(a, b, tasks, wall)
  local function us(k) return (b["c_" .. k] - a["c_" .. k]) / tasks * 1e6 end
  local function cs(k) return (b["v_" .. k] - a["v_" .. k]) / tasks end
  return ("cpu us/task: driver %.1f, head %.1f, worker loop threads %.1f, executor threads " ..
          "%.1f (2 workers summed); wall %.1f us/task\n" ..
          "                sleeps/task (voluntary context switches): driver %.2f, head %.2f, " ..
          "worker loop threads %.2f, executor threads %.2f"):format(us("driver"), us("head"),
          us("loop"), us("exec"), wall / tasks * 1e6, cs("driver"), cs("head"), cs("loop"),
          cs("exec"))
end

---------------------------------------------------------------------------
-- The workflows

local inc = ff.workflow("inc", function(i) return i + 1 end)
local total = ff.workflow("total", function(t)
  local s = 0
  for i = 1, #t do s = s + t[i] end
  return s
end)

local function build_wide(n, groups)
  local t = {}
  for i = 1, n do t[i] = inc(i) end
  if groups <= 1 then return total(t) end
  local per = n // groups
  local g, k = {}, 1
  for j = 1, groups do
    local hi = j == groups and n or k + per - 1
    g[j] = total(table.move(t, k, hi, 1, {}))
    k = hi + 1
  end
  return total(g)
end

local function build_chain(m)
  local x = inc(0)
  for _ = 2, m do x = inc(x) end
  return x
end

-- Builds once (timed), runs REPS times; returns { best, median, walls (in
-- run order), build seconds, cpu line }.
local function measure(name, build, expect, tasks)
  gc()
  local b0 = now()
  local wf = ClusterWorkflow(build(), opts(name))
  local b1 = now()
  local walls, sum, drv = {}, 0, 0
  local c0 = cpu_snapshot()
  for r = 1, REPS do
    gc()
    local d0, t0 = os.clock(), now()
    local v = wf:run()
    local t1, d1 = now(), os.clock()
    assert(v == expect, ("%s: run %d gave %s, expected %s"):format(name, r, tostring(v), expect))
    walls[r] = t1 - t0
    sum = sum + walls[r]
    drv = drv + (d1 - d0)
  end
  local c1 = cpu_snapshot()
  c1.c_driver = c0.c_driver + drv -- the driver's CPU in run() only, not in gc()
  wf = nil -- luacheck: ignore
  gc()
  local sorted = table.move(walls, 1, #walls, 1, {})
  table.sort(sorted)
  return { best = sorted[1], median = sorted[(#sorted + 1) // 2], walls = walls,
           build = b1 - b0, cpu = cpu_line(c0, c1, tasks * REPS, sum) }
end

local function fmt_walls(walls)
  local t = {}
  for i, w in ipairs(walls) do t[i] = ("%.3f"):format(w) end
  return table.concat(t, " ")
end

local function show(label, m, tasks, nodes, per)
  if per == "step" then
    print(("  %-13s median %7.1f us/step    best %7.1f us/step    runs (s): %s"):format(label,
          m.median / tasks * 1e6, m.best / tasks * 1e6, fmt_walls(m.walls)))
  else
    print(("  %-13s median %8.0f tasks/s  best %8.0f tasks/s  runs (s): %s"):format(label,
          tasks / m.median, tasks / m.best, fmt_walls(m.walls)))
  end
  print(("                graph build %.3f s (%.0f ns/node, not in the run time)"):format(m.build,
        m.build / nodes * 1e9))
  print("                " .. m.cpu)
  io.stdout:flush()
end

---------------------------------------------------------------------------
-- fflua

print(("cluster benchmark: scale %g, dask scale %g, clock core.monotime, %d runs of each " ..
       "fflua measure (median judged, best shown)"):format(scale, dask_scale, REPS))
print(("machine: %d CPUs; fflua cluster: head + %d workers x %g CPU on 127.0.0.1")
      :format(core.cpu_count(), CLUSTER.num_workers, CLUSTER.num_cpus / CLUSTER.num_workers))
io.stdout:flush()

local s0 = now()
assert(ClusterWorkflow(inc(1), opts("warmup")):run() == 2)
local s1 = now()
procs = find_procs()
print(("fflua cluster start + warm-up run: %.3f s (head pid %s, worker pids %s)")
      :format(s1 - s0, tostring(procs.head), table.concat(procs.workers, ", ")))
print()

local N, M = count(100000), count(10000)
local res = {}

print(("(a) independent: N = %d nodes inc(i), then gathered"):format(N))
local expect_wide = N * (N + 1) // 2 + N
do
  local m = measure("wide", function() return build_wide(N, 1) end, expect_wide, N)
  show("1 gather", m, N, N + 1)
  res.rate, res.rate_best, res.shape = N / m.median, N / m.best, "1 gather"
end
if N >= 100 then
  local m = measure("wide100", function() return build_wide(N, 100) end, expect_wide, N)
  show("100 gathers", m, N, N + 101)
  if N / m.median > res.rate then
    res.rate, res.rate_best, res.shape = N / m.median, N / m.best, "100 gathers"
  end
end
print()

print(("(b) chain: M = %d steps x = inc(x)"):format(M))
do
  local m = measure("chain", function() return build_chain(M) end, M, M)
  show("chain", m, M, M, "step")
  res.us, res.us_best = m.median / M * 1e6, m.best / M * 1e6
end
print()

print(("(c) stored: N = %d nodes inc(i), 100 gathers, storage on the _disk worker"):format(N))
do
  local storage_factory = require("functionfuse.storage").storage_factory
  local dir = os.tmpname()
  os.remove(dir)
  local st = storage_factory { kind = "cluster", options = {
    remote_args = { resources = { _disk = 0.001 } }, path = dir } }
  local nodes = N + 101
  local saves, loads = {}, {}
  for r = 1, 3 do
    gc()
    local o = opts("stored" .. r)
    o.quiet = true
    local wf = ClusterWorkflow(build_wide(N, 100), o)
    wf:set_storage(st)
    local t0 = now()
    assert(wf:run() == expect_wide)
    local t1 = now()
    assert(wf.last_run.computed == nodes)
    assert(wf:run() == expect_wide)
    local t2 = now()
    assert(wf.last_run.computed == 0)
    saves[r], loads[r] = t1 - t0, t2 - t1
    wf = nil -- luacheck: ignore
  end
  os.execute("rm -rf '" .. dir .. "'")
  table.sort(saves)
  table.sort(loads)
  res.stored, res.stored_best = N / saves[2], N / saves[1]
  res.cached, res.cached_best = nodes / loads[2], nodes / loads[1]
  print(("  %-13s median %8.0f tasks/s  best %8.0f tasks/s  (computed and saved)")
        :format("first run", res.stored, res.stored_best))
  print(("  %-13s median %8.0f nodes/s  best %8.0f nodes/s  (all stored, the leaf loaded)")
        :format("rerun", res.cached, res.cached_best))
end
print()

---------------------------------------------------------------------------
-- (d) a worker killed mid-run

-- A cluster started by hand: a head without CPUs and two workers of 1 CPU
-- (--own-machine, --reconnect 0); the 100-gathers run of (a) without a
-- fault, FAULT_REPS times, then once with a watcher process that sends
-- SIGKILL to one worker halfway through (half the clean median after the
-- run starts), notes when (core.monotime is the machine's clock, shared
-- by processes) and polls the head's status until the worker is gone:
-- the detection time. Lost time = faulty wall - clean median; the target
-- is lost < detection + 20% of the clean median.
local FAULT_REPS = 3
print(("(d) a worker killed: N = %d nodes inc(i), 100 gathers, on a head and 2 workers " ..
       "started by hand"):format(N))
do
  local exe = core.exe_path()
  local token = core.token_new()
  local env = { FFLUA_TOKEN = token }
  local ready = os.tmpname()
  os.remove(ready)
  local head = core.spawn({ exe, "head", "--port", "0", "--num-cpus", "0", "--quiet",
                            "--ready-file", ready }, env)
  local address
  for _ = 1, 400 do
    local f = io.open(ready)
    if f then address = f:read("l"); f:close(); break end
    core.sleep(0.025)
  end
  os.remove(ready)
  assert(address, "the head of (d) did not start")
  local workers = {}
  for i = 1, 2 do
    workers[i] = core.spawn({ exe, "worker", "--address", address, "--num-cpus", "1",
                              "--own-machine", "--reconnect", "0", "--quiet" }, env)
  end
  local client = core.cluster_connect(address, { token = token })
  for _ = 1, 400 do
    if #client:status().places == 2 then break end
    core.sleep(0.025)
  end
  client:close()
  local o = { workflow_name = "fault", cluster_init_args = { address = address, token = token } }
  local wf = ClusterWorkflow(build_wide(N, 100), o)
  assert(wf:run() == expect_wide) -- warm-up
  local clean = {}
  for r = 1, FAULT_REPS do
    gc()
    local t0 = now()
    assert(wf:run() == expect_wide)
    clean[r] = now() - t0
  end
  table.sort(clean)
  local median = clean[(#clean + 1) // 2]
  local out = os.tmpname()
  local watcher = os.tmpname()
  local f = assert(io.open(watcher, "w"))
  f:write([[
    local core = require "functionfuse.core"
    local address, token, pid, at, out = arg[1], arg[2], tonumber(arg[3]), tonumber(arg[4]), arg[5]
    local c = core.cluster_connect(address, { token = token })
    while core.monotime() < at do core.sleep(0.001) end
    local killed = core.monotime()
    core.kill(pid, 9)
    local seen
    for _ = 1, 100000 do
      if #c:status().places < 2 then seen = core.monotime(); break end
      core.sleep(0.001)
    end
    local f = io.open(out, "w")
    f:write(killed, " ", seen or -1, "\n")
    f:close()
  ]])
  f:close()
  gc()
  local t0 = now()
  local w = core.spawn({ exe, watcher, address, token, tostring(workers[2]),
                         ("%.6f"):format(t0 + median / 2), out }, env)
  assert(wf:run() == expect_wide, "the run with a worker killed gave another result")
  local wall = now() - t0
  core.wait(w)
  f = assert(io.open(out))
  local killed, seen = f:read("n", "n")
  f:close()
  os.remove(out)
  os.remove(watcher)
  local detect = seen >= 0 and seen - killed or nil
  res.fault_lost, res.fault_detect, res.fault_clean = wall - median, detect, median
  print(("  %-13s median %8.3f s  (%s)"):format("no fault", median, fmt_walls(clean)))
  print(("  %-13s        %8.3f s  worker killed at %.3f s, seen gone by the head after %s")
        :format("one killed", wall, killed - t0,
                detect and ("%.1f ms"):format(detect * 1000) or "(never)"))
  print(("  time lost %.3f s (%.0f%% of the clean run)"):format(wall - median,
        (wall - median) / median * 100))
  core.kill(workers[1], 15)
  core.kill(head, 15)
  for _, pid in ipairs { workers[1], workers[2], head } do pcall(core.wait, pid) end
end
print()

---------------------------------------------------------------------------
-- dask

local dask = {}
local dask_note
if dask_scale == 0 then
  dask_note = "dask skipped (dask_scale 0)"
else
  local py = os.getenv("FFLUA_BENCH_PYTHON")
  if not py or py == "" then
    py = io.open("/usr/bin/python3", "rb") and "/usr/bin/python3" or "python3"
  end
  local dir = arg[0]:match("^(.*)/[^/]*$") or "."
  local cmd = ("'%s' '%s/cluster_dask.py' %s %s 2>&1"):format(py, dir, tostring(scale), tostring(dask_scale))
  print(("dask: %s"):format(cmd))
  io.stdout:flush()
  local p = io.popen(cmd)
  local lines = {}
  for line in p:lines() do
    lines[#lines + 1] = line
    local k, v = line:match("^RESULT (%S+) (%S+)$")
    if k then
      dask[k] = tonumber(v)
    else
      print("  | " .. line)
      io.stdout:flush()
      local why = line:match("^dask.distributed not available: (.*)$")
      if why then dask_note = line end
    end
  end
  local _, how, code = p:close()
  if not dask_note and (not dask.indep_rate or not dask.chain_us) then
    local what = (dask.indep_rate or dask.chain_us) and "dask baseline incomplete"
                 or "dask.distributed not available"
    dask_note = ("%s: %s ended (%s %s) without all results%s"):format(what,
                py, tostring(how), tostring(code),
                #lines > 0 and (" (last line: " .. lines[#lines] .. ")") or "")
    print(dask_note)
  end
end
print()

---------------------------------------------------------------------------
-- Side by side

local misses = {}
local function mark(ok, what)
  if ok == nil then return "n/a" end
  if not ok then misses[#misses + 1] = what end
  return ok and "PASS" or "MISS"
end

local F = "%-22s %13s %13s %13s %11s   %-16s %s"
print(F:format("summary", "fflua median", "fflua best", "dask", "fflua/dask", "target", ""))
do
  local x = dask.indep_rate and res.rate / dask.indep_rate
  print(F:format("independent tasks/s", ("%.0f"):format(res.rate), ("%.0f"):format(res.rate_best),
        dask.indep_rate and ("%.0f"):format(dask.indep_rate) or "-",
        x and ("%.1fx"):format(x) or "-", (">= %d/s"):format(TARGET_RATE),
        mark(res.rate >= TARGET_RATE, "independent throughput")))
  print(F:format("  (" .. res.shape .. ")", "", "", "", "", (">= %dx dask"):format(TARGET_X),
        mark(x and x >= TARGET_X, "independent vs dask")))
  local y = dask.chain_us and dask.chain_us / res.us
  print(F:format("chain us/step", ("%.1f"):format(res.us), ("%.1f"):format(res.us_best),
        dask.chain_us and ("%.1f"):format(dask.chain_us) or "-",
        y and ("%.1fx"):format(y) or "-", ("<= %d us"):format(TARGET_US),
        mark(res.us <= TARGET_US, "chain latency")))
  print(F:format("", "", "", "", "", (">= %dx dask"):format(TARGET_X),
        mark(y and y >= TARGET_X, "chain vs dask")))
end
print(F:format("stored run tasks/s", ("%.0f"):format(res.stored), ("%.0f"):format(res.stored_best),
      "-", "-", (">= %d/s"):format(TARGET_STORED), mark(res.stored >= TARGET_STORED, "stored run")))
print(F:format("cached rerun nodes/s", ("%.0f"):format(res.cached), ("%.0f"):format(res.cached_best),
      "-", "-", (">= %d/s"):format(TARGET_CACHED), mark(res.cached >= TARGET_CACHED, "cached rerun")))
if res.fault_lost then
  local limit = (res.fault_detect or 0) + 0.2 * res.fault_clean
  print(F:format("worker killed: lost s", ("%.3f"):format(res.fault_lost), "-", "-", "-",
        "< detect + 20%", mark(res.fault_detect ~= nil and res.fault_lost < limit,
                               "time lost to a killed worker")))
end
print(("fflua/dask: how many times faster fflua's median is (tasks/s ratio; us/step ratio " ..
       "inverted). Counts: fflua %d and %d, dask %s and %s (rates per task)."):format(N, M,
       dask.indep_n and ("%d"):format(dask.indep_n) or "-",
       dask.chain_n and ("%d"):format(dask.chain_n) or "-"))
if dask_note then print(dask_note) end
if #misses > 0 then
  print("missed: " .. table.concat(misses, ", "))
elseif not (dask.indep_rate and dask.chain_us) then
  print("the absolute targets are met; the ratios to dask were not measured")
else
  print("all targets met")
end
