--- LocalWorkflow: runs a workflow serially in the calling Lua state.
--
--   local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow
--   local wf = LocalWorkflow(leaf1, leaf2, { workflow_name = "name" })
--   local r1, r2 = wf:run()
local base = require "functionfuse._base"

local M = {}

local LocalWorkflow = setmetatable({}, { __index = base.Base })
LocalWorkflow.__index = LocalWorkflow
LocalWorkflow.__name = "functionfuse.LocalWorkflow"

local function finish(self, opts, ...)
  self:_report(opts)
  return ...
end

--- Runs the workflow (every node descending from the leaves' roots, or the
-- leaves' ancestors with only_needed) in creation order (plugins first, in
-- the same order) and returns one value per leaf. With a storage, stored
-- results are used (see the cache option) and new ones saved.
function LocalWorkflow:run()
  if base.capture then return base.capture(self) end
  local opts = self:_run_options()
  if not opts then return self._core:run_local() end
  return finish(self, opts, self._core:run_local(opts))
end

function LocalWorkflow:__tostring()
  return ("functionfuse.LocalWorkflow: %s"):format(self.workflow_name)
end

M.LocalWorkflow = function(...)
  local wf = base.new(LocalWorkflow, "LocalWorkflow", ...) -- not a tail call: errors point at the caller
  return wf
end

return M
