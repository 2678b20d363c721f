--- Shared helpers for the specs: run this build's fflua as a user would.
local H = {}

H.bin = assert(os.getenv("FFLUA_BIN"), "FFLUA_BIN is not set: run the specs through ctest")
H.build = assert(os.getenv("FFLUA_BUILD_DIR"))
H.source = assert(os.getenv("FFLUA_SOURCE_DIR"))
H.sanitize = os.getenv("FFLUA_SANITIZE") == "1"
H.asan_lib = os.getenv("FFLUA_ASAN_LIB") or ""

package.cpath = H.build .. "/spec/?.so;" .. package.cpath
local fftest = require "fftest"
H.fftest = fftest
H.signals = fftest.signals

--- The name fflua reports errors with is its argv[0], as lua.c's: the
-- specs start it as H.bin. H.prog_pat is that name as a Lua pattern.
H.prog_pat = (H.bin:gsub("%p", "%%%0"))

local version = require("functionfuse").version
H.version = version

--- Runs fflua with the given arguments. opts: stdin, env, cwd, timeout.
function H.fflua(args, opts)
  opts = opts or {}
  local argv = { H.bin }
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  return fftest.run { argv = argv, stdin = opts.stdin, env = opts.env, cwd = opts.cwd,
                      timeout = opts.timeout or 60 }
end

--- Runs any program; argv[1] is looked up in PATH when it has no slash.
function H.run(argv, opts)
  opts = opts or {}
  return fftest.run { argv = argv, stdin = opts.stdin, env = opts.env, cwd = opts.cwd,
                      timeout = opts.timeout or 60 }
end

--- Runs `sh -c script` in dir in a mount namespace of its own (so what
-- it mounts vanishes with it), with $FF naming this build's fflua. The
-- script exits 77 when the machine cannot do what it needs; then nil is
-- returned (and the result), for the spec to call pending().
function H.in_namespace(dir, script)
  local r = H.run({ "unshare", "--mount", "--propagation", "private", "sh", "-c", script },
                  { cwd = dir, env = { FF = H.bin } })
  if r.code == 77 or (r.code ~= 0 and r.stderr:find("unshare", 1, true)) then return nil, r end
  return r
end

local tmpdirs = {}

--- A fresh temporary directory, removed by H.cleanup().
function H.tmpdir()
  local d = fftest.mkdtemp()
  tmpdirs[#tmpdirs + 1] = d
  return d
end

function H.cleanup()
  for _, d in ipairs(tmpdirs) do os.execute("rm -rf '" .. d .. "'") end
  tmpdirs = {}
end

function H.write(path, text)
  local f = assert(io.open(path, "wb"))
  f:write(text)
  f:close()
  return path
end

function H.read(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

--- Starts fflua on a pseudo-terminal. The environment gets a private HOME
-- and no FFLUA_HISTORY unless opts.env says otherwise.
function H.pty(args, opts)
  opts = opts or {}
  local env = { TERM = "xterm", FFLUA_HISTORY = false, HOME = opts.home or H.tmpdir() }
  for k, v in pairs(opts.env or {}) do env[k] = v end
  local argv = { H.bin }
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  return fftest.pty { argv = argv, env = env, cwd = opts.cwd }
end

--- Waits for text on a pty and fails the spec with what was seen otherwise.
function H.expect(p, text, timeout)
  local ok, seen = p:expect(text, timeout or 20)
  if not ok then
    error(("expected %q on the terminal; saw:\n%s"):format(text, seen), 2)
  end
  return seen
end

--- Waits until the line editor owns the terminal (it has left canonical
-- mode), as a person would wait for the prompt before typing.
function H.ready(p, timeout)
  if not p:wait_raw(timeout or 20) then
    local _, seen = p:expect("\0never", 0.1)
    error(("the line editor never took the terminal; it shows:\n%q"):format(seen), 2)
  end
end

--- Types text once the line editor is ready for it.
function H.type(p, text)
  H.ready(p)
  p:send(text)
end

--- Ends a REPL with Ctrl-D at a fresh prompt and returns its exit code and
-- signal.
function H.quit(p)
  H.ready(p)
  p:send("\4")
  local code, sig = p:wait(20)
  if code or sig then return code, sig end
  local _, seen = p:expect("\0never", 0.1)
  error(("the REPL did not exit on Ctrl-D; the terminal shows:\n%q"):format(seen), 2)
end

--- n tables, each inside the one before under key (the innermost holds
-- leaf under "leaf"): a value nested n levels deep.
function H.nested(n, key, leaf)
  local top = {}
  local cur = top
  for _ = 2, n do cur[key] = {}; cur = cur[key] end
  cur.leaf = leaf
  return top
end

--- How deep the tables H.nested made are.
function H.depth(t, key)
  local d = 0
  while t do d = d + 1; t = t[key] end
  return d
end

--- Text with terminal control sequences and carriage returns removed.
function H.plain(s)
  return (s:gsub("\27%[[%d;?]*[%a@]", ""):gsub("\r", ""))
end

--- The counts of a wf.last_run that the storage specs compare: computed,
-- loaded, skipped, damaged.
function H.counts(lr)
  return { computed = lr.computed, loaded = lr.loaded, skipped = lr.skipped, damaged = lr.damaged }
end

return H
