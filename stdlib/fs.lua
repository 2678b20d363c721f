--- functionfuse.stdlib.fs: files as nodes.
--
--   local fs = require "functionfuse.stdlib.fs"
--   local text = fs.read("data/a.txt")        -- a node: the file's content
--   local out = fs.write("out/a.txt", text)   -- a node: writes atomically
--   local nodes, paths = fs.glob("data/*.txt") -- one fs.read node per file
--
-- A node made by fs.read or fs.file has among its arguments the file's
-- content hash (XXH3-128), computed when the node is made, so its
-- fingerprint covers the content: after an edit of the file, that node
-- and its descendants are computed again, and nothing else. When the node
-- runs, it hashes the file again and fails if it changed in between, so
-- what it reads is what was fingerprinted (fs.read reads the file once
-- and hashes those bytes). What is not a regular file (a FIFO, a device,
-- a directory) is refused with an error naming it. Relative paths are read from
-- the directory the node runs in: the driver's for a LocalWorkflow and a
-- local cluster, the shipped copy with a cluster's working_dir.
local ff = require "functionfuse"
local core = require "functionfuse.core"
local check_keys = require("functionfuse._util").check_keys

local M = {}

--- The content hash of the file at path (32 hex digits); raises an error
-- naming the path when it cannot be read, at level (default 1: the caller).
function M.hash(path, level)
  if type(path) ~= "string" then
    error(("bad argument #1 to 'hash' (string expected, got %s)"):format(type(path)), 2)
  end
  local h, err = core.file_hash(path)
  if h == nil then error((err:gsub("^E%u+: ", "")), (level or 1) + 1) end
  return h
end

-- At run time: checks that the file still has the hash it had when the
-- node was made; raises naming it otherwise.
-- now, err: the hash now (or the failure), when the caller has it.
local function verify(file, now, err)
  if now == nil and err == nil then now, err = core.file_hash(file.path) end
  if now == nil then error((err:gsub("^E%u+: ", "")), 0) end
  if now ~= file.hash then
    error(("the file '%s' changed after the workflow was built (content hash %s then, %s now): " ..
           "build and run it again"):format(file.path, file.hash, now), 0)
  end
end
M._verify = verify

local read_node = ff.workflow("fs.read", function(file)
  -- Read once, hashed as read: what it returns is what was fingerprinted.
  local content, now = core.file_read(file.path)
  if content == nil then verify(file, nil, now) end
  verify(file, now)
  return content
end)

local file_node = ff.workflow("fs.file", function(file)
  verify(file)
  return file.path
end)

local OPTS = { "name" }

local function file_arg(what, path, opts)
  if type(path) ~= "string" then
    error(("bad argument #1 to '%s' (string expected, got %s)"):format(what, type(path)), 3)
  end
  if opts ~= nil then
    if type(opts) ~= "table" then
      error(("bad argument #2 to '%s' (table expected, got %s)"):format(what, type(opts)), 3)
    end
    check_keys(opts, OPTS, "fs." .. what, "option", 3)
  end
  local h, err = core.file_hash(path)
  if h == nil then error(("fs.%s: %s"):format(what, err:gsub("^E%u+: ", "")), 3) end
  return { path = path, hash = h }
end

local function named(node, opts)
  if opts and opts.name ~= nil then node:set_name(opts.name) end
  return node
end

--- fs.read(path[, { name = s }]) -> a node whose result is the file's content.
function M.read(path, opts)
  return named(read_node(file_arg("read", path, opts)), opts)
end

