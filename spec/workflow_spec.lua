-- The workflow frontend: factories, nodes, names, arguments, results,
-- class nodes, and LocalWorkflow running them (in this fflua's own state).
local ff = require "functionfuse"
local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow
local H = require "spec.helper"

local function run(...)
  local args = table.pack(...)
  args[args.n + 1] = { workflow_name = "spec" }
  return LocalWorkflow(table.unpack(args, 1, args.n + 1)):run()
end

describe("workflow", function()
  it("builds nodes lazily and runs them on run()", function()
    local calls = 0
    local sum = ff.workflow(function(a, b) calls = calls + 1; return a + b end)
    local a_plus_b = sum(1, 1):set_name("node1")
    local a_plus_two_b = sum(a_plus_b, 1):set_name("node2")
    assert.are.equal(0, calls)
    local wf = LocalWorkflow(a_plus_two_b, { workflow_name = "sums" })
    assert.are.equal(3, wf:run())
    assert.are.equal(2, calls)
    assert.are.equal("sums", wf.workflow_name)
  end)

  it("ff.task is ff.workflow", function()
    assert.are.equal(ff.workflow, ff.task)
  end)

  describe("names", function()
    it("are <function>_<NNNN> with a counter per function, as functionfuse's", function()
      local adder = ff.workflow(function(a, b) return a + b end)
      local minus = ff.workflow("minus", function(a, b) return a - b end)
      local n1, n2, m1 = adder(1, 2), adder(3, 4), minus(5, 6)
      assert.are.equal("adder_0000", n1:get_name())
      assert.are.equal("adder_0001", n2:name())
      assert.are.equal("minus_0000", m1:get_name())
    end)

    -- What each kind of definition is named, in a fresh process: the loop of
    -- the issue, where both factories are called through 'fn'.
    local defs = [[
      local ff = require "functionfuse"
      local M = {}
      local function circles_dataset() return 1 end
      local moons_dataset = ff.workflow(function() return 2 end)
      function M.train(x) return x end
      function M:fit(x) return x end
      local ops = { triple = ff.workflow(function(x) return 3 * x end) }
      local split = ff.workflow(
        function(x) return x end)
      Global_scale = ff.workflow(function(x) return x end)
      local circles = ff.workflow(circles_dataset)
      local out = {}
      local function put(n) out[#out + 1] = n:get_name() end
      for _, fn in ipairs { circles, moons_dataset } do put(fn()) end
      put(ff.workflow(M.train)(1)); put(ff.workflow(M.fit)(M, 1))
      put(ops.triple(1)); put(split(1)); put(Global_scale(1))
      put(ff.workflow(circles_dataset)()) -- wrapped twice: one counter
      put(circles())
      put(ff.workflow(function() end)())  -- line 19: nothing names it
      Global_scale = nil
      local Counter = ff.workflow {
        add = function(_, n) return n end,
      }
      local c = Counter()
      put(c); put(c:add(1))
      return table.concat(out, " ")
    ]]
    local defs_names = "circles_dataset_0000 moons_dataset_0000 M.train_0000 M.fit_0000 " ..
      "triple_0000 split_0000 Global_scale_0000 circles_dataset_0001 circles_dataset_0002 " ..
      "fn@defs_19_0000 Counter_0000 Counter.add_0000"

    it("come from the function's definition, however it is called", function()
      local dir = H.tmpdir()
      local script = H.write(dir .. "/defs.lua", defs)
      local main = H.write(dir .. "/main.lua", "print(dofile(...))")
      local r1, r2 = H.fflua({ main, script }), H.fflua({ main, script })
      assert.are.equal(0, r1.code, r1.stderr)
      assert.are.equal(defs_names .. "\n", r1.stdout)
      assert.are.equal(r1.stdout, r2.stdout)
      H.cleanup()
    end)

    it("are the same when a script is loaded again in the same process", function()
      local dir = H.tmpdir()
      local script = H.write(dir .. "/defs.lua", defs)
      local main = H.write(dir .. "/main.lua", [[
        local path = ...
        local first = dofile(path)
        collectgarbage()
        print(first == dofile(path), first)
      ]])
      local r = H.fflua({ main, script })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("true\t" .. defs_names .. "\n", r.stdout)
      H.cleanup()
    end)

    it("are the same when a string chunk is loaded again", function()
      local chunk = "local ff = require 'functionfuse'\n" ..
                    "local scale = ff.workflow(function(x) return x end)\n" ..
                    "return scale(1):get_name(), ff.workflow(function() end)():get_name()"
      assert.are.same({ "scale_0000", "fn@string_3_0000" }, { load(chunk)() })
      assert.are.same({ "scale_0000", "fn@string_3_0000" }, { load(chunk)() })
    end)

    it("of an anonymous function say where it is defined", function()
      local line = debug.getinfo(1, "l").currentline + 1
      local n = { ff.workflow(function(x) return x end)(1) }
      assert.are.equal("fn@workflow_spec_" .. line .. "_0000", n[1]:get_name())
      local wf = LocalWorkflow(n[1], { workflow_name = "anon" })
      assert.are.equal(1, #wf:find_nodes("fn@workflow_spec_" .. line .. "_\\d{4}"))
    end)

    it("of two distinct definitions differ: the later one carries its place", function()
      local dir = H.tmpdir()
      H.write(dir .. "/a.lua", "local function train(x) return x end\nreturn train\n")
      H.write(dir .. "/b.lua", "local x = 1\nlocal function train(x) return -x end\nreturn train\n")
      local main = H.write(dir .. "/main.lua", [[
        local ff = require "functionfuse"
        local dir = ...
        local a = ff.workflow(dofile(dir .. "/a.lua"))
        local b = ff.workflow(dofile(dir .. "/b.lua"))
        local c = ff.workflow(function(x) return x end) -- 'c': the file's own
        local d = { ff.workflow(function(x) return x end), ff.workflow(function(x) return -x end) }
        local function c(x) return x end -- luacheck: ignore
        print(a(1):get_name(), b(1):get_name(), ff.workflow(c)(1):get_name())
        print(d[1](1):get_name(), d[2](1):get_name(), a(2):get_name(), b(2):get_name())
      ]])
      local r1, r2 = H.fflua({ main, dir }), H.fflua({ main, dir })
      assert.are.equal(0, r1.code, r1.stderr)
      assert.are.equal("train_0000\ttrain@b_2_0000\tc@main_7_0000\n" ..
                       "fn@main_6_0000\tfn@main_6_2_0000\ttrain_0001\ttrain@b_2_0001\n", r1.stdout)
      assert.are.equal(r1.stdout, r2.stdout)
      H.cleanup()
    end)

    it("are read again when the file changed", function()
      local dir = H.tmpdir()
      local main = H.write(dir .. "/main.lua", [[
        local ff = require "functionfuse"
        local dir = ...
        local function write(text)
          local f = assert(io.open(dir .. "/m.lua", "w")); f:write(text); f:close()
        end
        write("local x = 1\nlocal function fit(x) return x end\nreturn fit\n")
        local first = ff.workflow(dofile(dir .. "/m.lua"))():get_name()
        write("local function fit(x) return x end\nreturn fit\n")
        local moved = ff.workflow(dofile(dir .. "/m.lua"))():get_name()
        write("local function train(x) return x end\nreturn train\n")
        print(first, moved, ff.workflow(dofile(dir .. "/m.lua"))():get_name())
      ]])
      local r = H.fflua({ main, dir })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("fit_0000\tfit_0000\ttrain_0000\n", r.stdout)
      H.cleanup()
    end)

    it("need an explicit name for a C function", function()
      assert.has_error(function() ff.workflow(string.rep) end,
        "bad argument #1 to 'workflow' (a C function has no definition to be named after: " ..
        "give it a name, workflow(name, fn))")
      assert.are.equal("rep_0000", ff.workflow("rep", string.rep)("a", 2):get_name())
    end)

    it("keep going past 9999", function()
      local f = ff.workflow("many", function() end)
      local last
      for _ = 1, 10001 do last = f() end
      assert.are.equal("many_10000", last:get_name())
    end)

    it("set_name returns the node and rejects non-strings, empty names and zero bytes", function()
      local f = ff.workflow("f", function() end)
      local n = f()
      assert.are.equal(n, n:set_name("x"))
      assert.are.equal("x", n:get_name())
      assert.has_error(function() n:set_name(42) end,
        "bad argument #1 to 'set_name' (string expected, got number)")
      assert.has_error(function() n:set_name("") end,
        "bad argument #1 to 'set_name' (node name must not be empty)")
      -- A zero byte would cut the name short (names are C strings): refused.
      assert.has_error(function() n:set_name("a\0b") end,
        "bad argument #1 to 'set_name' (node name must not hold a zero byte)")
      assert.are.equal("x", n:get_name())
    end)
  end)

  describe("arguments", function()
    it("may be nodes anywhere in table arguments, at any depth", function()
      local sum = ff.workflow(function(a, b) return a + b end)
      local train = ff.workflow(function(opts)
        return opts.data + opts.nested.deeper[1] + opts.epochs
      end)
      local a = sum(1, 2)
      local b = sum(10, 20)
      assert.are.equal(3 + 30 + 5, run(train { data = a, nested = { deeper = { b } }, epochs = 5 }))
    end)

    it("keep nil arguments and holes", function()
      local show = ff.workflow(function(...)
        return select("#", ...), tostring((...)), tostring(select(2, ...)), tostring(select(3, ...))
      end)
      local one = ff.workflow(function() return 1 end)()
      local r = run(show(nil, one, nil))
      assert.are.same({ 3, "nil", "1", "nil", n = 4 }, r)
    end)

    it("pass tables without nodes as the same object, and copy those with nodes", function()
      local plain = { 1, 2 }
      local same = ff.workflow(function(t) return t end)
      assert.are.equal(plain, run(same(plain)))
      local n = ff.workflow(function() return 7 end)()
      local mt = { __index = { kind = "mine" } }
      local with = setmetatable({ n, 8 }, mt)
      local got = run(same(with))
      assert.are_not.equal(with, got)
      assert.are.same({ 7, 8 }, { got[1], got[2] })
      assert.are.equal("mine", got.kind) -- the metatable is kept
      assert.are.equal(n, with[1])     -- the original still holds the node
    end)

    it("keep shared and cyclic tables shared and cyclic", function()
      local n = ff.workflow(function() return "v" end)()
      local shared = { n }
      local cyc = { a = shared, b = shared }
      cyc.self = cyc
      local id = ff.workflow(function(t) return t end)
      local got = run(id(cyc))
      assert.are.equal("v", got.a[1])
      assert.are.equal(got.a, got.b)
      assert.are.equal(got, got.self)
    end)

    it("may be items of nodes: node[k] and node:item(k), also nested", function()
      local make = ff.workflow(function() return { x = 1, y = { z = 2 }, [3] = "three" } end)
      local m = make()
      local add = ff.workflow(function(a, b) return a + b end)
      assert.are.equal(3, run(add(m.x, m.y.z)))
      assert.are.equal("three", run(m:item(3)))
      assert.are.equal("functionfuse.NodeItem: make_0000[\"y\"][\"z\"]", tostring(m.y.z))
    end)

    it("are fields of the result also where a key names a Node method", function()
      local load = ff.workflow(function()
        return { name = "iris", item = 3, get_name = "g", set_name = "s" }
      end)
      local l = load()
      local cat = ff.workflow(function(...) return table.concat({ ... }, " ") end)
      assert.are.equal("iris 3 g s", run(cat(l.name, l.item, l.get_name, l.set_name)))
      assert.are.equal("iris", run(l.name))
      assert.are.equal("functionfuse.NodeItem: load_0000[\"name\"]", tostring(l.name))
      -- The methods, called on their node, are still the methods.
      assert.are.equal("load_0000", l:name())
      assert.are.equal("load_0000", l:get_name())
      assert.are.equal("iris", run(l:item("name")))
      assert.are.equal(l, l:set_name("loaded"))
      assert.are.equal("loaded", l.get_name(l))
    end)

    it("say what they are when called other than as a method", function()
      local l = ff.workflow("load", function() return { name = "iris", x = 1 } end)()
      local other = ff.workflow("other", function() end)()
      assert.has_error(function() l.name() end, "'name' is a method of the node and a field of " ..
        "its result (functionfuse.NodeItem: load_0000[\"name\"]): call the method as node:name(...)")
      assert.has_error(function() l.name(other) end, "'name' is a method of the node and a field " ..
        "of its result (functionfuse.NodeItem: load_0000[\"name\"]): call the method as " ..
        "node:name(...)")
      assert.has_error(function() l:x() end, "attempt to call a node item " ..
        "(functionfuse.NodeItem: load_0000[\"x\"]): it stands for a field of the node's result")
      assert.has_error(function() l.name:get_name() end, "attempt to call a node item " ..
        "(functionfuse.NodeItem: load_0000[\"name\"][\"get_name\"]): it stands for a field of " ..
        "the node's result")
    end)

    it("may nest tables 1000 levels deep, the codec's limit, and no deeper", function()
      local chain = function(n, leaf) return H.nested(n, "a", leaf) end
      local depth = ff.workflow("depth", function(t) return H.depth(t, "a") end)
      local one = ff.workflow("one", function() return 1 end)()
      assert.are.equal(1000, run(depth(chain(1000))))
      assert.are.equal(1000, run(depth(chain(1000, one)))) -- scanned for nodes, copied
      assert.has_error(function() depth(chain(1001)) end,
        "argument #1 of 'depth': tables nested more than 1000 levels deep " ..
        "(at .a.a.a.a ... .a.a.a.a)")
      assert.has_error(function() depth(5, chain(1001, one)) end,
        "argument #2 of 'depth': tables nested more than 1000 levels deep " ..
        "(at .a.a.a.a ... .a.a.a.a)")
      -- A table with nodes is copied when the node is made: made deeper
      -- afterwards, the node still has the table it was given.
      local t = chain(1000, one)
      local n = depth(t)
      local cur = t
      while cur.a do cur = cur.a end
      cur.a = {}
      assert.are.equal(1000, run(n))
    end)

    it("make several return values a sequence with n, as a tuple", function()
      local two = ff.workflow(function() return "a", "b" end)
      local none = ff.workflow(function() end)
      local t = two()
      assert.are.same({ "a", "b", n = 2 }, run(t))
      assert.are.equal("b", run(t[2]))
      assert.is_nil(run(none()))
    end)
  end)

  describe("LocalWorkflow", function()
    it("returns one value per leaf", function()
      local sum = ff.workflow(function(a, b) return a + b end)
      local a = sum(1, 1)
      local b = sum(a, 1)
      local c = sum(a, 10)
      assert.are.same({ 3, 12, 2 }, { run(b, c, a) })
    end)

    it("runs only the ancestors of its leaves", function()
      local ran = {}
      local f = ff.workflow(function(x) ran[#ran + 1] = x; return x end)
      local a = f("a")
      local _ = f("unrelated")
      local b = f(a)
      run(b)
      assert.are.same({ "a", "a" }, ran)
    end)

    it("runs in creation order, the same on every run", function()
      local order = {}
      local f = ff.workflow(function(tag) order[#order + 1] = tag; return tag end)
      local d = f("d")
      local c = f("c")
      local b = f({ c, d })
      local a = f("a")
      local wf = LocalWorkflow(b, a, { workflow_name = "order" })
      wf:run()
      assert.are.same({ "d", "c", { "c", "d" }, "a" }, order)
      order = {}
      wf:run()
      assert.are.same({ "d", "c", { "c", "d" }, "a" }, order)
    end)

    it("requires workflow_name and nodes", function()
      local n = ff.workflow("f", function() end)()
      assert.has_error(function() LocalWorkflow(n) end, "LocalWorkflow: the option 'workflow_name' is " ..
        "required: LocalWorkflow(node, { workflow_name = \"name\" })")
      assert.has_error(function() LocalWorkflow(n, { workflow_name = "" }) end,
        "LocalWorkflow: 'workflow_name' must be a non-empty string")
      assert.has_error(function() LocalWorkflow(n, 42, { workflow_name = "x" }) end,
        "LocalWorkflow: argument #2 is a number, not a node")
      assert.has_error(function() LocalWorkflow({ workflow_name = "x" }) end,
        "LocalWorkflow: give at least one node to run")
    end)

    it("runs again, and new workflows run on nodes of one already run", function()
      local count = 0
      local f = ff.workflow(function(x) count = count + 1; return x + 1 end)
      local a = f(1)
      local wf = LocalWorkflow(a, { workflow_name = "again" })
      assert.are.equal(2, wf:run())
      assert.are.equal(2, wf:run())
      local b = f(a)
      assert.are.equal(3, LocalWorkflow(b, { workflow_name = "more" }):run())
      assert.are.equal(4, count)
    end)

    it("names the node, its function and the original error when a node fails", function()
      local ran_after = false
      local plus = ff.workflow(function(a, b) return a + b end)
      local after = ff.workflow(function() ran_after = true end)
      local bad = plus(1, nil):set_name("bad")
      local wf = LocalWorkflow(after(bad), { workflow_name = "fails" })
      local ok, err = pcall(wf.run, wf)
      assert.is_false(ok)
      assert.matches("^node 'bad' %(function 'plus' defined at [^)]*workflow_spec%.lua:%d+%) failed: " ..
                     "[^\n]*workflow_spec%.lua:%d+: attempt to perform arithmetic on a nil value", err)
      assert.matches("\nstack traceback:\n", err)
      assert.is_false(ran_after)
    end)

    it("shows one traceback when a script's run fails", function()
      local script = H.write(H.tmpdir() .. "/fails.lua", [[
        local ff = require "functionfuse"
        local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow
        local f = ff.workflow("f", function() error("boom") end)
        LocalWorkflow(f(), { workflow_name = "w" }):run()
      ]])
      local r = H.fflua({ script })
      assert.are.equal(1, r.code)
      assert.matches("^" .. H.prog_pat .. ": node 'f_0000' %(function 'f' defined at [^)]*%) failed: [^\n]*: boom\n" ..
                     "stack traceback:\n", r.stderr)
      assert.are.equal(1, select(2, r.stderr:gsub("stack traceback:", "")), r.stderr)
      H.cleanup()
    end)

    it("raises an object that keeps the original error value, node, function and traceback", function()
      local f = ff.workflow("f", function() error({ code = 42 }) end)
      local wf = LocalWorkflow(f():set_name("x"), { workflow_name = "obj" })
      local ok, err = pcall(wf.run, wf)
      assert.is_false(ok)
      assert.are.equal("table", type(err))
      assert.are.same({ code = 42 }, err.value)
      assert.are.equal("x", err.node)
      assert.are.equal("f", err.func)
      assert.matches("workflow_spec%.lua:%d+$", err.where)
      assert.matches("^stack traceback:\n", err.traceback)
      assert.are.equal("node 'x' (function 'f' defined at " .. err.where .. ") failed: " ..
                       "(error object is a table value)\n" .. err.traceback, tostring(err))
      assert.are.equal("! " .. tostring(err), "! " .. err)
      -- A string error: the value is the message with its position.
      local g = ff.workflow("g", function() error("boom") end)
      ok, err = pcall(run, g())
      assert.is_false(ok)
      assert.matches("^[^\n]*workflow_spec%.lua:%d+: boom$", err.value)
      assert.are.equal(tostring(err), err.message)
      -- An object that shows itself: its text, no traceback (as lua.c shows it).
      local shows = setmetatable({}, { __tostring = function() return "I am an error" end })
      local h = ff.workflow("h", function() error(shows) end)
      ok, err = pcall(run, h())
      assert.is_false(ok)
      assert.are.equal(shows, err.value)
      assert.matches("^node 'h_0000' %(function 'h' defined at [^)]*%) failed: I am an error$", tostring(err))
    end)

    it("reports a node's non-string error from a script as the message with a traceback", function()
      local script = H.write(H.tmpdir() .. "/obj.lua", [[
        local ff = require "functionfuse"
        local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow
        local f = ff.workflow("f", function() error({ code = 42 }) end)
        LocalWorkflow(f(), { workflow_name = "w" }):run()
      ]])
      local r = H.fflua({ script })
      assert.are.equal(1, r.code)
      assert.are.equal(H.bin .. ": node 'f_0000' (function 'f' defined at " .. script ..
                       ":3) failed: (error object is a table value)",
                       r.stderr:match("^[^\n]*"))
      assert.matches("\nstack traceback:\n", r.stderr)
      assert.are.equal(1, select(2, r.stderr:gsub("stack traceback:", "")), r.stderr)
      H.cleanup()
    end)

    it("shortens long node and function names in errors", function()
      local function lit(p) return (p:gsub("%p", "%%%0")) end
      local long = ("n"):rep(100000)
      local short = lit(("n"):rep(60) .. "... (100000 bytes)")
      local bad = ff.workflow(("f"):rep(200), function() error("boom", 0) end)
      local n = bad():set_name(long)
      local ok, err = pcall(run, n)
      assert.is_false(ok)
      assert.matches("^node '" .. short .. "' %(function '" .. lit(("f"):rep(60) ..
                     "... (200 bytes)") .. "' defined at [^)]*%) failed: boom\n", err)
      local wf = LocalWorkflow(n, { workflow_name = "p" })
      wf:set_plugin(".*", { local_initialize = function() error("no", 0) end,
                            remote_initialize = function() end })
      ok, err = pcall(wf.run, wf)
      assert.is_false(ok)
      assert.matches("^plugin of node '" .. short .. "': local_initialize failed: no\n", err)
      local five = ff.workflow("five", function() return 5 end)():set_name(long)
      ok, err = pcall(run, five, five[long])
      assert.is_false(ok)
      assert.are.equal("cannot read leaf 2 (functionfuse.NodeItem: " .. ("n"):rep(37) ..
                       "... (200027 bytes)): attempt to index a number value", err)
    end)

    it("says which leaf it cannot read when a leaf item is missing", function()
      local n = ff.workflow("five", function() return 5 end)()
      local wf = LocalWorkflow(n, n.x, { workflow_name = "leaf" })
      local ok, err = pcall(wf.run, wf)
      assert.is_false(ok)
      assert.are.equal("cannot read leaf 2 (functionfuse.NodeItem: five_0000[\"x\"]): " ..
                       "attempt to index a number value", err)
    end)

    it("releases intermediate results once their consumers have run", function()
      local weak = setmetatable({}, { __mode = "v" })
      local make = ff.workflow(function(i) local t = { i }; weak[i] = t; return t end)
      local first = ff.workflow(function(t) return t[1] end)
      local released = ff.workflow(function(_, i)
        collectgarbage("collect")
        collectgarbage("collect")
        return weak[i] == nil
      end)
      local kept = make(1)                    -- a leaf: kept to the end
      local y = first(make(2))                -- make(2)'s only consumer
      local z = released(y, 2)
      local k = released(first(kept), 1)
      local wf = LocalWorkflow(z, k, kept, { workflow_name = "release" })
      local z_released, k_released, kept_value = wf:run()
      assert.is_true(z_released)
      assert.is_false(k_released)
      assert.are.same({ 1 }, kept_value)
    end)

    it("frees nodes nothing refers to any more", function()
      local function settle()
        collectgarbage("collect")
        collectgarbage("collect")
        return ff.core.graph_size() -- also applies the queued releases
      end
      local before = settle()
      local function build()
        local f = ff.workflow("tmp", function(x) return x end)
        local x = f(0)
        for _ = 1, 1000 do x = f(x) end
        return ff.core.graph_size()
      end
      assert.are.equal(before + 1001, build())
      -- All 1001 are gone (and maybe garbage left by earlier specs too).
      assert.is_true(settle() <= before)
    end)
  end)

  describe("runs inside a node", function()
    local function lines(s) return select(2, tostring(s):gsub("\n", "")) + 1 end

    it("refuse a node that runs a workflow including itself, with a short error", function()
      local wf
      local f = ff.workflow("f", function() return wf:run() end)
      wf = LocalWorkflow(f():set_name("x"), { workflow_name = "self" })
      local ok, err = pcall(wf.run, wf)
      assert.is_false(ok)
      assert.matches("^node 'x' %(function 'f' defined at [^)]*%) failed: node 'x' cannot run a " ..
                     "workflow that includes it\nstack traceback:\n", err)
      assert.is_true(lines(err) <= 30 and #tostring(err) < 4000, tostring(err))
      -- A new workflow on the running node (or a descendant of it): the same.
      local y
      local g = ff.workflow("g", function()
        return LocalWorkflow(y, { workflow_name = "again" }):run()
      end)
      local h = ff.workflow("h", function(v) return v end)
      local gy = g():set_name("gy")
      y = h(gy)
      ok, err = pcall(run, y)
      assert.is_false(ok)
      assert.matches("^node 'gy' %(function 'g' defined at [^)]*%) failed: node 'gy' cannot run a " ..
                     "workflow that includes it\nstack traceback:\n", err)
      -- A plugin that runs the workflow of its own node.
      local k = ff.workflow("k", function() return 1 end)():set_name("k")
      local wk = LocalWorkflow(k, { workflow_name = "plug" })
      wk:set_plugin("k", { local_initialize = function() wk:run() end,
                           remote_initialize = function() end })
      ok, err = pcall(wk.run, wk)
      assert.is_false(ok)
      assert.matches("^plugin of node 'k': local_initialize failed: the plugin of node 'k' cannot " ..
                     "run a workflow that includes it\nstack traceback:\n", err)
      assert.is_true(lines(err) <= 30, tostring(err))
    end)

    it("let a node run other workflows, nested", function()
      local add = ff.workflow("add", function(a, b) return a + b end)
      local fib
      fib = ff.workflow("fib", function(n)
        if n < 2 then return n end
        return LocalWorkflow(add(fib(n - 1), fib(n - 2)), { workflow_name = "fib" }):run()
      end)
      assert.are.equal(55, run(fib(10)))
      -- A nested run of nodes made outside, that the outer run also has:
      -- a's whole workflow includes outer, so only what a needs.
      local a = add(1, 2)
      local outer = ff.workflow("outer", function(x)
        return x + LocalWorkflow(a, { workflow_name = "inner", only_needed = true }):run()
      end)
      assert.are.equal(6, run(outer(a)))
    end)

    it("keep an error that went through nested runs short", function()
      local down
      down = ff.workflow("down", function(n)
        if n == 0 then error("bottom reached") end
        return LocalWorkflow(down(n - 1), { workflow_name = "down" }):run()
      end)
      local ok, err = pcall(run, down(30))
      assert.is_false(ok)
      assert.matches("^node 'down_0000' %(function 'down' defined at [^)]*%) failed: in a run " ..
                     "nested 30 deep, node 'down_0030' %(function 'down' defined at [^)]*%) failed: " ..
                     "[^\n]*: bottom reached\nstack traceback:\n", err)
      assert.is_true(lines(err) <= 30 and #tostring(err) < 4000, tostring(err))
      -- One level: both nodes, no count.
      ok, err = pcall(run, down(1))
      assert.is_false(ok)
      assert.matches("^node 'down_%d+' %([^)]*%) failed: node 'down_%d+' %([^)]*%) failed: " ..
                     "[^\n]*: bottom reached\nstack traceback:\n", err)
      assert.are.equal(1, select(2, tostring(err):gsub("stack traceback:", "")))
      -- The object keeps the innermost value, and the nested run's error.
      assert.matches("^[^\n]*: bottom reached$", err.value)
      assert.matches("^down_%d+$", err.cause.node)
      assert.are_not.equal(err.node, err.cause.node)
      assert.matches("^[^\n]*: bottom reached$", err.cause.value)
      -- Deeper than the C stack allows.
      ok, err = pcall(run, down(100000))
      assert.is_false(ok)
      assert.matches("^node 'down_%d+' %([^)]*%) failed: in a run nested %d+ deep, [^\n]*" ..
                     "C stack overflow", err)
      assert.is_true(lines(err) <= 30 and #tostring(err) < 4000, tostring(err))
    end)
  end)

  describe("class nodes", function()
    it("port functionfuse's IncrementalSum and give 4", function()
      local IncrementalSum = ff.workflow {
        __init = function(self, start) self.start = start end,
        add = function(self, n)
          self.start = self.start + n
          return self.start
        end,
      }
      local minus = ff.workflow(function(a, b) return a - b end)

      local one = minus(4, 3)
      local incremental_sum = IncrementalSum(one)
      local two = minus(3, one)
      incremental_sum:add(two)
      incremental_sum:add(two)
      local six = incremental_sum:add(one)
      local result = minus(six, 2)
      assert.are.equal(4, LocalWorkflow(result, { workflow_name = "first" }):run())
      assert.are.equal("IncrementalSum_0000", incremental_sum:get_name())
      assert.are.equal("IncrementalSum.add_0002", six:get_name())

      -- test2 of the same file: with names set on every node.
      one = minus(4, 3):set_name("four_minus_three")
      incremental_sum = IncrementalSum(one):set_name("IncrementalSum")
      two = minus(3, one):set_name("three_minus_one")
      incremental_sum:add(two):set_name("one_plus_two")
      incremental_sum:add(two):set_name("three_plus_two")
      six = incremental_sum:add(one):set_name("five_plus_one")
      result = minus(six, 2):set_name("six_minus_two")
      local wf = LocalWorkflow(result, { workflow_name = "first" })
      assert.are.equal(4, wf:run())
      assert.are.same({ "four_minus_three", "IncrementalSum", "three_minus_one", "one_plus_two",
                        "three_plus_two", "five_plus_one", "six_minus_two" }, wf:names())
    end)

    it("chain method calls in program order on one instance", function()
      local Log = ff.workflow("Log", {
        __init = function(self) self.items = {} end,
        push = function(self, x) self.items[#self.items + 1] = x; return table.concat(self.items, ",") end,
      })
      local log = Log():set_name("log")
      local a = log:push("a")
      local b = log:push("b")
      local c = log:push("c")
      assert.are.equal("log", log:get_name())
      assert.are.same({ "a,b,c", "a", "a,b" }, { run(c, a, b) })
    end)

    it("reject unknown methods and non-method calls", function()
      local K = ff.workflow("K", { __init = function() end, m = function() return 1 end })
      local k = K()
      assert.has_error(function() return k.nope end, "class 'K' has no method 'nope'")
      assert.has_error(function() k.m(1) end, "call 'm' as a method: instance:m(...)")
    end)
  end)

  describe("factories", function()
    local function lua_kb()
      collectgarbage()
      ff.core.graph_size() -- applies the releases the collection queued
      collectgarbage()
      return collectgarbage("count")
    end

    it("are released with their function and upvalues once nothing refers to them", function()
      local before = lua_kb()
      local factories = {}
      for i = 1, 201 do
        local big = string.rep(string.char(i % 256), 1 << 20)
        factories[i] = ff.workflow(function() return #big end)
      end
      assert.is_true(lua_kb() - before > 200 * 1024)
      assert.are.equal(201, #factories)
      factories = nil -- luacheck: ignore 311 (dropping it is the point)
      assert.is_true(lua_kb() - before < 1024, "kept " .. (lua_kb() - before) .. " KiB")
    end)

    it("keep their function while a node of it lives", function()
      local before = lua_kb()
      local n
      do
        local big = string.rep("x", 1 << 20)
        n = ff.workflow(function() return #big end)()
      end
      assert.is_true(lua_kb() - before > 1024)
      assert.are.equal(1 << 20, run(n))
      n = nil -- luacheck: ignore 311
      assert.is_true(lua_kb() - before < 512)
    end)

    it("of one function share its counter, also after a release", function()
      local function step(x) return x end
      local a, b = ff.workflow(step), ff.workflow(step)
      assert.are.same({ "step_0000", "step_0001", "step_0002" },
                      { a(1):get_name(), b(1):get_name(), a(1):get_name() })
      a, b = nil, nil -- luacheck: ignore 311
      lua_kb()
      assert.are.equal("step_0003", ff.workflow(step)(1):get_name())
      -- Another function of the same definition is a new one: it starts over.
      local function make() return ff.workflow("made", function(x) return x end) end
      assert.are.same({ "made_0000", "made_0000" }, { make()(1):get_name(), make()(1):get_name() })
    end)
  end)

  describe("bad input", function()
    it("workflow() needs a function or a class table", function()
      assert.has_error(function() ff.workflow(42) end,
        "bad argument #1 to 'workflow' (function or class table expected, got number)")
      assert.has_error(function() ff.workflow("name", "not a function") end,
        "bad argument #2 to 'workflow' (function or class table expected, got string)")
      assert.has_error(function() ff.workflow("", function() end) end,
        "bad argument #1 to 'workflow' (name must not be empty)")
      assert.has_error(function() ff.workflow(nil) end,
        "bad argument #1 to 'workflow' (function or class table expected, got nil)")
      local item = ff.workflow("f", function() end)().name
      assert.has_error(function() ff.workflow(item) end,
        "bad argument #1 to 'workflow' (function or class table expected, got userdata)")
      assert.has_error(function() ff.core.factory(item, "f") end,
        "bad argument #1 to 'factory' (function expected, got functionfuse.NodeItem)")
      local wf = LocalWorkflow(ff.workflow("g", function() end)(), { workflow_name = "p" })
      assert.has_error(function() wf:query("g.*"):set_plugins(item) end,
        "bad argument #1 to 'set_plugins' (the plugin has no method 'local_initialize')")
    end)

    it("accepts callable tables as functions", function()
      local c = setmetatable({}, { __call = function(_, x) return x * 2 end })
      local n = ff.workflow("c", c)(21)
      assert.are.equal(42, run(n))
    end)

    it("refuses item keys that are nil", function()
      local n = ff.workflow("f", function() end)()
      assert.has_error(function() n:item(nil) end,
        "bad argument #1 to 'item' (item key must not be nil)")
    end)

    it("cannot form a cycle: a node only ever depends on older nodes", function()
      local f = ff.workflow("f", function(x) return (x or 0) + 1 end)
      local a = f()
      local b = f(a)
      local wf = LocalWorkflow(b, { workflow_name = "cycle" })
      -- replace_func changes what a node runs, never its edges.
      wf:replace_func(a, function() return 10 end)
      assert.are.equal(11, wf:run())
      assert.are.same({ "f_0000", "f_0001" }, { a:get_name(), b:get_name() })
    end)
  end)
end)
