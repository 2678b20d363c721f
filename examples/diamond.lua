-- diamond.lua: one source feeding two branches that meet again.
--
--        source
--        /    \
--   double    square
--        \    /
--        combine
--
--   fflua examples/diamond.lua      --> combine_0000 = 10 + 25 = 35
local ff = require "functionfuse"
local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow

local source = ff.workflow(function(x) return x end)
local double = ff.workflow(function(x) return 2 * x end)
local square = ff.workflow(function(x) return x * x end)
local combine = ff.workflow(function(parts) return parts.a + parts.b end)

local s = source(5)
local result = combine { a = double(s), b = square(s) }  -- nodes inside a table argument

local wf = LocalWorkflow(result, { workflow_name = "diamond" })
print("run order: " .. table.concat(wf:names(), " -> "))
print(("%s = %d"):format(result:get_name(), wf:run()))
