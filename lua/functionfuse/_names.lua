--- functionfuse._names: the name of a workflow function, from where it is
-- defined (functionfuse's __qualname__).
--
-- A function is named after what its definition declares or assigns it to,
-- read from the defining line of its source (the file of an "@file" chunk,
-- the text of a string chunk):
--   local function train(...)                  train
--   function M.train(...) / function M:train   M.train
--   [local] train = [ff.]workflow(function     train (also over two lines)
--   train = function(...), { train = ... }     train (a table field, a method)
-- never after the expression it is called through. A function whose
-- definition names nothing is "fn@<file>_<line>" (the file without its
-- directories and extension), as is one whose source cannot be read ("-e"
-- chunks, a script read from standard input; there two functions are two
-- definitions when their code differs). The REPL numbers the lines of
-- what it compiles across the session and keeps the text (registry field
-- "functionfuse.stdin"), so what is typed there is named as in a file.
--
-- Two distinct definitions never share a name: the first definition to
-- take a name keeps it for the life of the Lua state, and another one
-- (another file, or another line of the same file) gets its place
-- appended, "train@<file>_<line>" (then "_2", "_3", ... in the rare case
-- that is taken too). A definition is its source, its first and last lines
-- and its code, so every closure of one definition, a script loaded twice,
-- and the same function wrapped twice get one name. When a file changes on
-- disk (its size, which is all that is checked before a file is read
-- again), the names its previous text took are given up, so editing and
-- reloading a script in one process names it as a fresh process would.
local M = {}

local claims = {}   -- name -> definition key
local named = {}    -- definition key -> name
local by_source = {} -- source -> { text =, size = (of a file), keys = { definition keys } }

-- A string usable in a node name, a storage task name and a PCRE pattern
-- without escaping: letters, digits and '_'.
local function word(s)
  s = s:gsub("[^%w_]+", "_"):gsub("^_+", ""):gsub("_+$", "")
  return s ~= "" and s or "chunk"
end

-- The file name of a source, without directories and extension.
local function place(info)
  local src = info.source
  local stem
  if src:sub(1, 1) == "@" or src:sub(1, 1) == "=" then
    stem = src:sub(2):match("([^/\\]*)$"):gsub("%.[^.]*$", "")
  else
    stem = "string"
  end
  return word(stem) .. "_" .. info.linedefined
end

-- The text of a source, or nil when it cannot be read. A file is read again
-- only when its size changed since it was last read.
local function source_text(src)
  local c = src:sub(1, 1)
  if src == "=stdin" then
    -- The REPL keeps what it compiled there, each chunk numbered after the
    -- last (nil for a script read from standard input).
    local t = debug.getregistry()["functionfuse.stdin"]
    return type(t) == "string" and t or nil
  end
  if c == "=" then return nil end
  if c ~= "@" then return src end
  local f = io.open(src:sub(2), "rb")
  if f == nil then return nil end
  local size = f:seek("end")
  local s = by_source[src]
  if s ~= nil and s.size == size then
    f:close()
    return s.text, size
  end
  f:seek("set")
  local text = f:read("a")
  f:close()
  return text, size
end

-- Lines n - 1 and n of text.
local function lines_at(text, n)
  local prev, i = nil, 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    i = i + 1
    if i == n then return prev, line end
    prev = line
  end
end

local ID = "[%a_][%w_]*"

-- The target of the last assignment in prefix (the text before a function
-- or a call) when only calls stand between '=' and the end:
-- "local train = ff.workflow(", "ops = { triple = memo(", "M.x <const> =".
local function target_before(prefix)
  return prefix:match("(" .. ID .. "[%w_.]*)%s*=%s*[%w_.:%s(]*$")
      or prefix:match("(" .. ID .. ")%s*<%a+>%s*=%s*[%w_.:%s(]*$")
end

--- The name a function's defining line gives it (prev: the line before), or
-- nil. what is "function" (the line holds the function's definition) or
-- "class" (the line calls workflow with a class table).
function M.parse(line, prev, what)
  if what == "class" then
    return line:match("(" .. ID .. "[%w_.]*)%s*=%s*[%w_.:]+%s*[({]")
        or line:match("(" .. ID .. ")%s*<%a+>%s*=%s*[%w_.:]+%s*[({]")
  end
  local n = line:match("^%s*local%s+function%s+(" .. ID .. ")")
  if n then return n end
  n = line:match("^%s*function%s+(" .. ID .. "[%w_.:]*)%s*%(")
  if n then return (n:gsub(":", ".")) end
  local at = line:find("%f[%w_]function%f[^%w_]")
  if at == nil then return nil end
  local prefix = line:sub(1, at - 1)
  if prev and prefix:match("^[%s(]*$") then prefix = prev .. " " .. prefix end
  return target_before(prefix)
end

-- Drops the names a source's previous text took when that text changed.
local function check_source(src, text, size)
  local s = by_source[src]
  if s ~= nil and s.text ~= text and text:sub(1, #s.text) == s.text then
    s.text, s.size = text, size -- only added to (the REPL's session): names stay
  elseif s ~= nil and s.text ~= text then
    for _, key in ipairs(s.keys) do
      local n = named[key]
      named[key] = nil
      if claims[n] == key then claims[n] = nil end
    end
    s = nil
  end
  if s == nil then
    s = { text = text, size = size, keys = {} }
    by_source[src] = s
  end
  return s
end

-- The name of a definition: info is debug.getinfo(fn, "S") for a function
-- fn, or { source, linedefined, lastlinedefined } of a workflow(Class) call.
local function name_of(info, what, fn)
  local src = info.source
  local key = src .. "\0" .. info.linedefined .. "\0" .. info.lastlinedefined .. "\0" .. what
  -- Its code tells apart two functions on one line, and the REPL's, where
  -- every line is line 1 of "=stdin".
  if fn ~= nil then key = key .. "\0" .. string.dump(fn, true) end
  local text, size = source_text(src)
  local s = text and check_source(src, text, size)
  if named[key] ~= nil then return named[key] end
  local base
  if text then
    local prev, line = lines_at(text, info.linedefined)
    base = line and M.parse(line, prev, what)
  end
  local name = base or ("fn@" .. place(info))
  if claims[name] ~= nil then
    if base ~= nil then name = base .. "@" .. place(info) end
    local k, try = 1, name
    while claims[try] ~= nil do
      k = k + 1
      try = name .. "_" .. k
    end
    name = try
  end
  claims[name] = key
  named[key] = name
  if s then s.keys[#s.keys + 1] = key end
  return name
end

--- The automatic name of fn (a function or a callable object; its __call
-- names it), or nil and why not.
function M.function_name(fn)
  if type(fn) ~= "function" then
    local mt = getmetatable(fn)
    local call = type(mt) == "table" and rawget(mt, "__call") or nil
    if type(call) ~= "function" then return nil, "a callable object without a __call function" end
    fn = call
  end
  local info = debug.getinfo(fn, "S")
  if info.what == "C" then return nil, "a C function" end
  return name_of(info, "function", fn)
end

--- The automatic name of a class declared by a call of workflow at stack
-- level `level` (a function of this module's caller's caller).
function M.class_name(level)
  local info = debug.getinfo(level + 1, "Sl")
  if info == nil or info.what == "C" or info.currentline < 0 then
    return nil, "the class is not declared in Lua source"
  end
  return name_of({ source = info.source, linedefined = info.currentline,
                   lastlinedefined = info.currentline }, "class")
end

return M
