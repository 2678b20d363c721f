-- cached.lua: a pipeline whose results last. The first run computes every
-- node and saves it; later runs load what is stored, and an edited function
-- (try changing `scale`) runs again together with what depends on it.
--
--   fflua examples/cached.lua [STORAGE_DIR]     (default: ./fflua-storage)
--   fflua store ls fflua-storage cached         what was saved
local ff = require "functionfuse"
local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow
local storage_factory = require("functionfuse.storage").storage_factory

local load = ff.workflow("load", function(n)
  local t = {}
  for i = 1, n do t[i] = i end
  return t
end)

local scale = ff.workflow("scale", function(t, k)
  local out = {}
  for i, v in ipairs(t) do out[i] = v * k end
  return out
end)

local total = ff.workflow("total", function(t)
  local s = 0
  for _, v in ipairs(t) do s = s + v end
  return s
end)

local data = load(100):set_name("data")
local scaled = scale(data, 3):set_name("scaled")
local sum = total(scaled):set_name("sum")

local wf = LocalWorkflow(sum, { workflow_name = "cached" })
wf:set_storage(storage_factory { kind = "file", options = { path = arg[1] or "fflua-storage" } })
print(wf:run())
local r = wf.last_run
print(("computed %d, loaded %d"):format(r.computed, r.loaded))
