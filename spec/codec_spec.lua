-- The value codec: exact round trips, errors that name the place, decoding
-- that survives any bytes, fingerprint input that does not depend on
-- traversal order.
local core = require "functionfuse.core"
local ff = require "functionfuse"
local H = require "spec.helper"

local function rt(v) return core.decode(core.encode(v)) end

--- Deep equality that tells integers from floats, -0.0 from 0.0, and
-- checks NaN by bits; shared/cyclic structure must map one to one.
local function same(a, b, map)
  map = map or {}
  if type(a) ~= type(b) then return false, "type" end
  if type(a) == "number" then
    if math.type(a) ~= math.type(b) then return false, "number subtype" end
    if math.type(a) == "integer" then return a == b, "integer value" end
    return string.pack("<n", a) == string.pack("<n", b), "float bits"
  end
  if type(a) ~= "table" then return a == b, "value" end
  if map[a] ~= nil then return map[a] == b, "sharing" end
  map[a] = b
  if getmetatable(a) ~= getmetatable(b) then return false, "metatable" end
  for k, v in pairs(a) do
    local bk = k
    if type(k) == "table" then
      -- Generated tables carry a unique _id: find the key's copy by it.
      bk = map[k]
      for k2 in pairs(b) do
        if bk == nil and type(k2) == "table" and k2._id ~= nil and k2._id == k._id then bk = k2 end
      end
    end
    if bk == nil then return false, "missing key" end
    local ok, why = same(v, b[bk], map)
    if not ok then return false, why end
  end
  local na, nb = 0, 0
  for _ in pairs(a) do na = na + 1 end
  for _ in pairs(b) do nb = nb + 1 end
  return na == nb, "key count"
end

