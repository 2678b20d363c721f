-- Storage under attack: another process removing what this one writes,
-- damaged bytes in the LMDB file (keys, sizes, page headers, anywhere),
-- SIGTERM mid-run, a read-only storage, hostile task names. (A full disk:
-- storage_spec.lua.)
-- Every case runs real fflua processes on real files.
local H = require "spec.helper"

-- A pipeline of n nodes sq_0000.. (every fifth value big enough to live on
-- LMDB's overflow pages); prints "RAN sqI" per node run and the results.
local PIPELINE = [[
local ff = require "functionfuse"
local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow
local storage = require("functionfuse.storage").storage_factory{
  kind = "file", options = { path = "st", keep_runs = 0 } }
local n = tonumber(arg[1])
local sq = ff.workflow("sq", function(i)
  print("RAN sq" .. i)
  return i % 5 == 4 and ("big"):rep(3000) .. i or i * i
end)
local nodes = {}
for i = 0, n - 1 do nodes[#nodes + 1] = sq(i) end
nodes[#nodes + 1] = { workflow_name = "w", cache = arg[2] }
local wf = LocalWorkflow(table.unpack(nodes))
wf:set_storage(storage)
local out = {}
for i, v in ipairs({ wf:run() }) do out[i] = type(v) == "string" and #v or v end
print("RESULT " .. table.concat(out, ","))
]]

local function expected(n)
  local out = {}
  for i = 0, n - 1 do out[#out + 1] = i % 5 == 4 and 9000 + #tostring(i) or i * i end
  return "RESULT " .. table.concat(out, ",")
end

local function run(dir, n, cache)
  H.write(dir .. "/pipeline.lua", PIPELINE)
  local r = H.fflua({ "pipeline.lua", tostring(n), cache }, { cwd = dir })
  local ran = {}
  for name in r.stdout:gmatch("RAN (%S+)") do ran[#ran + 1] = name end
  table.sort(ran)
  return r, ran
end

local function store(dir, ...)
  return H.fflua({ "store", ... }, { cwd = dir })
end

--- Changes the file: fn(bytes) returns the new bytes.
local function damage(dir, fn)
  local path = dir .. "/st/data.mdb"
  local data = assert(H.read(path))
  local new = fn(data)
  assert(#new == #data)
  local f = assert(io.open(path, "wb"))
  f:write(new)
  f:close()
end

--- The offset (1-based) of the one place where s stands in data.
local function only(data, s)
  local at = data:find(s, 1, true)
  assert(at, s .. " is not in the file")
  assert(data:find(s, at + 1, true) == nil, s .. " is in the file twice")
  return at
end

local function set_byte(data, at, byte)
  return data:sub(1, at - 1) .. string.char(byte) .. data:sub(at + 1)
end

local function no_crash(r, what)
  assert.is_nil(r.signal, what .. " died of signal " .. tostring(r.signal) .. ":\n" .. r.stderr)
  assert.is_true(r.code == 0 or r.code == 1, what .. " exited " .. tostring(r.code) .. ":\n" .. r.stderr)
end

describe("a storage", function()
  after_each(H.cleanup)

  it("survives another process removing, and making again, a workflow it writes to", function()
    local dir = H.tmpdir()
    H.write(dir .. "/writer.lua", [[
      local st = require("functionfuse.storage").storage_factory{
        kind = "file", options = { path = "st", keep_runs = 0 } }
      st:save("sd", "t1", 1); st:save("keep", "k", "kept"); st:flush()
      print("READY"); io.stdout:flush()
      io.read("l")
      st:save("other", "t2", 2); st:save("sd", "t3", 3); st:flush()
      print("WF " .. table.concat(st:workflows(), ","))
      print("OTHER " .. table.concat(st:list_tasks("other"), ","))
      print("SD " .. table.concat(st:list_tasks("sd"), ","))
      print("KEEP " .. st:read_task("keep", "k"))
      io.read("l")
      st:save("sd", "t4", 4); st:flush()
      print("SD2 " .. table.concat(st:list_tasks("sd"), ","))
    ]])
    local p = H.fftest.pty { argv = { H.bin, "writer.lua" }, cwd = dir, env = { TERM = "dumb" } }
    local seen = H.expect(p, "READY")
    -- Another process removes the workflow the writer has open.
    local r = store(dir, "rm-workflow", "st", "sd")
    assert.are.equal(0, r.code, r.stderr)
    p:send("go\n")
    seen = seen .. H.expect(p, "KEEP kept")
    -- Then removes it again and makes it anew, with another task in it.
    assert.are.equal(0, store(dir, "rm-workflow", "st", "sd").code)
    H.write(dir .. "/again.lua", [[
      local st = require("functionfuse.storage").storage_factory{
        kind = "file", options = { path = "st", keep_runs = 0 } }
      st:save("sd", "new", "n")
    ]])
    assert.are.equal(0, H.fflua({ "again.lua" }, { cwd = dir }).code)
    p:send("go\n")
    seen = seen .. H.expect(p, "SD2 ")
    local code, sig = p:wait(20)
    seen = seen .. select(2, p:expect("\0never", 0.1))
    p:close()
    assert.is_nil(sig)
    assert.are.equal(0, code, seen)
    assert.matches("WF keep,other,sd", seen, 1, true)
    assert.matches("OTHER t2", seen, 1, true)
    assert.matches("SD t3\r?\n", seen)
    assert.matches("SD2 new,t4", seen, 1, true)
    -- And another process sees the same.
    r = store(dir, "ls", "st", "sd")
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("new", r.stdout, 1, true)
    assert.matches("t4", r.stdout, 1, true)
    assert.is_nil(r.stdout:find("t3", 1, true))
  end)

  it("never hands a node another task's value: a damaged key is a damaged record", function()
    local dir = H.tmpdir()
    local r = run(dir, 13)
    assert.are.equal(0, r.code, r.stderr)
    -- One bit: sq_0012 becomes sq_0013, a task the next run asks for.
    damage(dir, function(d) return set_byte(d, only(d, "sq_0012") + 6, ("3"):byte()) end)
    local ran
    r, ran = run(dir, 14, "name")
    assert.are.equal(0, r.code, r.stderr)
    assert.matches(expected(14), r.stdout, 1, true)
    assert.are.same({ "sq12", "sq13" }, ran)
    assert.matches("the stored result of task 'sq_0013' of workflow 'w' is damaged (checksum mismatch); " ..
                   "computing it again", r.stderr, 1, true)
  end)

  it("bounds a value's size by the file: a size field gone wild is a damaged record, not a crash", function()
    local dir = H.tmpdir()
    assert.are.equal(0, run(dir, 13).code)
    -- The high byte of the data size in sq_0012's node header (8 bytes
    -- before its key): about 2 GB, far past the end of the file.
    damage(dir, function(d) return set_byte(d, only(d, "sq_0012") - 5, 0x7f) end)
    local r = store(dir, "ls", "st", "w")
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("sq_0012%s+%?%s+%?%s+%?%s+DAMAGED", r.stdout)
    r = store(dir, "check", "st")
    assert.are.equal(1, r.code, r.stderr)
    assert.matches("task 'sq_0012': its size is larger than the file", r.stdout, 1, true)
    assert.matches("workflow 'w': the file's structure is damaged: page %d+: entry %d+ lies outside the page", r.stdout)
    local ran
    r, ran = run(dir, 13)
    no_crash(r, "the run")
    assert.are.same({ "sq12" }, ran)
    assert.matches("task 'sq_0012' of workflow 'w' is damaged (its size is larger than the file); " ..
                   "computing it again", r.stderr, 1, true)
    -- Writing into the damaged tree could corrupt memory: refused, loudly.
    assert.are.equal(1, r.code)
    assert.matches("cannot save results of workflow 'w' in 'st': its part of the file is damaged (page ",
                   r.stderr, 1, true)
    assert.matches("repair the storage with 'fflua store repair st'", r.stderr, 1, true)
    r = store(dir, "repair", "st")
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("left behind: task 'sq_0012' of workflow 'w': its size is larger than the file", r.stdout,
                   1, true)
    assert.matches("storage 'st': kept 12 results of 1 workflow; 1 damaged result left behind; " ..
                   "the old file is kept as 'st/data.mdb.damaged-", r.stdout, 1, true)
    r = store(dir, "check", "st")
    assert.are.equal(0, r.code, r.stdout)
    assert.matches("storage 'st': 1 workflow, 12 results, all intact", r.stdout, 1, true)
    r, ran = run(dir, 13)
    assert.are.equal(0, r.code, r.stderr)
    assert.are.same({ "sq12" }, ran)
    assert.matches(expected(13), r.stdout, 1, true)
  end)

  it("survives a damaged page header in ls, check, a run and repair, and repair keeps every readable result", function()
    local dir = H.tmpdir()
    assert.are.equal(0, run(dir, 13).code)
    -- The leaf page holding the keys: its lower bound of free space made
    -- huge, so that LMDB reads node offsets from far past the page.
    damage(dir, function(d)
      local page = (only(d, "sq_0012") - 1) // 4096 * 4096
      return set_byte(d, page + 14, 0xff)
    end)
    local r = store(dir, "ls", "st", "w")
    no_crash(r, "ls")
    assert.are.equal(1, r.code)
    assert.matches("sq_0000", r.stdout, 1, true)
    assert.matches("warning: storage 'st': workflow 'w' is damaged after 'sq_0012'", r.stderr, 1, true)
    r = store(dir, "check", "st")
    assert.are.equal(1, r.code)
    assert.matches("storage 'st' is damaged: repair it with 'fflua store repair st'", r.stdout, 1, true)
    local ran
    r, ran = run(dir, 13)
    no_crash(r, "the run")
    assert.are.equal(1, r.code)
    assert.are.equal(13, #ran) -- nothing could be read: all computed
    assert.matches("repair the storage with 'fflua store repair st'", r.stderr, 1, true)
    r = store(dir, "repair", "st")
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("kept 13 results of 1 workflow; 0 damaged results left behind", r.stdout, 1, true)
    r, ran = run(dir, 13)
    assert.are.equal(0, r.code, r.stderr)
    assert.are.same({}, ran)
    assert.matches(expected(13), r.stdout, 1, true)
  end)

  it("never takes a sound file for damaged: pages freed in the transaction that made them", function()
    local dir = H.tmpdir()
    -- A value saved again and again as it grows: LMDB allocates pages for
    -- it and frees them in one transaction, and never writes them, so the
    -- meta page names pages past the end of the file.
    H.write(dir .. "/grow.lua", [[
      local core = require "functionfuse.core"
      local st = core.store_open("st")
      for i = 1, 30 do
        st:put("w", "checkpoint", ("x"):rep(5000 * i))
        if i % 3 == 0 then st:flush() end
      end
      st:close()
    ]])
    H.write(dir .. "/more.lua", [[
      local core = require "functionfuse.core"
      local st = core.store_open("st")
      st:put("w", "more", 1)
      st:close()
      print("SAVED", #core.store_open("st"):verify())
    ]])
    assert.are.equal(0, H.fflua({ "grow.lua" }, { cwd = dir }).code)
    local r = H.fflua({ "more.lua" }, { cwd = dir })
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("SAVED\t0", r.stdout)
    r = store(dir, "check", "st")
    assert.are.equal(0, r.code, r.stdout)
    assert.matches("all intact", r.stdout, 1, true)
  end)

  it("survives a meta page damaged while it is open: an error, not a crash", function()
    local dir = H.tmpdir()
    H.write(dir .. "/meta.lua", [[
      local core = require "functionfuse.core"
      local st = core.store_open("st")
      st:put("w", "t", 1)
      st:flush()
      assert(st:get("w", "t") == 1)
      -- The newest meta page now says the file has 2^40 pages.
      local f = assert(io.open("st/data.mdb", "r+b"))
      local newest, best = 0, -1
      for i = 0, 1 do
        f:seek("set", i * 4096 + 16 + 128)
        local txn = string.unpack("<I8", f:read(8))
        if txn > best then best, newest = txn, i end
      end
      f:seek("set", newest * 4096 + 16 + 120)
      f:write(string.pack("<I8", 1 << 40))
      f:close()
      print("GET", pcall(st.get, st, "w", "t"))
      print("PUT", pcall(st.put, st, "w", "u", 2))
    ]])
    local r = H.fflua({ "meta.lua" }, { cwd = dir })
    no_crash(r, "the script")
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("GET\tfalse\tstorage 'st': the storage 'st' cannot be used in this process any more: " ..
                   "its file could not be mapped again", r.stdout)
    assert.matches("PUT\tfalse\tstorage 'st': the storage 'st' cannot be used", r.stdout)
  end)

  it("never crashes and never gives a wrong result, whatever bytes of the file are damaged", function()
    local dir = H.tmpdir()
    assert.are.equal(0, run(dir, 40).code)
    local pristine = H.read(dir .. "/st/data.mdb")
    local want = expected(40)
    math.randomseed(9)
    for round = 1, H.sanitize and 4 or 10 do
      os.execute("rm -rf '" .. dir .. "/st'")
      os.execute("mkdir '" .. dir .. "/st'")
      local data = pristine
      for _ = 1, math.random(1, 12) do
        -- Mostly past the two meta pages; sometimes in them.
        local at = math.random() < 0.1 and math.random(1, 8192) or math.random(8193, #data)
        data = set_byte(data, at, math.random(0, 255))
      end
      H.write(dir .. "/st/data.mdb", data)
      for _, args in ipairs { { "store", "ls", "st", "w" }, { "store", "check", "st" },
                              { "pipeline.lua", "40" }, { "store", "repair", "st" }, { "pipeline.lua", "40" } } do
        local r = H.fflua(args, { cwd = dir })
        local what = ("round %d: fflua %s"):format(round, table.concat(args, " "))
        no_crash(r, what)
        if args[1] == "pipeline.lua" and r.code == 0 then
          assert.matches(want, r.stdout, 1, true)
        end
      end
    end
  end)

  it("commits what finished when the process is terminated (SIGTERM)", function()
    local dir = H.tmpdir()
    local script = H.write(dir .. "/slow.lua", [[
      local ff = require "functionfuse"
      local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow
      local storage = require("functionfuse.storage").storage_factory{
        kind = "file", options = { path = "st", keep_runs = 0 } }
      local function sleep(s) local t = os.clock() + s; while os.clock() < t do end end
      local work = ff.workflow("work", function(i)
        io.stdout:write("RAN work" .. i .. "\n"); io.stdout:flush()
        sleep(0.03)
        return i
      end)
      local parts = {}
      for i = 1, 60 do parts[i] = work(i) end
      parts[#parts + 1] = { workflow_name = "term" }
      local wf = LocalWorkflow(table.unpack(parts))
      wf:set_storage(storage)
      wf:run()
    ]])
    local p = H.fftest.pty { argv = { H.bin, script }, cwd = dir, env = { TERM = "dumb" } }
    local seen = H.expect(p, "RAN work20", 60)
    p:kill(H.signals.SIGTERM)
    local _, sig = p:wait(20)
    seen = seen .. select(2, p:expect("\0never", 0.1))
    p:close()
    assert.are.equal(H.signals.SIGTERM, sig)
    assert.matches("fflua: terminated", seen, 1, true)
    local started = 0
    for _ in seen:gmatch("RAN work%d+") do started = started + 1 end
    local r = store(dir, "ls", "st", "term")
    assert.are.equal(0, r.code, r.stderr)
    local stored = 0
    for _ in r.stdout:gmatch("work_%d+") do stored = stored + 1 end
    -- Every node that finished is stored: all that started but the one
    -- the signal interrupted (none, when it came between two nodes).
    assert.is_true(stored == started or stored == started - 1,
                   ("%d nodes started, %d stored"):format(started, stored))
  end)

  it("can be read, listed and loaded from when it cannot be written", function()
    local dir = H.tmpdir()
    assert.are.equal(0, run(dir, 5).code)
    H.write(dir .. "/save.lua", [[
      local st = require("functionfuse.storage").storage_factory{
        kind = "file", options = { path = "st", keep_runs = 0 } }
      st:save("w", "more", 1)
    ]])
    -- The storage's directory made read-only by a bind mount, in a mount
    -- namespace of its own (root may write wherever permissions say no).
    local r = H.in_namespace(dir, [[
      mount --bind st st && mount -o remount,ro,bind st || exit 77
      "$FF" store ls st w; echo "ls exited $?"
      "$FF" store show st w sq_0003; echo "show exited $?"
      "$FF" pipeline.lua 5; echo "run exited $?"
      "$FF" pipeline.lua 6 2>&1; echo "bigger run exited $?"
      "$FF" save.lua 2>&1; echo "save exited $?"
    ]])
    if not r then return pending("no read-only bind mount can be made here") end
    assert.matches("sq_0004", r.stdout, 1, true)
    assert.matches("ls exited 0", r.stdout, 1, true)
    assert.matches("9\nshow exited 0", r.stdout, 1, true)
    assert.matches(expected(5) .. "\nrun exited 0", r.stdout, 1, true)
    -- Both writers fail, each saying why.
    local why = "it is read-only here (Read-only file system): nothing can be saved in it"
    local bigger = r.stdout:match("run exited 0\n(.-)bigger run exited 1\n")
    assert.truthy(bigger, r.stdout)
    assert.matches(why, bigger, 1, true)
    local save = r.stdout:match("bigger run exited 1\n(.-)save exited 1\n")
    assert.truthy(save, r.stdout)
    assert.matches(why, save, 1, true)
  end)

  it("lists every task, whatever bytes its name holds, and prints names escaped", function()
    local dir = H.tmpdir()
    H.write(dir .. "/names.lua", [[
      local st = require("functionfuse.storage").storage_factory{
        kind = "file", options = { path = "st", keep_runs = 0 } }
      for i, name in ipairs { "a\0b", "\27[31mred", "line\nfake row", ".hidden", "plain" } do
        st:save("w", name, i)
      end
      local function show(t)
        local o = {}
        for i, v in ipairs(t) do o[i] = ("%q"):format(v) end
        return table.concat(o, " ")
      end
      print("ALL " .. show(st:list_tasks("w")))
      print("STAR " .. show(st:list_tasks("w", "*")))
      print("ONE " .. show(st:list_tasks("w", "a?b")))
      print("DOT " .. show(st:list_tasks("w", ".*")))
    ]])
    local r = H.fflua({ "names.lua" }, { cwd = dir })
    assert.are.equal(0, r.code, r.stderr)
    -- In byte order: ESC (27) comes before ".".
    assert.matches('ALL "\\27[31mred" ".hidden" "a\\0b" "line\\\nfake row" "plain"', r.stdout, 1, true)
    assert.matches('STAR "\\27[31mred" "a\\0b" "line\\\nfake row" "plain"', r.stdout, 1, true)
    assert.matches('ONE "a\\0b"', r.stdout, 1, true)
    assert.matches('DOT ".hidden"', r.stdout, 1, true)
    r = store(dir, "ls", "st", "w")
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("a\\x00b", r.stdout, 1, true)
    assert.matches("\\x1b[31mred", r.stdout, 1, true)
    assert.matches("line\\nfake row", r.stdout, 1, true)
    assert.is_nil(r.stdout:find("\27", 1, true), "a raw escape character was printed")
    assert.is_nil(r.stdout:find("\nfake row", 1, true), "a name forged a row")
    r = store(dir, "show", "st", "w", "line\nfake row")
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("3\n", r.stdout)
  end)
end)
