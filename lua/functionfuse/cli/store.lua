--- fflua store: list, show, remove, check and repair stored results from
-- the shell. Names are printed escaped (core.escape): a task's name may hold
-- any bytes, and printed raw a control character would act on the terminal.
local core = require "functionfuse.core"
local pretty = require "functionfuse._pretty"

local M = {}

local usage = [==[
usage: fflua store ls PATH [WORKFLOW [GLOB]]
       fflua store show PATH WORKFLOW TASK
       fflua store rm PATH WORKFLOW (TASK | --pattern GLOB)
       fflua store rm-workflow PATH WORKFLOW
       fflua store check PATH
       fflua store repair PATH

  ls           the workflows of a storage, or a workflow's tasks (matching
               GLOB: *, ?, [...]) with size, stored time and compute time
  show         a stored value, pretty-printed
  rm           remove one task, or every task matching GLOB
  rm-workflow  remove a workflow and all its tasks
  check        read every record and say what is damaged (exit 1 if any)
  repair       copy every intact record into a new file that replaces the
               old one (kept beside it); stop other users of it first
]==]

local esc = core.escape

local function fail(fmt, ...)
  error({ msg = fmt:format(...) }, 0)
end

--- A command given the wrong arguments: exit status 2, as for every
-- usage error of fflua (cli.md).
local function usage_fail(fmt, ...)
  error({ msg = fmt:format(...), usage = true }, 0)
end

--- Damage met while listing: said on stderr; the command then exits 1.
local damaged
local function note_damage(st, damage)
  if damage then
    damaged = true
    io.stderr:write(("fflua store: warning: storage '%s': %s\n"):format(esc(st:path()), damage))
  end
end

local function open(path)
  local f = io.open(path .. "/data.mdb", "rb")
  if not f then
    fail("'%s' is not an fflua storage (it has no data.mdb)", esc(path))
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

--- The tasks of a workflow (matching glob, nil: all) with their details.
local function tasks_of(st, wf, glob)
  local tasks, damage = st:list(wf, glob, true)
  note_damage(st, damage)
  return tasks
end

local function workflows_of(st)
  local wfs, damage = st:workflows()
  note_damage(st, damage)
  return wfs
end

