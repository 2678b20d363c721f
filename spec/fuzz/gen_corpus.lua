-- gen_corpus.lua: writes the seed corpus of fuzz_codec, one encoded value
-- per file, into spec/fuzz/corpus/codec/ (or the directory given).
--
--   build/fflua spec/fuzz/gen_corpus.lua [dir]
--
-- The valid seeds come from functionfuse.core.encode, so they follow the
-- format as the encoder writes it; the "bad-" seeds are written by hand and
-- each breaks one rule of the decoder. String hashing is seeded per run, so
-- a table with several hash keys may come out in another order each time
-- (the same value): commit a regenerated corpus only when the format changes.
local core = require "functionfuse.core"

local dir = arg[1] or (arg[0]:match("^(.*)/[^/]*$") or ".") .. "/corpus/codec"
local count = 0

local function write(name, bytes)
  local f = assert(io.open(dir .. "/" .. name, "wb"))
  f:write(bytes)
  f:close()
  count = count + 1
end

local function seed(name, v) write(name, core.encode(v)) end

-- Scalars: every tag, and both ends of every integer width.
seed("nil", nil)
seed("false", false)
seed("true", true)
for _, i in ipairs { 0, 127, 128, -1, -128, 255, -32768, 32767, 65536,
                     -2147483648, 2147483647, 2147483648, math.maxinteger,
                     math.mininteger } do
  seed(("int_%d"):format(i), i)
end
seed("float_half", 0.5)
seed("float_three", 3.0)          -- a float, not the integer 3
seed("float_negzero", -0.0)
seed("float_inf", 1 / 0)
seed("float_neginf", -1 / 0)
seed("float_nan", 0 / 0)
seed("float_max", 1.7976931348623157e308)
seed("float_denormal", 5e-324)

-- Strings: empty, the longest short one, the shortest long one, binary.
seed("str_empty", "")
seed("str_short", "hello")
seed("str_63", ("s"):rep(63))
seed("str_64", ("l"):rep(64))
seed("str_300", ("0123456789"):rep(30))
seed("str_binary", "\0\1\2\255\254\r\n")

-- Tables.
seed("table_empty", {})
seed("table_array", { 1, 2, 3, "four", 5.5 })
seed("table_holes", { 1, nil, 3, nil, nil, 6 })
seed("table_hash", { a = 1, b = "x", c = true })
seed("table_mixed", { 10, 20, name = "n", [100] = 1, [-1] = 2 })
seed("table_keys", { [1.5] = "f", [true] = "t", [false] = "f", [""] = 0 })
seed("table_tablekey", { [{ 1 }] = "v" })
seed("table_nested", { a = { b = { c = { d = { e = "deep" } } } } })
local deep = {}
for _ = 1, 900 do deep = { deep } end
seed("table_deep900", deep)

-- Sharing and cycles (encoded as references).
local shared = { "s" }
seed("shared", { a = shared, b = shared, shared })
local cyc = { name = "cyc" }
cyc.self = cyc
seed("cycle", cyc)
local x, y = {}, {}
x.y, y.x = y, x
seed("cycle_mutual", { x, y })
seed("cycle_key", (function() local t = {} t[t] = t return t end)())

-- A registered class and a registered serializer (unknown to the fuzzer's
-- state: plain decoding refuses them, FFC_INSPECT makes placeholders).
local Point = {}
Point.__index = Point
core.register_class("Point", Point)
seed("class", setmetatable({ x = 1, y = 2 }, Point))
seed("class_in_table", { setmetatable({ x = 3 }, Point), setmetatable({}, Point) })
local Blob = { __name = "Blob" }
core.register_serializer(Blob, {
  pack = function(b) return b.data end,
  unpack = function(s) return setmetatable({ data = s }, Blob) end,
})
local blob = setmetatable({ data = "bytes" }, Blob)
seed("serializer", blob)
seed("serializer_shared", { blob, blob })

-- Fingerprint input: valid bytes the decoder must refuse.
write("hash_module", core.encode(math, true))
write("hash_mtable", core.encode(setmetatable({}, {}), true))

-- Hand-made, each broken in one way.
write("bad-empty", "")
write("bad-version", "\2\0")
write("bad-tag", "\1\18")
write("bad-trailing", "\1\0\0")
write("bad-i64_truncated", "\1\6\1\2\3")
write("bad-str_longer", "\1\8\200\1abc")
write("bad-varint_overflow", "\1\8\255\255\255\255\255\255\255\255\255\2")
write("bad-ref_unseen", "\1\9\1\0\0\0\0\10\5")
write("bad-table_claims", "\1\9\255\255\3\255\255\255\127")
write("bad-nil_key", "\1\9\0\1\0\0\0\0\1")
write("bad-nan_key", "\1\9\0\1\0\0\0\7\0\0\0\0\0\0\248\127\1")
write("bad-function", "\1\13\0")
write("bad-class_no_table", "\1\11\65P\2")
write("bad-hash_value_truncated", "\1\9\0\1\0\0\0\129\6\1")

print(("gen_corpus: %d files in %s"):format(count, dir))
