-- Queries over node names (PCRE2, whole-name matches) and what they set:
-- remote args, plugins, replaced functions.
local ff = require "functionfuse"
local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow

local function names(nodes)
  local t = {}
  for i, n in ipairs(nodes) do t[i] = n:get_name() end
  return t
end

describe("queries", function()
  local wf, s1, s2, m
  before_each(function()
    local sum = ff.workflow(function(a, b) return a + b end)
    local minus = ff.workflow(function(a, b) return a - b end)
    -- functionfuse's test_pattern graph.
    s1 = sum(1, 1):set_name("First sum")
    s2 = sum(s1, 1):set_name("Second sum")
    m = minus(s1, s2):set_name("Single minus")
    wf = LocalWorkflow(m, { workflow_name = "first" })
  end)

  it("find nodes whose whole name matches, in run order", function()
    assert.are.same({ "First sum", "Second sum" }, names(wf:find_nodes("^.*sum.*$")))
    assert.are.same({ "Single minus" }, names(wf:find_nodes("^.*minus.*$")))
    assert.are.same({ "First sum", "Second sum" }, names(wf:find_nodes(".*sum")))
    assert.are.same({}, names(wf:find_nodes("sum"))) -- not a search: the whole name
    assert.are.same({ "First sum", "Second sum", "Single minus" }, names(wf:find_nodes()))
    assert.are.equal(s1, wf:find_nodes("First sum")[1])
    assert.are.equal(-1, wf:run())
  end)

  it("speak Python's re syntax", function()
    assert.are.same({ "First sum" }, names(wf:find_nodes([[(?i)first\s+SUM]])))
    assert.are.same({ "Second sum" }, names(wf:find_nodes([[(?P<word>\w+) sum(?<!First sum)]])))
    assert.are.same({ "First sum", "Single minus" }, names(wf:find_nodes("(First|Single) .*")))
    assert.are.same({ "Second sum" }, names(wf:find_nodes("Se(?=c)cond sum|nothing")))
    local f = ff.workflow("f", function() end)
    local n1 = f()
    local n2 = f(n1)
    local w = LocalWorkflow(n2, { workflow_name = "d" })
    assert.are.same({ "f_0000", "f_0001" }, names(w:find_nodes([[f_\d{4}]])))
    -- An alternative that matches only a prefix still lets a later one match all.
    assert.are.same({ "f_0001" }, names(w:find_nodes("f_000|f_0001")))
  end)

  it("find nodes by the name of their function's definition, however it was called", function()
    local function circles_dataset() return "circles" end
    local function moons_dataset() return "moons" end
    local both = ff.workflow("both", function(a, b) return a .. b end)
    local data = {}
    for _, fn in ipairs { ff.workflow(circles_dataset), ff.workflow(moons_dataset) } do
      data[#data + 1] = fn()
    end
    local w = LocalWorkflow(both(data[1], data[2]), { workflow_name = "datasets" })
    assert.are.same({ "circles_dataset_0000" }, names(w:find_nodes("circles_dataset.*")))
    assert.are.same({ "moons_dataset_0000" }, names(w:find_nodes("moons_dataset.*")))
    assert.are.equal("circlesmoons", w:run())
  end)

  it("match non-ASCII names as UTF-8", function()
    local f = ff.workflow("f", function() end)
    local n = f():set_name("étape-1")
    local w = LocalWorkflow(n, { workflow_name = "u" })
    assert.are.same({ "étape-1" }, names(w:find_nodes(".tape-\\d")))
  end)

  it("report an invalid pattern with PCRE2's message and the offset", function()
    assert.has_error(function() wf:find_nodes("(unclosed") end,
      "invalid pattern '(unclosed': missing closing parenthesis at offset 9")
    assert.has_error(function() wf:query("a{2,1}") end,
      "invalid pattern 'a{2,1}': numbers out of order in {} quantifier at offset 5")
    local long = "(" .. ("x"):rep(200)
    assert.has_error(function() wf:find_nodes(long) end,
      "invalid pattern '" .. long:sub(1, 60) .. "... (201 bytes)': missing closing parenthesis " ..
      "at offset 201")
    assert.has_error(function() wf:find_nodes(42) end,
      "bad argument #1 (pattern string expected, got number)")
  end)

  it("are Pattern objects that show their pattern and can be closed", function()
    local core = require "functionfuse.core"
    local p = core.compile("^a.*$")
    assert.are.equal("functionfuse.Pattern: ^a.*$", tostring(p))
    assert.is_true(p:match("abc"))
    do
      local q <close> = p -- luacheck: ignore 211
    end
    assert.are.equal("functionfuse.Pattern (closed)", tostring(p))
    assert.has_error(function() p:match("abc") end, "attempt to use a closed functionfuse.Pattern")
    assert.matches("^functionfuse%.LeafSet: 0x%x+$", tostring(core.leaf_set({ s1 })))
  end)

  it("give a Query with nodes(), names(), # and chaining setters", function()
    local q = wf:query(".*sum")
    assert.are.equal(2, #q)
    assert.are.same({ "First sum", "Second sum" }, q:names())
    assert.are.same({ "First sum", "Second sum" }, names(q:nodes()))
    local args = { num_cpus = 1 }
    assert.are.equal(q, q:set_remote_args(args))
    assert.are.equal(args, wf._core:get_slot(s1, "remote"))
    assert.are.equal(args, wf._core:get_slot(s2, "remote"))
    assert.is_nil(wf._core:get_slot(m, "remote"))
    assert.has_error(function() q:set_remote_args(5) end,
      "bad argument #1 to 'set_remote_args' (table expected, got number)")
  end)

  describe("over long names", function()
    -- A name of 100,001 bytes: patterns that backtrack once per character
    -- need more than PCRE2's default 32 KiB JIT stack.
    local long = ("a"):rep(100000) .. "!"
    local short_long = ("a"):rep(60) .. "... (100001 bytes)"
    local w, n, other
    before_each(function()
      local f = ff.workflow("f", function() return 1 end)
      n = f():set_name(long)
      other = f():set_name("b?")
      w = LocalWorkflow(n, other, { workflow_name = "long" })
    end)

    it("match patterns that backtrack over every character, for every caller", function()
      local plugin = { local_initialize = function() end, remote_initialize = function() end }
      for _, p in ipairs { "(a|aa)+!", "(.)*!", "(a|b|ab)*!" } do
        local found = w:find_nodes(p)
        assert.are.equal(1, #found, p)
        assert.are.equal(n, found[1])
        assert.are.equal(1, #w:query(p))
        local args = { num_cpus = 1 }
        w:query(p):set_remote_args(args)
        assert.are.equal(args, w._core:get_slot(n, "remote"))
        w:set_plugin(p, plugin)
        assert.are.equal(plugin, w._core:get_slot(n, "plugins"))
        w._core:set_slot(n, "remote", nil)
        w._core:set_slot(n, "plugins", nil)
        assert.is_true(ff.core.compile(p):match(long))
      end
      assert.are.same({ "b?" }, w:query("(a|b|ab)*\\?"):names())
    end)

    it("raise an error naming the pattern and the node when a limit is still hit", function()
      -- Exponential backtracking: past PCRE2's match limit on 60 characters.
      local f = ff.workflow("f", function() end)
      local slow = f():set_name(("a"):rep(60) .. "!")
      local w2 = LocalWorkflow(slow, { workflow_name = "steps" })
      local want = "cannot match pattern '(a|aa)+\\d' against node '" .. ("a"):rep(60) ..
                   "!': the match takes more than 10000000 steps"
      assert.has_error(function() w2:find_nodes("(a|aa)+\\d") end, want)
      assert.has_error(function() w2:query("(a|aa)+\\d") end, want)
      assert.has_error(function() w2:set_plugin("(a|aa)+\\d", {
        local_initialize = function() end, remote_initialize = function() end }) end, want)
      assert.has_error(function() ff.core.compile("(a|aa)+\\d"):match(("a"):rep(60) .. "!") end,
                       "cannot match pattern '(a|aa)+\\d' against '" .. ("a"):rep(60) ..
                       "!': the match takes more than 10000000 steps")
      assert.is_nil(w2._core:get_slot(slow, "plugins"))
      -- Memory: 4 MB of name needs more than the 64 MiB a match may use.
      local huge = f():set_name(("a"):rep(4000000) .. "!")
      local w3 = LocalWorkflow(huge, { workflow_name = "memory" })
      assert.has_error(function() w3:find_nodes("(a|aa)+!") end,
        "cannot match pattern '(a|aa)+!' against node '" .. ("a"):rep(60) ..
        "... (4000001 bytes)': the match needs more than 64 MiB of memory")
      -- Long names and patterns are shortened in the message.
      local pat = "(a|aa)+\\d|" .. ("x"):rep(100)
      assert.has_error(function() w:find_nodes(pat) end,
                       "cannot match pattern '" .. pat:sub(1, 60) .. "... (" .. #pat ..
                       " bytes)' against node '" .. short_long ..
                       "': the match takes more than 10000000 steps")
    end)
  end)

  it("replace_func swaps what one node runs", function()
    wf:replace_func(s2, function(a, b) return a * 100 + b end)
    assert.are.equal(2 - 201, wf:run())
    assert.are.equal("Second sum", s2:get_name())
    assert.has_error(function() wf:replace_func(s2, 42) end,
      "bad argument #2 to 'replace_func' (function expected, got number)")
    assert.has_error(function() wf:replace_func("x", print) end,
      "bad argument #1 to 'replace_func' (node expected, got string)")
  end)
end)
