-- GraphWorkflow and `fflua graph`: a workflow drawn, never run.
local H = require "spec.helper"

-- A diamond whose nodes leave a file behind when they run, so a spec can
-- tell that none did.
local diamond = [[
  local ff = require "functionfuse"
  local mark = ...
  local function touch(what)
    if mark then local f = assert(io.open(mark .. "/" .. what, "w")); f:close() end
  end
  local source = ff.workflow("source", function() touch("source"); return 2 end)
  local double = ff.workflow("double", function(x) touch("double"); return 2 * x end)
  local square = ff.workflow("square", function(x) touch("square"); return x * x end)
  local combine = ff.workflow("combine", function(a, b) touch("combine"); return a + b end)
  local s = source()
  local top = combine(double(s), square(s))
]]

local function lines(s)
  local t = {}
  for l in s:gmatch("[^\n]+") do t[#t + 1] = l end
  return t
end

local expected_diamond = {
  'digraph "diamond" {',
  "  node [shape=box];",
  '  n1 [label="source_0000"];',
  '  n2 [label="double_0000"];',
  '  n3 [label="square_0000"];',
  '  n4 [label="combine_0000"];',
  "  n1 -> n2;",
  "  n1 -> n3;",
  "  n2 -> n4;",
  "  n3 -> n4;",
  "}",
}

local have_dot = os.execute("command -v dot >/dev/null 2>&1") == true

local function listdir(dir)
  local p = io.popen("ls -A '" .. dir .. "'")
  local t = {}
  for l in p:lines() do t[#t + 1] = l end
  p:close()
  table.sort(t)
  return t
end

describe("GraphWorkflow", function()
  after_each(H.cleanup)

  it("writes the workflow's DOT and SVG into doc_path, running no node", function()
    local dir = H.tmpdir()
    os.execute("mkdir '" .. dir .. "/marks'")
    local script = H.write(dir .. "/g.lua", diamond .. [[
      local GraphWorkflow = require("functionfuse.backends.builtin.graphback").GraphWorkflow
      local wf = GraphWorkflow(top, { workflow_name = "diamond", doc_path = "doc/graphs" })
      local d, s = wf:run()
      print(d, s)
      local lr = wf.last_run
      io.stderr:write(("LAST %s %s %s %d %d %s\n"):format(lr.backend, lr.workflow, tostring(lr.ok),
                                                        lr.computed, lr.drawn, tostring(lr.nodes)))
    ]])
    local r = H.fflua({ script, dir .. "/marks" }, { cwd = dir })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.same({}, listdir(dir .. "/marks"))
    -- Its last_run: nothing ran, four nodes drawn, no per-node record.
    assert.are.equal("LAST graph diamond true 0 4 nil\n", r.stderr)
    assert.are.same(expected_diamond, lines(H.read(dir .. "/doc/graphs/diamond.dot")))
    if have_dot then
      assert.are.equal("doc/graphs/diamond.dot\tdoc/graphs/diamond.svg\n", r.stdout)
      local svg = H.read(dir .. "/doc/graphs/diamond.svg")
      assert.matches("<svg", svg)
      for _, name in ipairs { "source_0000", "double_0000", "square_0000", "combine_0000" } do
        assert.truthy(svg:find(">" .. name .. "<", 1, true), name)
      end
    else
      assert.are.equal("doc/graphs/diamond.dot\tnil\n", r.stdout)
    end
  end)

  it("requires doc_path and workflow_name", function()
    local dir = H.tmpdir()
    local script = H.write(dir .. "/g.lua", diamond .. [[
      local GraphWorkflow = require("functionfuse.backends.builtin.graphback").GraphWorkflow
      GraphWorkflow(top, { workflow_name = "diamond" })
    ]])
    local r = H.fflua({ script }, { cwd = dir })
    assert.are.equal(1, r.code)
    assert.matches("g%.lua:%d+: GraphWorkflow: the option 'doc_path' %(a directory%) is required", r.stderr)
  end)

  it("escapes names for DOT", function()
    local dir = H.tmpdir()
    local script = H.write(dir .. "/g.lua", [[
      local ff = require "functionfuse"
      local GraphWorkflow = require("functionfuse.backends.builtin.graphback").GraphWorkflow
      local f = ff.workflow("f", function() end)
      local n = f():set_name('say "hi" \\ \27[31m')
      GraphWorkflow(n, { workflow_name = "w", doc_path = "." }):run()
    ]])
    local r = H.fflua({ script }, { cwd = dir })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.same({ 'digraph "w" {', "  node [shape=box];",
                      [[  n1 [label="say \"hi\" \\ \\x1b[31m"];]], "}" },
                    lines(H.read(dir .. "/w.dot")))
  end)
end)

describe("fflua graph", function()
  after_each(H.cleanup)

  local function setup()
    local dir = H.tmpdir()
    os.execute("mkdir '" .. dir .. "/marks'")
    local script = H.write(dir .. "/pipeline.lua", diamond .. [[
      local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow
      local wf = LocalWorkflow(top, { workflow_name = "diamond" })
      print("before the run")
      local r = wf:run()
      print("after the run", r)
    ]])
    return dir, script
  end

  it("prints the DOT of the script's workflow; the script's output goes to stderr", function()
    local dir, script = setup()
    local r = H.fflua({ "graph", script, dir .. "/marks" }, { cwd = dir })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.same(expected_diamond, lines(r.stdout))
    assert.are.equal("before the run\nafter the run\tnil\n", r.stderr)
    assert.are.same({}, listdir(dir .. "/marks"))
  end)

  it("writes -o FILE.dot, and -o FILE.svg through Graphviz", function()
    local dir, script = setup()
    local r = H.fflua({ "graph", "-o", "out.dot", script }, { cwd = dir })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("", r.stdout)
    assert.are.same(expected_diamond, lines(H.read(dir .. "/out.dot")))
    r = H.fflua({ "graph", "-o", "out.svg", script }, { cwd = dir })
    if have_dot then
      assert.are.equal(0, r.code, r.stderr)
      assert.matches("<svg", H.read(dir .. "/out.svg"))
    else
      assert.are.equal(1, r.code)
      assert.matches("needs Graphviz's 'dot' program", r.stderr)
    end
  end)

  it("draws every workflow a script runs, one cluster each", function()
    local dir = H.tmpdir()
    local script = H.write(dir .. "/two.lua", [[
      local ff = require "functionfuse"
      local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow
      local ClusterWorkflow = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
      local f = ff.workflow("f", function(x) return x end)
      local g = ff.workflow("g", function(x) return x end)
      local a = f(1)
      LocalWorkflow(g(a), { workflow_name = "one" }):run()
      ClusterWorkflow(f(2), { workflow_name = "two" }):run()
    ]])
    local r = H.fflua({ "graph", script }, { cwd = dir })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.same({
      'digraph "workflows" {', "  node [shape=box];",
      "  subgraph cluster_1 {", '    label="one";',
      '    w1n1 [label="f_0000"];', '    w1n2 [label="g_0000"];', "    w1n1 -> w1n2;", "  }",
      "  subgraph cluster_2 {", '    label="two";',
      '    w2n1 [label="f_0001"];', "  }",
      "}" }, lines(r.stdout))
  end)

  it("says what is wrong with its arguments and scripts", function()
    local dir, script = setup()
    local r = H.fflua({ "graph" }, { cwd = dir })
    assert.are.equal(2, r.code)
    assert.matches("^fflua graph: give the script to draw\nusage: fflua graph", r.stderr)
    r = H.fflua({ "graph", "--otput", "x.dot", script }, { cwd = dir })
    assert.are.equal(2, r.code)
    assert.matches("^fflua graph: unknown option '%-%-otput'", r.stderr)
    r = H.fflua({ "graph", "-o", "noext", script }, { cwd = dir })
    assert.are.equal(1, r.code)
    assert.matches("give the file an extension", r.stderr)
    r = H.fflua({ "graph", "missing.lua" }, { cwd = dir })
    assert.are.equal(1, r.code)
    assert.matches("^fflua graph: cannot open missing%.lua", r.stderr)
    local none = H.write(dir .. "/none.lua", "print('no workflow here')")
    r = H.fflua({ "graph", none }, { cwd = dir })
    assert.are.equal(1, r.code)
    assert.matches("ran no workflow: there is nothing to draw", r.stderr)
    assert.are.equal("", r.stdout)
    r = H.fflua({ "graph", "--help" })
    assert.are.equal(0, r.code)
    assert.matches("^usage: fflua graph %[%-o FILE%] SCRIPT", r.stdout)
  end)

  it("draws what ran before the script failed, and warns", function()
    local dir = H.tmpdir()
    local script = H.write(dir .. "/fails.lua", diamond .. [[
      local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow
      local r = LocalWorkflow(top, { workflow_name = "diamond" }):run()
      print(r + 1)
    ]])
    local r = H.fflua({ "graph", script }, { cwd = dir })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.same(expected_diamond, lines(r.stdout))
    assert.matches("^fflua graph: warning: the script stopped after 1 workflow run %(run%(%) returns "
                   .. "nothing here%): [^\n]*fails%.lua:%d+: attempt to perform arithmetic", r.stderr)
  end)
end)
