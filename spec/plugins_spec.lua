-- Plugins: InitializerPlugin, RandomStatePlugin, PluginCollection, and the
-- rules of when local_initialize and remote_initialize run.
local ff = require "functionfuse"
local plugins = require "functionfuse.backends.plugins"
local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow
local storage_factory = require("functionfuse.storage").storage_factory
local H = require "spec.helper"

describe("plugins", function()
  after_each(H.cleanup)

  it("run the pre-run function right before the node, wherever it is attached", function()
    local log = {}
    local f = ff.workflow("f", function(x) log[#log + 1] = "run " .. x; return x end)
    local a = f("a")
    local b = f(a)
    local wf = LocalWorkflow(b, { workflow_name = "p" })
    wf:query("f_0001"):set_plugins(plugins.InitializerPlugin(function() log[#log + 1] = "init" end))
    wf:run()
    assert.are.same({ "run a", "init", "run a" }, log)
  end)

  it("call local_initialize for every node in order before anything runs", function()
    local log = {}
    local p = {
      local_initialize = function() log[#log + 1] = "local" end,
      remote_initialize = function() log[#log + 1] = "remote"; return function() log[#log + 1] = "pre" end end,
    }
    local f = ff.workflow("f", function() log[#log + 1] = "run" end)
    local a = f()
    local b = f(a)
    local wf = LocalWorkflow(b, { workflow_name = "p" })
    wf:set_plugin(".*", p)
    wf:run()
    assert.are.same({ "local", "remote", "local", "remote", "pre", "run", "pre", "run" }, log)
  end)

  it("RandomStatePlugin gives each node the next seed, wrapping from max to min", function()
    local seen = {}
    local rs = plugins.RandomStatePlugin { min = 5, max = 7, seed = 5,
                                           seed_func = function(s) seen[#seen + 1] = s end }
    local f = ff.workflow("f", function(x) return x end)
    local x = f(0)
    for _ = 1, 4 do x = f(x) end
    local wf = LocalWorkflow(x, { workflow_name = "seeds" })
    wf:query(".*"):set_plugins(rs)
    wf:run()
    assert.are.same({ 6, 7, 5, 6, 7 }, seen)
  end)

  it("RandomStatePlugin seeds math.random by default, so nodes see their seed", function()
    local rs = plugins.RandomStatePlugin { seed = 41 }
    local draw = ff.workflow("draw", function() return math.random(1 << 30) end)
    local d = draw()
    local wf = LocalWorkflow(d, { workflow_name = "r" })
    wf:set_plugin("draw_.*", rs)
    local got = wf:run()
    math.randomseed(42)
    assert.are.equal(math.random(1 << 30), got)
  end)

  it("RandomStatePlugin never overflows at the 64-bit limit", function()
    local seen = {}
    local rs = plugins.RandomStatePlugin(math.mininteger, math.maxinteger, math.maxinteger - 1,
                                         function(s) seen[#seen + 1] = s end)
    local f = ff.workflow("f", function() end)
    local a = f()
    local b = f(a)
    local c = f(b)
    local wf = LocalWorkflow(c, { workflow_name = "limits" })
    wf:set_plugin(".*", rs)
    wf:run()
    assert.are.same({ math.maxinteger, math.mininteger, math.mininteger + 1 }, seen)
  end)

  it("RandomStatePlugin checks its arguments", function()
    assert.has_error(function() plugins.RandomStatePlugin { min = 10, max = 1 } end,
      "RandomStatePlugin: min (10) is greater than max (1)")
    -- 0xffffffffffffffff is the integer -1 in Lua 5.4.
    assert.has_error(function() plugins.RandomStatePlugin { min = 0, max = 0xffffffffffffffff } end,
      "RandomStatePlugin: min (0) is greater than max (-1)")
    assert.has_error(function() plugins.RandomStatePlugin { seed = 1.5 } end,
      "RandomStatePlugin: 'seed' must be an integer, got float")
    assert.has_error(function() plugins.RandomStatePlugin { seed_func = 3 } end,
      "RandomStatePlugin: 'seed_func' must be a function, got number")
  end)

  it("PluginCollection runs its plugins in order", function()
    local log = {}
    local function mark(tag) return plugins.InitializerPlugin(function() log[#log + 1] = tag end) end
    local f = ff.workflow("f", function() log[#log + 1] = "run" end)
    local n = f()
    local wf = LocalWorkflow(n, { workflow_name = "c" })
    wf:query(".*"):set_plugins(plugins.PluginCollection { mark("one"), mark("two") })
    wf:run()
    assert.are.same({ "one", "two", "run" }, log)
    assert.has_error(function() plugins.PluginCollection { {} } end,
      "PluginCollection: plugin #1 has no method 'local_initialize'")
  end)

  it("an object missing a method is refused when attached", function()
    local n = ff.workflow("f", function() end)()
    local wf = LocalWorkflow(n, { workflow_name = "bad" })
    assert.has_error(function() wf:query(".*"):set_plugins({ local_initialize = function() end }) end,
      "bad argument #1 to 'set_plugins' (the plugin has no method 'remote_initialize')")
    assert.has_error(function() wf:set_plugin(".*", 42) end,
      "bad argument #1 to 'set_plugins' (plugin expected, got number)")
  end)

  it("a failing plugin names the node and the step", function()
    local n = ff.workflow("f", function() end)():set_name("victim")
    local wf = LocalWorkflow(n, { workflow_name = "bad" })
    wf:set_plugin(".*", { local_initialize = function() error("no luck") end,
                          remote_initialize = function() end })
    local ok, err = pcall(wf.run, wf)
    assert.is_false(ok)
    assert.matches("^plugin of node 'victim': local_initialize failed: [^\n]*no luck", err)
    wf:set_plugin(".*", { local_initialize = function() end, remote_initialize = function() return 5 end })
    ok, err = pcall(wf.run, wf)
    assert.is_false(ok)
    assert.are.equal("plugin of node 'victim': remote_initialize returned a number, not a function", err)
  end)

  it("start from the same state on every run in one process", function()
    local draw = ff.workflow("draw", function() return math.random(1000) end)
    local leaves = {}
    for i = 1, 4 do leaves[i] = draw() end
    leaves[#leaves + 1] = { workflow_name = "again" }
    local wf = LocalWorkflow(table.unpack(leaves))
    local rs = plugins.RandomStatePlugin { min = 0, max = 1000, seed = 42 }
    local seen = {}
    local counter = { local_initialize = function(self) self.n = self.n + 1; seen[#seen + 1] = self.n end,
                      remote_initialize = function() end, n = 0 }
    wf:set_plugin(".*", plugins.PluginCollection { rs, counter })
    local first = { wf:run() }
    local second = { wf:run() }
    assert.are.same(first, second)
    assert.are.same({ 1, 2, 3, 4, 1, 2, 3, 4 }, seen)
    -- The plugins the script made are as it made them.
    assert.are.equal(42, rs.seed)
    assert.are.equal(0, counter.n)
  end)

  it("let a stored workflow's second run load everything", function()
    local dir = H.tmpdir()
    local draw = ff.workflow("draw", function(x) return x + math.random(1000) end)
    local a = draw(0)
    local b = draw(a)
    local wf = LocalWorkflow(b, { workflow_name = "stored", quiet = true })
    wf:set_plugin(".*", plugins.RandomStatePlugin { min = 0, max = 1000, seed = 7 })
    local st = storage_factory { kind = "file", options = { path = dir } }
    wf:set_storage(st)
    local first = wf:run()
    assert.are.equal(2, wf.last_run.computed)
    assert.are.equal(first, wf:run())
    assert.are.equal(0, wf.last_run.computed)
    assert.are.equal(2, wf.last_run.loaded) -- a (checked, not read) and b
    st:close()
  end)

  it("give the same seeds on every run of the same script", function()
    local script = H.write(H.tmpdir() .. "/seeds.lua", [[
      local ff = require "functionfuse"
      local plugins = require "functionfuse.backends.plugins"
      local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow
      local draw = ff.workflow(function(prev) return (prev or "") .. math.random(1000) .. " " end)
      local x
      for _ = 1, 5 do x = draw(x) end
      local wf = LocalWorkflow(x, { workflow_name = "seeds" })
      wf:query("draw_.*"):set_plugins(plugins.RandomStatePlugin { min = 0, max = 100, seed = 7 })
      print(wf:run())
    ]])
    local r1, r2 = H.fflua({ script }), H.fflua({ script })
    assert.are.equal(0, r1.code, r1.stderr)
    assert.matches("^%d+ %d+ %d+ %d+ %d+ \n$", r1.stdout)
    assert.are.equal(r1.stdout, r2.stdout)
  end)
end)
