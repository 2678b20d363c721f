--- fflua graph [-o FILE] SCRIPT [ARGS...]: the graph of every workflow a
-- script runs, without running any node. The script runs as under `fflua
-- SCRIPT`, except that each workflow's run() records the workflow and
-- returns nothing, and what the script prints goes to standard error;
-- no node or plugin runs, and no run touches a storage or a cluster.
local base = require "functionfuse._base"
local core = require "functionfuse.core"
local graphback = require "functionfuse.backends.builtin.graphback"

local M = {}

local usage = [==[
usage: fflua graph [-o FILE] SCRIPT [ARGS...]
  Runs SCRIPT with ARGS as fflua would, except that no workflow runs: each
  run() only records its workflow and returns nothing, and what the script
  prints goes to standard error. Then writes the
  graph of every recorded workflow (a box per node, an arrow from each node
  to the nodes that use its result) in Graphviz's DOT language to standard
  output, or to FILE: .dot or .gv as DOT, any other extension (.svg, .png,
  .pdf) through Graphviz's dot program. Several workflows are drawn as one
  cluster each, labelled with the workflow's name.
]==]

local function say(fmt, ...)
  io.stderr:write("fflua graph: " .. fmt:format(...) .. "\n")
end

function M.main(args)
  local out
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--help" or a == "-h" then io.write(usage); return 0 end
    if a == "-o" or a == "--output" then
      out = args[i + 1]
      if out == nil or out == "" then say("%s needs a file name", a); io.stderr:write(usage); return 2 end
      i = i + 2
    elseif a == "--" then
      i = i + 1
      break
    elseif a:sub(1, 1) == "-" and a ~= "-" then
      say("unknown option '%s'", core.escape(a)); io.stderr:write(usage); return 2
    else
      break
    end
  end
  local script = args[i]
  if script == nil then say("give the script to draw"); io.stderr:write(usage); return 2 end
  local script_args = table.move(args, i + 1, #args, 1, {})

  local chunk, lerr = loadfile(script ~= "-" and script or nil)
  if not chunk then say("%s", lerr); return 1 end
  local workflows = {}
  local seen = {}
  base.capture = function(wf)
    if not seen[wf] then
      seen[wf] = true
      workflows[#workflows + 1] = wf
    end
  end
  -- What the script prints goes to standard error, so that standard
  -- output holds the graph alone.
  local saved_arg, saved_print, saved_out = rawget(_G, "arg"), print, io.output()
  local a = table.move(script_args, 1, #script_args, 1, {})
  a[0] = script
  _G.arg = a
  io.output(io.stderr)
  _G.print = function(...)
    local n = select("#", ...)
    local t = {}
    for k = 1, n do t[k] = tostring((select(k, ...))) end
    io.stderr:write(table.concat(t, "\t"), "\n")
  end
  local ok, err = pcall(chunk, table.unpack(script_args))
  _G.arg, _G.print = saved_arg, saved_print
  io.output(saved_out)
  base.capture = nil
  if #workflows == 0 then
    if not ok then say("%s", tostring(err)) end
    say("%s ran no workflow: there is nothing to draw", core.escape(script))
    return 1
  end
  if not ok then
    -- Results are nil here, so a script that goes on with them may fail:
    -- what it ran until then is drawn.
    say("warning: the script stopped after %d workflow run%s (run() returns nothing "
        .. "here): %s", #workflows, #workflows == 1 and "" or "s", tostring(err))
  end
  local text = graphback.dot(workflows)
  if out == nil then
    io.stdout:write(text)
    return 0
  end
  local wok, werr = graphback.render(text, out)
  if not wok then say("cannot write %s", werr); return 1 end
  return 0
end

return M
