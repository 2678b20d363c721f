-- cluster.lua: the sums workflow on a cluster, with remote args and plugins,
-- as functionfuse's RayWorkflow page shows it. Without an address, run()
-- starts a local cluster (a head and one worker per core) for this process.
--
--   fflua examples/cluster.lua
--   fflua examples/cluster.lua 127.0.0.1:6380 cluster.token   (an existing cluster)
local ff = require "functionfuse"
local ClusterWorkflow = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
local plugins = require "functionfuse.backends.plugins"

local sum = ff.workflow(function(a, b) return a + b end)
local a, b = 1, 1
local a_plus_b = sum(a, b):set_name("node1")
local a_plus_two_b = sum(a_plus_b, b):set_name("node2")

local init_args = { num_workers = 2 }
if arg[1] then init_args = { address = arg[1], token_file = arg[2] } end

local wf = ClusterWorkflow(a_plus_two_b, { workflow_name = "sums", cluster_init_args = init_args })
wf:query("^.*node1.*$"):set_remote_args { num_cpus = 1 }
wf:query("^.*node2.*$"):set_remote_args { num_cpus = 0.5 }
wf:query("^.*node1.*$"):set_plugins(plugins.InitializerPlugin(function() math.randomseed(1) end))
wf:query("^.*node2.*$"):set_plugins(plugins.RandomStatePlugin { min = 0, max = 1000, seed = 42 })

print(wf:run())
local where = wf.last_run.placement
print(("node1 ran on %s, node2 on %s"):format(where.node1 ~= nil and "a worker" or "?",
                                              where.node2 ~= nil and "a worker" or "?"))
