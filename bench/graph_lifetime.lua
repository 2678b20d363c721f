-- bench/graph_lifetime.lua: memory over many build-and-run cycles.
--
--   build/fflua bench/graph_lifetime.lua [cycles [nodes]]
--
-- Each cycle builds a small graph (a root, `nodes` children built in a
-- loop and never kept, and a reduce over a table of some of them), runs
-- the root's whole workflow with LocalWorkflow and drops everything, as a
-- long REPL session or an embedding application does. Printed every tenth
-- of the cycles: the resident set (VmRSS), the Lua heap and the live
-- nodes of the graph. A graph is released once nothing refers to any of
-- its nodes, so all three stay flat.
local ff = require "functionfuse"
local core = require "functionfuse.core"
local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow

local cycles = tonumber(arg[1]) or 2000
local width = tonumber(arg[2]) or 20

local function rss()
  local f = assert(io.open("/proc/self/status"))
  local s = f:read("a")
  f:close()
  return tonumber(s:match("VmRSS:%s+(%d+) kB"))
end

local load = ff.workflow("load", function(i) return i end)
local train = ff.workflow("train", function(m, d) return m * d end)
local total = ff.workflow("total", function(t)
  local s = 0
  for i = 1, #t do s = s + t[i] end
  return s
end)

local function cycle(i)
  local data = load(i)
  local some = {}
  for m = 1, width do
    local node = train(m, data)
    if m % 2 == 0 then some[#some + 1] = node end
  end
  total(some)
  return LocalWorkflow(data, { workflow_name = "cycle" }):run()
end

print(("%8s %10s %10s %10s"):format("cycle", "RSS kB", "Lua kB", "live nodes"))
for i = 1, cycles do
  assert(cycle(i) == i)
  if i % (cycles // 10) == 0 then
    collectgarbage("collect")
    collectgarbage("collect")
    print(("%8d %10d %10.0f %10d"):format(i, rss(), collectgarbage("count"), core.graph_size()))
  end
end
