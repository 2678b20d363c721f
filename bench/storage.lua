-- bench/storage.lua: the storage (LMDB store, value codec) on its hot paths.
--
--   build/fflua bench/storage.lua [scale]
--
-- In one process, in a fresh temporary directory removed at the end:
--   1. store: 1,000,000 small results (integers and short strings) saved with
--      st:put and one st:flush, then loaded with st:get (in key order, and
--      in a random order);
--   2. workflow: 1,000,000 nodes f(i) gathered by 1,000 nodes of 1,000
--      parents each, run without storage, run with storage (every result
--      computed and saved; once in a fresh storage, once in a workflow whose
--      database already exists), then, with the gather results removed, run
--      again (the 1,000,000 results loaded), and once more with every result
--      stored (only the gathers are read); wf.last_run is checked after each;
--   3. large values: 100 strings of 10 MiB saved and loaded, and the codec
--      alone on a 10 MiB string and on a 10 MiB array of floats;
--   4. the codec against lua-cjson on nested numeric tables (1,000 records
--      { id, vals = {100 floats}, pos = {x, y, z} }, and 1,000 arrays of 100
--      floats), encode and decode, with the codec's round trip checked exact.
-- Printed per measure: wall and CPU time, ns per item, the rate, the target
-- where there is one, and PASS/MISS. Rates of the store and workflow rows
-- come from wall time (the committer thread works on the other core); rates
-- of the codec rows from CPU time (os.clock; one thread, less noisy).
-- scale (default 1) multiplies the counts: 0.1 for a quick look.
local ff = require "functionfuse"
local core = require "functionfuse.core"
local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow
local storage_factory = require("functionfuse.storage").storage_factory

local scale = tonumber(arg[1]) or 1
assert(scale > 0, "usage: build/fflua bench/storage.lua [scale > 0]")

-- A monotonic wall clock: lua-system's when installed, else date(1).
local now, clock_name
do
  local ok, sys = pcall(require, "system.core")
  if ok and type(sys) == "table" and sys.monotime then
    now, clock_name = sys.monotime, "lua-system monotime"
  else
    now = function()
      local p = assert(io.popen("date +%s.%N"))
      local t = tonumber(p:read("l"))
      p:close()
      return t
    end
    clock_name = "date +%s.%N"
  end
end
local cpu = os.clock

local function count(n) return math.max(1, math.floor(n * scale + 0.5)) end

local function gc()
  collectgarbage("collect")
  collectgarbage("collect")
end

-- Runs fn once; returns wall seconds, CPU seconds, and fn's results.
local function timed(fn, ...)
  gc()
  local w0, c0 = now(), cpu()
  local r = table.pack(fn(...))
  local w1, c1 = now(), cpu()
  return w1 - w0, c1 - c0, table.unpack(r, 1, r.n)
end

---------------------------------------------------------------------------
-- Report

local rows = {}
local misses = {}

local function fmt_rate(v, unit)
  if unit == "B/s" then return ("%.2f GB/s"):format(v / 1e9) end
  if v >= 1e6 then return ("%.2f M%s"):format(v / 1e6, unit) end
  if v >= 1e3 then return ("%.1f k%s"):format(v / 1e3, unit) end
  return ("%.1f %s"):format(v, unit)
end

