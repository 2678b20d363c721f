--- What every backend's workflow shares: construction from leaves and
-- options, queries over node names, plugins, remote args, replace_func.
-- The node set, order and matching are the C engine's (functionfuse.core).
local core = require "functionfuse.core"

local M = {}

local util = require "functionfuse._util"
local callable = util.callable

--- Query: the nodes a pattern selected, with setters that return the query.
local Query = {}
Query.__index = Query
Query.__name = "functionfuse.Query"

-- The text of a pattern without what only regular expressions say
-- (anchors, ".*", "\d+"), to compare with names.
local function pattern_text(p)
  p = p:gsub("^%^", ""):gsub("%$$", "")
  p = p:gsub("%.[%*%+]", ""):gsub("\\d[%*%+]?", ""):gsub("%[0%-9%][%*%+]?", "")
  return p
end

--- Says on stderr that query q, which a setter is applied to, matches no
-- node: "fflua: warning: query 'p' matches no node of workflow 'w'; closest
-- names: a, b, c" (up to three names of the nearest kind). Names are
-- compared without their _NNNN counter, so one function's nodes count
-- once; a setter applied to nothing is most likely a misspelt pattern.
local function warn_empty(q)
  if #q._nodes > 0 then return end
  local want = pattern_text(q._pattern or "")
  local by_group, groups = {}, {}
  for _, name in ipairs(q._wf._core:nodes(nil, true)) do
    local g = name:gsub("_%d%d%d%d+$", "")
    if by_group[g] == nil then
      by_group[g] = {}
      groups[#groups + 1] = g
    end
    local t = by_group[g]
    if #t < 3 then t[#t + 1] = name end
  end
  local dist = {}
  for _, g in ipairs(groups) do dist[g] = util.distance(want, g) end
  table.sort(groups, function(a, b) return dist[a] < dist[b] or dist[a] == dist[b] and a < b end)
  local closest = {}
  for _, g in ipairs(groups) do
    if dist[g] > dist[groups[1]] then break end -- only the nearest
    for _, name in ipairs(by_group[g]) do
      if #closest < 3 then closest[#closest + 1] = core.escape(name) end
    end
  end
  io.stderr:write(("fflua: warning: query '%s' matches no node of workflow '%s'; closest names: %s\n")
    :format(core.escape(q._pattern or ".*"), core.escape(q._wf.workflow_name), table.concat(closest, ", ")))
end

--- The keys remote args may have (Ray's names; num_gpus is the resource GPU).
M.remote_args = { "num_cpus", "num_gpus", "resources", "max_retries", "retry_exceptions",
                  "timeout_s", "max_restarts" }

local RETRIES_MAX = 1000 -- as FF_MSG_RETRIES_MAX (msg.h)

-- Checks the values of the fault-handling remote args (the resources are
-- checked by the run, which names the node): raises at level.
local function check_fault_args(q, args, level)
  for _, k in ipairs { "max_retries", "max_restarts" } do
    local v = args[k]
    if v ~= nil then
      local i = math.tointeger(v)
      if type(v) ~= "number" or i == nil or i < 0 or i > RETRIES_MAX then
        local ray = v == -1 and " (Ray's -1, retry for ever, is refused: a node that always " ..
                    "fails would run for ever)" or ""
        error(("set_remote_args: %s must be an integer from 0 to %d, got %s%s")
              :format(k, RETRIES_MAX, tostring(v), ray), level + 1)
      end
    end
  end
  if args.retry_exceptions ~= nil and type(args.retry_exceptions) ~= "boolean" then
    error(("set_remote_args: retry_exceptions must be a boolean, got %s (fflua's errors have " ..
           "no types to list)"):format(type(args.retry_exceptions)), level + 1)
  end
  local t = args.timeout_s
  if t ~= nil and (type(t) ~= "number" or not (t > 0 and t <= 1e9)) then
    error(("set_remote_args: timeout_s must be a number of seconds > 0, got %s")
          :format(tostring(t)), level + 1)
  end
  if args.max_restarts ~= nil then
    for _, n in ipairs(q._nodes) do
      local _, kind = q._wf._core:func_of(n)
      if kind == "plain" then
        error(("set_remote_args: max_restarts is for class nodes (actors), and node '%s' is " ..
               "a plain function's"):format(core.escape(n:get_name())), level + 1)
      end
    end
  end
end

function Query:set_remote_args(args)
  if type(args) ~= "table" then
    error(("bad argument #1 to 'set_remote_args' (table expected, got %s)"):format(type(args)), 2)
  end
  if args.max_task_retries ~= nil then
    error("set_remote_args: Ray's max_task_retries is not taken: an actor rebuilt by " ..
          "max_restarts runs its interrupted method call again; a method call has no " ..
          "retries of its own", 2)
  end
  util.check_keys(args, M.remote_args, "set_remote_args", "remote arg", 2)
  check_fault_args(self, args, 2)
  warn_empty(self)
  -- A copy: the nodes get the args as they are now, checked.
  local copy = {}
  for k, v in pairs(args) do copy[k] = v end
  copy.max_retries = args.max_retries and math.tointeger(args.max_retries)
  copy.max_restarts = args.max_restarts and math.tointeger(args.max_restarts)
  if type(args.resources) == "table" then
    copy.resources = {}
    for k, v in pairs(args.resources) do copy.resources[k] = v end
  end
  for _, n in ipairs(self._nodes) do self._wf._core:set_slot(n, "remote", copy) end
  return self
end

local function check_plugin(p, level)
  local t = type(p)
  if t ~= "table" and t ~= "userdata" then
    error(("bad argument #1 to 'set_plugins' (plugin expected, got %s)"):format(t), level + 1)
  end
  for _, m in ipairs { "local_initialize", "remote_initialize" } do
    if not callable(p[m]) then
      error(("bad argument #1 to 'set_plugins' (the plugin has no method '%s')"):format(m), level + 1)
    end
  end
end

function Query:set_plugins(p)
  check_plugin(p, 2)
  warn_empty(self)
  for _, n in ipairs(self._nodes) do self._wf._core:set_slot(n, "plugins", p) end
  return self
end
Query.set_plugin = Query.set_plugins

function Query:nodes() return table.move(self._nodes, 1, #self._nodes, 1, {}) end

function Query:names()
  local t = {}
  for i, n in ipairs(self._nodes) do t[i] = n:get_name() end
  return t
end

function Query:__len() return #self._nodes end

function Query:__tostring()
  return ("functionfuse.Query: %d nodes matching '%s'"):format(#self._nodes, self._pattern or ".*")
end

--- Methods shared by every workflow class.
local Base = {}
M.Base = Base

local function compile(pattern, level)
  if pattern == nil then return nil end
  if type(pattern) ~= "string" then
    error(("bad argument #1 (pattern string expected, got %s)"):format(type(pattern)), level + 1)
  end
  local ok, p = pcall(core.compile, pattern)
  if not ok then error(p, level + 1) end
  return p
end

-- The nodes whose whole name matches pattern; a match that fails (a limit
-- reached) is an error at the caller's level, never a node left out.
local function select_nodes(wf, pattern, level)
  local ok, nodes = pcall(wf._core.nodes, wf._core, compile(pattern, level + 1))
  if not ok then error(nodes, level + 1) end
  return nodes
end

local function new_query(wf, pattern, level)
  return setmetatable({ _wf = wf, _pattern = pattern,
                        _nodes = select_nodes(wf, pattern, level + 1) }, Query)
end

--- The nodes (in run order: creation order) of the workflow whose whole
-- name matches pattern (all for nil).
function Base:find_nodes(pattern)
  return select_nodes(self, pattern, 2)
end

function Base:query(pattern)
  return new_query(self, pattern, 2)
end

function Base:set_plugin(pattern, plugin)
  check_plugin(plugin, 2)
  return new_query(self, pattern, 2):set_plugins(plugin)
end
Base.set_plugins = Base.set_plugin

--- Marks the nodes whose name matches pattern as log nodes, as
-- functionfuse's LocalWorkflow.log_nodes does (backend info "print"): they
-- are meant for logging and plotting, always run, and are never read from
-- or saved to the storage. Returns the query of those nodes.
function Base:log_nodes(pattern)
  local q = new_query(self, pattern, 2)
  for _, n in ipairs(q._nodes) do n:set_backend_info("print", true) end
  return q
end

--- Swaps the function a node runs (its name stays).
function Base:replace_func(node, fn)
  if not core.is_node(node) or tostring(node):find("^functionfuse%.NodeItem") then
    error(("bad argument #1 to 'replace_func' (node expected, got %s)"):format(type(node)), 2)
  end
  if not callable(fn) then
    error(("bad argument #2 to 'replace_func' (function expected, got %s)"):format(type(fn)), 2)
  end
  self._core:set_slot(node, "func", fn)
end

--- Results are saved to (and, on later runs, read from) storage.
function Base:set_storage(storage)
  local mt = getmetatable(storage)
  if mt == require("functionfuse.storage").ClusterStorage then
    error(("set_storage: a storage of kind '%s' lives on a cluster: use it with a " ..
           "ClusterWorkflow (or use kind \"file\")"):format(storage.kind), 2)
  end
  if mt ~= require("functionfuse.storage").Storage then
    error(("bad argument #1 to 'set_storage' (storage expected, got %s)"):format(type(storage)), 2)
  end
  self._storage = storage
  return self
end

--- The options of a run for the engine: storage, cache mode, logging,
-- progress. After the run the engine adds the counts and the record.
function Base:_run_options()
  local o = { title = ("'%s'"):format(core.escape(self.workflow_name, 60)),
              progress = self.options.progress }
  if self.options.quiet then o.progress = false end
  local st = self._storage
  if st then
    o.storage, o.workflow, o.cache = st._st, self.workflow_name, self.options.cache
    o.always_read, o.verbose = st.always_read, self.options.verbose
  end
  return o
end

-- The failures a run's error names: { node, error, traceback } each.
local function failures_of(err)
  if err == nil then return {} end
  local list = type(err) == "table" and err.failures or { err }
  local out = {}
  for i, e in ipairs(list) do
    if type(e) == "table" then
      local m = tostring(e.message or e)
      out[i] = { node = e.node, error = m:gsub("\nstack traceback:\n.*", ""),
                 traceback = e.traceback }
    else
      out[i] = { error = tostring(e) }
    end
  end
  return out
end

-- Saves the run's record (its nodes and meta) with the storage's results,
-- and drops the oldest beyond the storage's keep_runs. A storage that
-- cannot take it (read-only, full) costs a warning, never the run's
-- results.
local function save_record(self, lr)
  local st = self._storage
  if not st or not st._put_run or not lr.nodes then return end -- a storage written in Lua: none
  local keep = st.keep_runs
  local ok, err = pcall(function()
    local meta = { version = 1, workflow = self.workflow_name, ok = lr.ok,
                   computed = lr.computed, loaded = lr.loaded, skipped = lr.skipped,
                   failed = lr.failed, damaged = lr.damaged, cluster = lr.cluster,
                   failures = lr.failures }
    local runs = st:_run_keys(self.workflow_name)
    if keep > 0 then
      -- Keyed by the start in ns since the epoch, and always after the
      -- newest kept (should the clock have gone back).
      local at = math.floor(lr.started_at * 1e9)
      local last = runs[#runs] and math.tointeger(tonumber(runs[#runs]:sub(6)))
      if last and at <= last then at = last + 1 end
      local key = ("\0run\0%020d"):format(at)
      st:_put_run(self.workflow_name, key, lr.nodes:encode(meta))
      runs[#runs + 1] = key
    end
    for i = 1, #runs - keep do st:_del_run(self.workflow_name, runs[i]) end
    st:flush()
  end)
  -- After a failed run (a head gone, a storage's worker lost) the run's own
  -- error says what matters.
  if not ok and lr.ok then
    io.stderr:write(("fflua: workflow '%s': the run's record was not saved: %s\n")
      :format(core.escape(self.workflow_name), tostring(err)))
  end
end

--- wf.last_run of a run that has not got to its nodes yet: ok = false,
-- every count 0, no per-node record. A run that fails before the engine
-- starts it (a bad option, a cluster it cannot reach) leaves this; once
-- the engine ran it, _report replaces it.
function Base:_begin_report(backend)
  self.last_run = { workflow = self.workflow_name, backend = backend, ok = false, computed = 0,
                    loaded = 0, skipped = 0, failed = 0, retried = 0, damaged = 0, failures = {} }
end

--- Makes wf.last_run from what the engine put in opts after a run (also a
-- failed one, whose error is err), saves it with the storage, and, with a
-- storage and not quiet, says what was computed and loaded.
function Base:_report(opts, ok, err, backend)
  local rec = opts.record
  local lr = { workflow = self.workflow_name, backend = backend, ok = ok,
               computed = opts.computed or 0, loaded = opts.loaded or 0,
               skipped = opts.skipped or 0, failed = opts.failed or 0,
               retried = opts.retried or 0, damaged = opts.damaged or 0,
               nodes = rec, started_at = rec and rec.started_at, elapsed = rec and rec.elapsed,
               cluster = opts.cluster, placement = opts.placement }
  if not ok then lr.error, lr.failures = err, failures_of(err) else lr.failures = {} end
  self.last_run = lr
  save_record(self, lr)
  if ok and (opts.storage or opts.storage_path) and not self.options.quiet then
    io.stderr:write(("fflua: workflow '%s': %d computed, %d loaded from the storage%s%s\n")
      :format(core.escape(self.workflow_name), lr.computed, lr.loaded,
              lr.skipped > 0 and (", %d not needed"):format(lr.skipped) or "",
              lr.damaged > 0 and (", %d damaged results recomputed"):format(lr.damaged) or ""))
  end
end

--- The node names in run order.
function Base:names() return self._core:nodes(nil, true) end

--- When set (by `fflua graph`), every backend's run() hands the workflow
-- to this function and returns what it returns instead of running.
M.capture = nil

--- The options every workflow class takes; a class with more lists them
-- all in its `_options`.
M.options = { "workflow_name", "only_needed", "cache", "quiet", "verbose", "progress" }

--- Makes a workflow object of class `cls` from (leaf, ..., options). Its
-- `_core` is the engine's LeafSet of those leaves: the C object that
-- queries and runs them. The workflow is the leaves' roots and every node
-- that descends from them (as in functionfuse), or, with the option
-- only_needed = true, the leaves and their ancestors alone.
function M.new(cls, what, ...)
  local n = select("#", ...)
  local opts = n > 0 and select(n, ...) or nil
  if type(opts) == "table" and not core.is_node(opts) then
    n = n - 1
  else
    opts = {}
  end
  local leaves = {}
  for i = 1, n do
    local v = select(i, ...)
    if not core.is_node(v) then
      error(("%s: argument #%d is a %s, not a node"):format(what, i, type(v)), 3)
    end
    leaves[i] = v
  end
  if n == 0 then error(what .. ": give at least one node to run", 3) end
  util.check_keys(opts, cls._options or M.options, what, "option", 3)
  local name = opts.workflow_name
  if name == nil then
    error(what .. ": the option 'workflow_name' is required: " .. what ..
          "(node, { workflow_name = \"name\" })", 3)
  elseif type(name) ~= "string" or name == "" then
    error(what .. ": 'workflow_name' must be a non-empty string", 3)
  end
  local cache = opts.cache
  if cache ~= nil and cache ~= "fingerprint" and cache ~= "name" and cache ~= false then
    error(what .. ": option 'cache' must be \"fingerprint\" (the default), \"name\" or false", 3)
  end
  local progress = opts.progress
  if progress ~= nil and type(progress) ~= "boolean"
     and not (type(progress) == "number" and progress >= 0.1 and progress <= 86400) then
    error(what .. ": option 'progress' must be a boolean or a number of seconds between lines " ..
          "(from 0.1 to 86400)", 3)
  end
  local only_needed = opts.only_needed
  if only_needed ~= nil and type(only_needed) ~= "boolean" then
    error(what .. ": option 'only_needed' must be a boolean", 3)
  end
  return setmetatable({ workflow_name = name, options = opts, _leaves = leaves,
                        _core = core.leaf_set(leaves, only_needed) }, cls)
end

return M
