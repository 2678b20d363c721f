-- fflua store: the storage from the shell, run as a user would.
local H = require "spec.helper"

local function populate(dir)
  local script = H.write(dir .. "/make.lua", [[
    local ff = require "functionfuse"
    local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow
    local st = require("functionfuse.storage").storage_factory{ kind = "file", options = { path = "st" } }
    local f = ff.workflow("f", function(x) return { n = x, half = x / 2, name = "item" .. x } end)
    local g = ff.workflow("g", function(...) return select("#", ...) end)
    local parts = {}
    for i = 1, 3 do parts[i] = f(i) end
    local wf = LocalWorkflow(g(table.unpack(parts)), { workflow_name = "demo", quiet = true })
    wf:set_storage(st)
    wf:run()
    st:save("other", "blob", ("x"):rep(5000))
  ]])
  local r = H.fflua({ script }, { cwd = dir })
  assert.are.equal(0, r.code, r.stderr)
  return dir .. "/st"
end

describe("fflua store", function()
  after_each(H.cleanup)

  it("lists workflows, then tasks with size, stored time and compute time", function()
    local st = populate(H.tmpdir())
    local r = H.fflua { "store", "ls", st }
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("WORKFLOW%s+TASKS%s+SIZE", r.stdout)
    assert.matches("demo%s+4%s", r.stdout)
    assert.matches("other%s+1%s+4%.9 KiB", r.stdout)
    r = H.fflua { "store", "ls", st, "demo" }
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("TASK%s+SIZE%s+STORED%s+COMPUTE", r.stdout)
    for _, t in ipairs { "f_0000", "f_0001", "f_0002", "g_0000" } do
      assert.matches(t .. "%s+%d+ B%s+%d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d%s+[%d.]+ [um]?s", r.stdout)
    end
    r = H.fflua { "store", "ls", st, "demo", "f_000[12]" }
    assert.are.equal(0, r.code, r.stderr)
    assert.is_nil(r.stdout:find("f_0000", 1, true))
    assert.is_nil(r.stdout:find("g_0000", 1, true))
    assert.is_truthy(r.stdout:find("f_0001", 1, true))
    assert.is_truthy(r.stdout:find("f_0002", 1, true))
  end)

  it("shows a value pretty-printed", function()
    local st = populate(H.tmpdir())
    local r = H.fflua { "store", "show", st, "demo", "f_0001" }
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal('{\n  half = 1.0,\n  n = 2,\n  name = "item2",\n}\n', r.stdout)
  end)

  it("removes tasks by name and by pattern, and whole workflows", function()
    local st = populate(H.tmpdir())
    assert.are.equal(0, H.fflua({ "store", "rm", st, "demo", "g_0000" }).code)
    local r = H.fflua { "store", "rm", st, "demo", "--pattern", "f_000[01]" }
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("removed 2 tasks", r.stdout, 1, true)
    r = H.fflua { "store", "ls", st, "demo" }
    assert.are.equal(0, r.code, r.stderr)
    assert.is_truthy(r.stdout:find("f_0002", 1, true))
    for _, gone in ipairs { "f_0000", "f_0001", "g_0000" } do
      assert.is_nil(r.stdout:find(gone, 1, true), gone)
    end
    assert.are.equal(0, H.fflua({ "store", "rm-workflow", st, "other" }).code)
    r = H.fflua { "store", "ls", st }
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("demo%s+1%s", r.stdout)
    assert.is_nil(r.stdout:find("other", 1, true))
  end)

  it("reports bad input clearly and exits non-zero", function()
    local dir = H.tmpdir()
    local st = populate(dir)
    local r = H.fflua { "store", "show", st, "demo", "nope" }
    assert.are.equal(1, r.code)
    assert.matches("fflua store show: storage '.-' has no task 'nope' in workflow 'demo'", r.stderr)
    r = H.fflua { "store", "ls", dir }
    assert.are.equal(1, r.code)
    assert.matches("is not an fflua storage", r.stderr, 1, true)
    r = H.fflua { "store", "rm", st, "demo", "nope" }
    assert.are.equal(1, r.code)
    assert.matches("fflua store rm: storage '.-' has no task 'nope' in workflow 'demo'", r.stderr)
    r = H.fflua { "store", "frobnicate" }
    assert.are.equal(2, r.code)
    assert.matches("unknown command 'frobnicate'", r.stderr, 1, true)
    -- Usage errors exit 2, as cli.md says.
    r = H.fflua { "store", "ls" }
    assert.are.equal(2, r.code)
    assert.are.equal("fflua store ls: ls takes PATH [WORKFLOW [GLOB]]\n", r.stderr)
    r = H.fflua { "store", "show", st, "demo" }
    assert.are.equal(2, r.code)
    assert.are.equal("fflua store show: show takes PATH WORKFLOW TASK\n", r.stderr)
    r = H.fflua { "store", "check", st, "extra" }
    assert.are.equal(2, r.code)
    r = H.fflua { "store" }
    assert.are.equal(2, r.code)
    assert.are.equal("", r.stdout)
    assert.matches("^usage: fflua store ls PATH", r.stderr)
    r = H.fflua { "store", "--help" }
    assert.are.equal(0, r.code)
    assert.matches("usage: fflua store ls PATH", r.stdout, 1, true)
    -- Nothing was lost along the way.
    r = H.fflua { "store", "ls", st, "demo" }
    assert.matches("g_0000", r.stdout, 1, true)
  end)
end)
