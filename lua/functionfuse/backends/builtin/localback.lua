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

--- Runs the ancestors of the leaves in creation order (plugins first, in the
-- same order) and returns one value per leaf.
function LocalWorkflow:run()
  return self._core:run_local()
end

function LocalWorkflow:__tostring()
  return ("functionfuse.LocalWorkflow: %s"):format(self.workflow_name)
end

M.LocalWorkflow = function(...)
  return base.new(LocalWorkflow, "LocalWorkflow", ...)
end

return M
