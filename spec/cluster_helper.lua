--- Shared helpers for the cluster specs: heads, workers and drivers as
-- real processes on 127.0.0.1, started on pseudo-terminals and stopped by
-- stop_all() after each spec.
local core = require "functionfuse.core"
local H = require "spec.helper"

local C = {}

--- The processes started, in order (a cluster's head first).
C.procs = {}

--- Starts `fflua ARGS...` in the background (on a pty) and remembers it.
function C.start(args, env)
  local argv = { H.bin }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local p = H.fftest.pty { argv = argv, env = env or { TERM = "dumb" } }
  C.procs[#C.procs + 1] = p
  return p
end

--- Starts `fflua ARGS...` through sh, with its stderr going to the file
-- log and with shell commands run first (as `ulimit -v N`), on a pty.
function C.start_sh(args, log, prelude)
  local argv = { "/bin/sh", "-c", (prelude or "") .. '\nlog=$1; shift; exec "$@" 2>>"$log"',
                 "sh", log or "/dev/stderr", H.bin }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local p = H.fftest.pty { argv = argv, env = { TERM = "dumb" } }
  C.procs[#C.procs + 1] = p
  return p
end

--- Stops (SIGTERM) and reaps every process started.
function C.stop_all()
  for _, p in ipairs(C.procs) do
    p:kill(H.signals.SIGTERM)
    p:wait(10)
    p:close()
  end
  for i = #C.procs, 1, -1 do C.procs[i] = nil end
end

--- Waits for a file with a first line, and returns that line.
function C.wait_file(path)
  for _ = 1, 400 do
    local f = io.open(path)
    if f then
      local s = f:read("l")
      f:close()
      if s then return s end
    end
    core.sleep(0.025)
  end
  error("never appeared: " .. path)
end

--- A head without CPUs of its own, and the given workers. Returns the
-- address, the token file and the worker processes. opts.log: the head's
-- stderr goes to this file. A worker's ulimit_v: its address space limit
-- in KiB (`ulimit -v`). Each worker counts as a machine of its own
-- (--own-machine), as if the cluster had as many hosts, unless it has
-- this_machine = true: then it is on this host's machine, with the other
-- workers that are. opts.head_args: more arguments for the head (as
-- { "--heartbeat-timeout", "1" }); a worker's args: more for it. The
-- fourth result is the head's process.
function C.cluster(workers, opts)
  opts = opts or {}
  local dir = H.tmpdir()
  local token = dir .. "/cluster.token"
  H.write(token, core.token_new() .. "\n")
  assert(os.execute("chmod 600 '" .. token .. "'"))
  local head = { "head", "--port", "0", "--num-cpus", "0", "--token-file", token,
                 "--ready-file", dir .. "/ready" }
  for _, a in ipairs(opts.head_args or {}) do head[#head + 1] = a end
  local hp = opts.log and C.start_sh(head, opts.log) or C.start(head)
  local address = C.wait_file(dir .. "/ready")
  local ps = {}
  for i, w in ipairs(workers) do
    local args = { "worker", "--address", address, "--token-file", token,
                   "--num-cpus", tostring(w.cpus or 1) }
    if w.resources then args[#args + 1] = "--resources"; args[#args + 1] = w.resources end
    if not w.this_machine then args[#args + 1] = "--own-machine" end
    for _, a in ipairs(w.args or {}) do args[#args + 1] = a end
    if w.ulimit_v then
      ps[i] = C.start_sh(args, nil, "ulimit -v " .. w.ulimit_v)
    else
      ps[i] = C.start(args)
    end
  end
  local client = core.cluster_connect(address, { token_file = token })
  local n
  for _ = 1, 400 do
    n = #client:status().places
    if n == #workers then break end
    core.sleep(0.025)
  end
  client:close()
  if n ~= #workers then
    error(("the cluster has %d workers, not %d"):format(n, #workers), 2)
  end
  return address, token, ps, hp
end

--- The most of the spans { id, start, end } that overlap at one moment.
function C.most_at_once(spans)
  local events = {}
  for _, sp in ipairs(spans) do
    events[#events + 1] = { sp[2], 1 }
    events[#events + 1] = { sp[3], -1 }
  end
  table.sort(events, function(a, b) return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2]) end)
  local now, most = 0, 0
  for _, e in ipairs(events) do
    now = now + e[2]
    most = math.max(most, now)
  end
  return most
end

--- The lines of a file (none when it is missing).
function C.lines_of(path)
  local t = {}
  for l in (H.read(path) or ""):gmatch("[^\n]*\n") do t[#t + 1] = l:sub(1, -2) end
  return t
end

--- A driver script, to run in its own process as `fflua SCRIPT ARGS...`.
function C.script(text)
  return H.write(H.tmpdir() .. "/driver.lua", text)
end

return C
