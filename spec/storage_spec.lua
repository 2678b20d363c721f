-- Storage: functionfuse's storage API over LMDB, caching by fingerprint or
-- by name, damaged results, durability across kill -9.
local ff = require "functionfuse"
local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow
local storage_factory = require("functionfuse.storage").storage_factory
local H = require "spec.helper"

local function new_storage(dir)
  return storage_factory { kind = "file", options = { path = dir or H.tmpdir() } }
end

--- Runs a pipeline script (written to a temp file) with fflua, which must
-- succeed; returns the result and the lines the script printed as
-- "RAN <name>".
local function run_script(dir, src, extra_env)
  local script = H.write(dir .. "/pipeline.lua", src)
  local r = H.fflua({ script }, { cwd = dir, env = extra_env })
  assert.are.equal(0, r.code, r.stderr)
  local ran = {}
  for name in r.stdout:gmatch("RAN (%S+)") do ran[#ran + 1] = name end
  table.sort(ran)
  return r, ran
end

describe("storage", function()
  after_each(H.cleanup)

  -- functionfuse's own storage test: the same workflow twice on one storage.
  it("loads every result on the second run and still gives -1", function()
    local storage = new_storage()
    local function once()
      local sum = ff.workflow(function(a, b) return a + b end)
      local minus = ff.workflow(function(a, b) return a - b end)
      local a, b = 1, 1
      local s1 = sum(a, b)
      local s2 = sum(s1, b)
      local m = minus(s1, s2)
      local wf = LocalWorkflow(m, { workflow_name = "storage_test", quiet = true })
      wf:set_storage(storage)
      return wf:run(), wf.last_run
    end
    local r1, run1 = once()
    local r2, run2 = once()
    assert.are.equal(-1, r1)
    assert.are.equal(-1, r2)
    assert.are.same({ computed = 3, loaded = 0, skipped = 0, damaged = 0 }, H.counts(run1))
    -- Everything is stored: the leaf is read, the others are counted without
    -- being read.
    assert.are.same({ computed = 0, loaded = 3, skipped = 0, damaged = 0 }, H.counts(run2))
    assert.are.same({ "minus_0000", "sum_0000", "sum_0001" }, storage:list_tasks("storage_test", "*"))
    assert.are.equal(2, storage:read_task("storage_test", "sum_0000"))
  end)

  it("implements list_tasks, read_task, file_exists, save, remove_task and remove_workflow", function()
    local st = new_storage()
    st:new_workflow("w")
    st:save("w", "node1", { 1, 2, x = "y" })
    st:save("w", "node2", 2.5)
    st:save("w", "other", "text")
    st:save("w", ".hidden", true)
    assert.are.same({ "node1", "node2" }, st:list_tasks("w", "node*"))
    assert.are.same({ "node1", "node2", "other" }, st:list_tasks("w", "*"))
    assert.are.same({ ".hidden" }, st:list_tasks("w", ".*"))
    assert.are.same({ "node2" }, st:list_tasks("w", "node[2-9]"))
    assert.are.same({ "node1" }, st:list_tasks("w", "nod?1"))
    assert.are.same({ 1, 2, x = "y" }, st:read_task("w", "node1"))
    assert.are.equal(2.5, st:read_task("w", "node2"))
    assert.is_true(st:file_exists("w", "node1"))
    assert.is_false(st:file_exists("w", "nope"))
    assert.is_false(st:file_exists("nowf", "node1"))
    local ok, err = pcall(st.read_task, st, "w", "nope")
    assert.is_false(ok)
    assert.matches("no stored result for task 'nope' of workflow 'w'", err, 1, true)
    assert.matches(st.path, err, 1, true)
    st:remove_task("w", "node1")
    assert.are.same({ "node2" }, st:list_tasks("w", "node*"))
    assert.are.equal(1, st:remove_task("w", nil, "node*"))
    assert.are.same({ "other" }, st:list_tasks("w", "*"))
    assert.are.same({ ".hidden" }, st:list_tasks("w", ".*"))
    ok, err = pcall(st.remove_task, st, "w", "node1")
    assert.is_false(ok)
    assert.matches("no stored result for task 'node1' of workflow 'w'", err, 1, true)
    st:save("v", "a", 1)
    assert.are.same({ "v", "w" }, st:workflows())
    st:remove_workflow("w")
    assert.are.same({ "v" }, st:workflows())
    assert.are.same({}, st:list_tasks("w", "*"))
  end)

  it("makes a missing directory with its missing parents, or says which one it cannot make", function()
    local dir = H.tmpdir()
    local st = storage_factory { kind = "file", options = { path = dir .. "/a/b/c/" } }
    st:save("w", "t", 42)
    st:close()
    assert.is_truthy(H.read(dir .. "/a/b/c/data.mdb"))
    assert.are.equal(42, storage_factory { kind = "file", options = { path = dir .. "/a/b/c" } }
                           :read_task("w", "t"))
    H.write(dir .. "/file", "x")
    local ok, err = pcall(function() storage_factory { kind = "file", options = { path = dir .. "/file/b" } } end)
    assert.is_false(ok)
    assert.are.equal(("%s:%d: cannot make the directory '%s/file' for the storage '%s/file/b': " ..
                      "Not a directory"):format(debug.getinfo(1, "S").short_src,
                                                debug.getinfo(1, "l").currentline - 4, dir, dir), err)
  end)

  it("rejects bad arguments with clear errors", function()
    assert.has_error(function() storage_factory { kind = "S3", options = { path = "x" } } end,
                     "storage_factory: unknown kind 'S3' (\"file\", \"lmdb\", \"cluster\" or \"ray\")")
    assert.has_error(function() storage_factory { kind = "file" } end,
                     "storage_factory: options.path (a directory) is required")
    local file = H.write(H.tmpdir() .. "/f", "x")
    local ok, err = pcall(storage_factory, { kind = "lmdb", options = { path = file } })
    assert.is_false(ok)
    assert.matches("not a directory", err, 1, true)
    local f = ff.workflow(function() return 1 end)
    local wf = LocalWorkflow(f(), { workflow_name = "w" })
    assert.has_error(function() wf:set_storage({}) end,
                     "bad argument #1 to 'set_storage' (storage expected, got table)")
    assert.has_error(function() LocalWorkflow(f(), { workflow_name = "w", cache = "sometimes" }) end,
                     "LocalWorkflow: option 'cache' must be \"fingerprint\" (the default), \"name\" or false")
  end)

  it("refuses names too long to store before anything runs", function()
    local ran = false
    local f = ff.workflow("f", function() ran = true; return 1 end)
    local long = ("n"):rep(512)
    local wf = LocalWorkflow(f():set_name(long), { workflow_name = "long", quiet = true })
    wf:set_storage(new_storage())
    local ok, err = pcall(wf.run, wf)
    assert.is_false(ok)
    assert.are.equal("node '" .. ("n"):rep(60) .. "... (512 bytes)': a node name in a storage " ..
                     "has at most 511 bytes", err)
    assert.is_false(ran)
    assert.are.equal(1, LocalWorkflow(f():set_name(("n"):rep(511)),
                                      { workflow_name = "long", quiet = true }):set_storage(
                                        new_storage()):run())
    local wf2 = LocalWorkflow(f(), { workflow_name = ("w"):rep(509), quiet = true })
    wf2:set_storage(new_storage())
    ok, err = pcall(wf2.run, wf2)
    assert.is_false(ok)
    assert.are.equal("workflow '" .. ("w"):rep(60) .. "... (509 bytes)': a workflow name in a " ..
                     "storage has at most 508 bytes", err)
    local wf3 = LocalWorkflow(f(), { workflow_name = ("w"):rep(508), quiet = true })
    assert.are.equal(1, wf3:set_storage(new_storage()):run())
    -- The storage API has the same limits, and says so.
    local st = new_storage()
    st:save(("w"):rep(508), ("t"):rep(511), 1)
    assert.are.equal(1, st:read_task(("w"):rep(508), ("t"):rep(511)))
    assert.has_error(function() st:save(("w"):rep(509), "t", 1) end,
      "bad argument #1 to 'save' (a workflow name has at most 508 bytes, got 509)")
    assert.has_error(function() st:read_task("w", ("t"):rep(1000000)) end,
      "bad argument #2 to 'read_task' (a task name has at most 511 bytes, got 1000000)")
  end)

  it("refuses two nodes with one name, which would share a stored result", function()
    local f = ff.workflow("f", function(x) return x end)
    local g = ff.workflow("f", function(x) return -x end) -- another factory named f
    local wf = LocalWorkflow(f(1), g(2), { workflow_name = "dup", quiet = true })
    wf:set_storage(new_storage())
    local ok, err = pcall(wf.run, wf)
    assert.is_false(ok)
    assert.matches("workflow 'dup' has two nodes named 'f_0000'", err, 1, true)
    -- Without a storage names need not be distinct.
    assert.are.same({ 1, -2 }, { LocalWorkflow(f(1), g(2), { workflow_name = "dup" }):run() })
  end)

  it("with always_read, hands the next nodes the value as it was stored", function()
    local st = new_storage()
    st.always_read = true
    local Cls = { __index = {} }
    local made, seen
    local make = ff.workflow("make", function() made = setmetatable({ 1, 2 }, Cls); return made end)
    local use = ff.workflow("use", function(v) seen = v; return #v end)
    ff.register_class("spec.always_read", Cls)
    local wf = LocalWorkflow(use(make()), { workflow_name = "ar", quiet = true })
    wf:set_storage(st)
    assert.are.equal(2, wf:run())
    -- Not the table make returned, but its copy read back from the storage.
    assert.are_not.equal(made, seen)
    assert.are.same({ 1, 2 }, seen)
    assert.are.equal(Cls, getmetatable(seen))
    -- Without always_read the next node gets the very table.
    st.always_read = false
    wf = LocalWorkflow(use(make()), { workflow_name = "ar2", quiet = true })
    wf:set_storage(st)
    assert.are.equal(2, wf:run())
    assert.are.equal(made, seen)
    -- cache = false: computed again, never read.
    local wf2 = LocalWorkflow(use(make()), { workflow_name = "ar", quiet = true, cache = false })
    wf2:set_storage(st)
    wf2:run()
    assert.are.same({ computed = 2, loaded = 0, skipped = 0, damaged = 0 }, H.counts(wf2.last_run))
  end)

  it("fails a fingerprint whose item key cannot be encoded, never leaves the key out", function()
    local st = new_storage()
    local Bad = { __name = "spec.fp.Bad" }
    ff.register_serializer(Bad, { pack = function() error("cannot pack", 0) end,
                                  unpack = function() end })
    local Any = { __index = function() return 5 end }
    ff.register_class("spec.fp.Any", Any)
    local key = setmetatable({}, Bad)
    local make = ff.workflow("make", function() return setmetatable({}, Any) end)
    local use = ff.workflow("use", function(v) return v end)
    local wf = LocalWorkflow(use(make():set_name("make")[key]):set_name("use"),
                             { workflow_name = "fp", quiet = true })
    wf:set_storage(st)
    local ok, err = pcall(wf.run, wf)
    assert.is_false(ok)
    assert.are.equal("fingerprint of node 'use': serializer 'spec.fp.Bad' failed to pack: " ..
                     "cannot pack (at [1])", err)
  end)

  it("names the place of a value it cannot store", function()
    local st = new_storage()
    local train = ff.workflow("train", function() return { model = { 1, 2, io.stdout } } end)
    local wf = LocalWorkflow(train():set_name("train"), { workflow_name = "w", quiet = true })
    wf:set_storage(st)
    local ok, err = pcall(wf.run, wf)
    assert.is_false(ok)
    assert.are.equal("result of node 'train': userdata 'FILE*' has no serializer " ..
                     "(storage:register_serializer) (at .model[3])", err)
  end)

  it("says why a deeply nested result cannot be stored, first and briefly", function()
    local st = new_storage()
    local deep = ff.workflow("deep", function()
      local t = {}
      local cur = t
      for _ = 1, 10000 do cur.next = {}; cur = cur.next end
      return t
    end)
    local wf = LocalWorkflow(deep(), { workflow_name = "deep", quiet = true })
    wf:set_storage(st)
    local ok, err = pcall(wf.run, wf)
    assert.is_false(ok)
    assert.are.equal("result of node 'deep_0000': tables nested more than 1000 levels deep " ..
                     "(at .next.next.next.next ... .next.next.next.next)", err)
  end)

  it("stores registered classes and serialized userdata, and reads them back as such", function()
    local st = new_storage()
    local Point = {}
    Point.__index = Point
    function Point:norm2() return self.x * self.x + self.y * self.y end
    ff.register_class("spec.Point", Point)
    -- A "host" type: a table standing for a userdata would do, but a real
    -- userdata with a metatable is what host applications have.
    local Blob = { __name = "spec.Blob" }
    st:register_serializer(Blob, { pack = function(b) return b.bytes end,
                                   unpack = function(s) return setmetatable({ bytes = s }, Blob) end })
    local p = setmetatable({ x = 3, y = 4 }, Point)
    st:save("w", "p", { p, p, blob = setmetatable({ bytes = "\0\1\2" }, Blob) })
    local v = st:read_task("w", "p")
    assert.are.equal(Point, getmetatable(v[1]))
    assert.are.equal(25, v[1]:norm2())
    assert.are.equal(v[1], v[2]) -- sharing kept
    assert.are.equal(Blob, getmetatable(v.blob))
    assert.are.equal("\0\1\2", v.blob.bytes)
  end)

  it("recomputes a node whose function changed, and its descendants, nothing else", function()
    local dir = H.tmpdir()
    local template = [[
      local ff = require "functionfuse"
      local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow
      local storage = require("functionfuse.storage").storage_factory{ kind = "file", options = { path = "st" } }
      local function tag(name, v) print("RAN " .. name); return v end
      local a = ff.workflow("a", function(x) return tag("a", x + 1) end)
      local b = ff.workflow("b", function(x) return tag("b", x * BFACTOR) end)
      local c = ff.workflow("c", function(x) return tag("c", x - 1) end)
      local d = ff.workflow("d", function(x, y) return tag("d", x + y) end)
      local na = a(1):set_name("a")
      local nb = b(na):set_name("b")
      local nc = c(na):set_name("c")
      local nd = d(nb, nc):set_name("d")
      local wf = LocalWorkflow(nd, { workflow_name = "edit" CACHE })
      wf:set_storage(storage)
      print("RESULT " .. wf:run())
    ]]
    local function script(factor, cache)
      return (template:gsub("BFACTOR", factor):gsub("CACHE", cache or ""))
    end
    local r, ran = run_script(dir, script("2"))
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("RESULT 5", r.stdout, 1, true)
    assert.are.same({ "a", "b", "c", "d" }, ran)
    assert.matches("4 computed, 0 loaded", r.stderr, 1, true)
    -- Same script: everything loaded (only the leaf is needed).
    r, ran = run_script(dir, script("2"))
    assert.are.same({}, ran)
    assert.matches("RESULT 5", r.stdout, 1, true)
    -- b edited: b and d run, a and c are loaded.
    r, ran = run_script(dir, script("3"))
    assert.are.equal(0, r.code, r.stderr)
    assert.are.same({ "b", "d" }, ran)
    assert.matches("RESULT 7", r.stdout, 1, true)
    assert.matches("2 computed, 2 loaded", r.stderr, 1, true)
    -- cache = "name": functionfuse's behaviour, the edit is not seen.
    r, ran = run_script(dir, script("10", ', cache = "name"'))
    assert.are.same({}, ran)
    assert.matches("RESULT 7", r.stdout, 1, true)
    -- cache = false: everything runs again.
    r, ran = run_script(dir, script("3", ", cache = false"))
    assert.are.same({ "a", "b", "c", "d" }, ran)
    assert.matches("RESULT 7", r.stdout, 1, true)
  end)

  it("sees changes in arguments, upvalues and parents but not in layout or comments", function()
    local dir = H.tmpdir()
    local template = [[
      local ff = require "functionfuse"
      local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow
      local storage = require("functionfuse.storage").storage_factory{ kind = "file", options = { path = "st" } }
      local K = KVALUE
      local a = ff.workflow("a", function(x) print("RAN a"); return x.n + K end)
      local b = ff.workflow("b", function(x) print("RAN b"); return x * 2 end)
      local wf = LocalWorkflow(b(a({ n = NVALUE, tags = { "x", "y", z = 1, w = 2 } })), { workflow_name = "fp" })
      wf:set_storage(storage)
      print("RESULT " .. wf:run())
    ]]
    local function script(k, n, pad)
      return (pad or "") .. template:gsub("KVALUE", k):gsub("NVALUE", n)
    end
    local r, ran = run_script(dir, script("1", "1"))
    assert.are.same({ "a", "b" }, ran)
    assert.matches("RESULT 4", r.stdout, 1, true)
    r, ran = run_script(dir, script("1", "1", "-- a comment\n\n\n"))
    assert.are.same({}, ran)
    assert.matches("RESULT 4", r.stdout, 1, true)
    r, ran = run_script(dir, script("1", "2"))
    assert.are.same({ "a", "b" }, ran)
    assert.matches("RESULT 6", r.stdout, 1, true)
    r, ran = run_script(dir, script("5", "2"))
    assert.are.same({ "a", "b" }, ran)
    assert.matches("RESULT 14", r.stdout, 1, true)
  end)

  it("gives the same fingerprints to the same script in every process", function()
    local dir = H.tmpdir()
    local src = [[
      local ff = require "functionfuse"
      local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow
      local plugins = require "functionfuse.backends.plugins"
      local storage = require("functionfuse.storage").storage_factory{ kind = "file", options = { path = "st" } }
      local cfg = { alpha = 1, beta = { "p", "q", r = true }, gamma = math.floor, [2.5] = "x" }
      local f = ff.workflow("f", function(t, i) print("RAN f" .. i); return t.alpha + i + math.random(100) end)
      local leaves = {}
      for i = 1, 5 do leaves[i] = f(cfg, i) end
      leaves[#leaves + 1] = { workflow_name = "same" }
      local wf = LocalWorkflow(table.unpack(leaves))
      wf:set_plugin(".*", plugins.RandomStatePlugin { seed = 7 })
      wf:set_storage(storage)
      print("RESULT " .. table.concat({ wf:run() }, ","))
      for _, t in ipairs(storage:task_info("same")) do
        print("FP " .. t.name .. " " .. t.fingerprint:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
      end
    ]]
    local r1, ran1 = run_script(dir, src)
    assert.are.equal(0, r1.code, r1.stderr)
    assert.are.equal(5, #ran1)
    local r2, ran2 = run_script(dir, src)
    assert.are.same({}, ran2)
    assert.are.equal(r1.stdout:match("RESULT (%S+)"), r2.stdout:match("RESULT (%S+)"))
    local fps = {}
    for line in r1.stdout:gmatch("FP [^\n]+") do fps[#fps + 1] = line end
    assert.are.equal(5, #fps)
    assert.are.same(fps, (function()
      local t = {}
      for line in r2.stdout:gmatch("FP [^\n]+") do t[#t + 1] = line end
      return t
    end)())
  end)

  it("detects a damaged value, warns naming workflow and task, and recomputes it", function()
    local dir = H.tmpdir()
    local src = [[
      local ff = require "functionfuse"
      local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow
      local storage = require("functionfuse.storage").storage_factory{
        kind = "file", options = { path = "st", keep_runs = 0 } }
      local f = ff.workflow("f", function(x) print("RAN f" .. x); return ("payload-%d"):format(x) end)
      local wf = LocalWorkflow(f(1), f(2), { workflow_name = "dmg" })
      wf:set_storage(storage)
      print("RESULT " .. table.concat({ wf:run() }, ","))
    ]]
    local _, ran = run_script(dir, src)
    assert.are.same({ "f1", "f2" }, ran)
    -- Flip one byte of f_0001's stored value in the LMDB file itself.
    local data = H.read(dir .. "/st/data.mdb")
    local at = data:find("payload-2", 1, true)
    assert.is_truthy(at)
    assert.is_nil(data:find("payload-2", at + 1, true))
    local f = assert(io.open(dir .. "/st/data.mdb", "r+b"))
    f:seek("set", at + 3)
    f:write("X")
    f:close()
    local r
    r, ran = run_script(dir, src)
    assert.are.same({ "f2" }, ran)
    assert.matches("RESULT payload-1,payload-2", r.stdout, 1, true)
    assert.matches("warning: storage '[^']*': the stored result of task 'f_0001' of workflow 'dmg' is " ..
                   "damaged %(checksum mismatch%)", r.stderr)
    assert.matches("1 damaged results recomputed", r.stderr, 1, true)
    -- The recomputed value replaced the damaged one.
    r, ran = run_script(dir, src)
    assert.are.same({}, ran)
    assert.matches("RESULT payload-1,payload-2", r.stdout, 1, true)
  end)

  it("detects damage made through the test hook, in-process", function()
    local st = new_storage()
    local f = ff.workflow("f", function(x) return { x, tostring(x) } end)
    local runs = 0
    local g = ff.workflow("g", function(v) runs = runs + 1; return v[1] end)
    local leaf = g(f(41))
    local wf = LocalWorkflow(leaf, { workflow_name = "hook", quiet = true })
    wf:set_storage(st)
    assert.are.equal(41, wf:run())
    st._st:poke("hook", "g_0000", 0, 0x40)
    assert.is_false(st:task_info("hook", "g_0000")[1].ok)
    assert.are.equal(41, wf:run())
    assert.are.equal(2, runs)
    assert.are.same({ computed = 1, loaded = 1, skipped = 0, damaged = 1 }, H.counts(wf.last_run))
  end)

  it("resumes after kill -9: committed results load, the rest run, the result is the same", function()
    local dir = H.tmpdir()
    local src = [[
      local ff = require "functionfuse"
      local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow
      local storage = require("functionfuse.storage").storage_factory{ kind = "file", options = { path = "st" } }
      local function sleep(s) local t = os.clock() + s; while os.clock() < t do end end
      local work = ff.workflow("work", function(i)
        io.stdout:write("RAN work" .. i .. "\n"); io.stdout:flush()
        sleep(0.03)
        return { i = i, sq = i * i, s = ("v"):rep(i) }
      end)
      local total = ff.workflow("total", function(parts)
        local t = 0
        for _, p in ipairs(parts) do t = t + p.sq + #p.s end
        return t
      end)
      local parts = {}
      for i = 1, 40 do parts[i] = work(i) end
      local wf = LocalWorkflow(total(parts), { workflow_name = "resume" })
      wf:set_storage(storage)
      print("RESULT " .. wf:run())
    ]]
    local script = H.write(dir .. "/pipeline.lua", src)
    local p = H.fftest.pty { argv = { H.bin, script }, cwd = dir, env = { TERM = "dumb" } }
    -- Let some nodes finish (and some commits happen), then kill -9.
    H.expect(p, "RAN work15", 60)
    p:kill(H.signals.SIGKILL)
    local _, sig = p:wait(20)
    assert.are.equal(H.signals.SIGKILL, sig)
    p:close()
    -- What survived, read by another process.
    local lister = H.write(dir .. "/list.lua", [[
      local st = require("functionfuse.storage").storage_factory{ kind = "file", options = { path = "st" } }
      for _, n in ipairs(st:list_tasks("resume", "*")) do print("STORED " .. n) end
    ]])
    local l = H.fflua({ lister }, { cwd = dir })
    assert.are.equal(0, l.code, l.stderr)
    local stored = {}
    for n in l.stdout:gmatch("STORED (%S+)") do stored[n] = true end
    local nstored = 0
    for _ in pairs(stored) do nstored = nstored + 1 end
    assert.is_true(nstored >= 1 and nstored < 40, "stored " .. nstored)
    local r, ran = run_script(dir, src)
    assert.are.equal(0, r.code, r.stderr)
    -- Nothing committed ran again; everything else did.
    assert.are.equal(40 - nstored, #ran)
    for _, name in ipairs(ran) do
      local i = tonumber(name:match("work(%d+)"))
      local task = ("work_%04d"):format(i - 1)
      assert.is_nil(stored[task], task .. " was committed but ran again")
    end
    local expect = 0
    for i = 1, 40 do expect = expect + i * i + i end
    assert.matches("RESULT " .. expect, r.stdout, 1, true)
  end)

  it("lets two processes write the same storage at once", function()
    local dir = H.tmpdir()
    -- Each writer opens the storage, then waits until the other has too,
    -- so that both write while both have it open.
    local src = [[
      local st = require("functionfuse.storage").storage_factory{ kind = "file", options = { path = "st" } }
      local who, other = arg[1], arg[1] == "a" and "b" or "a"
      io.open(who .. ".open", "w"):close()
      local deadline = os.time() + 30
      while not io.open(other .. ".open") do assert(os.time() < deadline, "the other writer never came") end
      for i = 1, 2000 do st:save("shared", who .. i, { who, i }) end
      st:flush()
      print("DONE")
    ]]
    local script = H.write(dir .. "/writer.lua", src)
    local a = H.fftest.pty { argv = { H.bin, script, "a" }, cwd = dir, env = { TERM = "dumb" } }
    local b = H.fflua({ script, "b" }, { cwd = dir })
    assert.are.equal(0, b.code, b.stderr)
    H.expect(a, "DONE", 60)
    assert.are.equal(0, (a:wait(20)))
    a:close()
    local st = new_storage(dir .. "/st")
    assert.are.equal(4000, #st:list_tasks("shared", "*"))
    assert.are.same({ "a", 2000 }, st:read_task("shared", "a2000"))
    assert.are.same({ "b", 2000 }, st:read_task("shared", "b2000"))
  end)

  --- A storage with one result, and big.lua, which saves 12 MiB in it.
  local function writes_to_fail(dir)
    H.write(dir .. "/keep.lua", [[
      local st = require("functionfuse.storage").storage_factory{ kind = "file", options = { path = "st" } }
      st:save("w", "keep", { "still", "here" })
    ]])
    H.write(dir .. "/big.lua", [[
      local ff = require "functionfuse"
      local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow
      local st = require("functionfuse.storage").storage_factory{ kind = "file", options = { path = "st" } }
      local f = ff.workflow("f", function(i) return ("z"):rep(1 << 20) .. i end)
      local leaves = {}
      for i = 1, 12 do leaves[i] = f(i) end
      leaves[#leaves + 1] = { workflow_name = "w" }
      local wf = LocalWorkflow(table.unpack(leaves))
      wf:set_storage(st)
      wf:run()
    ]])
  end

  it("reports a failed write (a file too large) clearly and keeps what was stored", function()
    local dir = H.tmpdir()
    writes_to_fail(dir)
    assert.are.equal(0, H.fflua({ "keep.lua" }, { cwd = dir }).code)
    -- A file size limit makes writes past 8 MiB fail (EFBIG).
    local r = H.run({ "/bin/sh", "-c", "trap '' XFSZ; ulimit -f 8192; exec \"$0\" big.lua", H.bin },
                    { cwd = dir })
    assert.are.equal(1, r.code, r.stderr)
    assert.matches("storage 'st': cannot commit results to 'st': [%a/ ]+", r.stderr)
    local show = H.fflua({ "store", "show", dir .. "/st", "w", "keep" })
    assert.are.equal(0, show.code, show.stderr)
    assert.matches('"still"', show.stdout, 1, true)
  end)

  it("reports a full disk as such and keeps what was stored", function()
    local dir = H.tmpdir()
    writes_to_fail(dir)
    -- A 4 MiB file system of its own, in a mount namespace of its own.
    local r = H.in_namespace(dir, [[
      mkdir -p disk && mount -t tmpfs -o size=4m tmpfs disk 2>/dev/null || exit 77
      cp keep.lua big.lua disk/ && cd disk
      "$FF" keep.lua || exit 3
      "$FF" big.lua 2>../big.err; echo "big exited $?"
      cat ../big.err
      "$FF" store show st w keep
    ]])
    if not r then return pending("no tmpfs can be mounted here") end
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("big exited 1", r.stdout, 1, true)
    -- LMDB reports the write cut short as an I/O error; the free space
    -- tells what it was.
    assert.matches("storage 'st': cannot commit results to 'st': No space left on device %(%d+ KiB free%)", r.stdout)
    assert.matches('"still"', r.stdout, 1, true)
  end)

  it("grows the map when it is full", function()
    local st = new_storage()
    local before = st._st:mapsize()
    local big = ("x"):rep(1 << 20)
    for i = 1, 100 do st:save("big", "v" .. i, big .. i) end
    st:flush()
    assert.is_true(st._st:mapsize() > before)
    assert.are.equal(big .. 77, st:read_task("big", "v77"))
  end)

  it("reads a workflow whose database was just made by the committer, at once and intact", function()
    -- A read transaction that began before the committer opened a new
    -- workflow's database cannot use its handle: the read starts again.
    local core = require "functionfuse.core"
    local st = core.store_open(H.tmpdir())
    local big = ("x"):rep(4000)
    for i = 1, 60 do
      local wf = "W" .. i
      for j = 1, 100 do st:put(wf, "k" .. j, big) end
      local v, why, msg
      repeat v, why, msg = st:get(wf, "k1") until v or why ~= "missing"
      assert.are.equal(big, v, msg)
    end
    st:close()
  end)

  it("runs no Lua code while it holds a read transaction: a serializer may use the storage", function()
    -- An unpack that drops a workflow through another handle on the same
    -- directory (the drop needs every read transaction of the process
    -- ended): a deadlock when the value was decoded inside one.
    local dir = H.tmpdir()
    H.write(dir .. "/unpack.lua", [[
      local core = require "functionfuse.core"
      local st1, st2 = core.store_open("st"), core.store_open("st")
      local mt = { __name = "spec.Thing" }
      core.register_serializer(mt, {
        pack = function() return "x" end,
        unpack = function()
          st2:drop("other")
          return setmetatable({ dropped = true }, mt)
        end })
      st1:put("w", "t", setmetatable({}, mt))
      st1:put("other", "t", 1)
      st1:flush()
      print("GOT", st1:get("w", "t").dropped, #st1:list("other"))
    ]])
    local r = H.fflua({ "unpack.lua" }, { cwd = dir, timeout = 20 })
    assert.is_falsy(r.timed_out, "a deadlock")
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("GOT\ttrue\t0", r.stdout)
  end)

  it("refuses to store a function, anywhere in a value", function()
    -- Reading never loads one either: the storage decodes as
    -- codec_spec.lua's "is refused by a decoder not told to accept code".
    local st = new_storage()
    assert.has_error(function() st:save("w", "f", print) end,
                     "cannot store task 'f' of workflow 'w': a function cannot be stored")
    assert.has_error(function() st:save("w", "t", { x = { function() end } }) end,
                     "cannot store task 't' of workflow 'w': a function cannot be stored (at .x[1])")
    assert.are.same({}, st:list_tasks("w", "*"))
    -- The error points at the caller's line, not at the library's.
    local _, err = pcall(function() st:save("w", "f", print) end)
    assert.matches("^[^:]*storage_spec%.lua:%d+: cannot store task 'f'", err)
  end)
end)
