-- Whole workflows, as functionfuse has them: a workflow is the roots of the
-- nodes it is given and every node that descends from them. functionfuse's
-- basic and advanced ML examples (their structure, with a storage, in
-- fflua processes of their own), nodes never kept in a variable, the
-- only_needed option, log_nodes, parents and children, backend info, and
-- the release of a graph once nothing refers to it.
local ff = require "functionfuse"
local core = require "functionfuse.core"
local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow
local storage_factory = require("functionfuse.storage").storage_factory
local H = require "spec.helper"

-- The pieces of functionfuse's examples, in plain Lua: a dataset of points
-- from a fixed generator, a split, and a "model" (a nearest-mean
-- classifier with a parameter); each node prints "RAN <name>".
local PRELUDE = [==[
local ff = require "functionfuse"
local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow
local storage_factory = require("functionfuse.storage").storage_factory

local function dataset(seed)
  local x, y, s = {}, {}, seed
  for i = 1, 200 do
    s = (s * 1103515245 + 12345) % 2147483648
    x[i] = s / 2147483648
    y[i] = x[i] > 0.5 and 1 or 0
  end
  print("RAN dataset" .. seed)
  return { x, y }
end

local function train_test_split(x, y)
  print("RAN split")
  return { X_train = table.move(x, 1, 150, 1, {}), y_train = table.move(y, 1, 150, 1, {}),
           X_test = table.move(x, 151, 200, 1, {}), y_test = table.move(y, 151, 200, 1, {}) }
end

local function train_model(name, shift, x, y)
  local sum, n = { [0] = 0, [1] = 0 }, { [0] = 0, [1] = 0 }
  for i = 1, #x do sum[y[i]] = sum[y[i]] + x[i]; n[y[i]] = n[y[i]] + 1 end
  print("RAN model " .. name)
  return { name = name, threshold = (sum[0] / n[0] + sum[1] / n[1]) / 2 + shift }
end

local openml_dataset = ff.workflow("openml_dataset", function() return dataset(7) end)
local split = ff.workflow("train_test_split", train_test_split)
local train = ff.workflow("train_model", train_model)
local shifts = { 0, 0.01, -0.01, 0.02 }

local function report(wf)
  local r = wf.last_run
  print(("COUNTS computed=%d loaded=%d skipped=%d"):format(r.computed, r.loaded, r.skipped))
  for _, name in ipairs(wf:query("^model.*$"):names()) do print("QUERY " .. name) end
end
]==]

