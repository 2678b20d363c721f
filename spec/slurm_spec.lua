-- The Slurm launcher (cluster_init_args.launcher = "slurm"): a real,
-- private single-node Slurm (munged, slurmctld and slurmd started by
-- spec/helpers/slurm.sh in a temporary directory, with their own key,
-- socket, ports, state and spool) runs the workers as a job array; the
-- drivers are real fflua processes. Without slurmdbd there is no sacct:
-- the jobs are looked at with squeue and `scontrol -o show job`.
local core = require "functionfuse.core"
local ClusterWorkflow = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
local H = require "spec.helper"

local SLURM_SH = H.source .. "/spec/helpers/slurm.sh"

-- The private Slurm: its directory, SLURM_CONF, and why it could not
-- start (when it could not).
local sdir, conf, unavailable, broken
local drivers = {}

--- Runs a Slurm command against the private Slurm; returns its stdout.
local function slurm(argv)
  local r = H.run(argv, { env = { SLURM_CONF = conf }, timeout = 20 })
  assert(r.code == 0, table.concat(argv, " ") .. " failed: " .. r.stderr)
  return r.stdout
end

--- squeue's lines for a job id (all jobs with nil): "ID STATE REASON NAME".
local function squeue(job)
  local argv = { "squeue", "-h", "-o", "%i %T %r %j" }
  if job then argv[#argv + 1] = "-j"; argv[#argv + 1] = job end
  local t = {}
  for l in slurm(argv):gmatch("[^\n]+") do t[#t + 1] = l end
  return t
end

--- Waits up to `seconds` for squeue to show nothing of the job; returns
-- how long that took, or fails with what it still shows.
local function wait_gone(job, seconds)
  local t0 = core.monotime()
  repeat
    if #squeue(job) == 0 then return core.monotime() - t0 end
    core.sleep(0.1)
  until core.monotime() - t0 > seconds
  error(("job %s still in squeue after %g s: %s"):format(job, seconds,
        table.concat(squeue(job), "; ")), 2)
end

--- The states `scontrol -o show job` gives the tasks of an array job,
-- "ID_TASK=STATE", sorted (what sacct would say, had we slurmdbd).
local function final_states(job)
  local t = {}
  for l in slurm({ "scontrol", "-o", "show", "job", job }):gmatch("[^\n]+") do
    local task = l:match("ArrayTaskId=(%S+)")
    t[#t + 1] = ("%s_%s=%s"):format(job, task or "?", l:match("JobState=(%S+)"))
  end
  table.sort(t)
  return t
end

--- Starts a driver script with the private Slurm's SLURM_CONF, on a pty;
-- env: more variables.
local function driver(text, cwd, env)
  local path = H.write(cwd .. "/driver.lua", text)
  local e = { TERM = "dumb", SLURM_CONF = conf, FFLUA_BIN = H.bin }
  for k, v in pairs(env or {}) do e[k] = v end
  local p = H.fftest.pty { argv = { H.bin, path }, cwd = cwd, env = e }
  drivers[#drivers + 1] = p
  return p
end

--- A directory with an `sbatch` for PATH, as a site's wrapper might be:
-- it runs `pre` (sh code; $W is the directory), then the real sbatch on a
-- copy of the batch script, and keeps what that printed on stdout in
-- $W/out. Returns the directory (as the PATH to give a driver).
local function sbatch_wrapper(pre)
  local w = H.tmpdir()
  local real = H.run({ "sh", "-c", "command -v sbatch" }).stdout:match("[^\n]+")
  H.write(w .. "/sbatch", ([[#!/bin/bash
W=%s
cp "${!#}" "$W/job.sh"
%s
out=$(%s "${@:1:$#-1}" "$W/job.sh"); rc=$?
printf '%%s\n' "$out" >"$W/out"
printf '%%s\n' "$out"
exit $rc
]]):format(w, pre, real))
  assert(H.run({ "chmod", "+x", w .. "/sbatch" }).code == 0)
  return w, w .. ":" .. os.getenv("PATH")
end

--- Waits up to `seconds` for a file; returns whether it came.
local function wait_file(path, seconds)
  local t0 = core.monotime()
  repeat
    if H.read(path) then return true end
    core.sleep(0.02)
  until core.monotime() - t0 > seconds
  return false
end

--- The first job of the private Slurm that squeue shows pending with
-- reason BeginTime under a launcher's name (waits up to 10 s).
local function pending_job()
  for _ = 1, 200 do
    for _, l in ipairs(squeue()) do
      local job = l:find(" PENDING BeginTime fflua-", 1, true) and l:match("^(%d+)")
      if job then return job end
    end
    core.sleep(0.05)
  end
  error("no pending job appeared in squeue", 2)
end

--- The processes whose command line has `s` (a plain string; given to
-- grep in its environment, so that neither it nor sh is one of them).
local function processes_with(s)
  local r = H.run({ "sh", "-c", "printenv S | grep -alF -f - /proc/[0-9]*/cmdline 2>/dev/null; true" },
                  { env = { S = s } })
  local t = {}
  for pid in r.stdout:gmatch("/proc/(%d+)/cmdline") do t[#t + 1] = tonumber(pid) end
  return t
end

--- The seed pipeline (docs/functionfuse.md: two sums), on the Slurm
-- launcher with the given extra init args, then `after` (Lua code); on
-- an error it prints it, runs `on_error` (Lua code) and exits 3.
local function pipeline(extra, after, on_error)
  return ([[
local ff = require "functionfuse"
local ClusterWorkflow = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
local sum = ff.workflow(function(a, b) return a + b end)
local a, b = 1, 1
local a_plus_b = sum(a, b):set_name("node1")
local a_plus_two_b = sum(a_plus_b, b):set_name("node2")
local args = { launcher = "slurm", workers = 2, cpus_per_worker = 1, time = "5",
               join_timeout_s = 30 }
for k, v in pairs(%s) do args[k] = v end
local wf = ClusterWorkflow(a_plus_two_b, { workflow_name = "sums", cluster_init_args = args })
local ok, r = pcall(wf.run, wf)
if not ok then print("ERROR " .. tostring(r)); io.stdout:flush(); %s; os.exit(3) end
local info = wf:cluster_info()
print("RESULT " .. r)
print("JOB " .. info.job_id .. " " .. table.concat(info.job_ids, ",") .. " " .. info.launcher)
for _, name in ipairs { "node1", "node2" } do
  print("PLACED " .. name .. " " .. wf.last_run.placement[name])
end
print("READY")
io.stdout:flush()
%s
]]):format(extra or "{}", on_error or "", after or "")
end

describe("the slurm launcher", function()
  lazy_setup(function()
    sdir = H.fftest.mkdtemp()
    local r = H.run({ SLURM_SH, "start", sdir }, { timeout = 40 })
    if r.code == 77 then
      unavailable = r.stderr
    elseif r.code ~= 0 then
      broken = "the private Slurm did not start: " .. r.stderr
    else
      conf = r.stdout:match("[^\n]+")
    end
  end)

  lazy_teardown(function()
    H.run({ SLURM_SH, "stop", sdir }, { timeout = 30 })
    os.execute("rm -rf '" .. sdir .. "'")
  end)

  -- Whether the spec has no Slurm to run on (then pending with why); a
  -- Slurm that should have started and did not is a failure. busted takes
  -- pending only inside a test, so each test that needs Slurm asks.
  local function no_slurm()
    if unavailable then
      pending("no private Slurm on this machine: " .. unavailable)
      return true
    end
    assert(not broken, broken)
  end

  after_each(function()
    for _, p in ipairs(drivers) do
      p:kill(H.signals.SIGKILL)
      p:wait(10)
      p:close()
    end
    drivers = {}
    -- Nothing a failed spec left may run into the next one.
    if conf then H.run({ "scancel", "--user=root" }, { env = { SLURM_CONF = conf } }) end
    H.cleanup()
  end)

  it("refuses unknown keys and bad values, naming the nearest known one", function()
    local sum = require("functionfuse").workflow(function(a, b) return a + b end)
    local n = sum(1, 1)
    local function err(args)
      local ok, e = pcall(ClusterWorkflow, n, { workflow_name = "w", cluster_init_args = args })
      assert.is_false(ok)
      return tostring(e)
    end
    assert.matches("ClusterWorkflow: cluster_init_args: unknown key 'worker' %(did you mean 'workers'%?%)",
                   err { launcher = "slurm", worker = 2 })
    assert.matches("ClusterWorkflow: cluster_init_args: key 'num_workers' is not for launcher 'slurm': " ..
                   "use 'workers'", err { launcher = "slurm", num_workers = 2 })
    assert.matches("key 'address' is not for launcher 'slurm': launcher 'slurm' starts a head of its own",
                   err { launcher = "slurm", address = "h:1" })
    assert.matches("ClusterWorkflow: cluster_init_args.launcher: unknown launcher 'slrum' %(did you " ..
                   "mean 'slurm'%?%)", err { launcher = "slrum" })
    assert.matches("ClusterWorkflow: cluster_init_args.workers must be an integer from 1 to 1024, got 0",
                   err { launcher = "slurm", workers = 0 })
    assert.matches("cluster_init_args.cpus_per_worker must be an integer from 1 to 4096",
                   err { launcher = "slurm", cpus_per_worker = 1.5 })
    assert.matches("cluster_init_args.sbatch_args must be a list of strings",
                   err { launcher = "slurm", sbatch_args = { "--qos", 1 } })
    assert.matches("cluster_init_args.time must be a number of minutes or a Slurm time limit",
                   err { launcher = "slurm", time = "an hour" })
    -- sbatch's --output patterns cannot have a backslash in the path.
    assert.matches("cluster_init_args.shared_dir must be a path without a backslash %(sbatch's " ..
                   "%-%-output would not take it%), got '/tmp/a\\b'",
                   err { launcher = "slurm", shared_dir = "/tmp/a\\b" })
    -- Without a launcher, the Slurm keys are unknown.
    assert.matches("unknown key 'workers' %(known: address, .*, launcher%)", err { workers = 2 })
  end)

  it("runs the seed pipeline on workers that are Slurm jobs, and cancels them at exit", function()
    if no_slurm() then return end
    local cwd = H.tmpdir()
    -- A shared_dir with a % (which sbatch's --output must not expand),
    -- and an sbatch that says more than the job id, on stderr and stdout
    -- (as a site's job_submit plugin does).
    local shared = cwd .. "/100%j"
    assert(H.run({ "mkdir", shared }).code == 0)
    local _, path = sbatch_wrapper("echo 'sbatch: job_submit: partition debug chosen' >&2\n" ..
                                   "echo 'note: the queue is quiet'")
    local p = driver(pipeline(("{ shared_dir = %q }"):format(shared), "io.read('l')"), cwd,
                     { PATH = path })
    local seen = H.expect(p, "READY", 40)
    assert.matches("RESULT 3", seen)
    local job, ids, launcher = seen:match("JOB (%d+) (%S+) (%S+)")
    assert.are.equal("slurm", launcher)
    assert.are.equal(job .. "_1," .. job .. "_2", ids)
    -- While it runs, squeue shows the array's two tasks running, under
    -- the launcher's job name.
    local q = squeue(job)
    table.sort(q)
    assert.are.equal(2, #q, table.concat(q, "; "))
    for i, l in ipairs(q) do
      assert.matches("^" .. job .. "_" .. i .. " RUNNING None fflua%-%w+$", l)
    end
    -- The nodes ran on workers that are processes of that job.
    for _, name in ipairs { "node1", "node2" } do
      local pid = seen:match("PLACED " .. name .. " [^:]+:(%d+)")
      assert.is_truthy(pid, seen)
      local env = H.read("/proc/" .. pid .. "/environ") or ""
      assert.matches("%zSLURM_ARRAY_JOB_ID=" .. job .. "%z", "\0" .. env)
      assert.matches("fflua\0worker\0", H.read("/proc/" .. pid .. "/cmdline") or "")
    end
    -- Its private directory (token, batch script, logs) is in shared_dir
    -- while the cluster runs, the token file mode 600, the workers' logs
    -- in it.
    local dirs = H.run({ "sh", "-c", "ls -d .fflua-slurm-*; stat -c %a .fflua-slurm-*/token; " ..
                         "cd .fflua-slurm-* && ls worker-*.log" }, { cwd = shared })
    assert.matches("^%.fflua%-slurm%-%w+\n600\nworker%-" .. job .. "_1%.log\nworker%-" .. job ..
                   "_2%.log\n$", dirs.stdout)
    p:send("go\n")
    assert.are.equal(0, (p:wait(20)))
    -- Once the driver has exited, the jobs leave squeue at once; scontrol
    -- (our sacct) says how they ended: cancelled, or done when their
    -- worker left first (the head stopped).
    assert.is_true(wait_gone(job, 10) < 10)
    local states = final_states(job)
    assert.are.equal(2, #states)
    for i, s in ipairs(states) do
      local st = s:match("^" .. job .. "_" .. i .. "=(%u+)$")
      assert.is_truthy(st == "CANCELLED" or st == "COMPLETED", s)
    end
    assert.are.equal("", H.run({ "sh", "-c", "ls -a | grep fflua-slurm || true" }, { cwd = shared }).stdout)
  end)

  it("cancels running workers when the driver is killed with kill -9", function()
    if no_slurm() then return end
    local cwd = H.tmpdir()
    local p = driver(pipeline(nil, "io.read('l')"), cwd)
    local seen = H.expect(p, "READY", 40)
    local job = seen:match("JOB (%d+)")
    assert.are.equal(2, #squeue(job))
    p:kill(H.signals.SIGKILL)
    p:wait(10)
    assert.is_true(wait_gone(job, 5) < 5)
    -- The guard removed the private directory, token included.
    assert.are.equal("", H.run({ "sh", "-c", "ls -a | grep fflua-slurm || true" }, { cwd = cwd }).stdout)
  end)

  it("cancels workers still pending when the driver is killed with kill -9", function()
    if no_slurm() then return end
    local cwd = H.tmpdir()
    -- --begin keeps them pending: no worker can leave by itself, only
    -- scancel (the guard's) takes them out of the queue.
    local p = driver(pipeline('{ sbatch_args = { "--begin=now+1hour" } }'), cwd)
    local job = pending_job()
    p:kill(H.signals.SIGKILL)
    p:wait(10)
    assert.is_true(wait_gone(job, 5) < 5)
    -- A pending array is cancelled whole: one record for its tasks, or one
    -- each.
    local states = final_states(job)
    assert.is_true(#states >= 1)
    for _, s in ipairs(states) do assert.matches("^" .. job .. "_%S+=CANCELLED$", s) end
  end)

  it("cancels the array when the driver is killed while sbatch is submitting it", function()
    if no_slurm() then return end
    local cwd = H.tmpdir()
    -- An sbatch that takes 1 s before it submits: the driver dies
    -- before the job exists; it is registered afterwards. (It ignores
    -- SIGHUP: the driver here leads its terminal's session, whose end
    -- hangs up the foreground group; one started from a shell does not.)
    local w, path = sbatch_wrapper('trap "" HUP; touch "$W/started"; sleep 1')
    local p = driver(pipeline('{ sbatch_args = { "--begin=now+1hour" } }'), cwd, { PATH = path })
    assert.is_true(wait_file(w .. "/started", 20), "sbatch did not start")
    core.sleep(0.2)
    p:kill(H.signals.SIGKILL)
    p:wait(10)
    -- The real sbatch submitted the array all the same; it is cancelled.
    assert.is_true(wait_file(w .. "/out", 10), "sbatch did not return")
    local job = H.read(w .. "/out"):match("^(%d+)")
    assert.is_truthy(job, H.read(w .. "/out"))
    assert.is_true(wait_gone(job, 5) < 5)
    local states = final_states(job)
    for _, s in ipairs(states) do assert.matches("^" .. job .. "_%S+=CANCELLED$", s) end
    -- No guard is left, and it removed the private directory.
    local name = slurm({ "scontrol", "-o", "show", "job", job }):match("JobName=(%S+)")
    assert.is_truthy(name)
    local t0 = core.monotime()
    while #processes_with(name) > 0 and core.monotime() - t0 < 5 do core.sleep(0.05) end
    assert.are.same({}, processes_with(name))
    assert.are.equal("", H.run({ "sh", "-c", "ls -a | grep fflua-slurm || true" }, { cwd = cwd }).stdout)
  end)

  it("fails at once when the head dies while the workers join, and cancels them", function()
    if no_slurm() then return end
    local cwd = H.tmpdir()
    -- After the error the driver lives on (reading its terminal): the jobs
    -- must go then, not when it exits.
    local p = driver(pipeline('{ sbatch_args = { "--begin=now+1hour" } }', nil, "io.read('l')"), cwd)
    local job = pending_job()
    local name = slurm({ "scontrol", "-o", "show", "job", job }):match("JobName=(%S+)")
    local heads = processes_with("/.fflua-slurm-" .. name:match("fflua%-(%w+)") .. "/ready")
    assert.are.equal(1, #heads)
    core.kill(heads[1], H.signals.SIGKILL)
    local seen = H.expect(p, "ERROR", 20)
    local _, rest = p:expect("\0never", 0.3)
    seen = seen .. (rest or "")
    assert.matches("ERROR [^\n]*ClusterWorkflow: launcher 'slurm': waiting for the workers %(job " ..
                   job .. "%) to join: [^\n]*head at 127%.0%.0%.1:%d+", seen)
    assert.is_true(wait_gone(job, 5) < 5)
    assert.are.equal("", H.run({ "sh", "-c", "ls -a | grep fflua-slurm || true" }, { cwd = cwd }).stdout)
    p:send("\n")
    assert.are.equal(3, (p:wait(20)))
  end)

  it("fails when the workers do not join in time, saying what squeue shows, and cancels them",
     function()
    if no_slurm() then return end
    local cwd = H.tmpdir()
    local p = driver(pipeline('{ sbatch_args = { "--begin=now+1hour" }, join_timeout_s = 1.5 }'),
                     cwd)
    local seen = H.expect(p, "ERROR", 30)
    assert.are.equal(3, (p:wait(20)))
    local _, all = p:expect("\0never", 0.1)
    seen = all or seen
    local job = seen:match("squeue %-j (%d+)")
    assert.is_truthy(job, seen)
    assert.matches("launcher 'slurm': 0 of 2 workers joined the head at 127%.0%.0%.1:%d+ within 1%.5 s; " ..
                   "squeue %-j " .. job .. ": " .. job .. "_%[1%-2%] PENDING BeginTime", seen)
    assert.is_true(wait_gone(job, 5) < 5)
  end)

  it("runs docs/slurm.md's batch script: a head, srun workers and the driver in one allocation",
     function()
    if no_slurm() then return end
    local cwd = H.tmpdir()
    local doc = H.read(H.source .. "/docs/slurm.md")
    local script = doc:match("## A batch script.-```sh\n(.-)```")
    local drv = doc:match("with a `driver.lua`.-```lua\n(.-)```")
    assert.is_truthy(script and drv)
    H.write(cwd .. "/batch.sh", script)
    H.write(cwd .. "/driver.lua", 'local ff = require "functionfuse"\n' ..
      'local ClusterWorkflow = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow\n' ..
      'local sum = ff.workflow(function(a, b) return a + b end)\n' ..
      'local a_plus_two_b = sum(sum(1, 1):set_name("node1"), 1):set_name("node2")\n' .. drv)
    local r = H.run({ "sbatch", "--parsable", "--nodes=1", "--ntasks=2", "--ntasks-per-node=2",
                      "--cpus-per-task=1", "--time=5", "--output=" .. cwd .. "/out.log", "batch.sh" },
                    { cwd = cwd, env = { SLURM_CONF = conf, FFLUA_BIN = H.bin } })
    assert.are.equal(0, r.code, r.stderr)
    local job = r.stdout:match("^(%d+)")
    wait_gone(job, 40)
    assert.are.same({ job .. "_?=COMPLETED" }, final_states(job))
    assert.are.equal("3\n", H.read(cwd .. "/out.log"))
    -- The script's trap removed its directory, token included.
    assert.are.equal("", H.run({ "sh", "-c", "ls -a | grep fflua- || true" }, { cwd = cwd }).stdout)
  end)
end)
