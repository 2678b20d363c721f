-- plugins.lua: seeds made visible. RandomStatePlugin gives every node it is
-- attached to the next seed, in the run's (deterministic) order, and seeds
-- math.random with it right before the node runs: the draws below are the
-- same on every run, whatever else the program does.
--
--   fflua examples/plugins.lua
local ff = require "functionfuse"
local plugins = require "functionfuse.backends.plugins"
local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow

local seeds = {}
local draw = ff.workflow(function(label) return label .. "=" .. math.random(1000) end)
local collect = ff.workflow(function(...) return table.concat({ ... }, " ") end)

local a, b, c = draw("a"), draw("b"), draw("c")
local all = collect(a, b, c)

local wf = LocalWorkflow(all, { workflow_name = "plugins" })
wf:query("draw_.*"):set_plugins(plugins.RandomStatePlugin {
  min = 0, max = 1000, seed = 100,
  seed_func = function(seed) seeds[#seeds + 1] = seed; math.randomseed(seed) end,
})
-- A node has one plugin slot: several plugins go in a PluginCollection.
wf:query("collect_.*"):set_plugins(plugins.PluginCollection {
  plugins.InitializerPlugin(function() print("about to collect") end),
})
print(wf:run())
print("seeds: " .. table.concat(seeds, " "))
