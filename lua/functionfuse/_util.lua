--- Small helpers the package's modules share (private).
local M = {}

--- true for a function or a value with a __call metamethod.
function M.callable(v)
  if type(v) == "function" then return true end
  local mt = getmetatable(v)
  return type(mt) == "table" and mt.__call ~= nil
end

return M