--- fs.file(path[, { name = s }]) -> a node whose result is the path, for a
-- node that opens the file itself (a command's argument): its fingerprint
-- covers the content, as fs.read's.
function M.file(path, opts)
  return named(file_node(file_arg("file", path, opts)), opts)
end

--- fs.lines(path) -> the file's lines, read now (not a node): a list for
-- map, whose nodes then have each line among their arguments. A last line
-- without "\n" counts; "\r\n" ends a line as "\n" does.
function M.lines(path)
  if type(path) ~= "string" then
    error(("bad argument #1 to 'lines' (string expected, got %s)"):format(type(path)), 2)
  end
  local f, err = io.open(path, "rb")
  if not f then error("fs.lines: cannot read " .. err, 2) end
  local out = {}
  for line in f:lines() do out[#out + 1] = (line:gsub("\r$", "")) end
  f:close()
  return out
end

--- Writes text to path atomically: into a temporary file beside it, then
-- renamed over it, so a reader sees the old content or the new, never a
-- part. Raises naming the path.
function M.write_file(path, text)
  local tmp = ("%s.tmp-%d-%s"):format(path, core.getpid(), core.token_new():sub(1, 8))
  local f, err = io.open(tmp, "wb")
  if not f then error(("cannot write '%s': %s"):format(path, err:gsub("^[^:]*: ", "")), 0) end
  local ok, werr = f:write(text)
  local cok, cerr = f:close()
  if not ok or not cok then
    os.remove(tmp)
    error(("cannot write '%s': %s"):format(path, tostring(werr or cerr)), 0)
  end
  local rok, rerr = os.rename(tmp, path)
  if not rok then
    os.remove(tmp)
    error(("cannot write '%s': %s"):format(path, rerr), 0)
  end
  return path
end

local write_node = ff.workflow("fs.write", function(path, content)
  if type(content) ~= "string" then
    error(("fs.write: the content for '%s' is a %s, not a string"):format(path, type(content)), 0)
  end
  return M.write_file(path, content)
end)

--- fs.write(path, content[, { name = s }]) -> a node that writes content
-- (a string, or a node whose result is one) to path atomically and
-- returns the path. It always runs and is never stored (as log_nodes): the
-- file is written on every run, also when everything else is loaded.
function M.write(path, content, opts)
  if type(path) ~= "string" then
    error(("bad argument #1 to 'write' (string expected, got %s)"):format(type(path)), 2)
  end
  if type(content) ~= "string" and not ff.is_node(content) then
    error(("bad argument #2 to 'write' (string or node expected, got %s)"):format(type(content)), 2)
  end
  if opts ~= nil then check_keys(opts, OPTS, "fs.write", "option", 2) end
  local node = named(write_node(path, content), opts)
  node:set_backend_info("print", true)
  return node
end

--- fs.glob(pattern[, { read = false, name = prefix }]) -> nodes, paths: one
-- fs.read node (fs.file with read = false) per regular file that pattern
-- matches (a symbolic link to a regular file counts; to anything else,
-- or broken, it does not), in byte order of the names. Wildcards (*, ?, [...]) are taken
-- in the last part of the pattern only ("data/*.txt"); a leading "." is
-- matched only by one. With name, the nodes are named prefix_1, prefix_2,
-- ... A directory that cannot be listed is an error naming it; no match
-- gives empty lists.
function M.glob(pattern, opts)
  if type(pattern) ~= "string" then
    error(("bad argument #1 to 'glob' (string expected, got %s)"):format(type(pattern)), 2)
  end
  opts = opts or {}
  check_keys(opts, { "read", "name" }, "fs.glob", "option", 2)
  local dir, base = pattern:match("^(.*)/([^/]*)$")
  if dir == nil then dir, base = ".", pattern end
  if dir == "" then dir = "/" end
  if dir:find("[%*%?%[]") then
    error(("fs.glob: wildcards only in the last part of the pattern, not in '%s'"):format(dir), 2)
  end
  local names, kinds_or_err = core.dir_list(dir)
  if names == nil then error("fs.glob: " .. kinds_or_err:gsub("^E%u+: ", ""), 2) end
  local nodes, paths = {}, {}
  local make = opts.read == false and M.file or M.read
  for i, n in ipairs(names) do
    local p = dir == "." and not pattern:find("^%./") and n or (dir == "/" and "/" .. n or dir .. "/" .. n)
    -- A symbolic link counts when it leads to a regular file.
    local kind = kinds_or_err[i]
    if kind == "link" and core.fnmatch(base, n) and core.file_hash(p) ~= nil then kind = "file" end
    if kind == "file" and core.fnmatch(base, n) then
      paths[#paths + 1] = p
      local node = make(p)
      if opts.name then node:set_name(("%s_%d"):format(opts.name, #paths)) end
      nodes[#nodes + 1] = node
    end
  end
  return nodes, paths
end

return M
