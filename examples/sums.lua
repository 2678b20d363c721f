-- sums.lua: two sums, the second built on the first: (1 + 1) + 1.
--
--   fflua examples/sums.lua
--
-- With the workflow engine, sum becomes a workflow function and the two calls
-- become nodes of a graph that a backend runs; until then it is plain Lua.
local function sum(a, b)
  return a + b
end

local a_plus_b = sum(1, 1)
local a_plus_two_b = sum(a_plus_b, 1)
print(a_plus_two_b)
