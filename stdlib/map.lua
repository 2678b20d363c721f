--- functionfuse.stdlib.map: fan a function out over a list, gather the
-- results.
--
--   local map = require "functionfuse.stdlib.map"
--   local all, nodes = map.map(count, files, { name = "count" })
--   -- nodes count_1, count_2, ... and the gather node count_gather
--
-- map.map(fn, list[, opts]) makes one node per item, fn(item), named
-- <name>_<i> (i from 1, in list order), and a gather node <name>_gather
-- whose result is the list of their results in order. Items may be values
-- or nodes (fs.glob's, say). It is an ordinary subgraph: queries
-- ("^count_\d+$"), plugins, remote args and the storage apply to each node,
-- and after a change to one item only its node and the gather run again.
-- Options:
--   name   the names' prefix (default: fn's name as ff.workflow gives it);
--          mapping one function twice in a workflow with a storage needs
--          two names
--   chunk  N: one node per N consecutive items, fn applied to each in turn
--          (<name>_<i> is then the i-th chunk); the gather flattens
-- The list must be a sequence (items 1..n: { 1, nil, 3 } is an error).
-- In the gather's list, a nil result stays in its item's place (a hole),
-- so results line up with items, chunks or not.
-- A list known only when a node runs (map.map(fn, node)) cannot be a graph
-- made in advance: that is one node, <name>_loop, that calls fn on each
-- item of the node's result.
local ff = require "functionfuse"
local names = require "functionfuse._names"
local util = require "functionfuse._util"
local fs = require "functionfuse.stdlib.fs"

local M = {}

local function fail(msg) error("map: " .. msg, 3) end

local function prefix_of(fn, opts)
  if opts.name ~= nil then
    if type(opts.name) ~= "string" or opts.name == "" then
      fail(("option 'name' must be a non-empty string, got %s"):format(type(opts.name)))
    end
    return opts.name
  end
  local n = type(fn) == "function" and names.function_name(fn)
  if not n then fail("the function has no name to give its nodes: give one, { name = \"prefix\" }") end
  return n
end

--- map.map(fn, list_or_node[, opts]) -> gather node, item nodes.
function M.map(fn, list, opts)
  opts = opts or {}
  if type(opts) ~= "table" then fail(("options must be a table, got %s"):format(type(opts))) end
  util.check_keys(opts, { "name", "chunk" }, "map", "option", 2)
  if not util.callable(fn) then fail(("bad function (function expected, got %s)"):format(type(fn))) end
  local chunk = opts.chunk
  if chunk ~= nil and (math.type(chunk) ~= "integer" or chunk < 1) then
    fail(("option 'chunk' must be an integer >= 1, got %s"):format(tostring(chunk)))
  end
  local prefix = prefix_of(fn, opts)
  -- Results keep their items' places, nil ones too (a chunk's count is
  -- its n: the gather places the next chunk's results after it).
  local function each_item(items)
    local n = items.n or #items
    local out = { n = n }
    for i = 1, n do out[i] = fn(items[i]) end
    return out
  end
  if ff.is_node(list) then
    local loop = ff.workflow(prefix, function(items)
      local out = each_item(items)
      out.n = nil
      return out
    end)
    return loop(list):set_name(prefix .. "_loop"), {}
  end
  if type(list) ~= "table" then fail(("bad list (table or node expected, got %s)"):format(type(list))) end
  -- A sequence: items 1..n, no holes ({ 1, nil, 3 }), no other keys.
  local len, count = #list, 0
  for k in pairs(list) do
    count = count + 1
    if math.type(k) ~= "integer" or k < 1 or k > len then
      fail(("the list must be a sequence (items 1..n, no other keys): it has the key %s"):format(tostring(k)))
    end
  end
  if count ~= len then fail("the list must be a sequence (items 1..n): it has holes") end
  local nodes = {}
  if chunk == nil then
    local each = ff.workflow(prefix, fn)
    for i = 1, #list do nodes[i] = each(list[i]):set_name(("%s_%d"):format(prefix, i)) end
  else
    local each = ff.workflow(prefix, each_item)
    for i = 1, len, chunk do
      local last = math.min(i + chunk - 1, len)
      local part = table.move(list, i, last, 1, { n = last - i + 1 })
      nodes[#nodes + 1] = each(part):set_name(("%s_%d"):format(prefix, #nodes + 1))
    end
  end
  local gather = ff.workflow(prefix .. ".gather", function(parts, flat)
    if not flat then return parts end
    local out, n = {}, 0
    for _, p in ipairs(parts) do
      table.move(p, 1, p.n, n + 1, out)
      n = n + p.n
    end
    return out
  end)
  return gather(nodes, chunk ~= nil):set_name(prefix .. "_gather"), nodes
end

--- map.lines(fn, path[, opts]): map.map over the lines of a file, read
-- now (fs.lines): each node has its line among its arguments, so an edit
-- of one line runs that line's node (or chunk) and the gather again.
function M.lines(fn, path, opts)
  return M.map(fn, fs.lines(path), opts)
end

setmetatable(M, { __call = function(_, ...) return M.map(...) end })

return M