--- A random value: scalars of every kind, nested tables with any keys,
-- shared subtables and cycles.
local function random_value(rng, depth, pool)
  local r = rng(1, depth > 3 and 9 or 12)
  if r == 1 then return nil
  elseif r == 2 then return rng(2) == 1
  elseif r == 3 then return rng(-200, 200)
  elseif r == 4 then return ({ math.maxinteger, math.mininteger, 1 << 40, -(1 << 20), 65536 })[rng(5)]
  elseif r == 5 then return ({ 0.5, -0.0, 1 / 0, -1 / 0, 0 / 0, 1e-300, 3.0, math.pi })[rng(8)]
  elseif r == 6 then
    local t = {}
    for i = 1, rng(0, 80) do t[i] = string.char(rng(0, 255)) end
    return table.concat(t)
  elseif r == 7 then return ("x"):rep(rng(60, 300))
  elseif r == 8 or r == 9 then
    return #pool > 0 and pool[rng(#pool)] or "empty pool"
  else
    local t = { _id = #pool + 1 } -- unique, so that table keys can be matched
    pool[#pool + 1] = t
    for i = 1, rng(0, 6) do t[i] = random_value(rng, depth + 1, pool) end
    for _ = 1, rng(0, 5) do
      local k = random_value(rng, depth + 1, pool)
      if k ~= nil and k == k then t[k] = random_value(rng, depth + 1, pool) end
    end
    if rng(6) == 1 then t.self = t end
    return t
  end
end

describe("codec", function()
  it("round-trips every kind of plain value exactly", function()
    for _, v in ipairs { true, false, 0, 127, 128, -1, -128, -129, 32767, -32769, 1 << 31,
                         math.maxinteger, math.mininteger, 0.0, -0.0, 1 / 0, -1 / 0, 2 ^ 53,
                         5e-324, "", "a", ("z"):rep(63), ("z"):rep(64), ("\0\255"):rep(5000) } do
      local r = rt(v)
      assert.is_true((same(v, r)), tostring(v))
    end
    assert.is_nil(rt(nil))
    local nan = rt(0 / 0)
    assert.are_not.equal(nan, nan)
    -- NaN payload bits survive.
    local odd_nan = string.unpack("<n", "\1\0\0\0\0\0\248\127")
    assert.are.equal(string.pack("<n", odd_nan), string.pack("<n", rt(odd_nan)))
  end)

  it("keeps tables with any keys, holes, sharing and cycles", function()
    local shared = { 1, 2 }
    local t = { shared, shared, [true] = "t", [1.5] = "f", [shared] = "table key", nil, 5 }
    t[3] = nil
    t[10] = "far"
    t.cycle = t
    local r = rt(t)
    assert.is_true((same(t, r)))
    assert.are.equal(r, r.cycle)
    assert.are.equal(r[1], r[2])
    assert.are.equal("table key", r[r[1]])
  end)

  it("compares values exactly, so that a round trip that changes one fails", function()
    assert.is_false((same(math.maxinteger, math.maxinteger - 1))) -- equal as floats
    assert.is_false((same(1, 1.0)))
    assert.is_false((same(0.0, -0.0)))
    assert.is_false((same({ 1, { 2 } }, { 1, { 3 } })))
    assert.is_false((same({ 1 }, { 1, 2 })))
    local t = { 1 }
    assert.is_false((same({ t, t }, { { 1 }, { 1 } }))) -- sharing lost
    assert.is_true((same({ t, t, 0 / 0 }, (function() local u = { 1 } return { u, u, 0 / 0 } end)())))
  end)

  it("round-trips 500 random nested values", function()
    local seed = tonumber(os.getenv("FFLUA_SEED")) or os.time()
    math.randomseed(seed)
    local tables, nested = 0, 0
    for i = 1, 500 do
      local v = random_value(math.random, 0, {})
      local ok, why = same(v, rt(v))
      if not ok then error(("value %d (seed %d) differs: %s"):format(i, seed, why)) end
      if type(v) == "table" then
        tables = tables + 1
        for _, x in pairs(v) do
          if type(x) == "table" and x ~= v then nested = nested + 1; break end
        end
      end
    end
    -- A quarter of the values are tables, and many of those hold tables.
    assert.is_true(tables >= 50, ("only %d tables (seed %d)"):format(tables, seed))
    assert.is_true(nested >= 10, ("only %d nested tables (seed %d)"):format(nested, seed))
  end)

  it("names the path of what it cannot encode", function()
    local function err(v)
      local ok, e = pcall(core.encode, v)
      assert.is_false(ok)
      return e
    end
    assert.are.equal("a function cannot be stored (at .a.b[2])", err { a = { b = { 1, print } } })
    assert.are.equal("a thread cannot be stored (at [\"two words\"])",
                     err { ["two words"] = coroutine.create(print) })
    assert.are.equal("userdata 'FILE*' has no serializer (storage:register_serializer) (at [3])",
                     err { 1, 2, io.stderr })
    assert.matches("^table with metatable 'Foo', which is not registered .* %(at %.x%)$",
                   err { x = setmetatable({}, { __name = "Foo" }) })
    -- A long key is shortened in the path.
    local long = ("k"):rep(100)
    assert.are.equal("a function cannot be stored (at ." .. ("k"):rep(60) .. "... (100 bytes))",
                     err { [long] = print })
  end)

  it("lead deep errors with the reason and keep the path short", function()
    local ok, e = pcall(core.encode, H.nested(10000, "next"))
    assert.is_false(ok)
    assert.are.equal("tables nested more than 1000 levels deep " ..
                     "(at .next.next.next.next ... .next.next.next.next)", e)
    ok, e = pcall(core.encode, H.nested(900, "next", print))
    assert.is_false(ok)
    assert.are.equal("a function cannot be stored " ..
                     "(at .next.next.next.next ... .next.next.next.leaf)", e)
  end)

  it("has one nesting limit for encoding and decoding: 1000 levels of tables", function()
    assert.are.equal(1000, H.depth(rt(H.nested(1000, 1)), 1))
    -- 1001 levels, the innermost empty: refused by the encoder too, so
    -- nothing is ever stored that cannot be read back.
    local ok, e = pcall(core.encode, H.nested(1001, 1))
    assert.is_false(ok)
    assert.are.equal("tables nested more than 1000 levels deep (at [1][1][1][1] ... [1][1][1][1])", e)
    -- The decoder refuses the same depth, built by hand.
    local bytes = "\1" .. ("\9\1\0\0\0\0"):rep(1001) .. "\9\0\0\0\0\0"
    ok, e = pcall(core.decode, bytes)
    assert.is_false(ok)
    assert.are.equal("corrupt value at byte 6001: tables nested more than 1000 levels deep", e)
    -- Functions nest as well (code mode): a closure over a closure over ...
    local f = function() return 0 end
    for _ = 1, 1000 do local g = f; f = function() return g() end end
    ok, e = pcall(core.encode, f, "code")
    assert.is_false(ok)
    assert.matches("^functions nested more than 1000 levels deep %(at upvalue 'g' upvalue 'g' ", e)
  end)

  it("decodes any bytes to a value or an error, never a crash", function()
    math.randomseed(7)
    local good = core.encode { 1, "two", { three = 3.0 }, [4] = { 5, 6 } }
    local errors, values = 0, 0
    for i = 1, 3000 do
      local s
      if i % 3 == 0 then -- random bytes after the version byte
        local t = { "\1" }
        for j = 1, math.random(0, 40) do t[j + 1] = string.char(math.random(0, 255)) end
        s = table.concat(t)
      elseif i % 3 == 1 then -- a truncated valid value
        s = good:sub(1, math.random(0, #good - 1))
      else -- a valid value with one byte changed
        local at = math.random(1, #good)
        s = good:sub(1, at - 1) .. string.char(math.random(0, 255)) .. good:sub(at + 1)
      end
      local ok, v = pcall(core.decode, s)
      if ok then values = values + 1 else
        errors = errors + 1
        assert.is_string(v)
      end
    end
    assert.is_true(errors > 1000)
    assert.is_true(values > 10)
  end)

  it("refuses sizes larger than the data instead of allocating them", function()
    -- A table claiming 2^31 array slots and a string claiming 2^40 bytes.
    local ok, err = pcall(core.decode, "\1\9\255\255\255\255\7\0\0\0\0")
    assert.is_false(ok)
    assert.matches("larger than the data", err)
    ok, err = pcall(core.decode, "\1\8\128\128\128\128\128\32")
    assert.is_false(ok)
    assert.matches("longer than the data", err)
    ok, err = pcall(core.decode, "\1\10\5")
    assert.is_false(ok)
    assert.matches("not yet seen", err)
  end)

  it("restores registered classes and refuses unknown ones", function()
    local C = { __name = "spec.C" }
    ff.register_class("spec.codec.C", C)
    local v = rt(setmetatable({ 1 }, C))
    assert.are.equal(C, getmetatable(v))
    local forged = core.encode(setmetatable({}, C)):gsub("spec%.codec%.C", "spec.codec.X")
    local ok, err = pcall(core.decode, forged)
    assert.is_false(ok)
    assert.matches("class 'spec.codec.X' is not registered", err, 1, true)
    local shown = core.decode(forged, true) -- inspection mode
    assert.are.equal("spec.codec.X", getmetatable(shown).__ffclass)
  end)

  it("gives fingerprint input independent of the order tables were filled in", function()
    local a, b = {}, {}
    for i = 1, 200 do a["k" .. i] = i end
    for i = 200, 1, -1 do b["k" .. i] = i end
    a.sub = { x = 1, y = 2 }
    b.sub = { y = 2, x = 1 }
    -- The two are traversed in different orders (else this proves nothing)...
    local function order(t) local ks = {} for k in pairs(t) do ks[#ks + 1] = k end return ks end
    assert.are_not.same(order(a), order(b))
    assert.are_not.equal(core.encode(a), core.encode(b)) -- the plain encoding follows it
    -- ...and encode to the same fingerprint input.
    assert.are.equal(core.encode(a, true), core.encode(b, true))
    assert.are_not.equal(core.encode(a, true), core.encode({ k1 = 1 }, true))
    -- Functions hash by code and upvalues; modules and library functions by name.
    local k = 1
    local function f() return k end
    local h1 = core.encode(f, true)
    k = 2
    assert.are_not.equal(h1, core.encode(f, true))
    assert.matches("math\0floor", core.encode({ math.floor }, true), 1, true)
  end)

  describe("code mode (between authenticated peers)", function()
    local function ship(f) return core.decode(core.encode(f, "code"), "code") end

    it("ships closures with their upvalues, modules by name and _ENV as the receiver's", function()
      local cfg = { k = 3, tags = { "a", "b" } }
      local pretty = require "functionfuse._pretty"
      local function helper(x) return x * cfg.k end
      local function f(x)
        return helper(x) + math.floor(2.7) + #cfg.tags + #pretty.format({ 1 })
      end
      local g = ship(f)
      assert.are.equal(f(10), g(10))
      local function fact(n) if n <= 1 then return 1 end return n * fact(n - 1) end
      assert.are.equal(3628800, ship(fact)(10))
      assert.are.equal(string.format, ship(string.format)) -- by name
      assert.are.equal(pretty, ship(pretty))
    end)

    it("keeps upvalues shared between closures shared after shipping", function()
      local n = 0
      local function inc() n = n + 1 end
      local function get() return n end
      local t = ship { inc = inc, get = get, again = inc }
      t.inc(); t.inc(); t.again()
      assert.are.equal(3, t.get())
      assert.are.equal(0, n) -- the sender's variable is another one
      assert.are.equal(t.inc, t.again)
      -- Two closures of one factory share nothing but what they share.
      local function counter()
        local c = 0
        return function() c = c + 1; return c end, function() return c end
      end
      local a_inc, a_get = counter()
      local b_inc = counter()
      local u = ship { a_inc, a_get, b_inc }
      u[1](); u[1](); u[3]()
      assert.are.equal(2, u[2]())
      -- A reference to an upvalue anywhere but among a function's upvalues,
      -- or to one a function does not have, is refused.
      local ok, err = pcall(core.decode, "\1\19\0\1", "code")
      assert.is_false(ok)
      assert.matches("an upvalue reference outside a function's upvalues", err, 1, true)
    end)

    it("binds the sender's module globals in the function's own environment", function()
      local pretty, util = require "functionfuse._pretty", require "functionfuse._util"
      _G.codec_spec_alias = pretty
      local bytes = core.encode(function() return codec_spec_alias end, "code") -- luacheck: ignore
      _G.codec_spec_alias = util
      local other = core.encode(function() return codec_spec_alias end, "code") -- luacheck: ignore
      _G.codec_spec_alias = nil
      -- Each function sees the module its sender had; the receiver's
      -- globals do not change, so neither sees the other's.
      assert.are.equal(pretty, core.decode(bytes, "code")())
      assert.are.equal(util, core.decode(other, "code")())
      assert.is_nil(rawget(_G, "codec_spec_alias"))
      _G.codec_spec_alias = 42
      assert.are.equal(pretty, core.decode(bytes, "code")())
      assert.are.equal(42, rawget(_G, "codec_spec_alias"))
      _G.codec_spec_alias = nil
      -- Other names, read or written, are the receiver's globals.
      _G.codec_spec_alias = pretty
      local rw = core.encode(function(v) codec_spec_out = v; return math.floor(2.5) end, "code") -- luacheck: ignore
      _G.codec_spec_alias = nil
      assert.are.equal(2, core.decode(rw, "code")(7))
      assert.are.equal(7, rawget(_G, "codec_spec_out"))
      _G.codec_spec_out = nil
    end)

    it("refuses what cannot ship, naming the upvalue", function()
      local co = coroutine.create(print)
      local ok, err = pcall(core.encode, function() return co end, "code")
      assert.is_false(ok)
      assert.are.equal("a thread cannot be shipped (at upvalue 'co')", err)
      local cf = assert(load("return 1")) -- a function with no upvalue but _ENV: fine
      assert.are.equal(1, ship(cf)())
    end)

    it("is refused by a decoder not told to accept code", function()
      local ok, err = pcall(core.decode, core.encode(function() return 1 end, "code"))
      assert.is_false(ok)
      assert.matches("bytecode is never loaded", err, 1, true)
      ok, err = pcall(core.decode, core.encode(math, "code"))
      assert.is_false(ok)
      assert.matches("module reference outside code", err, 1, true)
    end)
  end)
end)
