--- functionfuse.stdlib.shell: commands as nodes.
--
--   local shell = require "functionfuse.stdlib.shell"
--   local sorted = shell.run({ "sort", "-u" }, { stdin = text_node })
--   local n = shell.run("wc -l < words.txt", { shell = true, inputs = { "words.txt" } })
--
-- shell.run(argv, opts) makes a node that runs a command and returns its
-- stdout. argv is a list of strings (nodes in it stand for their results),
-- run without a shell; with shell = true, argv is one string run by
-- /bin/sh -c. Options:
--   stdin   a string, or a node whose result is one (default: /dev/null)
--   env     { NAME = "value" | false }: added to (false: removed from) the
--           environment the command inherits
--   cwd     the directory it runs in (default: the node's)
--   inputs  a list of paths of files the command reads: their content
--           hashes are among the node's arguments, so its fingerprint
--           covers them (as fs.read's); a relative path is the command's,
--           taken in cwd when cwd is given
--   capture "stdout" (default) or "all": { stdout =, stderr =, status =,
--           signal = } instead of stdout alone
--   check   false: a non-zero exit status is returned, not an error
--   name    the node's name (set_name)
-- A command that exits with a status other than 0 (or is killed by a
-- signal) fails the node with the status and the last lines of its
-- stderr. The command runs in a process group of its own; it is killed
-- with that group (what it started too) when the node is interrupted or
-- stopped (a timeout, Ctrl-C).
local ff = require "functionfuse"
local core = require "functionfuse.core"
local fs = require "functionfuse.stdlib.fs"
local check_keys = require("functionfuse._util").check_keys

local M = {}

M.options = { "stdin", "env", "cwd", "inputs", "capture", "check", "shell", "name" }

local TAIL_LINES, TAIL_BYTES = 10, 2000

--- The last lines of s (at most 10 lines and 2000 bytes).
local function tail(s)
  s = s:gsub("\n$", "")
  if #s > TAIL_BYTES then s = "..." .. s:sub(-TAIL_BYTES) end
  local lines = {}
  for l in (s .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = l end
  if #lines > TAIL_LINES then
    lines = table.move(lines, #lines - TAIL_LINES + 1, #lines, 2, { "..." })
  end
  return table.concat(lines, "\n")
end

local function show(spec)
  if spec.shell then return spec.argv end
  local t = {}
  for i, a in ipairs(spec.argv) do t[i] = tostring(a) end
  return table.concat(t, " ")
end

--- Runs spec (what shell.run put in the node's arguments, node results in
-- place) and returns what the node returns.
function M.exec(spec)
  for _, file in ipairs(spec.inputs or {}) do fs._verify(file) end
  local argv = spec.shell and { spec.argv } or spec.argv
  for i, a in ipairs(argv) do
    if type(a) ~= "string" and math.type(a) ~= "integer" then
      error(("shell: argument %d of '%s' is a %s, not a string"):format(i, show(spec), type(a)), 0)
    end
  end
  if spec.stdin ~= nil and type(spec.stdin) ~= "string" then
    error(("shell: the stdin of '%s' is a %s, not a string"):format(show(spec), type(spec.stdin)), 0)
  end
  -- An EnvPlugin's variables (set by its pre-run function for this node
  -- alone), under the node's own env option.
  local env = core.node_env()
  if env then
    for k, v in pairs(spec.env or {}) do env[k] = v end
  else
    env = spec.env
  end
  local cmd <close> = core.cmd_start { argv = argv, stdin = spec.stdin, env = env,
                                       cwd = spec.cwd, shell = spec.shell }
  while not cmd:step(0.05) do end
  local out, err, status, signal = cmd:result()
  if spec.check ~= false and status ~= 0 then
    local how = status and ("exited with status %d"):format(status)
                or ("was killed by signal %d"):format(signal)
    local t = tail(err)
    error(("shell: '%s' %s%s"):format(show(spec), how,
          t ~= "" and "; its stderr ends with:\n" .. t or " (its stderr is empty)"), 0)
  end
  if spec.capture == "all" then
    return { stdout = out, stderr = err, status = status, signal = signal }
  end
  return out
end

local shell_node = ff.workflow("shell", function(spec) return M.exec(spec) end)

local function bad(msg) error("shell.run: " .. msg, 3) end

--- shell.run(argv[, opts]) -> node.
function M.run(argv, opts)
  opts = opts or {}
  if type(opts) ~= "table" then bad(("options must be a table, got %s"):format(type(opts))) end
  check_keys(opts, M.options, "shell.run", "option", 2)
  local spec = { shell = opts.shell and true or nil }
  if opts.shell then
    if type(argv) ~= "string" then bad(("with shell = true, the command is a string, got %s"):format(type(argv))) end
  else
    if type(argv) ~= "table" or #argv == 0 then
      bad(type(argv) == "string" and ("a command line '%s' needs shell = true (or give a list)"):format(argv)
          or ("argv must be a non-empty list, got %s"):format(type(argv)))
    end
    for i = 1, #argv do
      local a = argv[i]
      if type(a) ~= "string" and math.type(a) ~= "integer" and not ff.is_node(a) then
        bad(("argv[%d] is a %s, not a string or node"):format(i, type(a)))
      end
    end
  end
  spec.argv = argv
  if opts.stdin ~= nil and type(opts.stdin) ~= "string" and not ff.is_node(opts.stdin) then
    bad(("stdin must be a string or a node, got %s"):format(type(opts.stdin)))
  end
  spec.stdin = opts.stdin
  if opts.env ~= nil then
    if type(opts.env) ~= "table" then bad(("env must be a table, got %s"):format(type(opts.env))) end
    for k, v in pairs(opts.env) do
      if type(k) ~= "string" or k == "" or k:find("=", 1, true) then
        bad(("env: the name %s is not a variable's name"):format(tostring(k)))
      end
      if type(v) ~= "string" and v ~= false then
        bad(("env: the value of '%s' must be a string or false, got %s"):format(k, type(v)))
      end
    end
  end
  spec.env = opts.env
  if opts.cwd ~= nil and type(opts.cwd) ~= "string" then
    bad(("cwd must be a string, got %s"):format(type(opts.cwd)))
  end
  spec.cwd = opts.cwd
  if opts.capture ~= nil and opts.capture ~= "stdout" and opts.capture ~= "all" then
    bad(("capture must be \"stdout\" or \"all\", got %s"):format(tostring(opts.capture)))
  end
  spec.capture = opts.capture
  if opts.check ~= nil and type(opts.check) ~= "boolean" then
    bad(("check must be a boolean, got %s"):format(type(opts.check)))
  end
  spec.check = opts.check
  if opts.inputs ~= nil then
    if type(opts.inputs) ~= "table" then bad(("inputs must be a list of paths, got %s"):format(type(opts.inputs))) end
    spec.inputs = {}
    for i, p in ipairs(opts.inputs) do
      if type(p) ~= "string" then bad(("inputs[%d] is a %s, not a path"):format(i, type(p))) end
      -- As the command sees it: relative to its cwd.
      if opts.cwd ~= nil and p:sub(1, 1) ~= "/" then p = opts.cwd:gsub("/*$", "") .. "/" .. p end
      local h, err = core.file_hash(p)
      if h == nil then bad("input " .. err:gsub("^E%u+: ", "")) end
      spec.inputs[i] = { path = p, hash = h }
    end
  end
  local node = shell_node(spec)
  if opts.name ~= nil then node:set_name(opts.name) end
  return node
end

setmetatable(M, { __call = function(_, ...) return M.run(...) end })

return M
