--- Storage of node results: functionfuse's storage API over the C store
-- (LMDB, one named database per workflow, group commit, checksums).
--
--   local storage_factory = require("functionfuse.storage").storage_factory
--   local storage = storage_factory{ kind = "file", options = { path = "storage" } }
--   wf:set_storage(storage)
--
-- Kind "cluster" (or "ray", functionfuse's name) keeps the storage on the
-- worker of a cluster that has the resources of options.remote_args
-- (functionfuse: remoteArgs), e.g. { resources = { _disk = 0.001 } }: a
-- ClusterWorkflow saves and loads there, and this object's calls are
-- routed there (through the workflow's cluster once set_storage bound it,
-- or through options.cluster_init_args / ray_init_args / rayInitArgs).
local core = require "functionfuse.core"
local util = require "functionfuse._util"

local M = {}

--- A scan that met a damaged part of the file still returns what it could
-- read; what it could not is said on stderr, once per call.
local function warn_damage(self, damage)
  if damage then
    io.stderr:write(("fflua: warning: storage '%s': %s (see 'fflua store check')\n")
                    :format(core.escape(self.path), damage))
  end
end

local Storage = {}
Storage.__index = Storage
Storage.__name = "functionfuse.Storage"

-- Argument n of `what` is a workflow name (n = 1) or a task name (n = 2):
-- a non-empty string no longer than the storage can hold.
local name_max = { core.store_wf_max, core.store_task_max }
local name_kind = { "workflow", "task" }

local function check_name(v, what, n)
  if type(v) ~= "string" or v == "" then
    error(("bad argument #%d to '%s' (non-empty string expected, got %s)")
          :format(n, what, v == "" and "an empty string" or type(v)), 3)
  elseif #v > name_max[n] then
    error(("bad argument #%d to '%s' (a %s name has at most %d bytes, got %d)")
          :format(n, what, name_kind[n], name_max[n], #v), 3)
  end
end

--- Prepares a workflow's database (made on the first save anyway).
function Storage:new_workflow(workflow_name)
  check_name(workflow_name, "new_workflow", 1)
end

--- Saves a value as task `task` of a workflow. Queued and committed with
-- the next group commit (within 100 ms) or at flush/close/a read.
function Storage:save(workflow_name, task, value)
  check_name(workflow_name, "save", 1)
  check_name(task, "save", 2)
  -- Called through pcall, the binding's error has no position of its own:
  -- it gets the caller's.
  local ok, err = pcall(self._st.put, self._st, workflow_name, task, value)
  if not ok then error(err, 2) end
end

--- Commits everything saved so far.
function Storage:flush() self._st:flush() end

--- The stored value of a task; raises when it is missing or damaged.
function Storage:read_task(workflow_name, task)
  check_name(workflow_name, "read_task", 1)
  check_name(task, "read_task", 2)
  self._st:flush()
  local v, why, msg = self._st:get(workflow_name, task)
  if why == "missing" then
    error(("storage '%s': no stored result for task '%s' of workflow '%s'")
          :format(self.path, task, workflow_name), 2)
  elseif why == "corrupt" then
    error(("storage '%s': the stored result of task '%s' of workflow '%s' is damaged: %s")
          :format(self.path, task, workflow_name, msg), 2)
  end
  return v
end

function Storage:file_exists(workflow_name, task)
  check_name(workflow_name, "file_exists", 1)
  check_name(task, "file_exists", 2)
  self._st:flush()
  return self._st:info(workflow_name, task) ~= nil
end

local function check_glob(pattern, what)
  if pattern ~= nil and type(pattern) ~= "string" then
    error(("bad argument #2 to '%s' (glob string expected, got %s)"):format(what, type(pattern)), 3)
  end
end

--- Sorted task names matching a glob (*, ?, [...]; as Python's glob, a
-- leading dot is matched only by a pattern that starts with one); every
-- task without one.
function Storage:list_tasks(workflow_name, pattern)
  check_name(workflow_name, "list_tasks", 1)
  check_glob(pattern, "list_tasks")
  self._st:flush()
  local names, damage = self._st:list(workflow_name, pattern)
  warn_damage(self, damage)
  return names
end

--- Per task: name, size (bytes), stored (epoch seconds), compute (seconds),
-- fingerprint (16 bytes), ok (checksum verified), why (when not ok).
function Storage:task_info(workflow_name, pattern)
  check_name(workflow_name, "task_info", 1)
  check_glob(pattern, "task_info")
  self._st:flush()
  local infos, damage = self._st:list(workflow_name, pattern, true)
  warn_damage(self, damage)
  return infos
end

--- remove_task(wf, task) or remove_task(wf, nil, pattern).
function Storage:remove_task(workflow_name, task, pattern)
  check_name(workflow_name, "remove_task", 1)
  if pattern ~= nil then
    return self._st:del_many(workflow_name, self:list_tasks(workflow_name, pattern))
  end
  check_name(task, "remove_task", 2)
  if not self._st:del(workflow_name, task) then
    error(("storage '%s': no stored result for task '%s' of workflow '%s'")
          :format(self.path, task, workflow_name), 2)
  end
  return 1
end

function Storage:remove_workflow(workflow_name)
  check_name(workflow_name, "remove_workflow", 1)
  self._st:drop(workflow_name)
end

--- Workflow names in the storage.
function Storage:workflows()
  self._st:flush()
  local names, damage = self._st:workflows()
  warn_damage(self, damage)
  return names
end

--- As ff.register_serializer (serializers belong to the Lua state, so every
-- storage and the cluster use them).
function Storage:register_serializer(mt_or_name, spec)
  return core.register_serializer(mt_or_name, spec)
end
Storage.register_persistent_serializers = Storage.register_serializer

function Storage:close() self._st:close() end

-- Run records (_base.lua saves them): their keys, oldest first; put one;
-- drop one.
function Storage:_run_keys(wf) return self._st:runs(wf) end
function Storage:_put_run(wf, key, bytes) self._st:put(wf, key, bytes) end
function Storage:_del_run(wf, key) self._st:del(wf, key) end
Storage.__close = Storage.close

function Storage:__tostring()
  return ("functionfuse.Storage: %s (%s)"):format(self.path, self.kind)
end

-- --- a storage on a cluster ------------------------------------------------

local ClusterStorage = {}
ClusterStorage.__index = ClusterStorage
ClusterStorage.__name = "functionfuse.ClusterStorage"

-- The connection its calls go through: the bound workflow's, else one
-- made from its own init args.
function ClusterStorage:_conn()
  if self._bound then return self._bound:_client() end
  if self.init_args == nil then
    error(("storage '%s' (kind '%s') is not bound to a cluster: set it on a ClusterWorkflow " ..
           "(set_storage) or give options.cluster_init_args"):format(self.path, self.kind), 4)
  end
  return require("functionfuse.backends.builtin.clusterback").client(self.init_args, 5)
end

function ClusterStorage:_call(op, ...)
  local client = self:_conn()
  local ok, out = pcall(client.store, client, self._place, op, self.path, ...)
  if not ok then error(out, 3) end
  return out
end

function ClusterStorage:new_workflow(workflow_name)
  check_name(workflow_name, "new_workflow", 1)
end

--- Saves a value as task `task` (in the bytes a worker would send).
function ClusterStorage:save(workflow_name, task, value)
  check_name(workflow_name, "save", 1)
  check_name(task, "save", 2)
  local ok, bytes = pcall(core.encode, value, "code")
  if not ok then error(bytes, 2) end
  self:_call("put", workflow_name, task, ("\0"):rep(16), ("\0"):rep(8), bytes)
end

function ClusterStorage:flush() self:_call("flush") end

function ClusterStorage:read_task(workflow_name, task)
  check_name(workflow_name, "read_task", 1)
  check_name(task, "read_task", 2)
  local s = self:_call("get", workflow_name, task, "")[1] -- "": whatever its fingerprint
  local st = s:byte(1)
  if st == 0 then
    error(("storage '%s': no stored result for task '%s' of workflow '%s'")
          :format(self.path, task, workflow_name), 2)
  elseif st ~= 1 then
    error(("storage '%s': the stored result of task '%s' of workflow '%s' is damaged: %s")
          :format(self.path, task, workflow_name, s:sub(2)), 2)
  end
  return core.decode(s:sub(2), "code")
end

function ClusterStorage:file_exists(workflow_name, task)
  check_name(workflow_name, "file_exists", 1)
  check_name(task, "file_exists", 2)
  return self:_call("lookup", workflow_name, task, ("\0"):rep(16))[1]:byte(1) ~= 0
end

function ClusterStorage:list_tasks(workflow_name, pattern)
  check_name(workflow_name, "list_tasks", 1)
  check_glob(pattern, "list_tasks")
  if pattern then return self:_call("list", workflow_name, pattern) end
  return self:_call("list", workflow_name)
end

--- remove_task(wf, task) or remove_task(wf, nil, pattern), as Storage's.
function ClusterStorage:remove_task(workflow_name, task, pattern)
  check_name(workflow_name, "remove_task", 1)
  if pattern ~= nil then
    local names = self:list_tasks(workflow_name, pattern)
    self:_call("del_many", workflow_name, table.unpack(names))
    return #names
  end
  check_name(task, "remove_task", 2)
  if self:_call("del", workflow_name, task)[1] ~= "1" then
    error(("storage '%s': no stored result for task '%s' of workflow '%s'")
          :format(self.path, task, workflow_name), 2)
  end
  return 1
end

function ClusterStorage:remove_workflow(workflow_name)
  check_name(workflow_name, "remove_workflow", 1)
  self:_call("drop", workflow_name)
end

function ClusterStorage:workflows() return self:_call("workflows") end

ClusterStorage.register_serializer = Storage.register_serializer
ClusterStorage.register_persistent_serializers = Storage.register_serializer

--- functionfuse's writer functions: new_workflow(), a read object with
-- remote_args, file_exists(task) and read_task(task), and save(task, value).
function ClusterStorage:get_writer_funcs(workflow_name)
  check_name(workflow_name, "get_writer_funcs", 1)
  local read = {
    remote_args = self.remote_args,
    file_exists = function(task) return self:file_exists(workflow_name, task) end,
    read_task = function(task) return self:read_task(workflow_name, task) end,
  }
  return function() return self:new_workflow(workflow_name) end, read,
         function(task, value) return self:save(workflow_name, task, value) end
end

function ClusterStorage:close() end

function ClusterStorage:_run_keys(wf) return self:_call("runs", wf) end
function ClusterStorage:_put_run(wf, key, bytes)
  self:_call("put", wf, key, ("\0"):rep(16), ("\0"):rep(8), core.encode(bytes, "code"))
end
function ClusterStorage:_del_run(wf, key) self:_call("del", wf, key) end
ClusterStorage.__close = ClusterStorage.close

function ClusterStorage:__tostring()
  return ("functionfuse.ClusterStorage: %s (%s)"):format(self.path, self.kind)
end

-- Ray's remote-args keys a storage's placement may use.
local REMOTE_KEYS = { "resources", "num_gpus", "num_cpus" }
local CLUSTER_OPTIONS = { "path", "remote_args", "remoteArgs", "cluster_init_args", "ray_init_args",
                          "rayInitArgs", "keep_runs" }

--- How many run records (docs/report.md) a storage keeps per workflow by
-- default: the newest.
M.KEEP_RUNS = 10

local function cluster_storage(kind, o)
  if o.remote_args ~= nil and o.remoteArgs ~= nil then
    error("storage_factory: give options.remote_args or options.remoteArgs, not both", 3)
  end
  local ra = o.remote_args or o.remoteArgs
  if type(ra) ~= "table" then
    error(("storage_factory: kind '%s' needs options.remote_args (a table, e.g. " ..
           "{ resources = { _disk = 0.001 } }), got %s"):format(kind, type(ra)), 3)
  end
  util.check_keys(ra, REMOTE_KEYS, "storage_factory: options.remote_args", "key", 3)
  local res = {}
  if ra.resources ~= nil then
    if type(ra.resources) ~= "table" then
      error("storage_factory: options.remote_args.resources must be a table", 3)
    end
    for k, v in pairs(ra.resources) do
      if type(k) ~= "string" or type(v) ~= "number" or v < 0 then
        error("storage_factory: options.remote_args.resources must map names to " ..
              "non-negative numbers", 3)
      end
      res[k] = v
    end
  end
  if ra.num_gpus ~= nil then res.GPU = ra.num_gpus end
  local n = (o.cluster_init_args ~= nil and 1 or 0) + (o.ray_init_args ~= nil and 1 or 0)
            + (o.rayInitArgs ~= nil and 1 or 0)
  if n > 1 then
    error("storage_factory: give one of options.cluster_init_args, ray_init_args, rayInitArgs", 3)
  end
  local ia = o.cluster_init_args or o.ray_init_args or o.rayInitArgs
  if ia ~= nil and type(ia) ~= "table" then
    error("storage_factory: options.cluster_init_args must be a table", 3)
  end
  return setmetatable({ kind = kind, path = o.path, remote_args = ra, init_args = ia,
                        always_read = false, _place = { resources = res } }, ClusterStorage)
end

local kinds = { file = true, lmdb = true, cluster = true, ray = true }

--- storage_factory{ kind = "file", options = { path = "dir" } }, or kind
-- "cluster" / "ray" with options.remote_args.
function M.storage_factory(opt)
  if type(opt) ~= "table" then
    error(("bad argument #1 to 'storage_factory' (table expected, got %s)"):format(type(opt)), 2)
  end
  util.check_keys(opt, { "kind", "options" }, "storage_factory", "key", 2)
  local remote = opt.kind == "cluster" or opt.kind == "ray"
  local keep_runs
  if type(opt.options) == "table" then keep_runs = opt.options.keep_runs end
  if keep_runs == nil then
    keep_runs = M.KEEP_RUNS
  elseif type(keep_runs) ~= "number" or math.tointeger(keep_runs) == nil or keep_runs < 0 then
    error("storage_factory: options.keep_runs must be a whole number >= 0 (0: keep no run records)", 2)
  else
    keep_runs = math.tointeger(keep_runs)
  end
  if type(opt.options) == "table" then
    util.check_keys(opt.options, remote and CLUSTER_OPTIONS or { "path", "keep_runs" }, "storage_factory",
                    "option", 2)
  end
  if not kinds[opt.kind] then
    error(("storage_factory: unknown kind %s (\"file\", \"lmdb\", \"cluster\" or \"ray\")")
          :format(opt.kind == nil and "(none)" or ("'" .. tostring(opt.kind) .. "'")), 2)
  end
  local path = type(opt.options) == "table" and opt.options.path
  if type(path) ~= "string" or path == "" then
    error("storage_factory: options.path (a directory) is required", 2)
  end
  if remote then
    local cs = cluster_storage(opt.kind, opt.options)
    cs.keep_runs = keep_runs
    return cs
  end
  local ok, st = pcall(core.store_open, path)
  if not ok then error(st, 2) end
  return setmetatable({ kind = opt.kind, path = path, always_read = false, keep_runs = keep_runs,
                        _st = st }, Storage)
end

--- The record of a saved run of workflow in the storage directory path
-- (docs/report.md): n = 1 (or nil) the latest, 2 the one before, ...
-- Returns the record, or nil and a message.
function M.run_record(path, workflow, n)
  n = n or 1
  local ok, st = pcall(core.store_open, path, false)
  if not ok then return nil, st end
  local rok, rec, err = pcall(function()
    local runs = st:runs(workflow)
    if #runs == 0 then
      return nil, ("storage '%s' has no saved run of workflow '%s'")
        :format(core.escape(path), core.escape(workflow))
    elseif n > #runs then
      return nil, ("storage '%s' keeps %d saved run%s of workflow '%s', not %d")
        :format(core.escape(path), #runs, #runs == 1 and "" or "s", core.escape(workflow), n)
    end
    local bytes, why, msg = st:get(workflow, runs[#runs - n + 1])
    if bytes == nil then
      return nil, ("the saved run of workflow '%s' is %s%s"):format(core.escape(workflow), why,
                                                                      msg and (": " .. msg) or "")
    end
    return core.decode_run(bytes)
  end)
  st:close()
  if not rok then return nil, rec end
  return rec, err
end

M.Storage = Storage
M.ClusterStorage = ClusterStorage
return M
