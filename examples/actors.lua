-- actors.lua: a stateful class node (functionfuse's IncrementalSum).
--
-- Calling the class makes a constructor node; each method call on the
-- instance is a node chained after the previous call, so calls on one
-- instance run in program order.
--
--   fflua examples/actors.lua       --> the nodes, then 4
local ff = require "functionfuse"
local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow

local IncrementalSum = ff.workflow {
  __init = function(self, start) self.start = start end,
  add = function(self, n)
    self.start = self.start + n
    return self.start
  end,
}
local minus = ff.workflow(function(a, b) return a - b end)

local one = minus(4, 3)
local incremental_sum = IncrementalSum(one)   -- starts at 1
local two = minus(3, one)
incremental_sum:add(two)                      -- 3
incremental_sum:add(two)                      -- 5
local six = incremental_sum:add(one)          -- 6
local result = minus(six, 2)

local wf = LocalWorkflow(result, { workflow_name = "actors" })
print("nodes: " .. table.concat(wf:names(), " "))
print(wf:run())
