--- Storage of node results: functionfuse's storage API over the C store
-- (LMDB, one named database per workflow, group commit, checksums).
--
--   local storage_factory = require("functionfuse.storage").storage_factory
--   local storage = storage_factory{ kind = "file", options = { path = "storage" } }
--   wf:set_storage(storage)
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
Storage.__close = Storage.close

function Storage:__tostring()
  return ("functionfuse.Storage: %s (%s)"):format(self.path, self.kind)
end

local kinds = { file = true, lmdb = true }

--- storage_factory{ kind = "file", options = { path = "dir" } }
function M.storage_factory(opt)
  if type(opt) ~= "table" then
    error(("bad argument #1 to 'storage_factory' (table expected, got %s)"):format(type(opt)), 2)
  end
  util.check_keys(opt, { "kind", "options" }, "storage_factory", "key", 2)
  if type(opt.options) == "table" then
    util.check_keys(opt.options, { "path" }, "storage_factory", "option", 2)
  end
  if not kinds[opt.kind] then
    error(("storage_factory: unknown kind %s (\"file\" or \"lmdb\")")
          :format(opt.kind == nil and "(none)" or ("'" .. tostring(opt.kind) .. "'")), 2)
  end
  local path = type(opt.options) == "table" and opt.options.path
  if type(path) ~= "string" or path == "" then
    error("storage_factory: options.path (a directory) is required", 2)
  end
  local ok, st = pcall(core.store_open, path)
  if not ok then error(st, 2) end
  return setmetatable({ kind = opt.kind, path = path, always_read = false, _st = st }, Storage)
end

M.Storage = Storage
return M
