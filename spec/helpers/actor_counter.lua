--- A class defined in a module, for spec/cluster_actors_spec.lua: its
-- nodes ship it by name, so a worker requires this module.
local Counter = {}

function Counter:__init(start) self.n = start; self.seen = {} end

function Counter:add(k)
  self.n = self.n + k
  self.seen[#self.seen + 1] = k
  return { n = self.n, seen = table.concat(self.seen, ","), pid = require("functionfuse.core").getpid() }
end

return Counter
