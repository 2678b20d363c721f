--- Small helpers the package's modules share (private).
local M = {}

local is_node = require("functionfuse.core").is_node

--- true for a function or a value with a __call metamethod, but a node item
-- (whose __call only serves node:method() calls).
function M.callable(v)
  if type(v) == "function" then return true end
  local mt = getmetatable(v)
  return type(mt) == "table" and mt.__call ~= nil and not is_node(v)
end

-- The optimal string alignment distance between a and b: insertions,
-- deletions, substitutions and swaps of two neighbours count one each.
local function distance(a, b)
  local la, lb = #a, #b
  local d = {}
  for i = 0, la do d[i] = { [0] = i } end
  for j = 0, lb do d[0][j] = j end
  for i = 1, la do
    for j = 1, lb do
      local cost = a:byte(i) == b:byte(j) and 0 or 1
      local v = math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
      if i > 1 and j > 1 and a:byte(i) == b:byte(j - 1) and a:byte(i - 1) == b:byte(j) then
        v = math.min(v, d[i - 2][j - 2] + 1)
      end
      d[i][j] = v
    end
  end
  return d[la][lb]
end
M.distance = distance

--- The entry of the list names nearest to s, when it is near enough to be
-- a likely misspelling (at most a third of its length away, at most 2 for
-- short names, or one of the two starting with the other, 3 bytes or
-- more), else nil. Ties go to the first in the list.
function M.nearest(s, names)
  local best, bd
  for _, n in ipairs(names) do
    local d = distance(s, n)
    local near = d <= math.max(2, #s // 3) and d < #s
                 or math.min(#s, #n) >= 3 and (n:sub(1, #s) == s or s:sub(1, #n) == n)
    if near and (bd == nil or d < bd) then best, bd = n, d end
  end
  return best
end

local function show_key(k)
  if type(k) == "string" then return "'" .. require("functionfuse.core").escape(k) .. "'" end
  return "[" .. tostring(k) .. "]"
end

--- Raises "<what>: unknown <kind> '<key>' (did you mean '<near>'?)" at
-- level (for the caller of the function that calls this, 2 more than that
-- function's own level) for the first key of t, in sorted order, that is
-- not in the list known; with no near name, the message lists the known
-- ones. Keys are compared as they are (never case-folded).
function M.check_keys(t, known, what, kind, level)
  local set = {}
  for _, k in ipairs(known) do set[k] = true end
  local bad
  for k in pairs(t) do
    if not set[k] and (bad == nil or tostring(k) < tostring(bad)) then bad = k end
  end
  if bad == nil then return end
  local near = type(bad) == "string" and M.nearest(bad, known)
  local hint = near and ("did you mean '%s'?"):format(near)
               or "known: " .. table.concat(known, ", ")
  error(("%s: unknown %s %s (%s)"):format(what, kind, show_key(bad), hint), level + 1)
end

--- Writes text to file whole (binary). Returns true, or nil and why.
function M.write_file(file, text)
  local f, err = io.open(file, "wb")
  if not f then return nil, err end
  local ok, werr = f:write(text)
  local cok, cerr = f:close()
  if not ok or not cok then return nil, ("%s: %s"):format(file, werr or cerr) end
  return true
end

return M