function commands.ls(a)
  if not a[1] or a[4] then usage_fail("ls takes PATH [WORKFLOW [GLOB]]") end
  local st = open(a[1])
  if not a[2] then
    local rows = { { "WORKFLOW", "TASKS", "SIZE" } }
    for _, wf in ipairs(workflows_of(st)) do
      local n, size = 0, 0
      for _, t in ipairs(tasks_of(st, wf)) do n = n + 1; size = size + math.max(t.size, 0) end
      rows[#rows + 1] = { esc(wf), tostring(n), human_size(size) }
    end
    columns(rows)
    return damaged and 1 or 0
  end
  local tasks = tasks_of(st, a[2], a[3])
  if #tasks == 0 and not damaged and #st:list(a[2]) == 0 then
    fail("storage '%s' has no workflow '%s'", esc(a[1]), esc(a[2]))
  end
  local rows = { { "TASK", "SIZE", "STORED", "COMPUTE", "" } }
  for _, t in ipairs(tasks) do
    rows[#rows + 1] = { esc(t.name), human_size(t.size),
                        t.size >= 0 and os.date("%Y-%m-%d %H:%M:%S", math.floor(t.stored)) or "?",
                        t.size >= 0 and human_time(t.compute) or "?", t.ok and "" or "DAMAGED" }
  end
  columns(rows)
  return damaged and 1 or 0
end

function commands.show(a)
  if not a[3] or a[4] then usage_fail("show takes PATH WORKFLOW TASK") end
  local st = open(a[1])
  local v, why, msg = st:get(a[2], a[3], true)
  if why == "missing" then
    fail("storage '%s' has no task '%s' in workflow '%s'", esc(a[1]), esc(a[3]), esc(a[2]))
  elseif why == "corrupt" then
    fail("the stored result of task '%s' of workflow '%s' is damaged: %s", esc(a[3]), esc(a[2]), msg)
  end
  print(pretty.format(v))
  return 0
end

function commands.rm(a)
  local st
  if a[3] == "--pattern" then
    if not a[4] or a[5] then usage_fail("rm takes PATH WORKFLOW (TASK | --pattern GLOB)") end
    st = open(a[1])
    local names, damage = st:list(a[2], a[4])
    note_damage(st, damage)
    local n = st:del_many(a[2], names)
    print(("removed %d task%s"):format(n, n == 1 and "" or "s"))
    return 0
  end
  if not a[3] or a[4] then usage_fail("rm takes PATH WORKFLOW (TASK | --pattern GLOB)") end
  st = open(a[1])
  if not st:del(a[2], a[3]) then
    fail("storage '%s' has no task '%s' in workflow '%s'", esc(a[1]), esc(a[3]), esc(a[2]))
  end
  return 0
end

commands["rm-workflow"] = function(a)
  if not a[2] or a[3] then usage_fail("rm-workflow takes PATH WORKFLOW") end
  local st = open(a[1])
  if not st:drop(a[2]) then
    fail("storage '%s' has no workflow '%s'", esc(a[1]), esc(a[2]))
  end
  return 0
end

local function plural(n, word)
  return ("%d %s%s"):format(n, word, n == 1 and "" or "s")
end

function commands.check(a)
  if not a[1] or a[2] then usage_fail("check takes PATH") end
  local st = open(a[1])
  local nwf, nrec, nbad = 0, 0, 0
  for _, wf in ipairs(workflows_of(st)) do
    nwf = nwf + 1
    local bad = {}
    local tasks, damage = st:list(wf, nil, true)
    for _, t in ipairs(tasks) do
      nrec = nrec + 1
      if not t.ok then bad[#bad + 1] = t end
    end
    nbad = nbad + #bad
    print(("workflow '%s': %s readable, %s"):format(esc(wf), plural(#tasks, "result"),
                                                     #bad == 0 and "intact" or #bad .. " damaged"))
    for _, t in ipairs(bad) do print(("  task '%s': %s"):format(esc(t.name), t.why)) end
    if damage then
      damaged = true
      print("  " .. damage)
    end
  end
  for _, p in ipairs(st:verify()) do
    damaged = true
    if p.workflow then
      print(("workflow '%s': the file's structure is damaged: %s"):format(esc(p.workflow), p.why))
    else
      print(("the file's structure is damaged: %s"):format(p.why))
    end
  end
  if damaged or nbad > 0 then
    print(("storage '%s' is damaged: repair it with 'fflua store repair %s'"):format(esc(a[1]), esc(a[1])))
    return 1
  end
  print(("storage '%s': %s, %s, all intact"):format(esc(a[1]), plural(nwf, "workflow"),
                                                   plural(nrec, "result")))
  return 0
end

function commands.repair(a)
  if not a[1] or a[2] then usage_fail("repair takes PATH") end
  open(a[1]):close()
  local r, err = core.store_repair(a[1])
  if not r then fail("%s", err) end
  for _, l in ipairs(r.lost_list) do
    if l.task then
      print(("left behind: task '%s' of workflow '%s': %s"):format(esc(l.task), esc(l.workflow), l.why))
    else
      print(("left behind: %s"):format(l.why))
    end
  end
  print(("storage '%s': kept %s of %s; %s left behind; the old file is kept as '%s'")
        :format(esc(a[1]), plural(r.kept, "result"), plural(r.workflows, "workflow"),
                plural(r.lost, "damaged result"), esc(r.kept_as)))
  return 0
end

function M.main(args)
  local cmd = args[1]
  if cmd == nil then
    io.stderr:write(usage)
    return 2
  end
  if cmd == "--help" or cmd == "-h" or cmd == "help" then
    io.write(usage)
    return 0
  end
  local fn = commands[cmd]
  if not fn then
    io.stderr:write(("fflua store: unknown command '%s'\n%s"):format(esc(cmd), usage))
    return 2
  end
  local rest = table.move(args, 2, #args, 1, {})
  damaged = false
  local ok, err = pcall(fn, rest)
  if ok then return err end
  if type(err) == "table" and err.msg then
    io.stderr:write("fflua store " .. cmd .. ": " .. err.msg .. "\n")
    return err.usage and 2 or 1
  end
  io.stderr:write("fflua store " .. cmd .. ": " .. tostring(err):gsub("^[^:]*:%d+: ", "") .. "\n")
  return 1
end

return M
