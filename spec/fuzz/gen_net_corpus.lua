-- Writes the seeds of fuzz_net (spec/fuzz/corpus/net/): conversations a
-- head could have with a worker and a driver, each frame prefixed by a
-- sender byte (0 worker, 1 driver), as ff_head_fuzz reads them.
--   build/fflua spec/fuzz/gen_net_corpus.lua
local core = require "functionfuse.core"
local dir = (arg and arg[1]) or "spec/fuzz/corpus/net"

local function varint(n)
  local t = {}
  repeat
    local b = n % 128
    n = n // 128
    t[#t + 1] = string.char(n > 0 and b + 128 or b)
  until n == 0
  return table.concat(t)
end
local function str(s) return varint(#s) .. s end
-- A varint of a 64-bit value taken as unsigned (reqs with bit 63 set).
local function uvarint(n)
  local t = {}
  repeat
    local b = n & 127
    n = n >> 7
    t[#t + 1] = string.char(n ~= 0 and b + 128 or b)
  until n == 0
  return table.concat(t)
end
local function frame(who, typ, payload)
  return string.char(who) .. string.pack("<I4", #payload + 1) .. string.char(typ) .. payload
end

local M = { HELLO = 1, AUTH = 2, WELCOME = 3, REFUSE = 4, REGISTER = 5, FUNC = 6, TASK = 7,
            RESULT = 8, SUBMIT = 9, DONE = 10, STATUS = 11, STATUS_REPLY = 12, FREE = 13, BYE = 14,
            RUN_END = 15, STORE = 16, STORE_CALL = 17, STORE_REPLY = 18, RUN_STORE = 19,
            PING = 26, STARTED = 27, HANDBACK = 28, STOPPING = 29 }
-- A SUBMIT's head: run 1, no max_pending, run flags, total, first, count.
local function submit_head(flags, total, first, count)
  return varint(1) .. varint(0) .. varint(flags) .. varint(total) .. varint(first) .. varint(count)
end
-- A task's fault fields: max_retries, timeout_ms, max_restarts.
local function faults(retries, timeout, restarts)
  return varint(retries) .. varint(timeout) .. varint(restarts)
end
local register = frame(0, M.REGISTER, varint(20000) .. varint(1) .. str("gpu") .. varint(5000) ..
                                      str("host") .. varint(42) .. str("machine:01234567"))
local fn = core.encode(function(a, b) return a + (b or 0) end, "code")
local func = frame(1, M.FUNC, varint(1) .. varint(1) .. str(fn))
local args1 = core.encode({ n = 2, 1, 2 }, "code")
-- task 0: f(1, 2); task 1: f(task0) (arguments encoded by hand: a node tag)
local args2 = "\1" .. "\9" .. varint(1) .. string.pack("<I4", 1) .. "\14" .. varint(0) .. varint(0) ..
              "\1" .. "n" .. "\129"
local task0 = varint(1) .. str("f_0000") .. varint(0) .. varint(0) .. str(args1) .. str("") .. varint(0) ..
              faults(3, 0, 0)
local task1 = varint(1) .. str("f_0001") .. varint(1) .. varint(1) .. varint(0) .. str(args2) ..
              str("") .. varint(1) .. str("gpu") .. varint(1000) .. faults(2, 30000, 0)
local submit = frame(1, M.SUBMIT, submit_head(0, 2, 0, 2) .. task0 .. task1)
-- The same run in two parts.
local part1 = frame(1, M.SUBMIT, submit_head(0, 2, 0, 1) .. task0)
local part2 = frame(1, M.SUBMIT, submit_head(0, 2, 1, 1) .. task1)
-- Keep going, and task 0's error retried (flag bit 5).
local task0_retried = varint(1) .. str("f_0000") .. varint(32) .. varint(0) .. str(args1) .. str("") ..
                      varint(0) .. faults(2, 0, 0)
local submit_keep = frame(1, M.SUBMIT, submit_head(1, 2, 0, 2) .. task0_retried .. task1)
local res0 = frame(0, M.RESULT, varint(1) .. varint(0) .. varint(1) .. str(core.encode(3, "code")) .. varint(100))
local res1 = frame(0, M.RESULT, varint(1) .. varint(1) .. varint(1) .. str(core.encode(6, "code")) .. varint(100))
local fail1 = frame(0, M.RESULT, varint(1) .. varint(1) .. varint(0) .. str("boom") .. varint(100))
local fail0 = frame(0, M.RESULT, varint(1) .. varint(0) .. varint(0) .. str("boom") .. varint(100))
local timeout1 = frame(0, M.RESULT, varint(1) .. varint(1) .. varint(2) .. str("") .. varint(100))
local started0 = frame(0, M.STARTED, varint(1) .. varint(1) .. varint(0))
local started1 = frame(0, M.STARTED, varint(1) .. varint(1) .. varint(1))
local handback1 = frame(0, M.HANDBACK, varint(1) .. varint(1) .. varint(1))
local ping = frame(0, M.PING, varint(5000))
-- An actor that may be rebuilt once (task 0, a constructor) and a call on
-- it (task 1, a leaf), keeping going; the call is handed back.
local ctor = varint(1) .. str("C_0000") .. varint(8) .. varint(0) .. str(args1) .. str("") ..
             varint(0) .. faults(0, 0, 1)
local call = varint(1) .. str("C.m_0001") .. varint(17) .. varint(0) .. varint(1) .. varint(0) ..
             str(args2) .. str("") .. varint(0) .. faults(0, 0, 0)
local actor_submit = frame(1, M.SUBMIT, submit_head(1, 2, 0, 2) .. ctor .. call)

-- What the head says to its peers: the head ignores them (a peer may not
-- send them), every message reader of the fuzz target reads them.
local versions = varint(3) .. str(core.version) .. str(core.lua_release)
local nonce = ("n"):rep(32)
local replies = frame(0, M.HELLO, str("fflua-cluster") .. versions .. nonce) ..
  frame(0, M.AUTH, versions .. varint(1) .. nonce .. ("m"):rep(32)) ..
  frame(0, M.WELCOME, ("m"):rep(32)) ..
  frame(0, M.REFUSE, str("version mismatch")) ..
  frame(0, M.TASK, varint(1) .. varint(1) .. varint(1) .. str("f_0001") .. varint(2) ..
                   varint(0) .. varint(1) .. str(core.encode(3, "code")) .. varint(5) .. varint(0) ..
                   str(args2) .. str("") .. varint(10000) .. varint(0) .. varint(0)) ..
  frame(0, M.FREE, varint(1) .. varint(2) .. varint(0) .. varint(300)) ..
  frame(0, M.DONE, varint(1) .. varint(1) .. varint(0) .. str(core.encode(6, "code")) .. str("") ..
                   varint(0)) ..
  frame(0, M.DONE, varint(1) .. varint(1) .. varint(4) .. str("lost") .. str("host:42") .. varint(4)) ..
  frame(0, M.STOPPING, str("terminated")) ..
  frame(0, M.RUN_END, varint(1) .. varint(2) .. str("host:42") .. str("(gone)") .. varint(1) ..
                      varint(0)) ..
  frame(0, M.STATUS_REPLY, varint(1) .. str("host:42") .. str("machine:01234567") .. varint(1) ..
                           varint(2) ..
                           str("CPU") .. varint(20000) .. varint(10000) ..
                           str("gpu") .. varint(5000) .. varint(5000) ..
                           varint(0) .. varint(1) .. varint(7))

-- A run with a storage on the worker (it declares _disk): the driver asks
-- which nodes are stored (STORE LOOKUP, answered by the worker), then runs
-- task 0 (saved) and loads task 1 (a leaf, whose stored result must have
-- the fingerprint "ffff..."), which the worker serves (the head's req:
-- 2^63 + the head's run 1 << 32 + the task), or not, when another run
-- wrote it since (status 2).
local disk_register = frame(0, M.REGISTER, varint(10000) .. varint(1) .. str("_disk") ..
                                           varint(10000) .. str("host") .. varint(43) ..
                                           str("machine:76543210"))
local disk = varint(1) .. str("_disk") .. varint(10)
local lookup = frame(1, M.STORE, varint(7) .. disk .. str("") .. varint(1) .. varint(4) ..
                                 str("storage") .. str("w") .. str("f_0000") .. str(("f"):rep(16)))
local lookup_reply = frame(0, M.STORE_REPLY, varint(1) .. varint(1) .. varint(1) .. str("\0"))
local run_store = frame(1, M.RUN_STORE, varint(1) .. disk .. str("") .. str("storage") .. str("w"))
local saved = varint(1) .. str("f_0000") .. varint(2) .. ("f"):rep(16) .. varint(0) .. str(args1) ..
              str("") .. varint(0) .. faults(3, 0, 0)
local loaded = varint(0) .. str("f_0001") .. varint(5) .. str(("f"):rep(16)) .. varint(0) .. str("") ..
               str("") .. varint(0) .. faults(0, 0, 0)
local stored_submit = frame(1, M.SUBMIT, submit_head(0, 2, 0, 2) .. saved .. loaded)
local load_reply = frame(0, M.STORE_REPLY, uvarint((1 << 63) | (1 << 32) | 1) .. varint(1) ..
                                           varint(1) .. str("\1" .. core.encode(6, "code")))
local load_changed = frame(0, M.STORE_REPLY, uvarint((1 << 63) | (1 << 32) | 1) .. varint(1) ..
                                              varint(1) .. str("\2"))
local save_failed = frame(0, M.STORE_REPLY, uvarint((1 << 62) | (1 << 32)) .. varint(0) ..
                                            varint(1) .. str("disk full"))
local store_call = frame(0, M.STORE_CALL, varint(3) .. varint(5) .. varint(2) .. str("storage") ..
                                          str("w"))

local seeds = {
  register = register,
  run = register .. func .. submit .. res0 .. res1,
  run_fail = register .. func .. submit .. res0 .. fail1,
  cancel = register .. func .. submit .. frame(1, M.RUN_END, varint(1)),
  status = register .. frame(1, M.STATUS, ""),
  no_worker = func .. submit,
  bye = register .. frame(0, M.BYE, ""),
  oversized = "\0" .. string.pack("<I4", 0x7fffffff) .. "\5",
  parts = register .. func .. part1 .. res0 .. part2 .. res1,
  replies = replies .. store_call,
  stored = disk_register .. lookup .. lookup_reply .. run_store .. func .. stored_submit .. res0 ..
           load_reply,
  stored_changed = disk_register .. run_store .. func .. stored_submit .. res0 .. load_changed,
  stored_fail = disk_register .. run_store .. func .. stored_submit .. save_failed .. res0,
  heartbeat = register .. ping .. func .. submit .. started0 .. ping .. res0 .. started1 .. res1,
  retried = register .. func .. submit_keep .. started0 .. fail0 .. started0 .. res0 .. started1 ..
            timeout1 .. handback1 .. res1,
  keep_going = register .. func .. submit_keep .. started0 .. fail0 .. fail0 .. fail0 .. res1,
  actor = register .. func .. actor_submit .. started0 .. res0 .. started1 .. handback1 .. res1 ..
          frame(0, M.STOPPING, str("terminated")),
  stopping = register .. func .. submit .. started0 .. frame(0, M.STOPPING, str("terminated")) ..
             handback1 .. res0 .. frame(0, M.BYE, ""),
}
for name, bytes in pairs(seeds) do
  local f = assert(io.open(dir .. "/" .. name, "wb"))
  f:write(bytes)
  f:close()
end
local nseeds = 0
for _ in pairs(seeds) do nseeds = nseeds + 1 end
print(("wrote %d seeds to %s"):format(nseeds, dir))
