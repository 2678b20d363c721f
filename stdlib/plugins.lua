--- functionfuse.stdlib.plugins: plugins beyond the three of
-- functionfuse.backends.plugins.
--
--   local sp = require "functionfuse.stdlib.plugins"
--   wf:set_plugin("^count_", sp.LoggingPlugin { file = "run.log" })
--   wf:set_plugin(".*", sp.EnvPlugin { LC_ALL = "C" })
--   local timing = sp.TimingPlugin { file = "timings.tsv" }
--   wf:set_plugin(".*", timing); wf:run(); timing:report(wf)
--
-- Each is an ordinary plugin (a table with local_initialize and
-- remote_initialize): it is copied for every run, works in a
-- PluginCollection, and its pre-run function travels to cluster workers.
-- A plugin's pre-run function is part of its nodes' fingerprints: adding
-- or changing a LoggingPlugin or an EnvPlugin computes those nodes again;
-- a TimingPlugin has none and changes nothing.
local core = require "functionfuse.core"
local check_keys = require("functionfuse._util").check_keys

local M = {}

--- LoggingPlugin{ file = path, prefix = s }: a line per node, right before
-- it runs, wherever it runs: "<prefix>node 'NAME' starts (HOST:PID, TIME)",
-- to stderr, or appended to file (relative to where the node runs).
-- prefix defaults to "fflua: ".
local LoggingPlugin = { __name = "functionfuse.stdlib.LoggingPlugin" }
LoggingPlugin.__index = LoggingPlugin

function LoggingPlugin:local_initialize() end

function LoggingPlugin:remote_initialize()
  local name, file, prefix = core.plugin_node() or "?", self.file, self.prefix
  return function()
    local host = io.open("/proc/sys/kernel/hostname")
    local h = host and host:read("l") or "?"
    if host then host:close() end
    local line = ("%snode '%s' starts (%s:%d, %s)\n"):format(prefix, core.escape(name), h,
                                                            core.getpid(), os.date("!%Y-%m-%dT%H:%M:%SZ"))
    if file == nil then
      io.stderr:write(line)
    else
      local f, err = io.open(file, "a")
      if not f then error("LoggingPlugin: cannot append to " .. err, 0) end
      f:write(line)
      f:close()
    end
  end
end

function M.LoggingPlugin(o)
  o = o or {}
  if type(o) ~= "table" then
    error(("bad argument #1 to 'LoggingPlugin' (table expected, got %s)"):format(type(o)), 2)
  end
  check_keys(o, { "file", "prefix" }, "LoggingPlugin", "field", 2)
  for _, k in ipairs { "file", "prefix" } do
    if o[k] ~= nil and type(o[k]) ~= "string" then
      error(("LoggingPlugin: '%s' must be a string, got %s"):format(k, type(o[k])), 2)
    end
  end
  return setmetatable({ file = o.file, prefix = o.prefix or "fflua: " }, LoggingPlugin)
end

--- EnvPlugin{ NAME = "value" | false, ... }: the command of each of its
-- shell.run nodes runs with those variables set (false: removed), as if
-- they were in the node's env option (which wins where both name one).
-- The process's environment is not changed (writing it would race the
-- other threads of a worker): os.getenv, io.popen, os.execute and nodes
-- other than shell.run's do not see them. The pre-run function sets the
-- Lua state's overlay (core.node_env), which the engine clears before
-- every node: it never reaches another node, with the plugin or not.
local EnvPlugin = { __name = "functionfuse.stdlib.EnvPlugin" }
EnvPlugin.__index = EnvPlugin

function EnvPlugin:local_initialize() end

function EnvPlugin:remote_initialize()
  local vars = self.vars
  return function() core.node_env(vars) end
end

function M.EnvPlugin(vars)
  if type(vars) ~= "table" then
    error(("bad argument #1 to 'EnvPlugin' (table expected, got %s)"):format(type(vars)), 2)
  end
  local copy = {}
  for k, v in pairs(vars) do
    if type(k) ~= "string" or k == "" or k:find("=", 1, true) then
      error(("EnvPlugin: %s is not a variable's name"):format(type(k) == "string" and "'" .. k .. "'" or
            "a " .. type(k)), 2)
    end
    if type(v) ~= "string" and v ~= false then
      error(("EnvPlugin: the value of '%s' must be a string or false, got %s"):format(k, type(v)), 2)
    end
    copy[k] = v
  end
  return setmetatable({ vars = copy }, EnvPlugin)
end

--- TimingPlugin{ file = path }: the wall time of each of its nodes.
-- timing:report(wf) after wf:run() returns { { name =, seconds =, state =,
-- worker = }, ... } for the nodes it was attached to in that run, slowest
-- first, from the run's record (wf.last_run.nodes: the engine's clock,
-- the same on every backend); with file, it also writes them there as
-- tab-separated lines "name  seconds  state  worker" (seconds with 6
-- decimals, "-" for a node that did not run). The plugin has no pre-run
-- function: it changes no fingerprint. (A plugin has no call after its
-- node: the engine's record is where the end of a node is known.)
local TimingPlugin = { __name = "functionfuse.stdlib.TimingPlugin" }
TimingPlugin.__index = TimingPlugin

function TimingPlugin:local_initialize()
  self.note(core.plugin_node())
end

function TimingPlugin:remote_initialize() return nil end

function TimingPlugin:report(wf)
  local lr = type(wf) == "table" and wf.last_run
  if not lr or not lr.nodes then
    error("TimingPlugin:report: the workflow has no run record: call it after wf:run()", 2)
  end
  local rows = {}
  for _, name in ipairs(self.names()) do
    local r = lr.nodes[name]
    if r ~= nil then
      local s = r.started and r.finished and r.finished - r.started or nil
      rows[#rows + 1] = { name = name, seconds = s, state = r.state, worker = r.worker }
    end
  end
  table.sort(rows, function(a, b)
    local x, y = a.seconds or -1, b.seconds or -1
    return x > y or x == y and a.name < b.name
  end)
  if self.file then
    local t = {}
    for i, r in ipairs(rows) do
      t[i] = ("%s\t%s\t%s\t%s\n"):format(r.name, r.seconds and ("%.6f"):format(r.seconds) or "-",
                                       r.state, r.worker or "-")
    end
    require("functionfuse.stdlib.fs").write_file(self.file, table.concat(t))
  end
  return rows
end

function M.TimingPlugin(o)
  o = o or {}
  if type(o) ~= "table" then
    error(("bad argument #1 to 'TimingPlugin' (table expected, got %s)"):format(type(o)), 2)
  end
  check_keys(o, { "file" }, "TimingPlugin", "field", 2)
  if o.file ~= nil and type(o.file) ~= "string" then
    error(("TimingPlugin: 'file' must be a string, got %s"):format(type(o.file)), 2)
  end
  -- The names are kept by closures, which the run's copy of the plugin
  -- shares with this object, in the order the runs met them.
  local seen, list = {}, {}
  local function note(name)
    if name and not seen[name] then seen[name] = true; list[#list + 1] = name end
  end
  return setmetatable({ file = o.file, note = note, names = function() return list end }, TimingPlugin)
end

return M
