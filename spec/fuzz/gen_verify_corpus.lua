-- gen_verify_corpus.lua: writes the seed corpus of fuzz_verify: whole
-- data.mdb files of small storages, into spec/fuzz/corpus/verify/ (or the
-- directory given). Each stays under the 128 KiB input limit given to the fuzzer.
--
--   build/fflua spec/fuzz/gen_verify_corpus.lua [dir]
local core = require "functionfuse.core"

local dir = arg[1] or (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/corpus/verify"
local tmp = os.tmpname()
os.remove(tmp)

local function make(name, fill)
  local path = tmp .. "-" .. name
  local st = core.store_open(path)
  fill(st)
  st:flush()
  st:close()
  local f = assert(io.open(path .. "/data.mdb", "rb"))
  local bytes = f:read("a")
  f:close()
  os.execute("rm -rf '" .. path .. "'")
  assert(#bytes <= 131072, name .. " is " .. #bytes .. " bytes")
  f = assert(io.open(dir .. "/" .. name, "wb"))
  f:write(bytes)
  f:close()
end

-- One workflow of a few small records.
make("small", function(st)
  for i = 1, 10 do st:put("w", "task" .. i, i) end
end)
-- Values on overflow pages, deletes (a free list), two workflows.
make("overflow-free", function(st)
  for i = 1, 3 do st:put("big", "b" .. i, ("x"):rep(4100 + i)) end
  st:put("small", "s", "v")
  st:flush()
  st:del("big", "b2")
  st:put("big", "b5", ("y"):rep(4500))
end)
-- A tree of two levels: enough keys for a branch page.
make("two-levels", function(st)
  for i = 1, 220 do st:put("w", ("task-%04d"):format(i), i) end
end)
print("wrote 3 seeds to " .. dir)
