--- functionfuse: workflows of Lua functions, run by fflua's C engine.
--
-- This module is the user-facing surface; the engine is the C module
-- functionfuse.core. The workflow API (workflow, nodes, queries, plugins,
-- backends) is being built on top of it.
local core = require "functionfuse.core"

local M = {}

M.core = core
M.version = core.version          -- "MAJOR.MINOR.PATCH"
M.version_num = core.version_num  -- MAJOR * 10000 + MINOR * 100 + PATCH

return M
