--- LocalWorkflow: runs a workflow serially in the calling Lua state.
--
--   local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow
--   local wf = LocalWorkflow(leaf1, leaf2, { workflow_name = "name" })
--   local r1, r2 = wf:run()
local base = require "functionfuse._base"
local util = require "functionfuse._util"

local RUN_OPTIONS = { "keep_going" }

local M = {}

local LocalWorkflow = setmetatable({}, { __index = base.Base })
LocalWorkflow.__index = LocalWorkflow
LocalWorkflow.__name = "functionfuse.LocalWorkflow"

--- Runs the workflow (every node descending from the leaves' roots, or the
-- leaves' ancestors with only_needed) in creation order (plugins first, in
-- the same order) and returns one value per leaf. With a storage, stored
-- results are used (see the cache option) and new ones saved.
-- { keep_going = true }: a node that fails fails only the nodes that
-- depend on it; the others run, then one error lists every failure.
function LocalWorkflow:run(ropts)
  self:_begin_report("local")
  if ropts ~= nil then
    if type(ropts) ~= "table" then
      error(("bad argument #1 to 'run' (table expected, got %s)"):format(type(ropts)), 2)
    end
    util.check_keys(ropts, RUN_OPTIONS, "LocalWorkflow:run", "option", 2)
    if ropts.keep_going ~= nil and type(ropts.keep_going) ~= "boolean" then
      error("bad option 'keep_going' (a boolean expected)", 2)
    end
  end
  if base.capture then return base.capture(self) end
  local opts = self:_run_options()
  opts.keep_going = ropts and ropts.keep_going or nil
  opts.on_end = function(ok, err) self:_report(opts, ok, err, "local") end
  return self._core:run_local(opts)
end

function LocalWorkflow:__tostring()
  return ("functionfuse.LocalWorkflow: %s"):format(self.workflow_name)
end

M.LocalWorkflow = function(...)
  local wf = base.new(LocalWorkflow, "LocalWorkflow", ...) -- not a tail call: errors point at the caller
  return wf
end

return M