-- Runs the script (the prelude, then src) in a fresh fflua in dir; returns
-- its stdout, the names it printed as RAN, and the names of QUERY lines.
local function run_example(dir, src)
  local script = H.write(dir .. "/pipeline.lua", PRELUDE .. src)
  local r = H.fflua({ script }, { cwd = dir })
  assert.are.equal(0, r.code, r.stderr)
  local ran, query = {}, {}
  for line in r.stdout:gmatch("RAN ([^\n]+)") do ran[#ran + 1] = line end
  for line in r.stdout:gmatch("QUERY ([^\n]+)") do query[#query + 1] = line end
  return r.stdout, ran, query
end

local function run(...)
  local args = table.pack(...)
  args[args.n + 1] = { workflow_name = "spec" }
  return LocalWorkflow(table.unpack(args, 1, args.n + 1)):run()
end

describe("a whole workflow", function()
  after_each(H.cleanup)

  it("runs functionfuse's basic ML example given only the dataset node", function()
    local dir = H.tmpdir()
    local src = [[
local dataset = openml_dataset():set_name("dataset")
local dataset_split = split(dataset[1], dataset[2]):set_name("dataset_split")
for i, shift in ipairs(shifts) do -- the models are not kept in variables
  train("m" .. i, shift, dataset_split.X_train, dataset_split.y_train):set_name("model" .. i)
end
collectgarbage("collect")
local wf = LocalWorkflow(dataset, { workflow_name = "classifier", quiet = true })
wf:set_storage(storage_factory { kind = "file", options = { path = "storage" } })
local data = wf:run()
print("DATASET " .. #data[1])
report(wf)
]]
    local out, ran, query = run_example(dir, src)
    assert.are.same({ "dataset7", "split", "model m1", "model m2", "model m3", "model m4" }, ran)
    assert.matches("DATASET 200", out)
    assert.matches("COUNTS computed=6 loaded=0 skipped=0", out)
    assert.are.same({ "model1", "model2", "model3", "model4" }, query)
    -- Every model is stored, as the notebook of the example reads them back.
    local st = storage_factory { kind = "file", options = { path = dir .. "/storage" } }
    assert.are.same({ "model1", "model2", "model3", "model4" },
                    st:list_tasks("classifier", "model*"))
    assert.are.equal("m3", st:read_task("classifier", "model3").name)
    st:close()
    -- A second run computes nothing: the dataset is read (it is returned),
    -- the others are stored and not read.
    out, ran, query = run_example(dir, src)
    assert.are.same({}, ran)
    assert.matches("COUNTS computed=0 loaded=6 skipped=0", out)
    assert.are.same({ "model1", "model2", "model3", "model4" }, query)
  end)

  it("runs functionfuse's advanced ML example: several datasets times several models", function()
    local dir = H.tmpdir()
    local src = [[
local datasets = {}
for d, seed in ipairs { 11, 12, 13 } do
  local ds = ff.workflow("dataset", function() return dataset(seed) end)():set_name("ds" .. d)
  datasets[d] = ds
  local sp = split(ds[1], ds[2]):set_name("ds" .. d .. "_split")
  for i, shift in ipairs(shifts) do
    train(d .. "/" .. i, shift, sp.X_train, sp.y_train):set_name(("model_ds%d_%d"):format(d, i))
  end
end
collectgarbage("collect")
local args = { table.unpack(datasets) }
args[#args + 1] = { workflow_name = "classifiers", quiet = true }
local wf = LocalWorkflow(table.unpack(args))
wf:set_storage(storage_factory { kind = "file", options = { path = "storage" } })
local a, b, c = wf:run()
print("DATASETS " .. #a[1] .. " " .. #b[1] .. " " .. #c[1])
report(wf)
]]
    local out, ran, query = run_example(dir, src)
    assert.are.equal(3 + 3 + 12, #ran)
    assert.matches("DATASETS 200 200 200", out)
    assert.matches("COUNTS computed=18 loaded=0 skipped=0", out)
    local models = {}
    for d = 1, 3 do
      for i = 1, 4 do models[#models + 1] = ("model_ds%d_%d"):format(d, i) end
    end
    table.sort(query)
    assert.are.same(models, query)
    local st = storage_factory { kind = "file", options = { path = dir .. "/storage" } }
    assert.are.same(models, st:list_tasks("classifiers", "model_*"))
    st:close()
    out, ran = run_example(dir, src)
    assert.are.same({}, ran)
    assert.matches("COUNTS computed=0 loaded=18 skipped=0", out)
  end)

  it("reads only what a node that runs needs, and the leaves, from the storage", function()
    local dir = H.tmpdir()
    local src = [[
local dataset = openml_dataset():set_name("dataset")
local dataset_split = split(dataset[1], dataset[2]):set_name("dataset_split")
train("m1", 0, dataset_split.X_train, dataset_split.y_train):set_name("model1")
train("m2", os.getenv("SHIFT") and 0.5 or 0, dataset_split.X_train, dataset_split.y_train)
  :set_name("model2")
local wf = LocalWorkflow(dataset, { workflow_name = "classifier", quiet = true, verbose = true })
wf:set_storage(storage_factory { kind = "file", options = { path = "storage" } })
wf:run()
report(wf)
]]
    run_example(dir, src)
    local script = H.write(dir .. "/pipeline.lua", PRELUDE .. src)
    local r = H.fflua({ script }, { cwd = dir, env = { SHIFT = "1" } })
    assert.are.equal(0, r.code, r.stderr)
    -- model2 changed: it runs, so its parent is read; the dataset is the
    -- leaf, read; model1 is stored and not read.
    assert.matches("RAN model m2", r.stdout)
    assert.not_matches("RAN model m1", r.stdout)
    assert.matches("COUNTS computed=1 loaded=3 skipped=0", r.stdout)
    assert.matches("node 'dataset_split' is read from the storage", r.stderr, 1, true)
    assert.matches("node 'dataset' is read from the storage", r.stderr, 1, true)
    assert.matches("node 'model1' is in the storage", r.stderr, 1, true)
    assert.not_matches("node 'model1' is read", r.stderr, 1, true)
  end)

  it("runs nodes built in a loop and never kept, after a collection", function()
    local calls = {}
    local load = ff.workflow("load", function() return 10 end)
    local train = ff.workflow("train", function(m, data)
      calls[#calls + 1] = m
      return m * data
    end)
    local data = load()
    for _, m in ipairs { 1, 2, 3 } do train(m, data) end
    collectgarbage("collect")
    collectgarbage("collect")
    assert.are.equal(10, run(data))
    assert.are.same({ 1, 2, 3 }, calls)
  end)

  it("leaves out a descendant that also needs a node from outside, as functionfuse does", function()
    local f = ff.workflow("f", function(...) return select("#", ...) end)
    local a, other = f(), f()
    local b = f(a)
    local c = f(b, other)
    local wf = LocalWorkflow(a, { workflow_name = "w" })
    assert.are.same({ a:name(), b:name() }, wf:names())
    assert.are.same({ a:name(), other:name(), b:name(), c:name() },
                    LocalWorkflow(c, { workflow_name = "w" }):names())
  end)

  it("lists its nodes in creation order, in find_nodes, query and names", function()
    local f = ff.workflow("f", function() return 1 end)
    local root = f()
    local x = f(root)
    local y = f(root)
    local z = f(y, x)
    local wf = LocalWorkflow(x, { workflow_name = "w" })
    local names = { root:name(), x:name(), y:name(), z:name() }
    assert.are.same(names, wf:names())
    local found = {}
    for i, n in ipairs(wf:find_nodes()) do found[i] = n:name() end
    assert.are.same(names, found)
    assert.are.same(names, wf:query(".*"):names())
  end)

  it("applies plugins and remote args to the nodes below the given ones", function()
    local seen = {}
    local plugin = {
      local_initialize = function() end,
      remote_initialize = function() return function() seen[#seen + 1] = true end end,
    }
    local load = ff.workflow("load", function() return 1 end)
    local train = ff.workflow("train", function(d) return d end)
    local data = load()
    train(data)
    train(data)
    local wf = LocalWorkflow(data, { workflow_name = "w" })
    assert.are.equal(2, #wf:query("^train.*$"):set_plugins(plugin))
    wf:run()
    assert.are.equal(2, #seen)
  end)

  it("with only_needed runs the given nodes and their ancestors alone", function()
    local ran = {}
    local f = ff.workflow("f", function(name) ran[#ran + 1] = name; return name end)
    local a = f("a")
    local b = f(a)
    f(b)
    f(a)
    local wf = LocalWorkflow(b, { workflow_name = "w", only_needed = true })
    assert.are.same({ a:name(), b:name() }, wf:names())
    assert.are.equal("a", wf:run())
    assert.are.equal(2, #ran)
    assert.has_error(function() LocalWorkflow(b, { workflow_name = "w", only_needed = 1 }) end,
                     "LocalWorkflow: option 'only_needed' must be a boolean")
    -- Fingerprint caching keeps working: the second run reads the leaf alone.
    local g = ff.workflow("g", function(x) return x end)
    local ga = g("a")
    local gb = g(ga)
    g(gb)
    local st = storage_factory { kind = "file", options = { path = H.tmpdir() } }
    local function once()
      local w = LocalWorkflow(gb, { workflow_name = "w", only_needed = true, quiet = true })
      w:set_storage(st)
      w:run()
      return w.last_run
    end
    assert.are.same({ computed = 2, loaded = 0, skipped = 0, damaged = 0 }, H.counts(once()))
    assert.are.same({ computed = 0, loaded = 1, skipped = 1, damaged = 0 }, H.counts(once()))
  end)

  it("always runs log_nodes, and never reads them from or saves them to the storage", function()
    local plotted = 0
    local load = ff.workflow("load", function() return 5 end)
    local plot = ff.workflow("plot", function(x) plotted = plotted + 1; return x end)
    local train = ff.workflow("train", function(x) return x * 2 end)
    local data = load()
    plot(data)
    train(data)
    local st = storage_factory { kind = "file", options = { path = H.tmpdir() } }
    local function once()
      local wf = LocalWorkflow(data, { workflow_name = "w", quiet = true })
      wf:set_storage(st)
      assert.are.equal(1, #wf:log_nodes("^plot.*$"))
      wf:run()
      return wf.last_run
    end
    assert.are.same({ computed = 3, loaded = 0, skipped = 0, damaged = 0 }, H.counts(once()))
    assert.are.equal(1, plotted)
    -- The plot runs again, with its parent read back; train is stored.
    assert.are.same({ computed = 1, loaded = 2, skipped = 0, damaged = 0 }, H.counts(once()))
    assert.are.equal(2, plotted)
    assert.are.same({ "load_0000", "train_0000" }, st:list_tasks("w", "*"))
  end)
end)

describe("a node", function()
  it("lists its parents and its children as nodes, in order", function()
    local f = ff.workflow("f", function() return 1 end)
    local a, b = f(), f()
    local c = f(b, a, b)
    local d = f(a)
    local e = f({ x = { c } }, d)
    local function names(t)
      local r = {}
      for i, n in ipairs(t) do r[i] = n:name() end
      return r
    end
    assert.are.same({ b:name(), a:name() }, names(c:parents()))
    assert.are.same({ c:name(), d:name() }, names(a:children()))
    assert.are.same({ d:name(), c:name() }, names(e:parents()))
    assert.are.same({}, names(e:children()))
    assert.are.same({}, names(a:parents()))
    assert.is_true(a:children()[1] == c)
  end)

  it("has a table of backend info, as functionfuse's Node", function()
    local n = ff.workflow("f", function() return 1 end)()
    assert.are.same({}, n:backend_info())
    n:set_backend_info("print", true)
    n:set_backend_info("owner", "me")
    assert.are.same({ print = true, owner = "me" }, n:backend_info())
    assert.are.equal(n:backend_info(), n:backend_info())
    assert.has_error(function() n:set_backend_info(nil, 1) end,
                     "bad argument #1 to 'set_backend_info' (key must not be nil)")
  end)
end)

describe("a graph", function()
  it("is released once nothing refers to any of its nodes", function()
    collectgarbage("collect")
    collectgarbage("collect")
    local base = core.graph_size()
    local f = ff.workflow("f", function(x) return x end)
    local kept = f(1)
    f(kept) -- one graph, kept through its root
    local function another()
      local r = f(2)
      for i = 1, 50 do f(r, { i, r }) end
      return r
    end
    local dropped = another()
    assert.are.equal(base + 53, core.graph_size())
    assert.are.equal(2, run(dropped))
    dropped = nil -- luacheck: ignore 311 (dropped, so that the collector frees the graph)
    collectgarbage("collect")
    collectgarbage("collect")
    assert.are.equal(base + 2, core.graph_size()) -- the other graph stays whole
    assert.are.equal(1, run(kept))
    kept = nil -- luacheck: ignore 311
    collectgarbage("collect")
    collectgarbage("collect")
    assert.are.equal(base, core.graph_size())
  end)

  it("is released under a limit on address space too, where weak references are handles", function()
    if H.sanitize then
      pending("ulimit -v cannot limit a process under AddressSanitizer, which reserves " ..
              "terabytes of address space for its shadow memory")
      return
    end
    local dir = H.tmpdir()
    local script = H.write(dir .. "/limited.lua", [[
local ff = require "functionfuse"
local core = require "functionfuse.core"
local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow
local f = ff.workflow("f", function(i) return i end)
local total = ff.workflow("total", function(t) return t[1] + t[2] + t.k[1] end)
local function once()
  local root = f(1)
  local t = { f(2), f(root), k = { f(4) } }
  local n = total(t)
  return LocalWorkflow(root, n, { workflow_name = "w" }):run()
end
local base = core.graph_size()
for _ = 1, 100 do assert(select(2, once()) == 7) end
collectgarbage("collect")
collectgarbage("collect")
print(core.graph_size() - base)
]])
    local r = H.run({ "/bin/sh", "-c", "ulimit -v 2000000 && exec \"$0\" \"$1\"", H.bin, script })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("0\n", r.stdout)
  end)

  it("does not grow over 2,000 build-and-run cycles", function()
    local f = ff.workflow("f", function(a, b) return a + (b or 0) end)
    local g = ff.workflow("g", function(a, t) return a + t[1] + t[2] end)
    local function cycle(i)
      local r = f(i)
      local s = f(r, 1)
      g(s, { r, s })
      return LocalWorkflow(r, { workflow_name = "c" }):run()
    end
    for i = 1, 200 do cycle(i) end
    collectgarbage("collect")
    collectgarbage("collect")
    local base, mem = core.graph_size(), collectgarbage("count")
    for i = 1, 2000 do assert.are.equal(i, cycle(i)) end
    collectgarbage("collect")
    collectgarbage("collect")
    assert.are.equal(base, core.graph_size())
    assert.is_true(collectgarbage("count") < mem + 64, collectgarbage("count") - mem)
  end)
end)
