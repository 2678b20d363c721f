-- bench/local_engine.lua: the local engine on three graph shapes.
--
--   build/fflua bench/local_engine.lua [scale [shape]]
--
-- Each shape is built and run with trivial a + b nodes, then the same
-- computation runs as plain Lua calls in the same process. Printed per shape:
-- ns per node to build, to run, their sum, the ratio of that sum to the
-- plain-Lua time, and peak RSS per node (the growth of the resident set's
-- high-water mark over the shape, which /proc/self/clear_refs resets).
-- scale (default 1) multiplies the node counts: 0.1 for a quick look.
-- shape (chain, wide+reduce or layers) runs one shape alone: in one process
-- the later shapes reuse memory the earlier ones freed, so their peak RSS
-- reads low; run alone, each shape's peak is its own.
local ff = require "functionfuse"
local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow

local scale = tonumber(arg[1]) or 1
local only = arg[2]
local clock = os.clock

local function status(field)
  local f = assert(io.open("/proc/self/status"))
  local s = f:read("a")
  f:close()
  return tonumber(s:match(field .. ":%s+(%d+) kB")) * 1024
end

local function reset_peak()
  local f = io.open("/proc/self/clear_refs", "w")
  if f then f:write("5"); f:close() end
end

local function add(a, b) return a + b end

local shapes = {}

shapes[#shapes + 1] = { name = "chain", nodes = math.floor(1000000 * scale),
  build = function(n, sum)
    local x = sum(0, 1)
    for _ = 2, n do x = sum(x, 1) end
    return { x }
  end,
  plain = function(n)
    local x = add(0, 1)
    for _ = 2, n do x = add(x, 1) end
    return x
  end,
}

shapes[#shapes + 1] = { name = "wide+reduce", nodes = math.floor(100000 * scale) + 1,
  build = function(n, sum)
    local total = ff.workflow("total", function(t)
      local s = 0
      for i = 1, #t do s = s + t[i] end
      return s
    end)
    local t = {}
    for i = 1, n - 1 do t[i] = sum(i, 1) end
    return { total(t) }
  end,
  plain = function(n)
    local t = {}
    for i = 1, n - 1 do t[i] = add(i, 1) end
    local s = 0
    for i = 1, #t do s = s + t[i] end
    return s
  end,
}

local side = math.floor(1000 * math.sqrt(scale))
shapes[#shapes + 1] = { name = "layers", nodes = side * side,
  build = function(_, sum)
    local prev = {}
    for j = 1, side do prev[j] = sum(j, 1) end
    for _ = 2, side do
      local cur = {}
      for j = 1, side do cur[j] = sum(prev[j], prev[j % side + 1]) end
      prev = cur
    end
    return prev
  end,
  plain = function()
    local prev = {}
    for j = 1, side do prev[j] = add(j, 1) end
    for _ = 2, side do
      local cur = {}
      for j = 1, side do cur[j] = add(prev[j], prev[j % side + 1]) end
      prev = cur
    end
    return prev[1]
  end,
}

print(("%-12s %9s %9s %9s %9s %9s %11s"):format("shape", "nodes", "build ns", "run ns",
      "total ns", "x plain", "peak B/node"))
for _, s in ipairs(shapes) do
  if only and s.name ~= only then goto next end
  collectgarbage("collect")
  collectgarbage("collect")
  local base = status("VmRSS")
  reset_peak()
  local sum = ff.workflow("sum", add)
  local t0 = clock()
  local leaves = s.build(s.nodes, sum)
  local t1 = clock()
  leaves[#leaves + 1] = { workflow_name = s.name }
  local wf = LocalWorkflow(table.unpack(leaves))
  local t2 = clock()
  local first = wf:run()
  local t3 = clock()
  local peak = status("VmHWM") - base
  wf, leaves = nil, nil -- luacheck: ignore 311 (dropped, so that the collector frees the graph)
  collectgarbage("collect")
  collectgarbage("collect")
  local p0 = clock()
  local expect = s.plain(s.nodes)
  local p1 = clock()
  assert(first == expect, ("%s: engine gave %s, plain Lua %s"):format(s.name, first, expect))
  local n = s.nodes
  local build, run = (t1 - t0) / n * 1e9, (t3 - t2) / n * 1e9
  print(("%-12s %9d %9.0f %9.0f %9.0f %9.1f %11.0f"):format(s.name, n, build, run, build + run,
        (t3 - t2 + t1 - t0) / (p1 - p0), peak / n))
  ::next::
end
