--- The Slurm launcher of ClusterWorkflow: cluster_init_args = { launcher =
-- "slurm", workers = N, cpus_per_worker = C, partition = P, time = T,
-- sbatch_args = { ... }, host = H, shared_dir = D, join_timeout_s = S }.
--
-- The head runs here, tied to the driver (as a local cluster's head); the
-- workers are one Slurm job array (sbatch --array=1-N), each task an
-- `fflua worker --reconnect 0` joining the head with the token in a file
-- of a private directory under shared_dir, which the compute nodes must
-- see (a shared file system). The jobs are cancelled when the cluster
-- stops and when the driver dies in any way: a guard process, started
-- first and tied to the driver like the head, runs sbatch itself and
-- `scancel --name` on the array's unique job name when it is told to stop
-- or when the driver is gone (after sbatch returned, if it was running),
-- and removes the private directory (docs/slurm.md).
local core = require "functionfuse.core"
local util = require "functionfuse._util"

local M = {}

--- The keys cluster_init_args takes with launcher = "slurm".
M.KEYS = { "launcher", "workers", "cpus_per_worker", "partition", "time", "sbatch_args", "host",
           "shared_dir", "join_timeout_s", "heartbeat_timeout_s", "runtime_env",
           "ignore_reinit_error" }

local MAX_WORKERS = 1024

-- Keys of the other kinds of cluster, and what to give instead.
local INSTEAD = {
  num_workers = "use 'workers'", num_cpus = "use 'cpus_per_worker'",
  address = "launcher 'slurm' starts a head of its own", token_file = "launcher 'slurm' makes one",
  token = "launcher 'slurm' makes one", num_gpus = "give Slurm's --gpus in 'sbatch_args'",
  resources = "not with launcher 'slurm' yet",
}

-- The running cluster of this Lua state, when there is one.
local running

--- A word for sh: in single quotes.
local function q(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

--- Runs a shell command line; returns its output (stdout and stderr, the
-- trailing newline removed) and whether it succeeded.
local function sh(line)
  local p = assert(io.popen(line .. " 2>&1", "r"))
  local out = p:read("a")
  local ok = p:close()
  return (out:gsub("%s+$", "")), ok == true
end

--- Checks a's keys and values; what names the table in messages
-- ("ClusterWorkflow: cluster_init_args"), level where errors point.
function M.check(a, what, level)
  level = level + 1
  local names = {}
  for k in pairs(INSTEAD) do if a[k] ~= nil then names[#names + 1] = k end end
  table.sort(names)
  if names[1] then
    error(("%s: key '%s' is not for launcher 'slurm': %s"):format(what, names[1], INSTEAD[names[1]]),
          level + 1)
  end
  util.check_keys(a, M.KEYS, what, "key", level)
  local function bad(key, expected)
    error(("%s.%s must be %s, got %s"):format(what, key, expected,
          type(a[key]) == "string" and "'" .. a[key] .. "'" or tostring(a[key])), level + 1)
  end
  local w = a.workers
  if w ~= nil and (math.type(w) ~= "integer" or w < 1 or w > MAX_WORKERS) then
    bad("workers", "an integer from 1 to " .. MAX_WORKERS)
  end
  local c = a.cpus_per_worker
  if c ~= nil and (math.type(c) ~= "integer" or c < 1 or c > 4096) then
    bad("cpus_per_worker", "an integer from 1 to 4096 (Slurm's --cpus-per-task)")
  end
  for _, k in ipairs { "partition", "host", "shared_dir" } do
    if a[k] ~= nil and (type(a[k]) ~= "string" or a[k] == "" or a[k]:find("%c")) then
      bad(k, "a non-empty string")
    end
  end
  if a.shared_dir and a.shared_dir:find("\\", 1, true) then
    bad("shared_dir", "a path without a backslash (sbatch's --output would not take it)")
  end
  local t = a.time
  if t ~= nil and not ((math.type(t) == "integer" and t > 0)
                       or (type(t) == "string" and t:match("^[%d:%-]+$"))) then
    bad("time", "a number of minutes or a Slurm time limit such as '10', '1:30:00' or '2-0'")
  end
  local sa = a.sbatch_args
  if sa ~= nil then
    if type(sa) ~= "table" then bad("sbatch_args", "a list of strings") end
    for i = 1, #sa do
      if type(sa[i]) ~= "string" then bad("sbatch_args", "a list of strings") end
    end
    for k in pairs(sa) do
      if math.type(k) ~= "integer" or k < 1 or k > #sa then bad("sbatch_args", "a list of strings") end
    end
  end
  local j = a.join_timeout_s
  if j ~= nil and (type(j) ~= "number" or not (j > 0 and j <= 86400)) then
    bad("join_timeout_s", "a number of seconds from 0 to 86400")
  end
end

-- The settings a cluster was started with, as one string: a later use
-- with other ones is an error (unless ignore_reinit_error).
local function settings(a)
  return table.concat({ a.workers or 1, a.cpus_per_worker or 1, a.partition or "", a.time or "",
                        table.concat(a.sbatch_args or {}, "\0"), a.host or "", a.shared_dir or "",
                        a.heartbeat_timeout_s or "" }, "\1")
end

-- Stops a cluster: the guard cancels the jobs and removes the private
-- directory; the head stops (its workers, told it stops, leave at once).
local function stop(cl)
  if cl.stopped then return end
  cl.stopped = true
  if cl.client then pcall(cl.client.close, cl.client) end
  if cl.guard then core.kill(cl.guard, 15); pcall(core.wait, cl.guard) end
  if cl.head then core.kill(cl.head, 15); pcall(core.wait, cl.head) end
  if running == cl then running = nil end
end

-- Collected when the Lua state closes (the driver's normal end).
local Guard = { __gc = function(g) stop(g.cl) end }

--- What squeue says about the job, one line per task (or group of
-- pending tasks): "ID STATE REASON".
local function squeue(job)
  local out = sh("squeue -h -j " .. q(job) .. " -o '%i %T %r'")
  return out
end

-- The last lines of the first worker log there is, for error messages.
local function log_tail(dir)
  local out = sh("cd " .. q(dir) .. " && for f in worker-*.log; do [ -s \"$f\" ] && " ..
                 "{ echo \"$f:\"; tail -n 5 \"$f\"; break; }; done")
  return out ~= "" and out or nil
end

-- The guard, a /bin/sh script: $1 the job name, $2 the driver's pid, $3
-- the cluster's directory. It runs sbatch itself, once the driver has
-- written DIR/submit (a line for sh): its stdout to DIR/sbatch.out, its
-- stderr to DIR/sbatch.err, then its exit code to DIR/sbatch.rc. As
-- sbatch is its foreground command, a SIGTERM that comes while sbatch
-- runs (the driver died: PR_SET_PDEATHSIG) is handled once sbatch has
-- returned (POSIX sh defers traps until then), so the scancel comes after
-- the job was registered; an sbatch that printed no job id (it failed, or
-- was killed) may still have registered one, so then the guard cancels
-- again until squeue shows none of that name twice in a row (5 s at
-- most).
local GUARD_SH = [=[
n=$1 p=$2 d=$3 u=$(id -u) s= t=0.05
cancel() {
  scancel --user="$u" --name="$n" >/dev/null 2>&1
  [ -n "$s" ] && ! grep -q '^ *[0-9]' "$d/sbatch.out" 2>/dev/null || return 0
  i=0 g=0
  while [ $i -lt 25 ] && [ $g -lt 2 ]; do
    sleep 0.2
    if j=$(squeue -h --user="$u" --name="$n" -o %i 2>/dev/null) && [ -z "$j" ]; then
      g=$((g + 1))
    else
      g=0; scancel --user="$u" --name="$n" >/dev/null 2>&1
    fi
    i=$((i + 1))
  done
}
stop() { trap '' TERM INT HUP; cancel; rm -rf "$d"; exit 0; }
trap stop TERM INT HUP
while kill -0 "$p" 2>/dev/null; do
  if [ -z "$s" ] && [ -e "$d/submit" ]; then
    s=1 t=0.5
    sh "$d/submit" >"$d/sbatch.out" 2>"$d/sbatch.err"
    echo $? >"$d/sbatch.rc.new" && mv "$d/sbatch.rc.new" "$d/sbatch.rc"
  fi
  sleep $t & wait $!
done
stop
]=]

--- Whether process pid (a child) has ended (and is reaped).
local function ended(pid)
  return select("#", core.wait(pid, true)) > 0
end

--- A whole file's text, trailing white space removed ("" when missing).
local function slurp(path)
  local f = io.open(path, "r")
  if not f then return "" end
  local s = f:read("a") or ""
  f:close()
  return (s:gsub("%s+$", ""))
end

--- The job id in sbatch --parsable's stdout: its last line that is one
-- ("ID" or "ID;CLUSTER"); a job_submit plugin's messages go before it.
local function parsable_id(out)
  local id
  for l in out:gmatch("[^\n]+") do
    id = l:match("^%s*(%d+)%s*$") or l:match("^%s*(%d+);%S+%s*$") or id
  end
  return id
end

--- The part of start that the guard covers: the head, sbatch (through
-- the guard), the wait for the workers. Errors of ours are { slurm =
-- message }; cl.doing says what was under way, for any other.
local function launch(cl, a, exe)
  local function fail(msg) error({ slurm = msg }, 0) end
  local workers, cpus = cl.workers, a.cpus_per_worker or 1
  local host = a.host or "127.0.0.1"
  local dir = cl.dir
  cl.doing = "starting the head"
  local token = core.token_new()
  local f = io.open(cl.token_file, "w")
  if not (f and f:write(token, "\n") and f:close()) or not select(2, sh("chmod 600 " .. q(cl.token_file))) then
    fail("cannot write the token file " .. cl.token_file)
  end
  -- The head: no CPUs of its own, listening where the workers reach it.
  local ready = dir .. "/ready"
  local argv = { exe, "head", "--host", host, "--port", "0", "--num-cpus", "0",
                 "--token-file", cl.token_file, "--ready-file", ready, "--quiet" }
  if a.heartbeat_timeout_s then
    argv[#argv + 1] = "--heartbeat-timeout"; argv[#argv + 1] = ("%.17g"):format(a.heartbeat_timeout_s)
  end
  cl.head = core.spawn(argv, { FFLUA_PARENT_PID = tostring(core.getpid()) },
                       { die_with_parent = true })
  for _ = 1, 400 do
    local r = io.open(ready, "r")
    if r then cl.address = r:read("l"); r:close(); break end
    if ended(cl.head) then cl.head = nil; break end
    core.sleep(0.025)
  end
  if not cl.address then fail(("the head did not start on host '%s'"):format(host)) end
  -- The workers' batch script: one array task per worker.
  local script = dir .. "/worker.sh"
  local sf = io.open(script, "w")
  if not (sf and sf:write("#!/bin/sh\n# A worker of the fflua cluster at ", cl.address,
                           " (driver pid ", core.getpid(), ").\nexec ", q(exe), " worker --address ",
                           q(cl.address), " --token-file ", q(cl.token_file), " --num-cpus ", cpus,
                           " --reconnect 0\n") and sf:close()) then
    fail("cannot write the batch script " .. script)
  end
  -- sbatch, run by the guard. In --output, a % of the directory is
  -- written %% (sbatch expands %A, %j... in the whole path).
  local cmd = { "sbatch", "--parsable", "--job-name=" .. cl.job_name, "--array=1-" .. workers,
                "--cpus-per-task=" .. cpus,
                "--output=" .. dir:gsub("%%", "%%%%") .. "/worker-%A_%a.log" }
  if a.partition then cmd[#cmd + 1] = "--partition=" .. a.partition end
  if a.time then cmd[#cmd + 1] = "--time=" .. a.time end
  for _, s in ipairs(a.sbatch_args or {}) do cmd[#cmd + 1] = s end
  cmd[#cmd + 1] = script
  for i, s in ipairs(cmd) do cmd[i] = q(s) end
  cl.doing = "submitting the workers"
  local sub = io.open(dir .. "/submit.new", "w")
  if not (sub and sub:write("exec ", table.concat(cmd, " "), "\n") and sub:close()
          and os.rename(dir .. "/submit.new", dir .. "/submit")) then
    fail("cannot write " .. dir .. "/submit")
  end
  local rc
  repeat
    rc = slurp(dir .. "/sbatch.rc")
    if rc == "" then
      if ended(cl.guard) then cl.guard = nil; fail("the guard process ended before sbatch did") end
      core.sleep(0.02)
    end
  until rc ~= ""
  local sout, serr = slurp(dir .. "/sbatch.out"), slurp(dir .. "/sbatch.err")
  cl.job_id = rc == "0" and parsable_id(sout)
  if not cl.job_id then
    local said = table.concat({ serr, sout }, serr ~= "" and sout ~= "" and "\n" or "")
    fail(("sbatch %s: %s"):format(rc == "0" and "printed no job id" or "failed (exit " .. rc .. ")",
                                  said ~= "" and said or "it said nothing"))
  end
  cl.job_ids = {}
  for i = 1, workers do cl.job_ids[i] = cl.job_id .. "_" .. i end
  cl.doing = "connecting to the head at " .. cl.address
  cl.client = core.cluster_connect(cl.address, { token_file = cl.token_file })
  -- Wait for the workers; every 2 s, see that some of the jobs are left.
  cl.doing = ("waiting for the workers (job %s) to join"):format(cl.job_id)
  local timeout = a.join_timeout_s or 300
  local t0, last_check = core.monotime(), core.monotime()
  while #cl.client:status().places < workers do
    if ended(cl.head) then
      cl.head = nil
      fail(("the head at %s ended while the workers (job %s) were joining it")
           :format(cl.address, cl.job_id))
    end
    local now = core.monotime()
    if now - t0 > timeout then
      local q_out = squeue(cl.job_id)
      local tail = log_tail(dir)
      fail(("%d of %d workers joined the head at %s within %g s; squeue -j %s: %s%s")
           :format(#cl.client:status().places, workers, cl.address, timeout, cl.job_id,
                   q_out ~= "" and q_out:gsub("\n", "; ") or "no job left",
                   tail and "\n" .. tail or ""))
    end
    if now - last_check >= 2 then
      last_check = now
      if squeue(cl.job_id) == "" then
        local tail = log_tail(dir)
        fail(("the worker jobs (%s) ended before %d workers joined the head at %s (%d did)%s")
             :format(cl.job_id, workers, cl.address, #cl.client:status().places,
                     tail and "\n" .. tail or ""))
      end
    end
    core.sleep(0.1)
  end
end

--- Starts the head here and the workers through sbatch, waits for them
-- to join; returns the cluster { address, token_file, client, job_id,
-- job_name, workers, dir }. exe: the fflua program (the workers run the
-- same path, so it must be there on the compute nodes too). Whatever
-- fails after the guard started (an error of ours or any other, the head
-- dying while the workers join), the cluster stops at once, its jobs
-- cancelled, and the error says "launcher 'slurm'".
function M.start(a, exe, level)
  level = level + 1
  if running then
    if running.settings == settings(a) or a.ignore_reinit_error then
      if not running.client:usable() then
        running.client:close()
        running.client = core.cluster_connect(running.address, { token_file = running.token_file })
      end
      return running
    end
    error("ClusterWorkflow: a Slurm cluster is already running in this process with other " ..
          "settings; pass ignore_reinit_error = true to use it", level)
  end
  local shared = a.shared_dir or assert(core.cwd())
  if shared:find("\\", 1, true) then
    error(("ClusterWorkflow: launcher 'slurm': the directory '%s' has a backslash, which " ..
           "sbatch's --output does not take (it turns its patterns off): give another " ..
           "shared_dir"):format(shared), level)
  end
  local _, has_sbatch = sh("command -v sbatch")
  if not has_sbatch then
    error("ClusterWorkflow: launcher 'slurm': sbatch was not found on PATH (install Slurm's " ..
          "client commands, Debian's slurm-client)", level)
  end
  local tag = core.token_new():gsub("[^%w]", ""):sub(1, 10):lower()
  local name = "fflua-" .. tag
  local dir = shared .. "/.fflua-slurm-" .. tag
  local out, ok = sh("mkdir -m 700 " .. q(dir))
  if not ok then
    error(("ClusterWorkflow: launcher 'slurm': cannot make the cluster's directory in " ..
           "shared_dir '%s': %s"):format(shared, out), level)
  end
  local cl = { settings = settings(a), dir = dir, job_name = name, workers = a.workers or 1,
               token_file = dir .. "/token" }
  cl.gc = setmetatable({ cl = cl }, Guard)
  -- The guard first, so that no job can outlive the driver: it runs
  -- sbatch itself, when the driver asks; it cancels the jobs of this name
  -- and removes the directory when it gets SIGTERM (the cluster stops, or
  -- the driver died: PR_SET_PDEATHSIG) or sees the driver's pid gone.
  cl.guard = core.spawn({ "/bin/sh", "-c", GUARD_SH, "fflua-slurm-guard", name,
                          tostring(core.getpid()), dir }, {}, { die_with_parent = true })
  local ok2, e = pcall(launch, cl, a, exe)
  if not ok2 then
    stop(cl)
    error("ClusterWorkflow: launcher 'slurm': " ..
          (type(e) == "table" and e.slurm
           or ("%s: %s"):format(cl.doing, (tostring(e):gsub("^[^:\n]*:%d+: ", "")))), level)
  end
  running = cl
  return cl
end

--- What wf:cluster_info() returns for the running cluster (nil when
-- none runs).
function M.info()
  local cl = running
  return cl and { address = cl.address, token_file = cl.token_file, launcher = "slurm",
                  job_id = cl.job_id, job_ids = table.move(cl.job_ids, 1, #cl.job_ids, 1, {}),
                  job_name = cl.job_name, workers = cl.workers }
end

--- Stops the running cluster now (its jobs cancelled), when there is one.
function M.stop()
  if running then stop(running) end
end

return M
