-- How the functionfuse package is found: built into fflua, from the source
-- tree in a development build, from a tree named by FFLUA_TREE, and as a
-- regular Lua C module for the stock lua5.4 interpreter.
local H = require "spec.helper"

local function where(opts)
  local r = H.fflua({ "-e", "package.loaded.functionfuse = nil; print(select(2, require 'functionfuse'))" }, opts)
  assert.are.equal(0, r.code, r.stderr)
  return (r.stdout:gsub("\n$", ""))
end

describe("the functionfuse package", function()
  after_each(H.cleanup)

  it("is required in-process by this fflua", function()
    local ff = require "functionfuse"
    assert.are.equal(require("functionfuse.core").version, ff.version)
    assert.matches("^%d+%.%d+%.%d+$", ff.version)
    assert.are.equal("function", type(package.preload["functionfuse.core"]))
  end)

  it("needs no LUA_PATH or LUA_CPATH", function()
    local r = H.fflua({ "-e", "print(require('functionfuse').version)" },
                      { env = { LUA_PATH = "/nonexistent/?.lua", LUA_CPATH = "/nonexistent/?.so" } })
    assert.are.equal(H.version .. "\n", r.stdout)
  end)

  it("loads from this source tree in a development build", function()
    assert.are.equal(H.source .. "/lua/functionfuse/init.lua", where({ env = { FFLUA_TREE = false } }))
  end)

  it("loads the built-in copy when FFLUA_TREE is empty, from anywhere", function()
    local dir = H.tmpdir()
    assert.are.equal(0, H.run({ "cp", H.bin, dir .. "/fflua" }).code)
    local r = H.run({ dir .. "/fflua", "-e",
      "local ff, w = require 'functionfuse'; print(w, ff.version)" },
      { cwd = dir, env = { FFLUA_TREE = "" } })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("functionfuse/init.lua\t" .. H.version .. "\n", r.stdout)
  end)

  it("prefers the files of FFLUA_TREE, so edits need no rebuild", function()
    local tree = H.tmpdir()
    assert.are.equal(0, H.run({ "mkdir", "-p", tree .. "/lua/functionfuse", tree .. "/stdlib" }).code)
    H.write(tree .. "/lua/functionfuse/init.lua", "return { version = 'edited' }")
    H.write(tree .. "/lua/functionfuse/extra.lua", "return 'extra module'")
    H.write(tree .. "/stdlib/helpers.lua", "return 'stdlib module'")
    local r = H.fflua({ "-e", "print(require('functionfuse').version, (require 'functionfuse.extra'), " ..
                              "(require 'functionfuse.stdlib.helpers'))" }, { env = { FFLUA_TREE = tree } })
    assert.are.equal("edited\textra module\tstdlib module\n", r.stdout)
    assert.are.equal(tree .. "/lua/functionfuse/init.lua", where({ env = { FFLUA_TREE = tree } }))
  end)

  it("reports a syntax error in a tree module with the file name", function()
    local tree = H.tmpdir()
    H.run({ "mkdir", "-p", tree .. "/lua/functionfuse" })
    H.write(tree .. "/lua/functionfuse/init.lua", "return {")
    local r = H.fflua({ "-e", "require 'functionfuse'" }, { env = { FFLUA_TREE = tree } })
    assert.are.equal(1, r.code)
    assert.truthy(r.stderr:find("error loading module 'functionfuse' from file '" .. tree ..
                                "/lua/functionfuse/init.lua'", 1, true), r.stderr)
  end)

  it("names what it tried for a missing module", function()
    local r = H.fflua({ "-e", "require 'functionfuse.missing'" }, { env = { FFLUA_TREE = "" } })
    assert.are.equal(1, r.code)
    assert.truthy(r.stderr:find("no embedded module 'functionfuse.missing'", 1, true), r.stderr)
  end)

  it("is a regular C module for the stock lua5.4 interpreter", function()
    local env = {
      LUA_PATH = H.source .. "/lua/?.lua;" .. H.source .. "/lua/?/init.lua;;",
      LUA_CPATH = H.build .. "/lib/?.so;;",
    }
    if H.sanitize then
      -- The sanitizer build's core.so needs the ASan runtime loaded first.
      env.LD_PRELOAD = H.asan_lib
      env.ASAN_OPTIONS = "detect_leaks=0"
    end
    local r = H.run({ "lua5.4", "-e",
      "local ff = require 'functionfuse'; print(ff.version, package.searchpath('functionfuse.core', package.cpath))" },
      { env = env })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal(H.version .. "\t" .. H.build .. "/lib/functionfuse/core.so\n", r.stdout)
  end)
end)
