--- functionfuse: workflows of Lua functions, run by fflua's C engine.
--
--   local ff = require "functionfuse"
--   local sum = ff.workflow(function(a, b) return a + b end)
--   local node = sum(1, 2)            -- a Node: nothing runs yet
--
-- The graph, its names, queries and the executor live in C (the module
-- functionfuse.core); this module is the friendly surface over it.
local core = require "functionfuse.core"

local M = {}

M.core = core
M.version = core.version          -- "MAJOR.MINOR.PATCH"
M.version_num = core.version_num  -- MAJOR * 10000 + MINOR * 100 + PATCH

local callable = require("functionfuse._util").callable
local names = require "functionfuse._names"

--- A class node factory: calling it makes a constructor node and returns an
-- instance proxy whose method calls are nodes, chained in call order. The
-- factories are marked as a class's (core.factory's kind): on a cluster the
-- constructor makes an actor and its methods run where it lives.
local function class_factory(name, Class)
  local inst_mt = rawget(Class, "__index") ~= nil and Class or { __index = Class }
  local function construct(...)
    local obj = setmetatable({}, inst_mt)
    local init = Class.__init
    if init ~= nil then init(obj, ...) end
    return obj
  end
  local ctor = core.factory(construct, name, "constructor")
  local methods = {} -- method name -> node factory, shared by all instances

  local factory = {}
  local factory_mt = { __name = "functionfuse.ClassFactory" }
  function factory_mt.__call(_, ...)
    local init_node = core.apply(ctor, nil, ...)
    local last = init_node
    local inst = {}
    local mt = { __name = "functionfuse.Instance" }
    function mt.__index(_, key)
      if key == "set_name" then
        return function(_, n) init_node:set_name(n); return inst end
      elseif key == "get_name" or key == "name" then
        return function() return init_node:get_name() end
      elseif key == "node" then
        return init_node
      end
      local fn = Class[key]
      if type(fn) ~= "function" then
        error(("class '%s' has no method '%s'"):format(name, tostring(key)), 2)
      end
      return function(self, ...)
        if self ~= inst then
          error(("call '%s' as a method: instance:%s(...)"):format(key, key), 2)
        end
        local mf = methods[key]
        if mf == nil then
          mf = core.factory(fn, name .. "." .. key, "method")
          methods[key] = mf
        end
        local node = core.apply(mf, { last }, init_node, ...)
        last = node
        return node
      end
    end
    function mt.__tostring() return "functionfuse.Instance: " .. init_node:get_name() end
    return setmetatable(inst, mt)
  end
  return setmetatable(factory, factory_mt)
end

--- workflow(fn) / workflow(name, fn): a node factory. Calling it returns a
-- Node named "<name>_<NNNN>"; without a name, the name fn's definition
-- gives it (`local function sum`, `local sum = workflow(function ...)`:
-- "sum"; see _names.lua). Factories of one function share its counter.
-- workflow(Class) / workflow(name, Class) with a table of methods (and an
-- optional constructor __init(self, ...)) makes a class node factory, named
-- after what the workflow call is assigned to.
function M.workflow(a, b)
  local name, target = nil, a
  if b ~= nil or type(a) == "string" then
    if type(a) ~= "string" then
      error(("bad argument #1 to 'workflow' (string expected, got %s)"):format(type(a)), 2)
    end
    if a == "" then error("bad argument #1 to 'workflow' (name must not be empty)", 2) end
    name, target = a, b
  end
  local argn = name and 2 or 1
  if type(target) == "table" and not callable(target) then
    if name == nil then
      local why
      name, why = names.class_name(2)
      if name == nil then error(("bad argument #1 to 'workflow' (%s: give the class a name, " ..
        "workflow(name, Class))"):format(why), 2) end
    end
    return class_factory(name, target)
  end
  if not callable(target) then
    error(("bad argument #%d to 'workflow' (function or class table expected, got %s)")
      :format(argn, type(target)), 2)
  end
  if name == nil then
    local why
    name, why = names.function_name(target)
    if name == nil then error(("bad argument #1 to 'workflow' (%s has no definition to be " ..
      "named after: give it a name, workflow(name, fn))"):format(why), 2) end
  end
  return core.factory(target, name)
end

M.task = M.workflow

--- true for a Node or a NodeItem (node[k]).
M.is_node = core.is_node

--- register_class(name, mt): tables with metatable mt are stored under the
-- name and get mt back when read (in any process that registered it too).
M.register_class = core.register_class
--- register_serializer(mt_or_name, { pack = fn, unpack = fn [, name = s] }):
-- values with that metatable (userdata or tables) are stored as the string
-- pack returns and read back through unpack.
M.register_serializer = core.register_serializer

return M
