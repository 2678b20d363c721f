--- functionfuse.stdlib.jsonl: JSON lines (one JSON value per line), with
-- lua-cjson (Debian lua-cjson).
--
--   local jsonl = require "functionfuse.stdlib.jsonl"
--   jsonl.encode { { word = "a", n = 2 } }      --> '{"n":2,"word":"a"}\n'
--   jsonl.decode('{"n":2}\n[1,2]\n')            --> { { n = 2 }, { 1, 2 } }
--   local recs = jsonl.read("data.jsonl")       -- a node (fs.read's fingerprint)
--   local out = jsonl.write("out.jsonl", node)  -- a node (fs.write's)
--
-- Decoding: numbers without a fraction become integers (cjson gives
-- floats), JSON null becomes nil, blank lines are skipped; a line that is
-- not JSON is an error naming its number. Encoding: objects' keys are
-- sorted, so the same records give the same bytes; a table is an array
-- when its keys are 1..n (an empty table is {}).
local cjson = require "cjson"
local ff = require "functionfuse"
local fs = require "functionfuse.stdlib.fs"

local M = {}

local decoder = cjson.new()
local encoder = cjson.new()
encoder.encode_invalid_numbers(false)

local function clean(v)
  if v == cjson.null then return nil end
  if math.type(v) == "float" then return math.tointeger(v) or v end
  if type(v) == "table" then
    local out = {}
    for k, x in pairs(v) do out[k] = clean(x) end
    return out
  end
  return v
end

local function is_array(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n > 0 and #t == n
end

-- Encodes v with objects' keys sorted (cjson keeps table order).
local function encode(v, where)
  if type(v) ~= "table" then
    local ok, s = pcall(encoder.encode, v)
    if not ok then error(("jsonl: cannot encode %s: %s"):format(where, s), 0) end
    return s
  end
  local parts = {}
  if is_array(v) then
    for i = 1, #v do parts[i] = encode(v[i], where .. "[" .. i .. "]") end
    return "[" .. table.concat(parts, ",") .. "]"
  end
  local keys = {}
  for k in pairs(v) do
    if type(k) ~= "string" and math.type(k) ~= "integer" then
      error(("jsonl: cannot encode %s: a key of type %s"):format(where, type(k)), 0)
    end
    keys[#keys + 1] = tostring(k)
  end
  table.sort(keys)
  for i, k in ipairs(keys) do
    local x = v[k]
    if x == nil then x = v[math.tointeger(tonumber(k))] end
    parts[i] = encoder.encode(k) .. ":" .. encode(x, where .. "." .. k)
  end
  return "{" .. table.concat(parts, ",") .. "}"
end

--- jsonl.encode(list) -> text: one line per item, each ending in "\n".
function M.encode(list)
  if type(list) ~= "table" then
    error(("bad argument #1 to 'encode' (table expected, got %s)"):format(type(list)), 2)
  end
  local lines = {}
  for i = 1, #list do lines[i] = encode(list[i], "record " .. i) .. "\n" end
  return table.concat(lines)
end

--- jsonl.decode(text[, source]) -> list; source names the text in errors.
function M.decode(text, source)
  if type(text) ~= "string" then
    error(("bad argument #1 to 'decode' (string expected, got %s)"):format(type(text)), 2)
  end
  local out, n = {}, 0
  for line in (text:sub(-1) == "\n" and text or text .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    if line:find("%S") then
      local ok, v = pcall(decoder.decode, line)
      if not ok then
        error(("jsonl: %s:%d: %s"):format(source or "text", n, tostring(v):gsub("^[^:]*:%d+: ", "")), 0)
      end
      out[#out + 1] = clean(v)
    end
  end
  return out
end

local decode_node = ff.workflow("jsonl.decode", function(text, source) return M.decode(text, source) end)
local encode_node = ff.workflow("jsonl.encode", function(list) return M.encode(list) end)

--- jsonl.read(path[, opts]) -> a node of the file's records (fs.read's
-- fingerprint: the content's hash).
function M.read(path, opts)
  local node = decode_node(fs.read(path), path)
  if opts and opts.name then node:set_name(opts.name) end
  return node
end

--- jsonl.write(path, list_or_node[, opts]) -> an fs.write node.
function M.write(path, list, opts)
  return fs.write(path, encode_node(list), opts)
end

return M
