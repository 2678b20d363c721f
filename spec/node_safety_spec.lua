-- Handles and arguments under finalizers, deep tables and escaped
-- references: never a crash, never another node's value.
local ff = require "functionfuse"
local core = require "functionfuse.core"
local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow
local storage_factory = require("functionfuse.storage").storage_factory
local H = require "spec.helper"

describe("node handles", function()
  after_each(H.cleanup)

  it("refuse to work once collected, even when a finalizer kept them", function()
    local f = ff.workflow("f", function(x) return x end)
    local keep
    do
      local n = f(1)
      setmetatable({}, { __gc = function() keep = n end })
    end
    collectgarbage(); collectgarbage()
    assert.matches("closed", tostring(keep))
    for _, use in ipairs { function() return keep:name() end, function() return keep.x end,
                           function() return keep:children() end } do
      local ok, err = pcall(use)
      assert.is_false(ok)
      assert.matches("this node handle was collected", err)
    end
  end)

  it("bound the copy of a table argument by the nesting limit, however it is reached", function()
    -- Every table is within three levels of the argument by one path, and
    -- 1100 deep by another: the copy must not follow the long path.
    local src = ff.workflow("src", function() return 1 end)
    local use = ff.workflow("use", function() return 1 end)
    local N = 1100
    local S, hub = {}, {}
    for i = 1, N do S[i] = {} end
    for i = 1, N do hub[i] = S[N + 1 - i] end
    for i = 1, N - 1 do S[i][S[i + 1]] = hub end
    S[N][1] = src()
    local ok, err = pcall(use, S[1])
    assert.is_false(ok)
    assert.matches("nested more than 1000 levels deep", err)
  end)

  it("keep their edges when a finalizer makes nodes while one is being made", function()
    local src = ff.workflow("src", function() return "SRC" end)
    local count = ff.workflow("count", function(t)
      local n = 0
      for _, v in ipairs(t) do if v[1] == "SRC" then n = n + 1 end end
      return n
    end)
    local other = ff.workflow("other", function() return 0 end)
    local keep, armed = {}, true
    local function mk()
      setmetatable({}, { __gc = function()
        if armed then keep[#keep + 1] = other(); mk() end
      end })
    end
    for _ = 1, 5 do mk() end
    collectgarbage("incremental", 1, 400)
    for round = 1, 2 do
      local s = src()
      local items = {}
      for i = 1, 500 do items[i] = { s } end
      local node = count(items)
      assert.are.equal(1, #node:parents(), "round " .. round)
      assert.are.equal(500, LocalWorkflow(node, { workflow_name = "w" .. round }):run())
    end
    armed = false
    collectgarbage("incremental")
  end)

  it("taken from inside the graph by a serializer cannot stand for another node", function()
    local st = storage_factory { kind = "file", options = { path = H.tmpdir() .. "/st" } }
    local leaked
    local mt = {}
    ff.register_serializer(mt, { name = "node_safety_box",
      pack = function(t)
        if type(t.x) == "userdata" then leaked = leaked or t.x end
        return ""
      end,
      unpack = function() return setmetatable({}, mt) end })
    local src = ff.workflow("src", function() return "SRC" end)
    local use = ff.workflow("use", function() return 1 end)
    do
      local u = use(setmetatable({ x = src() }, mt))
      local wf = LocalWorkflow(u, { workflow_name = "w1", quiet = true })
      wf:set_storage(st)
      wf:run()
    end
    assert.is_not_nil(leaked)
    collectgarbage(); collectgarbage()
    local B = ff.workflow("B", function() return "result of B" end)
    local b = B()
    local show = ff.workflow("show", function(t) return t[1] end)
    local ok, err = pcall(show, { leaked, b })
    assert.is_false(ok)
    assert.matches("holds a node reference taken from inside the graph", err)
    ok, err = pcall(show, leaked)
    assert.is_false(ok)
    assert.matches("argument #1 holds a node reference taken from inside the graph", err)
    st:close()
  end)

  it("held by a function but outside the workflow give it a stable fingerprint", function()
    local dir = H.tmpdir()
    local script = H.write(dir .. "/held.lua", [[
      local ff = require "functionfuse"
      local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow
      local other = ff.workflow("other", function() return 1 end)()
      local g = ff.workflow("g", function() return other ~= nil and 7 or 0 end)
      local wf = LocalWorkflow(g(), { workflow_name = "w", quiet = true })
      wf:set_storage(require("functionfuse.storage").storage_factory {
        kind = "file", options = { path = "st" } })
      print(wf:run(), wf.last_run.computed)
    ]])
    local r = H.fflua({ script }, { cwd = dir })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("7\t1\n", r.stdout)
    r = H.fflua({ script }, { cwd = dir })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("7\t0\n", r.stdout)
  end)

  it("survive a finalizer that makes nodes while a workflow's graph is read", function()
    local f = ff.workflow("f", function() return 1 end)
    local n = f()
    for _ = 1, 300 do n = f(n) end
    local wf = LocalWorkflow(n, { workflow_name = "w" })
    local keep = {}
    collectgarbage("incremental", 1, 1000)
    for _ = 1, 10 do
      for _ = 1, 20 do
        setmetatable({}, { __gc = function() for _ = 1, 200 do keep[#keep + 1] = f() end end })
      end
      local names, parents = wf._core:graph()
      assert.are.equal(301, #names)
      assert.are.same({ 300 }, parents[301])
    end
    collectgarbage("incremental")
    assert.is_true(core.graph_size() > 301)
  end)
end)
