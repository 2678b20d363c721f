--- functionfuse.stdlib.csv: CSV (RFC 4180) in pure Lua.
--
--   local csv = require "functionfuse.stdlib.csv"
--   csv.parse('a,b\n1,"x, y"\n')              --> { { "a", "b" }, { "1", "x, y" } }
--   csv.parse('a,b\n1,2\n', { header = true }) --> { { a = "1", b = "2" } }
--   csv.format { { "a", 'say "hi"' } }        --> 'a,"say ""hi"""\r\n'
--   csv.read(path[, { header = true }])       -- a node (fs.read's fingerprint)
--   csv.write(path, rows_or_node[, opts])     -- a node (fs.write's)
--
-- Fields are strings. Quoted fields may hold the separator, quotes
-- (doubled) and line breaks; lines end in "\r\n" or "\n"; blank lines are
-- skipped (a row of one empty field is written as ""). format quotes a
-- field only when it holds the separator, a quote, "\r" or "\n", and ends
-- lines with "\r\n" (RFC 4180); with header = { "col", ... } it writes
-- records (tables keyed by column) in those columns. Option sep: the
-- separator (one byte, default ",").
local ff = require "functionfuse"
local fs = require "functionfuse.stdlib.fs"
local check_keys = require("functionfuse._util").check_keys

local M = {}

local function sep_of(opts, what)
  local sep = opts.sep or ","
  if type(sep) ~= "string" or #sep ~= 1 or sep == '"' or sep == "\n" or sep == "\r" then
    error(("csv.%s: 'sep' must be one byte, not a quote or line break"):format(what), 3)
  end
  return sep
end

--- csv.parse(text[, { header = bool, sep = c, source = name }]) -> rows.
function M.parse(text, opts)
  if type(text) ~= "string" then
    error(("bad argument #1 to 'parse' (string expected, got %s)"):format(type(text)), 2)
  end
  opts = opts or {}
  check_keys(opts, { "header", "sep", "source" }, "csv.parse", "option", 2)
  local sep = sep_of(opts, "parse")
  local rows, row, i, n, line = {}, {}, 1, #text, 1
  local where = opts.source or "text"
  while i <= n do
    local c = text:sub(i, i)
    local field
    if #row == 0 and (c == "\n" or c == "\r") then -- a blank line: skipped
      i = i + ((c == "\r" and text:sub(i + 1, i + 1) == "\n") and 2 or 1)
      line = line + 1
      goto continue
    end
    if c == '"' then
      local parts, j = {}, i + 1
      while true do
        local q = text:find('"', j, true)
        if q == nil then error(("csv: %s:%d: a quoted field is not closed"):format(where, line), 0) end
        parts[#parts + 1] = text:sub(j, q - 1)
        if text:sub(q + 1, q + 1) == '"' then
          parts[#parts + 1] = '"'
          j = q + 2
        else
          i = q + 1
          break
        end
      end
      field = table.concat(parts)
      local _, nl = field:gsub("\n", "")
      line = line + nl
      local after = text:sub(i, i)
      if after ~= "" and after ~= sep and after ~= "\n" and after ~= "\r" then
        error(("csv: %s:%d: '%s' after a closing quote"):format(where, line, after), 0)
      end
    else
      local j = i
      while j <= n do
        local b = text:sub(j, j)
        if b == sep or b == "\n" or b == "\r" then break end
        if b == '"' then error(("csv: %s:%d: a quote inside an unquoted field"):format(where, line), 0) end
        j = j + 1
      end
      field = text:sub(i, j - 1)
      i = j
    end
    row[#row + 1] = field
    local d = text:sub(i, i)
    if d == sep then
      i = i + 1
      if i > n then row[#row + 1] = "" end
    else
      if d == "\r" and text:sub(i + 1, i + 1) == "\n" then i = i + 2 elseif d ~= "" then i = i + 1 end
      rows[#rows + 1] = row
      row = {}
      line = line + 1
    end
    ::continue::
  end
  if #row > 0 then rows[#rows + 1] = row end
  if not opts.header then return rows end
  local head = rows[1] or {}
  local recs = {}
  for r = 2, #rows do
    if #rows[r] ~= #head then
      error(("csv: %s: row %d has %d fields, the header %d"):format(where, r, #rows[r], #head), 0)
    end
    local rec = {}
    for k, col in ipairs(head) do rec[col] = rows[r][k] end
    recs[#recs + 1] = rec
  end
  return recs, head
end

local function quote(v, sep, where)
  if type(v) == "number" then v = tostring(v) end
  if type(v) ~= "string" then
    error(("csv: cannot format %s: a %s, not a string or number"):format(where, type(v)), 0)
  end
  if v:find('[\r\n"]') or v:find(sep, 1, true) then return '"' .. v:gsub('"', '""') .. '"' end
  return v
end

--- csv.format(rows[, { header = { cols }, sep = c }]) -> text.
function M.format(rows, opts)
  if type(rows) ~= "table" then
    error(("bad argument #1 to 'format' (table expected, got %s)"):format(type(rows)), 2)
  end
  opts = opts or {}
  check_keys(opts, { "header", "sep" }, "csv.format", "option", 2)
  local sep = sep_of(opts, "format")
  local out, cols = {}, opts.header
  local function line(fields, where)
    local t = {}
    for k = 1, #fields do t[k] = quote(fields[k], sep, ("%s, field %d"):format(where, k)) end
    -- parse skips blank lines: a row of one empty field is written "",
    -- and a row of no fields has no form.
    if #t == 0 then error(("csv: cannot format %s: it has no fields"):format(where), 0) end
    if #t == 1 and t[1] == "" then t[1] = '""' end
    out[#out + 1] = table.concat(t, sep) .. "\r\n"
  end
  if cols then line(cols, "the header") end
  for r, row in ipairs(rows) do
    if cols then
      local f = {}
      for k, col in ipairs(cols) do f[k] = row[col] == nil and "" or row[col] end
      row = f
    end
    line(row, "row " .. r)
  end
  return table.concat(out)
end

local parse_node = ff.workflow("csv.parse", function(text, opts) return (M.parse(text, opts)) end)
local format_node = ff.workflow("csv.format", function(rows, opts) return M.format(rows, opts) end)

--- csv.read(path[, { header =, sep =, name = }]) -> a node of the rows.
function M.read(path, opts)
  opts = opts or {}
  check_keys(opts, { "header", "sep", "name" }, "csv.read", "option", 2)
  local node = parse_node(fs.read(path), { header = opts.header, sep = opts.sep, source = path })
  if opts.name then node:set_name(opts.name) end
  return node
end

--- csv.write(path, rows_or_node[, { header =, sep =, name = }]) -> an
-- fs.write node.
function M.write(path, rows, opts)
  opts = opts or {}
  check_keys(opts, { "header", "sep", "name" }, "csv.write", "option", 2)
  return fs.write(path, format_node(rows, { header = opts.header, sep = opts.sep }),
                  { name = opts.name })
end

return M
