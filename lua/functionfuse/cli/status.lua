--- fflua status --address HOST:PORT [--token-file F]: a cluster's
-- machines, workers, resources and task counts.
local core = require "functionfuse.core"

local M = {}

local usage = [==[
usage: fflua status --address HOST:PORT [--token-file FILE]
  Shows the cluster's machines with the resources their workers share,
  each worker with its CPUs, and how many tasks are queued, running and
  finished. The token comes from FILE or $FFLUA_TOKEN.
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
  -- The workers of one machine share its resources (all but CPU): one
  -- line per machine with those, then one per worker with its CPU.
  local machines, order = {}, {}
  for _, p in ipairs(st.places) do
    local m = machines[p.machine]
    if not m then
      m = { id = p.machine, host = p.name:match("^(.*):%d+$") or p.name, workers = {},
            resources = p.resources }
      machines[p.machine] = m
      order[#order + 1] = m
    end
    m.workers[#m.workers + 1] = p
  end
  local function amounts(resources, want_cpu)
    local res, names = {}, {}
    for name in pairs(resources) do names[#names + 1] = name end
    table.sort(names)
    for _, name in ipairs(names) do
      local r = resources[name]
      if r.total > 0 and (name == "CPU") == want_cpu then
        res[#res + 1] = ("%s %s/%s free"):format(name, fmt(r.free), fmt(r.total))
      end
    end
    return table.concat(res, ", ")
  end
  local function count(n, what) return ("%d %s%s"):format(n, what, n == 1 and "" or "s") end
  print(("cluster at %s: %s, %s; tasks: %d queued, %d running, %d finished")
        :format(address, count(#order, "machine"), count(#st.places, "worker"),
                st.queued, st.running, st.finished))
  for _, m in ipairs(order) do
    local shared = amounts(m.resources, false)
    print(("  machine %s (%s)%s"):format(m.id:sub(1, 8), m.host,
                                        shared ~= "" and ": " .. shared or ""))
    for _, p in ipairs(m.workers) do
      print(("    %s: %d running; %s"):format(p.name, p.running, amounts(p.resources, true)))
    end
  end
  return 0
end

return M
