-- The progress display of a local run: one line redrawn in place on a
-- terminal (a real pseudo-terminal here), erased at the end and before
-- what the workflow prints; plain lines every `progress` seconds when
-- stderr is not a terminal; off with quiet, progress = false or
-- FFLUA_PROGRESS=0. Each case runs a workflow of about a second.
local H = require "spec.helper"

--- A script whose run takes about `secs` seconds of CPU time over `n`
-- nodes in a chain (workflow 'demo'), with the workflow options opts (Lua
-- source of a table's fields) and `body` run by node 3 (while the line
-- shows). It prints DONE after the run.
local function script(dir, o)
  o = o or {}
  local src = ([[
local ff = require "functionfuse"
local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow
local orig_print, orig_write = print, io.write
local function spin(s) local t = os.clock() + s; while os.clock() < t do end end
local step = ff.workflow(function(i, prev)
  spin(%s)
  if i == 3 then %s end
  if i == %d then error("node " .. i .. " fails") end
  return i
end)
local prev
for i = 1, %d do prev = step(i, prev):set_name("n" .. i) end
local wf = LocalWorkflow(prev, { workflow_name = %q, %s })
%s
print("DONE", print == orig_print and io.write == orig_write)
]]):format(o.per or 0.12, o.body or "", o.fail or -1, o.n or 8, o.name or "demo", o.opts or "",
           o.run or "wf:run()")
  return H.write(dir .. "/progress.lua", src)
end

--- Runs a script on a terminal and returns everything it wrote, up to and
-- including DONE's line.
local function on_pty(o, env)
  local dir = H.tmpdir()
  local p = H.pty({ script(dir, o) }, { cwd = dir, env = env })
  local seen = H.expect(p, o and o.until_text or "DONE\t", 30)
  local _, rest = p:expect("\n", 5)
  local code = p:wait(10)
  p:close()
  return seen .. rest, code
end

