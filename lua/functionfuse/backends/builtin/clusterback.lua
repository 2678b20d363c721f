--- ClusterWorkflow: runs a workflow's nodes as tasks on an fflua cluster
-- (a head and workers over authenticated TCP), as functionfuse's
-- RayWorkflow does on Ray.
--
--   local ClusterWorkflow = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
--   local wf = ClusterWorkflow(leaf, { workflow_name = "sums" })
--   print(wf:run())        -- no address: a local cluster, started once per process
--
-- Options: cluster_init_args (alias ray_init_args) = { address = "HOST:PORT",
-- token_file = F, token = T, ignore_reinit_error = bool, num_workers = N,
-- num_cpus = N, num_gpus = N, resources = { name = amount },
-- runtime_env = { working_dir = DIR }, heartbeat_timeout_s = S }, or with
-- launcher = "slurm" the keys of functionfuse.launch.slurm (workers as
-- Slurm jobs). Unknown keys are errors.
--
-- runtime_env.working_dir: the directory is packed (core.workdir_pack:
-- .git, build folders and the workflow's storage left out), sent to the
-- head once per content and connection, and unpacked by each worker into
-- a directory of the run's own, where its nodes run, first on
-- package.path and package.cpath (docs/cluster.md, "Working directory").
local base = require "functionfuse._base"
local core = require "functionfuse.core"
local util = require "functionfuse._util"

local M = {}

local ClusterWorkflow = setmetatable({}, { __index = base.Base })
ClusterWorkflow.__index = ClusterWorkflow
ClusterWorkflow.__name = "functionfuse.ClusterWorkflow"
ClusterWorkflow._options = { "workflow_name", "only_needed", "cluster_init_args", "ray_init_args",
                             "cache", "quiet", "verbose", "progress" }
local INIT_ARGS = { "address", "token_file", "token", "ignore_reinit_error", "num_workers",
                    "num_cpus", "num_gpus", "resources", "runtime_env", "heartbeat_timeout_s",
                    "launcher" }
local RUNTIME_ENV = { "working_dir" }
-- cluster_init_args.launcher: the module that starts such a cluster.
local LAUNCHERS = { slurm = "functionfuse.launch.slurm" }
-- The working directories a connection keeps on the head, at most; the
-- least recently used one beyond is forgotten there.
local WORKDIRS_KEPT = 4
local RUN_OPTIONS = { "return_results", "max_pending_tasks", "keep_going" }

-- The state of this Lua state's cluster use: the local cluster, open
-- connections by address, the run counter, and per connection the hashes
-- of the working directories its head has, least recently used first.
local state = { conns = {}, run_id = 0, workdirs = setmetatable({}, { __mode = "k" }) }

local function fflua_exe()
  local env = os.getenv("FFLUA_BIN")
  if env and env ~= "" then return env end
  local self = core.exe_path()
  if self and self:match("fflua[^/]*$") then return self end
  for dir in (os.getenv("PATH") or ""):gmatch("[^:]+") do
    local f = io.open(dir .. "/fflua", "rb")
    if f then f:close(); return dir .. "/fflua" end
  end
  error("ClusterWorkflow: cannot find the fflua program to start a local cluster " ..
        "(set FFLUA_BIN)", 3)
end

local MAX_WORKERS, MAX_CPUS = 1024, 4096 -- as fflua head --workers and --num-cpus take

-- Whether v is a number from 0 to max with at most 4 decimals (an amount
-- the scheduler takes exactly).
local function amount(v, max)
  if type(v) ~= "number" or v ~= v or v < 0 or v > max then return false end
  local u = v * 10000
  return math.abs(u - math.floor(u + 0.5)) <= 1e-9 * math.max(u, 1)
end

local function resources_json(res)
  if res == nil then return nil end
  local parts, names = {}, {}
  for k in pairs(res) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do
    local v = res[k]
    if type(k) ~= "string" or k:find('["\\%c]') or not amount(v, 2 ^ 50 / 10000) then
      error("ClusterWorkflow: resources must map names to non-negative numbers with at most " ..
            "4 decimals", 4)
    end
    parts[#parts + 1] = ('"%s": %.17g'):format(k, v)
  end
  return "{" .. table.concat(parts, ", ") .. "}"
end

-- A guard whose collection (at state close) stops the local cluster: its
-- head, which stops its workers.
local Guard = {
  __gc = function(g)
    for _, pid in ipairs(g.pids) do core.kill(pid, 15) end
    for _, pid in ipairs(g.pids) do pcall(core.wait, pid) end
    if g.token_file then os.remove(g.token_file) end
  end,
}

-- The resources of a local cluster's machine: resources, with num_gpus as
-- the resource GPU.
local function local_resources(a)
  local res = a.resources
  if a.num_gpus == nil then return res end
  if res ~= nil and type(res) ~= "table" then return res end -- refused by resources_json
  if res ~= nil and res.GPU ~= nil then
    error("ClusterWorkflow: give GPUs once, as num_gpus or as resources.GPU", 5)
  end
  local t = { GPU = a.num_gpus }
  for k, v in pairs(res or {}) do t[k] = v end
  return t
end

-- num_cpus and resources describe the machine, as in ray.init: num_cpus
-- CPUs in all (default: its cores), shared out among num_workers worker
-- processes (default: one per CPU, or one when num_cpus is not a whole
-- number); resources are the machine's, which its workers share.
local function start_local(a)
  local nw = a.num_workers
  if nw ~= nil and (math.type(nw) ~= "integer" or nw < 1 or nw > MAX_WORKERS) then
    error("ClusterWorkflow: num_workers must be an integer from 1 to " .. MAX_WORKERS, 4)
  end
  -- Without num_cpus, a machine of its cores, or of one CPU per worker
  -- when num_workers is given.
  local cfg = {
    num_cpus = a.num_cpus or (math.type(a.num_workers) == "integer" and a.num_workers)
               or core.cpu_count(),
    resources = resources_json(local_resources(a)),
    heartbeat = a.heartbeat_timeout_s,
  }
  if not amount(cfg.num_cpus, MAX_CPUS) then
    error("ClusterWorkflow: num_cpus must be a number from 0 to " .. MAX_CPUS ..
          " with at most 4 decimals", 4)
  end
  local whole = math.tointeger(cfg.num_cpus)
  cfg.num_workers = a.num_workers or
                    (whole and whole >= 1 and math.min(whole, MAX_WORKERS) or 1)
  if math.type(cfg.num_workers) ~= "integer" or cfg.num_workers < 1
     or cfg.num_workers > MAX_WORKERS then
    error("ClusterWorkflow: num_workers must be an integer from 1 to " .. MAX_WORKERS, 4)
  end
  -- Each worker's share, in the scheduler's units of 1/10000.
  local units = math.floor(cfg.num_cpus * 10000 + 0.5)
  if units % cfg.num_workers ~= 0 then
    error(("ClusterWorkflow: num_cpus (%s) cannot be shared out evenly among %d workers " ..
           "(to 4 decimals): give num_workers a divisor of it"):format(cfg.num_cpus, cfg.num_workers), 4)
  end
  cfg.worker_cpus = units // cfg.num_workers / 10000
  local lc = state.local_cluster
  if lc then
    local same = lc.cfg.num_workers == cfg.num_workers and lc.cfg.num_cpus == cfg.num_cpus
                 and lc.cfg.resources == cfg.resources and lc.cfg.heartbeat == cfg.heartbeat
    if same or a.ignore_reinit_error then
      if not lc.client:usable() then -- a failed run broke it: a new connection
        lc.client:close()
        lc.client = core.cluster_connect(lc.address, { token = lc.token })
      end
      return lc
    end
    error("ClusterWorkflow: a local cluster is already running in this process with other " ..
          "settings; pass ignore_reinit_error = true to use it", 4)
  end
  local exe = fflua_exe()
  local token = core.token_new()
  local ready = os.tmpname()
  os.remove(ready)
  local env = { FFLUA_TOKEN = token, FFLUA_PARENT_PID = tostring(core.getpid()) }
  local guard = setmetatable({ pids = {} }, Guard)
  -- The token in a file of this user's alone (os.tmpname makes it with
  -- mode 0600), so that fflua status and other tools can reach the
  -- cluster while it runs (wf:cluster_info()); removed with the cluster.
  local token_file = os.tmpname()
  local tf = io.open(token_file, "w")
  if tf and tf:write(token, "\n") and tf:close() then
    guard.token_file = token_file
  else
    os.remove(token_file)
    token_file = nil
  end
  -- The head starts the workers, and starts another when one ends.
  local argv = { exe, "head", "--port", "0", "--workers", tostring(cfg.num_workers),
                 "--num-cpus", ("%.4f"):format(cfg.worker_cpus), "--quiet", "--ready-file", ready }
  if cfg.resources then argv[#argv + 1] = "--resources"; argv[#argv + 1] = cfg.resources end
  if cfg.heartbeat then
    argv[#argv + 1] = "--heartbeat-timeout"; argv[#argv + 1] = ("%.17g"):format(cfg.heartbeat)
  end
  -- The head gets SIGTERM the moment this process dies, however it dies
  -- (kill -9 included), and stops its workers (FFLUA_PARENT_PID is its
  -- slower second watch).
  local head = core.spawn(argv, env, { die_with_parent = true })
  guard.pids[1] = head
  local address
  for _ = 1, 400 do
    local f = io.open(ready, "r")
    if f then address = f:read("l"); f:close(); break end
    if core.wait(head, true) ~= nil then break end
    core.sleep(0.025)
  end
  os.remove(ready)
  if not address then
    error("ClusterWorkflow: the local cluster's head did not start", 4)
  end
  local client = core.cluster_connect(address, { token = token })
  for _ = 1, 400 do
    if #client:status().places >= cfg.num_workers then break end
    core.sleep(0.025)
  end
  lc = { address = address, token = token, token_file = token_file, cfg = cfg, guard = guard,
         client = client }
  state.local_cluster = lc
  return lc
end

--- The connection to the cluster of init args a (made or reused): the
-- local cluster without an address. level: where errors point.
function M.client(a, level)
  if type(a) ~= "table" then
    error("ClusterWorkflow: cluster_init_args must be a table", level)
  end
  if a.launcher ~= nil then
    local mod = LAUNCHERS[a.launcher]
    if mod == nil then error("ClusterWorkflow: unknown launcher " .. tostring(a.launcher), level) end
    return require(mod).start(a, fflua_exe(), level).client
  end
  if a.address == nil then return start_local(a).client end
  local c = state.conns[a.address]
  if c ~= nil and not c:usable() then -- a failed run broke it: a new connection
    c:close()
    c = nil
  end
  if c == nil then
    c = core.cluster_connect(a.address, { token_file = a.token_file, token = a.token })
    state.conns[a.address] = c
  end
  return c
end

--- Where the workflow's cluster is: { address = "HOST:PORT", token_file =
-- F or nil, ["local"] = true for the cluster this process started (whose
-- token file lasts as long as the cluster) }. Connects first, as run()
-- does: a local cluster starts.
function ClusterWorkflow:cluster_info()
  self:_client()
  return self:_cluster_info()
end

function ClusterWorkflow:_cluster_info()
  local a = self.options.cluster_init_args or self.options.ray_init_args or {}
  if a.launcher ~= nil then return require(LAUNCHERS[a.launcher]).info() end
  if a.address == nil then
    local lc = state.local_cluster
    return lc and { address = lc.address, token_file = lc.token_file, ["local"] = true,
                    workers = lc.cfg.num_workers }
  end
  return { address = a.address, token_file = a.token_file }
end

--- The connection a run uses (made or reused).
function ClusterWorkflow:_client()
  return M.client(self.options.cluster_init_args or self.options.ray_init_args or {}, 4)
end

-- The run options of a storage: a storage of kind cluster where its
-- remote args say; one of kind file on a worker of this machine, by its
-- absolute path.
local function storage_options(self, client)
  local st = self._storage
  local o = { workflow = self.workflow_name, cache = self.options.cache,
              verbose = self.options.verbose, always_read = st.always_read }
  if getmetatable(st) == require("functionfuse.storage").ClusterStorage then
    o.storage_path, o.resources = st.path, st._place.resources
    return o
  end
  local me = core.machine_id()
  local here = false
  for _, p in ipairs(client:status().places) do
    if p.machine == me then here = true; break end
  end
  if not here then
    error(("ClusterWorkflow: storage '%s' is of kind '%s', on this machine, and no worker of " ..
           "the cluster runs here: use storage_factory{ kind = \"cluster\", options = { " ..
           "remote_args = { resources = { ... } }, path = ... } } (set options.remote_args to " ..
           "the resources of the machine that has the disk)"):format(st.path, st.kind), 3)
  end
  local path = st.path
  if path:sub(1, 1) ~= "/" then
    local cwd = assert(core.cwd())
    path = cwd .. "/" .. path
  end
  o.storage_path, o.machine = path, me
  return o
end

--- The run's working directory, when runtime_env has one: packed now (a
-- script may have changed it since the last run), named in o.workdir, and
-- its blob put in o.workdir_blob unless this connection's head has it.
function ClusterWorkflow:_workdir(client, o)
  local a = self.options.cluster_init_args or self.options.ray_init_args or {}
  local env = a.runtime_env
  if env == nil or env.working_dir == nil then return end
  local exclude = {}
  if self._storage and self._storage.path then exclude[1] = self._storage.path end
  local ok, blob, hash = pcall(core.workdir_pack, env.working_dir, exclude)
  if not ok then error("ClusterWorkflow: " .. blob, 3) end
  local held = state.workdirs[client]
  if held == nil then held = {}; state.workdirs[client] = held end
  o.workdir_held = table.move(held, 1, #held, 1, {}) -- as it was, should nothing be sent
  local at
  for i, h in ipairs(held) do if h == hash then at = i end end
  if at then
    table.remove(held, at)
  else
    o.workdir_blob = blob
    if #held >= WORKDIRS_KEPT then o.workdir_forget = { table.remove(held, 1) } end
  end
  held[#held + 1] = hash
  o.workdir = hash
end

--- ls:run_cluster(client, o), and when it fails before the run's working
-- directory reached the head (o.workdir_sent), the connection's list of
-- working directories the head holds as it was.
local function run_cluster(ls, client, o)
  local r = table.pack(pcall(ls.run_cluster, ls, client, o))
  if r[1] then return table.unpack(r, 2, r.n) end
  if o.workdir and not o.workdir_sent then state.workdirs[client] = o.workdir_held end
  error(r[2], 0)
end

--- Runs the workflow on the cluster; returns one value per leaf (nothing
-- with { return_results = false }). { max_pending_tasks = N }: at most N
-- tasks of this run are queued or running at once. { keep_going = true }:
-- a failed node fails only the nodes that depend on it; the others run,
-- then run() raises one error listing every failure.
function ClusterWorkflow:run(opts)
  self:_begin_report("cluster")
  opts = opts or {}
  if type(opts) ~= "table" then
    error(("bad argument #1 to 'run' (table expected, got %s)"):format(type(opts)), 2)
  end
  util.check_keys(opts, RUN_OPTIONS, "ClusterWorkflow:run", "option", 2)
  if base.capture then return base.capture(self) end
  local client = self:_client()
  state.run_id = state.run_id + 1
  local mp = opts.max_pending_tasks
  if mp ~= nil and (math.type(mp) ~= "integer" or mp < 1) then
    error("bad option 'max_pending_tasks' (a positive integer expected)", 2)
  end
  if opts.keep_going ~= nil and type(opts.keep_going) ~= "boolean" then
    error("bad option 'keep_going' (a boolean expected)", 2)
  end
  if self._storage and self._storage_kind == "lua" then
    return self:_run_lua_storage(client, opts.return_results, mp, opts.keep_going)
  end
  local o = self._storage and storage_options(self, client) or {}
  local ro = self:_run_options()
  o.title, o.progress = ro.title, ro.progress
  o.run_id, o.return_results, o.max_pending_tasks = state.run_id, opts.return_results, mp
  o.keep_going = opts.keep_going
  o.cluster = self:_cluster_info()
  o.on_end = function(ok, err) self:_report(o, ok, err, "cluster") end
  self:_workdir(client, o)
  return run_cluster(self._core, client, o)
end

--- A storage of kind "cluster" (or "ray"): saves and loads on the worker
-- holding its remote args' resources, and its calls from this process go
-- through this workflow's cluster. Kind "file" or "lmdb": used by a worker
-- of this machine, which run() requires.
function ClusterWorkflow:set_storage(storage)
  local S = require "functionfuse.storage"
  local mt = getmetatable(storage)
  if mt == S.Storage or mt == S.ClusterStorage then
    if mt == S.ClusterStorage then storage._bound = self end
    self._storage, self._storage_kind = storage, "builtin"
    return self
  end
  local ok, gwf = pcall(function() return storage.get_writer_funcs end)
  if not ok or not util.callable(gwf) then
    error(("bad argument #1 to 'set_storage' (a storage, or an object with get_writer_funcs, " ..
           "expected, got %s)"):format(type(storage)), 2)
  end
  self._storage, self._storage_kind = storage, "lua"
  return self
end

--- A run with a storage written in Lua: any object with functionfuse's
-- get_writer_funcs(workflow_name) -> new_workflow, read object
-- { file_exists(task), read_task(task), ... }, save(task, value). As
-- RayWorkflow does with such a storage: new_workflow() runs first, in this
-- process; then every plain node runs through a wrapper, on the worker
-- that runs it, which returns read_task(name) when file_exists(name) says
-- so, and otherwise computes and calls save(name, value). The storage's
-- functions travel with the node (they must be able to ship, and work
-- from any worker). Log nodes and class nodes run as they are.
function ClusterWorkflow:_run_lua_storage(client, return_results, max_pending, keep_going)
  local st = self._storage
  local new_workflow, ro, save = st:get_writer_funcs(self.workflow_name)
  if type(ro) ~= "table" or not util.callable(ro.file_exists) or not util.callable(ro.read_task)
     or not util.callable(save) then
    error("ClusterWorkflow: the storage's get_writer_funcs must return new_workflow, a read " ..
          "object with file_exists and read_task, and a save function", 3)
  end
  if new_workflow ~= nil then new_workflow() end
  local exists, read = ro.file_exists, ro.read_task
  local core_ls, kept, wrappers = self._core, {}, {}
  -- One wrapper per distinct function (each is shipped once per run), which
  -- learns the node's name on the worker.
  local function wrapper(fn)
    local w = wrappers[fn]
    if w then return w end
    w = function(...)
      local name = core.node_name()
      if exists(name) then return read(name) end
      local r = table.pack(fn(...))
      local v
      if r.n == 1 then v = r[1] elseif r.n > 1 then v = r end
      save(name, v)
      return v
    end
    wrappers[fn] = w
    return w
  end
  for _, node in ipairs(core_ls:nodes()) do
    local fn, kind = core_ls:func_of(node)
    local info = node:backend_info()
    if kind == "plain" and not (info and info.print) then
      kept[#kept + 1] = { node, core_ls:get_slot(node, "func") }
      core_ls:set_slot(node, "func", wrapper(fn))
    end
  end
  local run_opts = self:_run_options()
  local o = { run_id = state.run_id, return_results = return_results,
              max_pending_tasks = max_pending, keep_going = keep_going, title = run_opts.title,
              progress = run_opts.progress, cluster = self:_cluster_info() }
  o.on_end = function(ok, err) self:_report(o, ok, err, "cluster") end
  self:_workdir(client, o)
  local r = table.pack(pcall(run_cluster, core_ls, client, o))
  for _, k in ipairs(kept) do core_ls:set_slot(k[1], "func", k[2]) end
  if not r[1] then error(r[2], 0) end
  return table.unpack(r, 2, r.n)
end

function ClusterWorkflow:__tostring()
  return ("functionfuse.ClusterWorkflow: %s"):format(self.workflow_name)
end

M.ClusterWorkflow = function(...)
  local wf = base.new(ClusterWorkflow, "ClusterWorkflow", ...)
  local o = wf.options
  if o.cluster_init_args ~= nil and o.ray_init_args ~= nil then
    error("ClusterWorkflow: give cluster_init_args or ray_init_args, not both", 2)
  end
  local name = o.cluster_init_args ~= nil and "cluster_init_args" or "ray_init_args"
  local a = o[name]
  if a ~= nil and type(a) ~= "table" then
    error(("ClusterWorkflow: %s must be a table"):format(name), 2)
  end
  local launcher = a and a.launcher
  if launcher ~= nil then
    local names = {}
    for k in pairs(LAUNCHERS) do names[#names + 1] = k end
    table.sort(names)
    if LAUNCHERS[launcher] == nil then
      local near = type(launcher) == "string" and util.nearest(launcher, names)
      error(("ClusterWorkflow: %s.launcher: unknown launcher %s (%s)"):format(name,
            type(launcher) == "string" and "'" .. core.escape(launcher) .. "'" or tostring(launcher),
            near and "did you mean '" .. near .. "'?" or "known: " .. table.concat(names, ", ")), 2)
    end
    require(LAUNCHERS[launcher]).check(a, "ClusterWorkflow: " .. name, 2)
  elseif a ~= nil then
    util.check_keys(a, INIT_ARGS, "ClusterWorkflow: " .. name, "key", 2)
  end
  local hb = a and a.heartbeat_timeout_s
  if hb ~= nil and (type(hb) ~= "number" or not (hb >= 0.1 and hb <= 3600)) then
    error(("ClusterWorkflow: %s.heartbeat_timeout_s must be a number of seconds from 0.1 to " ..
           "3600"):format(name), 2)
  end
  if hb ~= nil and a.address ~= nil then
    error(("ClusterWorkflow: %s.heartbeat_timeout_s is for a local cluster: a running head " ..
           "has its own (fflua head --heartbeat-timeout)"):format(name), 2)
  end
  local env = a and a.runtime_env
  if env ~= nil then
    if type(env) ~= "table" then
      error(("ClusterWorkflow: %s.runtime_env must be a table"):format(name), 2)
    end
    util.check_keys(env, RUNTIME_ENV, ("ClusterWorkflow: %s.runtime_env"):format(name), "key", 2)
    if env.working_dir ~= nil and (type(env.working_dir) ~= "string" or env.working_dir == "") then
      error(("ClusterWorkflow: %s.runtime_env.working_dir must be a directory's path")
            :format(name), 2)
    end
  end
  return wf
end

--- The local cluster's address, when one runs (for tests and tools).
function M.local_address()
  return state.local_cluster and state.local_cluster.address
end

return M
