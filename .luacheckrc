-- luacheck's settings for fflua's Lua code (ctest runs `luacheck .` from
-- the top as the test check:lua). Exceptions are for deliberate code only.
std = "lua54"
max_line_length = 120
-- A method that ignores self (a plugin's or a storage's default, a backend
-- refusing an operation) keeps the shape of the interface.
self = false

include_files = {
  "lua/**/*.lua", "stdlib/**/*.lua", "spec/**/*.lua", "examples/**/*.lua", "bench/*.lua",
  ".luacheckrc",
}
exclude_files = { "build*/**" }

-- Specs run under busted, which provides describe, it, assert, ...
files["spec/**/*_spec.lua"] = { std = "+busted" }