--- The progress lines drawn on a terminal: the text after each "\r" up to
-- the erase-to-end that closes it.
local function drawn(seen)
  local lines = {}
  for line in seen:gmatch("\r(fflua: [^\r\27]*)\27%[K") do lines[#lines + 1] = line end
  return lines
end

local LINE = "^fflua: '(.-)': (%d+)/(%d+) nodes, (%d+) running, (%d+) loaded, (%d+) failed, [%d.:]+ s?"

--- Text printed at column 0: at the start, after a newline or right after
-- the progress line was erased.
local function at_column_0(seen, text)
  local i = seen:find(text, 1, true)
  assert(i, ("%q does not show in %q"):format(text, seen))
  local before = seen:sub(1, i - 1)
  return before == "" or before:sub(-1) == "\n" or before:sub(-4) == "\r\27[K", before:sub(-80)
end

describe("the progress display", function()
  after_each(H.cleanup)

  describe("on a terminal", function()
    it("redraws one line in place and erases it at the end", function()
      local seen, code = on_pty()
      assert.are.equal(0, code, seen)
      local lines = drawn(seen)
      assert.is_true(#lines >= 2, seen)
      local last_done = -1
      for _, l in ipairs(lines) do
        local name, done, total, running, loaded, failed = l:match(LINE)
        assert.are.equal("demo", name, l)
        assert.are.equal("8", total, l)
        assert.is_true(tonumber(done) >= last_done, l)
        assert.is_true(tonumber(done) <= 8, l)
        last_done = tonumber(done)
        assert.are.equal("1", running, l)
        assert.are.same({ "0", "0" }, { loaded, failed })
        assert.is_true(#l <= 79, l) -- the width of the terminal less one
      end
      -- Erased right before what the script prints next, and print and
      -- io.write are its own again after the run.
      assert.matches("\r\27%[KDONE\ttrue\r?\n", seen)
      assert.is_nil(seen:match("DONE.*fflua:"), seen)
    end)

    it("erases the line before a node's print, io.write and file:write", function()
      local seen, code = on_pty { per = 0.1, body = [[
        spin(0.3); print("P1 printed"); spin(0.3); io.write("W2 written\n"); spin(0.3)
        io.stdout:write("O3 out\n"); spin(0.3); io.stderr:write("E4 err\n")]] }
      assert.are.equal(0, code, seen)
      assert.is_true(#drawn(seen) >= 2, seen)
      for _, text in ipairs { "P1 printed", "W2 written", "O3 out", "E4 err" } do
        local ok, before = at_column_0(seen, text)
        assert.is_true(ok, ("%q follows %q"):format(text, before))
      end
    end)

    it("leaves copies of print and io.write taken during the run working after it", function()
      local seen, code = on_pty { per = 0.1, body = [[
        SAVED_PRINT, SAVED_WRITE = print, io.write
        local mt = setmetatable({}, { __tostring = function() io.write("inner "); return "outer" end })
        print(mt)]],
        run = [[wf:run(); SAVED_PRINT("after print"); SAVED_WRITE("after write\n")]] }
      assert.are.equal(0, code, seen)
      assert.matches("inner outer", seen, 1, true)
      assert.matches("after print\r?\n", seen)
      assert.matches("after write\r?\n", seen)
    end)

    it("cuts the line to the terminal's width", function()
      local seen = on_pty { name = ("long"):rep(30), per = 0.08 }
      local lines = drawn(seen)
      assert.is_true(#lines >= 1, seen)
      for _, l in ipairs(lines) do
        assert.are.equal(79, #l, l)
        assert.matches("^fflua: 'longlong", l)
      end
    end)

    it("erases the line before the error of a failed run", function()
      local seen = on_pty({ fail = 6, until_text = "node 6 fails" })
      assert.is_true(#drawn(seen) >= 1, seen)
      local i = seen:find(H.bin, 1, true)
      assert.truthy(i, seen)
      local ok, before = at_column_0(seen, H.bin .. ": node 'n6'")
      assert.is_true(ok, before)
    end)

    for _, case in ipairs {
      { "quiet = true", { opts = "quiet = true" } },
      { "progress = false", { opts = "progress = false" } },
      { "FFLUA_PROGRESS=0", {}, { FFLUA_PROGRESS = "0" } },
      { "quiet = true even with progress = true", { opts = "quiet = true, progress = true" } },
    } do
      it("shows nothing with " .. case[1], function()
        local o = case[2]
        o.n, o.per = 5, 0.12
        local seen, code = on_pty(o, case[3])
        assert.are.equal(0, code, seen)
        assert.is_nil(seen:find("fflua:", 1, true), seen)
        assert.is_nil(seen:find("\27[", 1, true), seen)
        assert.matches("^DONE\ttrue\r?\n$", seen)
      end)
    end
  end)

  describe("when stderr is not a terminal", function()
    local function run(o, env)
      local dir = H.tmpdir()
      local r = H.fflua({ script(dir, o) }, { cwd = dir, env = env })
      return r
    end

    local function plain_lines(stderr)
      local lines = {}
      for l in stderr:gmatch("[^\n]*\n") do
        if l:find("^fflua: '") then lines[#lines + 1] = l end
      end
      return lines
    end

    it("shows nothing by default", function()
      local r = run({ n = 5 })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("", r.stderr)
      assert.are.equal("DONE\ttrue\n", r.stdout)
    end)

    it("writes a plain line every `progress` seconds", function()
      local r = run({ opts = "progress = 0.3" })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("DONE\ttrue\n", r.stdout)
      assert.is_nil(r.stderr:find("[\r\27]"), r.stderr)
      local lines = plain_lines(r.stderr)
      assert.are.equal(r.stderr, table.concat(lines))
      assert.is_true(#lines >= 2, r.stderr)
      local last_done = -1
      for _, l in ipairs(lines) do
        local name, done, total = l:match(LINE)
        assert.are.equal("demo", name, l)
        assert.are.equal("8", total, l)
        assert.is_true(tonumber(done) >= last_done, l)
        last_done = tonumber(done)
      end
    end)

    it("counts failed and skipped nodes under keep_going", function()
      local r = run({ fail = 2, n = 3, run = [[
        local slow = ff.workflow(function() spin(0.9); return 1 end)
        wf = LocalWorkflow(prev, slow(), { workflow_name = "demo", progress = 0.3 })
        assert(not pcall(wf.run, wf, { keep_going = true }))]] })
      assert.are.equal(0, r.code, r.stderr)
      local lines = plain_lines(r.stderr)
      assert.is_true(#lines >= 2, r.stderr)
      -- n2 failed and n3 after it did not run; the slow node runs: both
      -- count as failed, and as done. (On a loaded machine a first line
      -- may come before n2 failed: it still counts right, with less.)
      local after = 0
      for _, l in ipairs(lines) do
        local name, done, total, nrun, loaded, failed = l:match(LINE)
        assert.are.same({ "demo", "4", "0" }, { name, total, loaded }, l)
        if failed == "2" then
          after = after + 1
          assert.are.same({ "3", "1" }, { done, nrun }, l)
        else
          assert.is_true(tonumber(done) < 3, l)
        end
      end
      assert.is_true(after >= 1, r.stderr)
    end)

    it("shows only the outermost run of a nested one", function()
      local r = run({ n = 3, per = 0, opts = "progress = 0.3", body = [[
        local inner = ff.workflow(function() spin(0.4); return 1 end)
        local a, b, c = inner(), inner(), inner()
        LocalWorkflow(a, b, c, { workflow_name = "inner", progress = 0.1 }):run()]] })
      assert.are.equal(0, r.code, r.stderr)
      local lines = plain_lines(r.stderr)
      assert.is_true(#lines >= 2, r.stderr)
      for _, l in ipairs(lines) do assert.matches("^fflua: 'demo': 2/3 nodes, 1 running", l) end
    end)

    it("writes plain lines with FFLUA_PROGRESS=<seconds>, and progress = <seconds> beats FFLUA_PROGRESS=0",
       function()
      local r = run({ opts = "progress = 0.3", n = 5 }, { FFLUA_PROGRESS = "0" })
      assert.are.equal(0, r.code, r.stderr)
      assert.is_true(#plain_lines(r.stderr) >= 1, r.stderr)
      r = run({ n = 5 }, { FFLUA_PROGRESS = "0.3" })
      assert.are.equal(0, r.code, r.stderr)
      assert.is_true(#plain_lines(r.stderr) >= 1, r.stderr)
      -- 1 is a line a second: none in a run shorter than that.
      r = run({ n = 3, per = 0.1 }, { FFLUA_PROGRESS = "1" })
      assert.are.equal(0, r.code, r.stderr)
      assert.are.equal("", r.stderr)
    end)

    it("keeps to a long interval", function()
      local r = run({ n = 3, per = 0.1, opts = "progress = 86400" })
      assert.are.equal(0, r.code)
      assert.are.equal("", r.stderr)
    end)
  end)
end)
