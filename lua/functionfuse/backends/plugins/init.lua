--- Plugins: code that runs around nodes.
--
-- A plugin is any object with two methods:
--   plugin:local_initialize()   run in the driver, in the run's node order,
--                               once per node the plugin is attached to;
--   plugin:remote_initialize()  returns a function (or nil) called right
--                               before the node's function, wherever it runs.
-- Both are called for every node in the run's order before any node runs,
-- so what a plugin hands a node depends only on the script, never on the
-- backend. Each run calls them on a copy of the plugin made for that run
-- (lrun.c), so every run starts from the plugin as the script made it.
local M = {}

local util = require "functionfuse._util"
local callable = util.callable

--- InitializerPlugin(fn): calls fn() before each node it is attached to.
local InitializerPlugin = { __name = "functionfuse.InitializerPlugin" }
InitializerPlugin.__index = InitializerPlugin
function InitializerPlugin:local_initialize() end
function InitializerPlugin:remote_initialize()
  local fn = self.func
  return function() return fn() end
end

function M.InitializerPlugin(fn)
  if not callable(fn) then
    error(("bad argument #1 to 'InitializerPlugin' (function expected, got %s)"):format(type(fn)), 2)
  end
  return setmetatable({ func = fn }, InitializerPlugin)
end

--- RandomStatePlugin{ min =, max =, seed =, seed_func = }: gives each node a
-- seed. Each local_initialize advances the seed by one, back to min past max;
-- the node's pre-run call is seed_func(seed) with the seed of that moment.
-- Seeds are integers (Lua 5.4 integers are 64-bit: 0xffffffffffffffff is -1,
-- so write math.maxinteger for the top). The step never overflows: at max it
-- goes to min. Defaults: min = 0, max = math.maxinteger, seed = 0,
-- seed_func = math.randomseed. Positional arguments work too:
-- RandomStatePlugin(min, max, seed, seed_func).
local RandomStatePlugin = { __name = "functionfuse.RandomStatePlugin" }
RandomStatePlugin.__index = RandomStatePlugin

function RandomStatePlugin:local_initialize()
  if self.seed >= self.max then
    self.seed = self.min
  else
    self.seed = self.seed + 1
  end
end

function RandomStatePlugin:remote_initialize()
  local seed, set_seed = self.seed, self.seed_func
  return function() set_seed(seed) end
end

function M.RandomStatePlugin(a, ...)
  local o
  if type(a) == "table" then
    o = a
    util.check_keys(o, { "min", "max", "seed", "seed_func" }, "RandomStatePlugin", "field", 2)
  else
    local max, seed, seed_func = ...
    o = { min = a, max = max, seed = seed, seed_func = seed_func }
  end
  local p = {
    min = o.min == nil and 0 or o.min,
    max = o.max == nil and math.maxinteger or o.max,
    seed = o.seed == nil and 0 or o.seed,
    seed_func = o.seed_func == nil and math.randomseed or o.seed_func,
  }
  for _, k in ipairs { "min", "max", "seed" } do
    if math.type(p[k]) ~= "integer" then
      error(("RandomStatePlugin: '%s' must be an integer, got %s"):format(k,
            math.type(p[k]) or type(p[k])), 2)
    end
  end
  if p.min > p.max then
    error(("RandomStatePlugin: min (%d) is greater than max (%d)"):format(p.min, p.max), 2)
  end
  if not callable(p.seed_func) then
    error(("RandomStatePlugin: 'seed_func' must be a function, got %s"):format(type(p.seed_func)), 2)
  end
  return setmetatable(p, RandomStatePlugin)
end

--- PluginCollection{ p1, p2, ... }: several plugins as one, in order.
local PluginCollection = { __name = "functionfuse.PluginCollection" }
PluginCollection.__index = PluginCollection

function PluginCollection:local_initialize()
  for _, p in ipairs(self.plugins) do p:local_initialize() end
end

function PluginCollection:remote_initialize()
  local fns = {}
  for _, p in ipairs(self.plugins) do
    local f = p:remote_initialize()
    if f ~= nil then fns[#fns + 1] = f end
  end
  return function()
    for _, f in ipairs(fns) do f() end
  end
end

function M.PluginCollection(list, ...)
  if type(list) ~= "table" or getmetatable(list) ~= nil then
    list = { list, ... } -- PluginCollection(p1, p2) as well as {p1, p2}
  end
  for i, p in ipairs(list) do
    for _, m in ipairs { "local_initialize", "remote_initialize" } do
      if type(p) ~= "table" and type(p) ~= "userdata" or not callable(p[m]) then
        error(("PluginCollection: plugin #%d has no method '%s'"):format(i, m), 2)
      end
    end
  end
  return setmetatable({ plugins = list }, PluginCollection)
end

return M
