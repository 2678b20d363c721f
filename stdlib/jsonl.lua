--- functionfuse.stdlib.jsonl: JSON lines (one JSON value per line), with
-- lua-cjson (Debian lua-cjson).
--
--   local jsonl = require "functionfuse.stdlib.jsonl"
--   jsonl.encode { { word = "a", n = 2 } }      --> '{"n":2,"word":"a"}\n'
--   jsonl.decode('{"n":2}\n[1,2]\n')            --> { { n = 2 }, { 1, 2 } }
--   local recs = jsonl.read("data.jsonl")       -- a node (fs.read's fingerprint)
--   local out = jsonl.write("out.jsonl", node)  -- a node (fs.write's)
--
-- Decoding: numbers without a fraction become integers (also past 2^53:
-- 12345678901234567 stays exact), JSON null becomes nil in an object (the
-- key is absent) and jsonl.null in an array or as a whole line (so items
-- keep their places), blank lines are skipped; a line that is not JSON is
-- an error naming its number. Encoding: objects' keys are sorted, so the
-- same records give the same bytes; integers are written exactly and
-- floats with the fewest digits that read back the same (0.1 + 0.2 is
-- 0.30000000000000004); jsonl.null is null; a table is an array when its
-- keys are 1..n, an object when they are strings (an empty table is {});
-- integer keys with holes, or mixed with string keys, are an error.
local cjson = require "cjson"
local ff = require "functionfuse"
local fs = require "functionfuse.stdlib.fs"

local M = {}

local decoder = cjson.new()
local encoder = cjson.new()
encoder.encode_invalid_numbers(false)

--- jsonl.null: JSON null where a nil would leave a hole (an array's item,
-- a whole line); null in an object drops the key.
M.null = cjson.null

-- cjson decodes every number as a float: integers of 16 digits and more
-- are turned into marked strings before, and back into integers after.
local TOKEN = "fflua-int-" .. require("functionfuse.core").token_new():sub(1, 12) .. ":"
local MARK, MARK_JSON = "\0" .. TOKEN, "\\u0000" .. TOKEN

local function mark_big_integers(line)
  if not line:find("%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d%d") then return line end
  local out, i, n, instr = {}, 1, #line, false
  local start = 1
  while i <= n do
    local c = line:sub(i, i)
    if instr then
      if c == "\\" then i = i + 1 elseif c == '"' then instr = false end
      i = i + 1
    elseif c == '"' then
      instr = true
      i = i + 1
    elseif c:find("[%-%d]") then
      -- The whole number: an integer when it has no fraction or exponent.
      local a, b = line:find("^%-?%d*", i)
      local _, e = line:find("^%.?%d*[eE]?[%+%-]?%d*", b + 1)
      local digits = line:sub(a, b)
      local int = e == b and math.tointeger(tonumber(digits))
      if int and #digits >= 16 and tostring(int) == digits then
        out[#out + 1] = line:sub(start, a - 1)
        out[#out + 1] = '"' .. MARK_JSON .. digits .. '"'
        start = b + 1
      end
      i = math.max(e, b) + 1
    else
      i = i + 1
    end
  end
  out[#out + 1] = line:sub(start)
  return table.concat(out)
end

local function clean(v, in_array)
  if v == cjson.null then return in_array and cjson.null or nil end
  if math.type(v) == "float" then return math.tointeger(v) or v end
  if type(v) == "string" and v:sub(1, #MARK) == MARK then return math.tointeger(tonumber(v:sub(#MARK + 1))) end
  if type(v) == "table" then
    local out = {}
    local arr = next(v) ~= nil and #v > 0 -- an object's keys are strings
    for k, x in pairs(v) do out[k] = clean(x, arr) end
    return out
  end
  return v
end

local function number(v, where)
  if math.type(v) == "integer" then return ("%d"):format(v) end
  if v ~= v or v == math.huge or v == -math.huge then
    error(("jsonl: cannot encode %s: the number %s"):format(where, tostring(v)), 0)
  end
  if math.tointeger(v) and math.abs(v) < 2 ^ 53 then return ("%d"):format(math.tointeger(v)) end
  for _, f in ipairs { "%.15g", "%.16g", "%.17g" } do
    local s = f:format(v)
    if tonumber(s) == v then return s end
  end
end

-- "array" with its length (keys 1..n), "object" (string keys), or raises:
-- integer keys with holes or mixed with strings have no JSON form.
local function kind(t, where)
  local n, ints, strs = 0, 0, 0
  for k in pairs(t) do
    n = n + 1
    if math.type(k) == "integer" then
      ints = ints + 1
    elseif type(k) == "string" then
      strs = strs + 1
    else
      error(("jsonl: cannot encode %s: a key of type %s"):format(where, math.type(k) or type(k)), 0)
    end
  end
  if n == 0 then return "object" end
  if strs > 0 and ints > 0 then
    error(("jsonl: cannot encode %s: a table with both integer and string keys"):format(where), 0)
  end
  if strs > 0 then return "object" end
  if #t ~= n then
    error(("jsonl: cannot encode %s: an array with holes (keys not 1..n): use jsonl.null"):format(where), 0)
  end
  return "array"
end

-- Encodes v with objects' keys sorted (cjson keeps table order).
local function encode(v, where)
  if v == cjson.null then return "null" end
  if type(v) == "number" then return number(v, where) end
  if type(v) ~= "table" then
    local ok, s = pcall(encoder.encode, v)
    if not ok then error(("jsonl: cannot encode %s: %s"):format(where, s), 0) end
    return s
  end
  local parts = {}
  if kind(v, where) == "array" then
    for i = 1, #v do parts[i] = encode(v[i], where .. "[" .. i .. "]") end
    return "[" .. table.concat(parts, ",") .. "]"
  end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = k end
  table.sort(keys)
  for i, k in ipairs(keys) do
    parts[i] = encoder.encode(k) .. ":" .. encode(v[k], where .. "." .. k)
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
      local ok, v = pcall(decoder.decode, mark_big_integers(line))
      if not ok then
        error(("jsonl: %s:%d: %s"):format(source or "text", n, tostring(v):gsub("^[^:]*:%d+: ", "")), 0)
      end
      out[#out + 1] = clean(v, true) -- a null line is jsonl.null
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
