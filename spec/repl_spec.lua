-- The interactive REPL, driven through a real pseudo-terminal.
local H = require "spec.helper"

describe("fflua REPL", function()
  local home, p
  before_each(function() home = H.tmpdir() end)
  after_each(function()
    if p then p:close(); p = nil end
    H.cleanup()
  end)

  local function start(args, env)
    p = H.pty(args or {}, { home = home, env = env })
    H.expect(p, "Copyright")
    H.expect(p, "> ")
    return p
  end

  -- Sends a line and returns the plain text printed before the next prompt.
  local function eval(line, prompt)
    H.type(p, line .. "\r")
    prompt = prompt or "> "
    local seen = H.expect(p, "\n" .. prompt)
    seen = H.plain(seen:sub(1, -#prompt - 1))
    -- Drop the echo of the input line.
    seen = seen:gsub("^[^\n]*\n", "")
    return seen
  end

  it("starts on a terminal with the version banner and a prompt", function()
    p = H.pty({}, { home = home })
    local seen = H.plain(H.expect(p, "> "))
    assert.matches("^fflua " .. H.version:gsub("%.", "%%.") .. " %-%- Lua 5%.4", seen)
  end)

  it("prints the values of expressions as lua5.4 does", function()
    start()
    assert.are.equal("2\n", eval("1+1"))
    assert.are.equal("1\ta\tnil\ttrue\n", eval("1, 'a', nil, true"))
    assert.are.equal("", eval("local x = 5"))
    assert.are.equal("7\n", eval("=3+4")) -- the 5.2-style '=' prefix
  end)

  it("continues unfinished statements under the >> prompt", function()
    start()
    H.type(p, "for i = 1, 3 do\r")
    H.expect(p, ">> ")
    H.type(p, "print(i)\r")
    H.expect(p, ">> ")
    assert.are.equal("1\n2\n3\n", eval("end"))
    H.type(p, "t = {\r")
    H.expect(p, ">> ")
    assert.are.equal("", eval("10, 20 }"))
    assert.are.equal("20\n", eval("t[2]"))
  end)

  it("reports errors with a traceback and stays in the REPL", function()
    start()
    local out = eval("error('boom')")
    assert.matches("^stdin:1: boom\nstack traceback:\n", out)
    out = eval("x = = 1")
    -- Lines are numbered across the session: this is the second.
    assert.matches("^stdin:2: unexpected symbol near '='", out)
    out = eval("error({})")
    assert.matches("^%(error object is a table value%)", out)
    assert.are.equal("4\n", eval("2+2"))
  end)

  it("reads UTF-8 input whatever the locale says", function()
    for _, lang in ipairs { "C.UTF-8", false } do
      start({}, { LANG = lang, LC_ALL = false, LC_CTYPE = false })
      assert.are.equal("2\t\195\169\n", eval('#"\195\169", "\195\169"'))
      H.quit(p); p:close(); p = nil
    end
  end)

  it("preloads functionfuse as the global ff", function()
    start()
    assert.are.equal(H.version .. "\n", eval("ff.version"))
    assert.are.equal("true\n", eval("ff == require 'functionfuse'"))
  end)

  it("names workflow functions after their definitions, with lines numbered across the session", function()
    start()
    eval("function train(x)", ">> ")
    eval("  return x", ">> ")
    eval("end")
    assert.are.equal("train_0000\n", eval("ff.workflow(train)(1):get_name()"))
    assert.are.equal("square_0000\n", eval("square = ff.workflow(function(x) return x * x end)"
                                           .. " return square(2):get_name()"))
    -- Another definition of train: another name, naming the line it is on.
    eval("function train(x) return x + 1 end")
    assert.are.equal("train@stdin_6_0000\n", eval("ff.workflow(train)(1):get_name()"))
    assert.are.equal("fn@stdin_8_0000\n", eval("ff.workflow(function() end)():get_name()"))
    -- A traceback points at the session's line where the function is.
    local out = eval("ff.LocalWorkflow = require('functionfuse.backends.builtin.localback')"
                     .. ".LocalWorkflow")
    assert.are.equal("", out)
    eval("bad = ff.workflow(function() error('no') end)")
    out = eval("ff.LocalWorkflow(bad(), { workflow_name = 'w' }):run()")
    assert.matches("^node 'bad_0000' %(function 'bad' defined at stdin:10%) failed: stdin:10: no", out)
  end)

  it("honours _PROMPT and _PROMPT2", function()
    start()
    H.type(p, "_PROMPT = 'ff' .. '> '; _PROMPT2 = '..' .. '> '\r")
    H.expect(p, "ff> ")
    H.type(p, "do\r")
    H.expect(p, "..> ")
    assert.are.equal("", eval("end", "ff> "))
  end)

  it("writes history to ~/.fflua_history and recalls it in the next session", function()
    start()
    H.type(p, "for i = 1, 2 do\r")
    H.expect(p, ">> ")
    eval("end")
    eval("x = 41")
    assert.are.equal(0, H.quit(p))
    p:close()
    local hist = H.read(home .. "/.fflua_history")
    assert.truthy(hist, "no history file")
    assert.truthy(hist:find("x\\040=\\04041", 1, true) or hist:find("x = 41", 1, true), hist)
    -- A new session recalls the earlier lines with the Up arrow.
    start()
    H.type(p, "\27[A\r") -- one line up: "x = 41"
    H.expect(p, "\n> ")
    assert.are.equal("42\n", eval("x + 1"))
  end)

  it("keeps history where FFLUA_HISTORY says, and none when it is empty", function()
    local file = home .. "/elsewhere"
    start({}, { FFLUA_HISTORY = file })
    eval("1")
    H.quit(p); p:close()
    local kept = H.read(file)
    assert.matches("\n1\n", kept)
    assert.is_nil(H.read(home .. "/.fflua_history"))
    start({}, { FFLUA_HISTORY = "" })
    eval("x = 2")
    H.quit(p); p:close()
    assert.is_nil(H.read(home .. "/.fflua_history"))
    assert.are.equal(kept, H.read(file))
  end)

  describe("Tab completion", function()
    it("completes fields of tables", function()
      start()
      H.type(p, "string.fo\t")
      H.expect(p, "rmat")
      assert.are.equal("x=5\n", eval("('x=%d', 5)"))
    end)

    it("completes global names and keywords", function()
      start()
      H.type(p, "my_unique_global = 3\r")
      H.expect(p, "> ")
      H.type(p, "my_uni\t")
      H.expect(p, "que_global")
      assert.are.equal("3\n", eval(""))
      H.type(p, "retu\t")
      H.expect(p, "rn")
      assert.are.equal("9\n", eval(" 9"))
    end)

    it("lists the choices on a second Tab and completes ff's fields", function()
      start()
      H.type(p, "ff.vers\t\t")
      local seen = H.plain(H.expect(p, "version_num"))
      -- The first Tab completes the common part, the second lists both.
      assert.matches("\nff%.version%s+ff%.version_num$", seen)
      H.type(p, "\21") -- kill the line
      H.type(p, "ff.core.err_n\t")
      H.expect(p, "ame")
      assert.are.equal("FFLUA_ECYCLE\n", eval("(-31003)"))
    end)

    it("completes methods after ':' through the metatable", function()
      start()
      eval("s = 'abc'")
      H.type(p, "s:upp\t")
      H.expect(p, "er")
      assert.are.equal("ABC\n", eval("()"))
    end)

    it("never runs __index functions", function()
      start()
      eval("hits = 0; trap = setmetatable({xyz = 1}, {__index = function() hits = hits + 1 end})")
      H.type(p, "trap.x\t")
      H.expect(p, "yz") -- the completion ran, on the raw field
      H.type(p, "\21")
      assert.are.equal("0\n", eval("hits"))
    end)
  end)

  describe("Ctrl-C and Ctrl-D", function()
    it("Ctrl-C interrupts a running statement and returns to the prompt", function()
      start()
      H.type(p, "while true do end\r")
      p:expect("\n", 5)
      -- Give the loop a moment to start, then interrupt it.
      p:expect("never printed", 0.3)
      p:kill(H.signals.SIGINT)
      local seen = H.plain(H.expect(p, "> "))
      assert.truthy(seen:find("interrupted!", 1, true), seen)
      assert.are.equal("2\n", eval("1+1"))
    end)

    it("Ctrl-C at the prompt abandons the line", function()
      start()
      H.type(p, "this is not lua")
      H.expect(p, "lua")
      p:kill(H.signals.SIGINT)
      H.expect(p, "> ")
      assert.are.equal("5\n", eval("2+3"))
      H.type(p, "do\r")
      H.expect(p, ">> ")
      p:kill(H.signals.SIGINT) -- also inside a continuation
      H.expect(p, "> ")
      assert.are.equal("6\n", eval("3*2"))
    end)

    it("Ctrl-C is never lost, however it falls against typing", function()
      start()
      for i = 1, 20 do
        H.type(p, "junk" .. i)
        p:kill(H.signals.SIGINT)
        H.expect(p, "\n> ")
      end
      assert.are.equal("5\n", eval("2+3"))
    end)

    it("Ctrl-D exits with status 0", function()
      start()
      local code, sig = H.quit(p)
      assert.are.equal(0, code)
      assert.is_nil(sig)
    end)
  end)

  it("enters the REPL after a script with -i, seeing its globals", function()
    local dir = H.tmpdir()
    local s = H.write(dir .. "/setup.lua", "greeting = 'hello'")
    start({ "-i", s })
    assert.are.equal("hello\n", eval("greeting"))
  end)
end)
