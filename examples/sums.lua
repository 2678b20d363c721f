-- sums.lua: the smallest workflow. Two nodes: node1 = 1 + 1, node2 = node1 + 1.
--
--   fflua examples/sums.lua        --> 3
local ff = require "functionfuse"
local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow

local sum = ff.workflow(function(a, b) return a + b end)

local a_plus_b = sum(1, 1):set_name("node1")          -- a Node; nothing runs yet
local a_plus_two_b = sum(a_plus_b, 1):set_name("node2")

local wf = LocalWorkflow(a_plus_two_b, { workflow_name = "sums" })
print(wf:run())
