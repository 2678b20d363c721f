--- Pretty-printing of stored values: sorted keys, indentation, integers
-- and floats told apart, shared tables and cycles shown as references.
local M = {}

local function key_order(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return ta < tb end
  if ta == "number" or ta == "string" then return a < b end
  return tostring(a) < tostring(b)
end

local function scalar(v)
  local t = type(v)
  if t == "string" then return ("%q"):format(v):gsub("\\\n", "\\n") end
  if math.type(v) == "float" then
    if v ~= v then return "nan" end
    if v == math.huge then return "inf" elseif v == -math.huge then return "-inf" end
    local s = ("%.17g"):format(v)
    if tonumber(("%.15g"):format(v)) == v then s = ("%.15g"):format(v) end
    if not s:find("[%.eEn]") then s = s .. ".0" end
    return s
  end
  return tostring(v)
end

local ident = "^[%a_][%w_]*$"

--- The text of v; opts.max_items limits entries shown per table.
function M.format(v, opts)
  opts = opts or {}
  local max_items = opts.max_items or 200
  local out, seen, n = {}, {}, 0
  local function emit(s) out[#out + 1] = s end
  local function walk(x, indent, path)
    if type(x) ~= "table" then emit(scalar(x)); return end
    if seen[x] then emit("<same as " .. seen[x] .. ">"); return end
    seen[x] = path == "" and "<root>" or path
    local mt = getmetatable(x)
    if mt and mt.__ffclass then emit("<" .. mt.__ffclass .. "> ") end
    if x.__ffserializer and x.bytes then
      emit(("<%s: %d bytes>"):format(x.__ffserializer, #x.bytes)); return
    end
    local keys = {}
    for k in pairs(x) do keys[#keys + 1] = k end
    table.sort(keys, key_order)
    if #keys == 0 then emit("{}"); return end
    local seq = #x == #keys
    emit("{\n")
    local inner = indent .. "  "
    for i, k in ipairs(keys) do
      if i > max_items then
        emit(inner .. ("... (%d more)\n"):format(#keys - max_items)); break
      end
      emit(inner)
      local kp
      if seq then kp = path .. "[" .. k .. "]"
      elseif type(k) == "string" and k:find(ident) then emit(k .. " = "); kp = path .. "." .. k
      else emit("[" .. scalar(k) .. "] = "); kp = path .. "[" .. scalar(k) .. "]" end
      walk(x[k], inner, kp)
      emit(",\n")
      n = n + 1
    end
    emit(indent .. "}")
  end
  walk(v, "", "")
  return table.concat(out)
end

return M
