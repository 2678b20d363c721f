--- fflua store: list, show and remove stored results from the shell.
local core = require "functionfuse.core"
local pretty = require "functionfuse._pretty"

local M = {}

local usage = [==[
usage: fflua store ls PATH [WORKFLOW [GLOB]]
       fflua store show PATH WORKFLOW TASK
       fflua store rm PATH WORKFLOW (TASK | --pattern GLOB)
       fflua store rm-workflow PATH WORKFLOW

  ls           the workflows of a storage, or a workflow's tasks (matching
               GLOB: *, ?, [...]) with size, stored time and compute time
  show         a stored value, pretty-printed
  rm           remove one task, or every task matching GLOB
  rm-workflow  remove a workflow and all its tasks
]==]

local function fail(fmt, ...)
  error({ msg = fmt:format(...) }, 0)
end

local function open(path)
  local f = io.open(path .. "/data.mdb", "rb")
  if not f then
    fail("'%s' is not an fflua storage (it has no data.mdb)", path)
  end
  f:close()
  return core.store_open(path, false)
end

local function human_size(n)
  if n < 0 then return "?" end
  if n < 1024 then return n .. " B" end
  if n < 1024 * 1024 then return ("%.1f KiB"):format(n / 1024) end
  if n < 1024 ^ 3 then return ("%.1f MiB"):format(n / 1024 ^ 2) end
  return ("%.2f GiB"):format(n / 1024 ^ 3)
end

local function human_time(s)
  if s < 1e-3 then return ("%.0f us"):format(s * 1e6) end
  if s < 1 then return ("%.1f ms"):format(s * 1e3) end
  if s < 120 then return ("%.2f s"):format(s) end
  return ("%.1f min"):format(s / 60)
end

local function columns(rows)
  local w = {}
  for _, r in ipairs(rows) do
    for i, c in ipairs(r) do w[i] = math.max(w[i] or 0, #c) end
  end
  for _, r in ipairs(rows) do
    local line = {}
    for i, c in ipairs(r) do
      line[i] = i == #r and c or (i == 1 and c .. (" "):rep(w[i] - #c) or (" "):rep(w[i] - #c) .. c)
    end
    print(table.concat(line, "  "))
  end
end

local commands = {}

function commands.ls(a)
  if not a[1] or a[4] then fail("ls takes PATH [WORKFLOW [GLOB]]") end
  local st = open(a[1])
  if not a[2] then
    local rows = { { "WORKFLOW", "TASKS", "SIZE" } }
    for _, wf in ipairs(st:workflows()) do
      local n, size = 0, 0
      for _, t in ipairs(st:list(wf, "*", true)) do n = n + 1; size = size + math.max(t.size, 0) end
      rows[#rows + 1] = { wf, tostring(n), human_size(size) }
    end
    columns(rows)
    return 0
  end
  local tasks = st:list(a[2], a[3] or "*", true)
  if #tasks == 0 and #st:list(a[2]) == 0 then
    fail("storage '%s' has no workflow '%s'", a[1], a[2])
  end
  local rows = { { "TASK", "SIZE", "STORED", "COMPUTE", "" } }
  for _, t in ipairs(tasks) do
    rows[#rows + 1] = { t.name, human_size(t.size), os.date("%Y-%m-%d %H:%M:%S", math.floor(t.stored)),
                        human_time(t.compute), t.ok and "" or "DAMAGED" }
  end
  columns(rows)
  return 0
end

function commands.show(a)
  if not a[3] or a[4] then fail("show takes PATH WORKFLOW TASK") end
  local st = open(a[1])
  local v, why, msg = st:get(a[2], a[3], true)
  if why == "missing" then
    fail("storage '%s' has no task '%s' in workflow '%s'", a[1], a[3], a[2])
  elseif why == "corrupt" then
    fail("the stored result of task '%s' of workflow '%s' is damaged: %s", a[3], a[2], msg)
  end
  print(pretty.format(v))
  return 0
end

function commands.rm(a)
  local st
  if a[3] == "--pattern" then
    if not a[4] or a[5] then fail("rm takes PATH WORKFLOW (TASK | --pattern GLOB)") end
    st = open(a[1])
    local n = st:del_many(a[2], st:list(a[2], a[4]))
    print(("removed %d task%s"):format(n, n == 1 and "" or "s"))
    return 0
  end
  if not a[3] or a[4] then fail("rm takes PATH WORKFLOW (TASK | --pattern GLOB)") end
  st = open(a[1])
  if not st:del(a[2], a[3]) then
    fail("storage '%s' has no task '%s' in workflow '%s'", a[1], a[3], a[2])
  end
  return 0
end

commands["rm-workflow"] = function(a)
  if not a[2] or a[3] then fail("rm-workflow takes PATH WORKFLOW") end
  local st = open(a[1])
  if not st:drop(a[2]) then
    fail("storage '%s' has no workflow '%s'", a[1], a[2])
  end
  return 0
end

function M.main(args)
  local cmd = args[1]
  if cmd == nil or cmd == "--help" or cmd == "-h" or cmd == "help" then
    io.write(usage)
    return cmd == nil and 2 or 0
  end
  local fn = commands[cmd]
  if not fn then
    io.stderr:write(("fflua store: unknown command '%s'\n%s"):format(cmd, usage))
    return 2
  end
  local rest = table.move(args, 2, #args, 1, {})
  local ok, err = pcall(fn, rest)
  if ok then return err end
  if type(err) == "table" and err.msg then
    io.stderr:write("fflua store " .. cmd .. ": " .. err.msg .. "\n")
    return 1
  end
  io.stderr:write("fflua store " .. cmd .. ": " .. tostring(err):gsub("^[^:]*:%d+: ", "") .. "\n")
  return 1
end

return M
