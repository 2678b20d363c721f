--- GraphWorkflow: draws a workflow instead of running it, as functionfuse's
-- graph backend does. Writes DOT_PATH/NAME.dot (Graphviz's DOT language)
-- and, when Graphviz's `dot` program is installed, NAME.svg beside it.
--
--   local GraphWorkflow = require("functionfuse.backends.builtin.graphback").GraphWorkflow
--   local wf = GraphWorkflow(leaf, { workflow_name = "name", doc_path = "doc" })
--   local dot_file, svg_file = wf:run()  -- svg_file is nil without Graphviz
--
-- A node is a box labelled with its name; an edge runs from each parent to
-- the nodes that use its result. M.dot and M.render are also what
-- `fflua graph` uses.
local base = require "functionfuse._base"
local core = require "functionfuse.core"

local M = {}

-- A DOT string: the name as fflua prints names (core.escape), then quotes
-- and backslashes escaped for DOT.
local function quote(s)
  return '"' .. core.escape(s):gsub('[\\"]', "\\%0") .. '"'
end

-- The statements of one workflow's nodes and edges; ids get prefix.
local function body(out, wf, prefix, indent)
  local names, parents = wf._core:graph()
  for i, name in ipairs(names) do
    out[#out + 1] = ("%s%s%d [label=%s];"):format(indent, prefix, i, quote(name))
  end
  for i, ps in ipairs(parents) do
    for _, p in ipairs(ps) do
      out[#out + 1] = ("%s%s%d -> %s%d;"):format(indent, prefix, p, prefix, i)
    end
  end
end

--- The DOT text of one workflow, or of several (a cluster per workflow,
-- labelled with its name).
function M.dot(workflows)
  local out = {}
  if #workflows == 1 then
    out[1] = "digraph " .. quote(workflows[1].workflow_name) .. " {"
    out[2] = "  node [shape=box];"
    body(out, workflows[1], "n", "  ")
  else
    out[1] = 'digraph "workflows" {'
    out[2] = "  node [shape=box];"
    for w, wf in ipairs(workflows) do
      out[#out + 1] = ("  subgraph cluster_%d {"):format(w)
      out[#out + 1] = "    label=" .. quote(wf.workflow_name) .. ";"
      body(out, wf, ("w%dn"):format(w), "    ")
      out[#out + 1] = "  }"
    end
  end
  out[#out + 1] = "}\n"
  return table.concat(out, "\n")
end

local function shell_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

--- true when Graphviz's dot program can be run.
function M.have_dot()
  return os.execute("command -v dot >/dev/null 2>&1") == true
end

--- Writes file (format from its extension: dot or gv as they are, anything
-- else through `dot -T<ext>`) from DOT text. Returns true, or nil and why.
function M.render(text, file)
  local ext = file:match("%.([%w]+)$")
  ext = ext and ext:lower()
  if ext == "dot" or ext == "gv" then
    return require("functionfuse._util").write_file(file, text)
  end
  if ext == nil then
    return nil, ("%s: give the file an extension (.dot, .gv, or a format of Graphviz's dot: .svg, .png, .pdf)")
      :format(file)
  end
  if not M.have_dot() then
    return nil, ("%s: writing .%s needs Graphviz's 'dot' program (Debian package graphviz); "
                 .. ".dot files need nothing"):format(file, ext)
  end
  local p = io.popen(("dot -T%s -o %s 2>&1"):format(shell_quote(ext), shell_quote(file)), "w")
  p:write(text)
  local ok, _, code = p:close()
  if not ok then
    return nil, ("%s: Graphviz's dot failed (exit status %s)"):format(file, tostring(code))
  end
  return true
end

local GraphWorkflow = setmetatable({}, { __index = base.Base })
GraphWorkflow.__index = GraphWorkflow
GraphWorkflow.__name = "functionfuse.GraphWorkflow"
GraphWorkflow._options = { "workflow_name", "only_needed", "doc_path", "cache", "quiet", "verbose" }

--- Writes doc_path/NAME.dot, and NAME.svg when Graphviz is installed; runs
-- no node. Returns the two paths (the second nil without Graphviz).
-- wf.last_run then says so: every count 0, drawn = the nodes drawn, and
-- no per-node record (nothing ran).
function GraphWorkflow:run()
  if base.capture then return base.capture(self) end
  self.last_run = { workflow = self.workflow_name, backend = "graph", ok = false, computed = 0,
                    loaded = 0, skipped = 0, failed = 0, retried = 0, damaged = 0,
                    drawn = #self:names(), failures = {} }
  local dir = self.options.doc_path
  if not os.execute("mkdir -p -- " .. shell_quote(dir)) then
    error(("GraphWorkflow: cannot make the directory '%s'"):format(core.escape(dir)), 2)
  end
  local name = self.workflow_name:gsub("[/%z]", "_")
  local text = M.dot { self }
  local dot_file = dir .. "/" .. name .. ".dot"
  local ok, err = M.render(text, dot_file)
  if not ok then error("GraphWorkflow: cannot write " .. err, 2) end
  if not M.have_dot() then
    self.last_run.ok = true
    return dot_file, nil
  end
  local svg_file = dir .. "/" .. name .. ".svg"
  ok, err = M.render(text, svg_file)
  if not ok then error("GraphWorkflow: cannot write " .. err, 2) end
  self.last_run.ok = true
  return dot_file, svg_file
end

function GraphWorkflow:__tostring()
  return ("functionfuse.GraphWorkflow: %s"):format(self.workflow_name)
end

M.GraphWorkflow = function(...)
  local wf = base.new(GraphWorkflow, "GraphWorkflow", ...)
  local dir = wf.options.doc_path
  if type(dir) ~= "string" or dir == "" then
    error("GraphWorkflow: the option 'doc_path' (a directory) is required: "
          .. "GraphWorkflow(node, { workflow_name = \"name\", doc_path = \"doc\" })", 2)
  end
  return wf
end

return M