-- r: { section, name, items, bytes (optional), wall, cpu, basis ("wall" or
-- "cpu"), unit ("/s" or "B/s"), target (rate, optional), target_text }
local function row(r)
  local t = r.basis == "cpu" and r.cpu or r.wall
  r.rate = (r.unit == "B/s" and r.bytes or r.items) / t
  r.ns = t / r.items * 1e9
  if r.target then
    r.mark = r.rate >= r.target and "PASS" or "MISS"
    if r.mark == "MISS" then misses[#misses + 1] = r end
  end
  rows[#rows + 1] = r
  return r
end

local function print_rows(section)
  print(("%-40s %9s %9s %9s %11s %13s %14s  %s"):format(section, "items", "wall ms",
        "cpu ms", "ns/item", "rate", "target", ""))
  for _, r in ipairs(rows) do
    if r.section == section then
      print(("  %-38s %9d %9.1f %9.1f %11s %13s %14s  %s"):format(r.name, r.items,
            r.wall * 1e3, r.cpu * 1e3, (r.ns < 1000 and "%.1f" or "%.0f"):format(r.ns),
            fmt_rate(r.rate, r.unit), r.target_text or "", r.mark or ""))
    end
  end
  io.stdout:flush()
end

local dir = assert(io.popen("mktemp -d /tmp/fflua-bench-storage.XXXXXX")):read("l")
assert(dir and dir:match("^/tmp/fflua%-bench%-storage%."), "mktemp -d failed")
local function cleanup() os.execute("rm -rf '" .. dir .. "'") end

print(("storage benchmark: scale %g, clock %s, storage %s"):format(scale, clock_name, dir))
print("rates: store and workflow rows from wall time, codec rows from CPU time")
print()

local function main()
  -------------------------------------------------------------------------
  -- 1. Store: 1,000,000 small results

  do
    local n = count(1000000)
    local keys, vals = {}, {}
    for i = 1, n do
      keys[i] = ("t%07d"):format(i)
      vals[i] = i % 2 == 0 and i or "v" .. i
    end
    local st = core.store_open(dir .. "/store")
    local put_w, put_c = timed(function()
      for i = 1, n do st:put("small", keys[i], vals[i]) end
    end)
    local fl_w, fl_c = timed(function() st:flush() end)
    row { section = "1. store", name = "save: put (queue only)", items = n,
          wall = put_w, cpu = put_c, basis = "wall", unit = "/s" }
    row { section = "1. store", name = "save: final flush", items = n,
          wall = fl_w, cpu = fl_c, basis = "wall", unit = "/s" }
    row { section = "1. store", name = "save: put + flush", items = n,
          wall = put_w + fl_w, cpu = put_c + fl_c, basis = "wall", unit = "/s",
          target = 500000, target_text = ">= 500k/s" }

    local function load(order)
      local bad = 0
      for j = 1, n do
        local i = order and order[j] or j
        if st:get("small", keys[i]) ~= vals[i] then bad = bad + 1 end
      end
      return bad
    end
    local w, c, bad = timed(load)
    assert(bad == 0, ("store: %d values read back wrong"):format(bad))
    row { section = "1. store", name = "load: get, key order", items = n,
          wall = w, cpu = c, basis = "wall", unit = "/s",
          target = 1000000, target_text = ">= 1M/s" }
    local order = {}
    for i = 1, n do order[i] = i end
    math.randomseed(42)
    for i = n, 2, -1 do
      local j = math.random(i)
      order[i], order[j] = order[j], order[i]
    end
    w, c, bad = timed(load, order)
    assert(bad == 0, ("store: %d values read back wrong"):format(bad))
    row { section = "1. store", name = "load: get, random order", items = n,
          wall = w, cpu = c, basis = "wall", unit = "/s" }
    st:close()
    print_rows("1. store")
    print()
  end

  -------------------------------------------------------------------------
  -- 2. Workflow: 1,000,000 nodes saved, then loaded

  do
    local n = count(1000000)
    local group = 1000
    local ngroups = (n + group - 1) // group
    local f = ff.workflow("f", function(i) return i % 2 == 0 and i or "v" .. i end)
    local gather = ff.workflow("gather", function(t)
      local s = 0
      for k = 1, #t do
        local v = t[k]
        s = s + (type(v) == "number" and v or #v)
      end
      return s
    end)
    local bw, bc, leaves = timed(function()
      local leaves = {}
      for j = 1, ngroups do
        local t = {}
        for i = (j - 1) * group + 1, math.min(j * group, n) do t[#t + 1] = f(i) end
        leaves[j] = gather(t)
      end
      return leaves
    end)
    local nodes = n + ngroups
    row { section = "2. workflow", name = "build the graph (no storage)", items = nodes,
          wall = bw, cpu = bc, basis = "wall", unit = "/s" }
    local args = table.move(leaves, 1, ngroups, 1, {})
    local function make(storage, name)
      args[ngroups + 1] = { workflow_name = name or "w", quiet = true }
      local wf = LocalWorkflow(table.unpack(args, 1, ngroups + 1))
      if storage then wf:set_storage(storage) end
      return wf
    end

    local wf = make(nil)
    local w, c, r0 = timed(function() return table.pack(wf:run()) end)
    local base = row { section = "2. workflow", name = "run, no storage", items = nodes,
          wall = w, cpu = c, basis = "wall", unit = "/s" }

    local storage = storage_factory { kind = "file", options = { path = dir .. "/wf" } }
    wf = make(storage)
    w, c = timed(function() wf:run(); storage:flush() end)
    local lr = wf.last_run
    assert(lr.computed == nodes and lr.loaded == 0 and lr.damaged == 0,
           ("run 1: computed %d, loaded %d, damaged %d; expected %d, 0, 0")
           :format(lr.computed, lr.loaded, lr.damaged, nodes))
    local r1 = row { section = "2. workflow", name = "run 1: compute + save all", items = nodes,
                     wall = w, cpu = c, basis = "wall", unit = "/s",
                     target = 500000, target_text = ">= 500k/s" }
    row { section = "2. workflow", name = "  of which saving (run 1 - no storage)", items = nodes,
          wall = r1.wall - base.wall, cpu = r1.cpu - base.cpu, basis = "wall", unit = "/s" }
    local stored = #storage:list_tasks("w")
    assert(stored == nodes, ("run 1: %d results stored, expected %d"):format(stored, nodes))

    -- The same, in a workflow whose database exists before the run (run 1
    -- starts with an empty storage: its lookups find no database at all).
    storage:save("w_pre", "seed", 0)
    storage:flush()
    wf = make(storage, "w_pre")
    w, c = timed(function() wf:run(); storage:flush() end)
    lr = wf.last_run
    assert(lr.computed == nodes and lr.loaded == 0,
           ("run 1b: computed %d, loaded %d; expected %d, 0"):format(lr.computed, lr.loaded, nodes))
    row { section = "2. workflow", name = "run 1b: same, workflow db pre-made", items = nodes,
          wall = w, cpu = c, basis = "wall", unit = "/s" }
    storage:remove_workflow("w_pre")

    w, c = timed(function() return storage:remove_task("w", nil, "gather*") end)
    row { section = "2. workflow", name = "remove the gather results", items = ngroups,
          wall = w, cpu = c, basis = "wall", unit = "/s" }

    wf = make(storage)
    local r2
    w, c, r2 = timed(function() return table.pack(wf:run()) end)
    lr = wf.last_run
    assert(lr.computed == ngroups and lr.loaded == n and lr.damaged == 0,
           ("run 2: computed %d, loaded %d, damaged %d; expected %d, %d, 0")
           :format(lr.computed, lr.loaded, lr.damaged, ngroups, n))
    for j = 1, ngroups do
      assert(r2[j] == r0[j], ("run 2: gather %d gave %s, expected %s"):format(j, r2[j], r0[j]))
    end
    row { section = "2. workflow", name = "run 2: load f(i) (+ gathers)", items = n,
          wall = w, cpu = c, basis = "wall", unit = "/s",
          target = 1000000, target_text = ">= 1M/s" }

    wf = make(storage)
    w, c = timed(function() return wf:run() end)
    lr = wf.last_run
    -- Every node counts as loaded; only the gathers (returned) are read.
    assert(lr.computed == 0 and lr.loaded == nodes,
           ("run 3: computed %d, loaded %d; expected 0, %d"):format(lr.computed, lr.loaded, nodes))
    row { section = "2. workflow", name = "run 3: all stored (gathers read)", items = nodes,
          wall = w, cpu = c, basis = "wall", unit = "/s" }
    print_rows("2. workflow")
    print(("  last_run checked: run 1 computed %d (all), run 2 loaded %d and computed %d"
           .. " gathers, run 3 read %d only"):format(nodes, n, ngroups, ngroups))
    storage:close()
    print()
  end

  -------------------------------------------------------------------------
  -- 3. Large values: 10 MiB each

  do
    local size = 10 * 1024 * 1024
    local nv = count(100)
    local blob = ("0123456789abcdef"):rep(size // 16)
    assert(#blob == size)
    local st = core.store_open(dir .. "/large")
    local pw, pc = timed(function()
      for i = 1, nv do st:put("large", ("blob%03d"):format(i), blob) end
    end)
    local fw, fc = timed(function() st:flush() end)
    row { section = "3. large values", name = "save 10 MiB strings: put", items = nv,
          bytes = nv * size, wall = pw, cpu = pc, basis = "wall", unit = "B/s" }
    row { section = "3. large values", name = "save 10 MiB strings: put + flush", items = nv,
          bytes = nv * size, wall = pw + fw, cpu = pc + fc, basis = "wall", unit = "B/s" }
    local w, c, bad = timed(function()
      local bad = 0
      for i = 1, nv do
        local v = st:get("large", ("blob%03d"):format(i))
        if #v ~= size then bad = bad + 1 end
      end
      return bad
    end)
    assert(bad == 0)
    assert(st:get("large", "blob001") == blob, "large: value read back wrong")
    row { section = "3. large values", name = "load 10 MiB strings: get", items = nv,
          bytes = nv * size, wall = w, cpu = c, basis = "wall", unit = "B/s" }
    st:close()

    local reps = count(100)
    local enc
    w, c = timed(function()
      for _ = 1, reps do enc = core.encode(blob) end
    end)
    row { section = "3. large values", name = "codec: encode 10 MiB string", items = reps,
          bytes = reps * size, wall = w, cpu = c, basis = "cpu", unit = "B/s",
          target = 1e9, target_text = ">= 1 GB/s" }
    w, c = timed(function()
      for _ = 1, reps do core.decode(enc) end
    end)
    row { section = "3. large values", name = "codec: decode 10 MiB string", items = reps,
          bytes = reps * size, wall = w, cpu = c, basis = "cpu", unit = "B/s",
          target = 1e9, target_text = ">= 1 GB/s" }
    assert(core.decode(enc) == blob)
    enc = nil

    local floats = {}
    for i = 1, size // 8 do floats[i] = i * 0.37 end
    local freps = count(20)
    w, c = timed(function()
      for _ = 1, freps do enc = core.encode(floats) end
    end)
    local fbytes = #enc
    row { section = "3. large values", name = ("codec: encode %d floats"):format(#floats),
          items = freps, bytes = freps * fbytes, wall = w, cpu = c, basis = "cpu", unit = "B/s" }
    local back
    w, c = timed(function()
      for _ = 1, freps do back = core.decode(enc) end
    end)
    row { section = "3. large values", name = ("codec: decode %d floats"):format(#floats),
          items = freps, bytes = freps * fbytes, wall = w, cpu = c, basis = "cpu", unit = "B/s" }
    assert(#back == #floats and back[#floats] == floats[#floats])
    print_rows("3. large values")
    print(("  strings: 10 MiB = %d bytes each; float array: %d bytes encoded; GB = 1e9 bytes")
          :format(size, fbytes))
    print()
  end

  -------------------------------------------------------------------------
  -- 4. Codec against lua-cjson

  local okj, cjson = pcall(require, "cjson")
  if not okj then
    print("4. codec vs lua-cjson: skipped, lua-cjson not found (apt-get install lua-cjson)")
    return
  end
  do
    math.randomseed(7)
    local records = {}
    for i = 1, 1000 do
      local vals = {}
      for k = 1, 100 do vals[k] = math.random() * 1000 - 500 end
      records[i] = { id = i, vals = vals,
                     pos = { x = math.random() * 10, y = math.random() * 10, z = math.random() * 10 } }
    end
    local arrays = {}
    for i = 1, 1000 do
      local a = {}
      for k = 1, 100 do a[k] = (math.random() - 0.5) * 1e6 end
      arrays[i] = a
    end
    local datasets = {
      { name = "records {id, vals[100], pos{x,y,z}}", value = records },
      { name = "array of arrays 1000 x 100 floats", value = arrays },
    }

    -- Exact: same types (integer vs float), floats bit for bit, same keys.
    local function same(a, b, path)
      if type(a) ~= type(b) then return false, path end
      if type(a) == "number" then
        if math.type(a) ~= math.type(b) then return false, path end
        if math.type(a) == "float" and string.pack("<d", a) ~= string.pack("<d", b) then
          return false, path
        end
        return a == b or a ~= a, path
      end
      if type(a) ~= "table" then return a == b, path end
      for k, v in pairs(a) do
        local ok, where = same(v, b[k], path .. "." .. tostring(k))
        if not ok then return false, where end
      end
      for k in pairs(b) do
        if a[k] == nil then return false, path .. "." .. tostring(k) end
      end
      return true
    end
    -- What cjson's round trip changes: floats not bit-exact, integers back as floats.
    local function lossy(a, b, acc)
      if type(a) == "number" then
        acc.numbers = acc.numbers + 1
        if math.type(a) ~= math.type(b) then acc.types = acc.types + 1
        elseif a ~= b then acc.values = acc.values + 1 end
      elseif type(a) == "table" then
        for k, v in pairs(a) do lossy(v, b[k], acc) end
      end
      return acc
    end

    local reps = count(50)
    print(("%-38s %15s %11s %11s %11s %14s  %s"):format("4. codec vs lua-cjson", "op",
          "codec ms", "cjson ms", "cjson/codec", "target", ""))
    local notes = {}
    for _, d in ipairs(datasets) do
      local v = d.value
      local enc, txt
      local _, ce = timed(function() for _ = 1, reps do enc = core.encode(v) end end)
      local _, je = timed(function() for _ = 1, reps do txt = cjson.encode(v) end end)
      local dec, jdec
      local _, cd = timed(function() for _ = 1, reps do dec = core.decode(enc) end end)
      local _, jd = timed(function() for _ = 1, reps do jdec = cjson.decode(txt) end end)
      for _, op in ipairs { { "encode", ce, je }, { "decode", cd, jd },
                            { "encode+decode", ce + cd, je + jd } } do
        local ratio = op[3] / op[2]
        local mark = ratio >= 3 and "PASS" or "MISS"
        if mark == "MISS" then
          misses[#misses + 1] = { section = "4. codec vs lua-cjson", name = d.name .. ": " .. op[1],
                                  rate = ratio, target_text = ">= 3x", unit = "x" }
        end
        print(("  %-36s %15s %11.2f %11.2f %10.1fx %14s  %s"):format(d.name, op[1],
              op[2] / reps * 1e3, op[3] / reps * 1e3, ratio, ">= 3x", mark))
      end
      local ok, where = same(v, dec, "")
      assert(ok, ("codec round trip not exact at %s"):format(where))
      local acc = lossy(v, jdec, { numbers = 0, types = 0, values = 0 })
      notes[#notes + 1] = ("  %s: codec %d bytes, exact (types and float bits); cjson %d bytes,"
        .. " %d of %d numbers changed value, %d changed integer/float type")
        :format(d.name, #enc, #txt, acc.values, acc.numbers, acc.types)
    end
    print(("  (per call, CPU time, mean of %d; cjson %s with its default settings:"
           .. " 14 significant digits)"):format(reps, cjson._VERSION or "?"))
    for _, s in ipairs(notes) do print(s) end
    print()
  end
end

local ok, err = xpcall(main, debug.traceback)
cleanup()
if not ok then error(err, 0) end

if #misses == 0 then
  print("all targets met")
else
  print("targets missed:")
  for _, r in ipairs(misses) do
    local got = r.unit == "x" and ("%.1fx"):format(r.rate) or fmt_rate(r.rate, r.unit)
    print(("  %s / %s: %s, target %s"):format(r.section, r.name, got, r.target_text))
  end
end
