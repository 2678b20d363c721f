--- fflua status --address HOST:PORT [--token-file F]: a cluster's nodes,
-- resources and task counts.
local core = require "functionfuse.core"

local M = {}

local usage = [==[
usage: fflua status --address HOST:PORT [--token-file FILE]
  Shows the cluster's nodes with their total and free resources, and how
  many tasks are queued, running and finished. The token comes from FILE
  or $FFLUA_TOKEN.
]==]

local function fmt(v) return (("%.4f"):format(v):gsub("%.?0+$", "")) end

function M.main(args)
  local address, token_file
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--help" or a == "-h" then io.write(usage); return 0 end
    local k, v = a:match("^(%-%-[%w-]+)=(.*)$")
    if not k then k = a; v = args[i + 1]; i = i + 1 end
    if k == "--address" and v then address = v
    elseif k == "--token-file" and v then token_file = v
    else io.stderr:write("fflua status: bad or incomplete option '" .. a .. "'\n" .. usage); return 2 end
    i = i + 1
  end
  if not address then io.stderr:write("fflua status: --address is required\n" .. usage); return 2 end
  local ok, client = pcall(core.cluster_connect, address, { role = "status", token_file = token_file })
  if not ok then io.stderr:write("fflua status: " .. tostring(client) .. "\n"); return 1 end
  local st = client:status()
  client:close()
  print(("cluster at %s: %d node%s; tasks: %d queued, %d running, %d finished")
        :format(address, #st.places, #st.places == 1 and "" or "s", st.queued, st.running, st.finished))
  for _, p in ipairs(st.places) do
    local res, names = {}, {}
    for name in pairs(p.resources) do names[#names + 1] = name end
    table.sort(names)
    for _, name in ipairs(names) do
      local r = p.resources[name]
      if r.total > 0 then res[#res + 1] = ("%s %s/%s free"):format(name, fmt(r.free), fmt(r.total)) end
    end
    print(("  %s: %d running; %s"):format(p.name, p.running, table.concat(res, ", ")))
  end
  return 0
end

return M
