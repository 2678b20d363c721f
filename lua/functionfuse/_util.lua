--- Small helpers the package's modules share (private).
local M = {}

local is_node = require("functionfuse.core").is_node

--- true for a function or a value with a __call metamethod, but a node item
-- (whose __call only serves node:method() calls).
function M.callable(v)
  if type(v) == "function" then return true end
  local mt = getmetatable(v)
  return type(mt) == "table" and mt.__call ~= nil and not is_node(v)
end

return M
