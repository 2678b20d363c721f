--- deploy/: the systemd units and the Kubernetes manifests are checked as
-- far as this machine can (systemd-analyze verify; JSON Schemas and
-- cross-references), and their exact command lines are run: a head and a
-- worker started as each gives them run a workflow (docs/deploy.md).
local H = require "spec.helper"
local C = require "spec.cluster_helper"
local core = require "functionfuse.core"
local cjson = require "cjson"

local DEPLOY = H.source .. "/deploy"
local PYTHON = "/usr/bin/python3"   -- Debian's, with python3-jsonschema and python3-yaml
local INSTALLED = "/usr/local/bin/fflua"

local function sh_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

--- A fresh token file with the given mode.
local function token_file(dir, mode, text)
  local path = H.write(dir .. "/token", (text or core.token_new()) .. "\n")
  assert(os.execute("chmod " .. mode .. " " .. sh_quote(path)))
  return path
end

--- The settings of a unit file's [Service] section: key -> list of values.
local function service_settings(text)
  local t, section = {}, nil
  for line in text:gmatch("[^\n]*") do
    local s = line:match("^%[(.-)%]$")
    if s then section = s
    elseif section == "Service" and not line:match("^%s*#") then
      local k, v = line:match("^(%w+)=(.*)$")
      if k then t[k] = t[k] or {}; table.insert(t[k], v) end
    end
  end
  return t
end

--- The variables of an environment file (KEY=value lines).
local function env_file(path)
  local env = {}
  for line in assert(H.read(path)):gmatch("[^\n]+") do
    local k, v = line:match("^([%w_]+)=(.*)$")
    if k then env[k] = v end
  end
  return env
end

--- ExecStart as systemd expands it: %d is the credentials directory,
-- ${VAR} one argument, $VAR split at spaces (none when empty); the
-- installed program's path becomes this build's.
local function exec_argv(exec, env, creds)
  local argv = {}
  for word in exec:gmatch("%S+") do
    word = word:gsub("%%d", creds)
    local braced = word:match("^%${([%w_]+)}$")
    local bare = word:match("^%$([%w_]+)$")
    if braced then argv[#argv + 1] = assert(env[braced], braced)
    elseif bare then
      for w in (env[bare] or ""):gmatch("%S+") do argv[#argv + 1] = w end
    else
      assert(not word:find("%$"), word)
      argv[#argv + 1] = word == INSTALLED and H.bin or word
    end
  end
  return argv
end

--- The value after name in argv.
local function option(argv, name)
  for i, a in ipairs(argv) do if a == name then return argv[i + 1] end end
end

local function replace_option(argv, name, value)
  for i, a in ipairs(argv) do if a == name then argv[i + 1] = value; return end end
  error("no option " .. name)
end

--- Starts argv (argv[1] this build's fflua) in dir on a pty, remembered
-- for C.stop_all().
local function start(argv, dir)
  local p = H.fftest.pty { argv = argv, env = { TERM = "dumb" }, cwd = dir }
  C.procs[#C.procs + 1] = p
  return p
end

--- A workflow of two nodes, run by a driver process on the cluster at
-- address: its result, and the worker (host:pid) that ran node2.
local function run_workflow(address, token)
  local script = C.script([[
local ff = require "functionfuse"
local ClusterWorkflow = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
local sum = ff.workflow(function(a, b) return a + b end)
local n2 = sum(sum(1, 1):set_name("node1"), 1):set_name("node2")
local wf = ClusterWorkflow(n2, { workflow_name = "deploy",
  cluster_init_args = { address = arg[1], token_file = arg[2] } })
print(wf:run(), wf.last_run.placement.node2)
]])
  local r = H.fflua({ script, address, token })
  assert.are.equal(0, r.code, r.stderr)
  return r.stdout:match("^(%d+)\t(%S+)\n$")
end

--- Waits until the head at address has n workers.
local function wait_workers(address, token, n)
  local client = core.cluster_connect(address, { token_file = token })
  local got
  for _ = 1, 400 do
    got = #client:status().places
    if got == n then break end
    core.sleep(0.025)
  end
  client:close()
  assert.are.equal(n, got)
end

--- Stops p with SIGTERM and returns its exit status.
local function terminate(p)
  p:kill(H.signals.SIGTERM)
  local code, sig = p:wait(20)
  return code, sig
end

describe("deploy: systemd", function()
  local units = { "fflua-head.service", "fflua-worker.service" }
  after_each(function() C.stop_all(); H.cleanup() end)

  --- systemd-analyze verify on a copy of text (the program's path made
  -- this build's, which the check needs to exist): code, stderr.
  local function verify(name, text)
    local dir = H.tmpdir()
    H.write(dir .. "/" .. name, (text:gsub(INSTALLED:gsub("%p", "%%%0"), H.bin)))
    local r = H.run({ "systemd-analyze", "verify", "--man=no", dir .. "/" .. name })
    return r.code, r.stderr
  end

  for _, name in ipairs(units) do
    it(name .. " passes systemd-analyze verify without a warning", function()
      local code, err = verify(name, assert(H.read(DEPLOY .. "/systemd/" .. name)))
      assert.are.equal("", err)
      assert.are.equal(0, code)
    end)
  end

  it("systemd-analyze verify refuses broken copies", function()
    local text = assert(H.read(DEPLOY .. "/systemd/fflua-worker.service"))
    local code, err = verify("fflua-worker.service", (text:gsub("Restart=on%-failure", "Restart=on-falure")))
    assert.are.equal(0, code)   -- a warning only: which is why the spec wants no output at all
    assert.matches("Failed to parse service restart specifier, ignoring: on%-falure", err)
    code, err = verify("fflua-worker.service", (text:gsub("TimeoutStopSec=", "TimeoutStopSecs=")))
    assert.are.equal(0, code)
    assert.matches("Unknown key 'TimeoutStopSecs'", err)
    local dir = H.tmpdir()
    local missing = dir .. "/no-such-fflua"
    H.write(dir .. "/fflua-head.service", (assert(H.read(DEPLOY .. "/systemd/fflua-head.service"))
      :gsub(INSTALLED:gsub("%p", "%%%0"), missing)))
    local r = H.run({ "systemd-analyze", "verify", "--man=no", dir .. "/fflua-head.service" })
    assert.are_not.equal(0, r.code)
    assert.matches("Command " .. missing .. " is not executable", r.stderr, 1, true)
  end)

  it("the units stop within TimeoutStopSec and restart on failure only", function()
    for _, name in ipairs(units) do
      local s = service_settings(assert(H.read(DEPLOY .. "/systemd/" .. name)))
      assert.are.same({ "on-failure" }, s.Restart)
      assert.are.same({ "SIGTERM" }, s.KillSignal)
      assert.are.same({ "token:/etc/fflua/cluster.token" }, s.LoadCredential)
      assert.matches("%-%-token%-file %%d/token", s.ExecStart[1])
    end
    local w = service_settings(assert(H.read(DEPLOY .. "/systemd/fflua-worker.service")))
    local grace = tonumber(w.ExecStart[1]:match("%-%-grace (%d+)"))
    assert.are.equal(grace + 10, tonumber(w.TimeoutStopSec[1]))
    assert.are.same({ "mixed" }, w.KillMode)   -- SIGTERM to the worker, not to its nodes' programs
  end)

  it("the units' command lines run a workflow, and SIGTERM ends both with status 0", function()
    local dir = H.tmpdir()
    local creds = dir .. "/credentials"   -- as systemd makes it: the service's own, mode 0400
    assert(os.execute("mkdir " .. sh_quote(creds)))
    local token = token_file(creds, "400")
    local head_unit = service_settings(assert(H.read(DEPLOY .. "/systemd/fflua-head.service")))
    local env = env_file(DEPLOY .. "/systemd/head.env")
    env.FFLUA_PORT = "0"
    env.FFLUA_HEAD_ARGS = (env.FFLUA_HEAD_ARGS or "") .. " --ready-file " .. dir .. "/ready"
    local head_argv = exec_argv(head_unit.ExecStart[1], env, creds)
    assert.are.equal(H.bin, head_argv[1])
    assert.are.equal("127.0.0.1", option(head_argv, "--host"))
    assert(os.execute("mkdir " .. sh_quote(dir .. "/head-state") .. " " .. sh_quote(dir .. "/worker-state")))
    local head = start(head_argv, dir .. "/head-state")
    local address = C.wait_file(dir .. "/ready")

    local worker_unit = service_settings(assert(H.read(DEPLOY .. "/systemd/fflua-worker.service")))
    local wenv = env_file(DEPLOY .. "/systemd/worker.env")
    wenv.FFLUA_HEAD = address
    local worker = start(exec_argv(worker_unit.ExecStart[1], wenv, creds), dir .. "/worker-state")
    assert(worker:expect("joining the head at " .. address, 20))
    wait_workers(address, token, 1)

    local result, where = run_workflow(address, token)
    assert.are.equal("3", result)
    assert.are.equal(worker:pid(), tonumber(where:match(":(%d+)$")))
    assert.are.equal(0, terminate(worker))
    assert.are.equal(0, terminate(head))
  end)
end)

describe("deploy: Kubernetes", function()
  after_each(function() C.stop_all(); H.cleanup() end)

  local function check(files)
    local argv = { PYTHON, DEPLOY .. "/check_k8s.py" }
    for _, f in ipairs(files or {}) do argv[#argv + 1] = f end
    return H.run(argv)
  end

  --- The documents of a manifest, through python3-yaml and JSON.
  local function manifest(name)
    local r = H.run({ PYTHON, "-c", "import json, sys, yaml; "
      .. "json.dump(list(yaml.safe_load_all(open(sys.argv[1]))), sys.stdout)", DEPLOY .. "/k8s/" .. name })
    assert.are.equal(0, r.code, r.stderr)
    local docs = {}
    for _, d in ipairs(cjson.decode(r.stdout)) do docs[d.kind] = d end
    return docs
  end

  it("the manifests pass the schema and cross-reference check", function()
    local r = check()
    assert.are.equal("", r.stderr)
    assert.are.equal("4 documents checked\n", r.stdout)
    assert.are.equal(0, r.code)
  end)

  it("broken manifests are refused, each with what is wrong", function()
    local dir = H.tmpdir()
    local function broken(name, from, to)
      local text = assert(H.read(DEPLOY .. "/k8s/" .. name))
      local bad, n = text:gsub(from, to)
      assert.are.equal(1, n, from)
      return H.write(dir .. "/" .. name, bad)
    end
    local k = function(name) return DEPLOY .. "/k8s/" .. name end
    local cases = {
      { "workers.yaml", "  replicas: 2", "  replica: 2",
        ": Deployment/fflua-worker: .spec: Additional properties are not allowed ('replica' was unexpected)" },
      { "workers.yaml", "fflua%-head:6380", "fflua-hed:6380",
        ": Deployment/fflua-worker: container 'worker': --address 'fflua-hed:6380' is not HOST:PORT "
        .. "with HOST a Service of the manifests" },
      { "workers.yaml", '"%-%-num%-cpus", "2"', '"--num-cpus", "4"',
        ": Deployment/fflua-worker: container 'worker': --num-cpus 4 differs from requests.cpu 2" },
      { "head.yaml", "targetPort: fflua", "targetPort: flua",
        ": Service/fflua-head: targetPort flua is no containerPort of Deployment/fflua-head" },
      { "secret.yaml", "  token: CHANGE%-ME", "  tokn: CHANGE-ME",
        ": Deployment/fflua-head: volume 'secret' takes key 'token' of Secret 'fflua-token', "
        .. "which has ['tokn']" },
    }
    for _, c in ipairs(cases) do
      local files = {}
      for _, name in ipairs { "secret.yaml", "head.yaml", "workers.yaml" } do
        files[#files + 1] = name == c[1] and broken(name, c[2], c[3]) or k(name)
      end
      local r = check(files)
      assert.are.equal(1, r.code, r.stdout)
      assert.truthy(r.stdout:find(c[4] .. "\n", 1, true), r.stdout)
    end
  end)

  it("the Secret's placeholder token is refused by fflua", function()
    local secret = manifest("secret.yaml").Secret
    local token = token_file(H.tmpdir(), "600", secret.stringData.token)
    local r = H.fflua({ "head", "--port", "0", "--token-file", token })
    assert.are.equal(2, r.code)
    assert.matches("the token in '" .. token .. "' is too short", r.stderr, 1, true)
  end)

  it("the manifests' command lines run a workflow", function()
    local dir = H.tmpdir()
    local head = manifest("head.yaml").Deployment.spec.template.spec
    local worker = manifest("workers.yaml").Deployment.spec.template.spec
    -- The Secret volume, as fsGroup leaves it: group-readable, which fflua
    -- refuses; the init container's command copies it with mode 600.
    assert(os.execute("mkdir -p " .. sh_quote(dir .. "/var/run/fflua-secret") .. " " .. sh_quote(dir .. "/run/fflua")
                      .. " " .. sh_quote(dir .. "/var/lib/fflua")))
    local secret = token_file(dir .. "/var/run/fflua-secret", "440")
    local r = H.fflua({ "head", "--port", "0", "--token-file", secret })
    assert.matches("may be read by others %(mode 440%)", r.stderr)
    local init = head.initContainers[1].command
    assert.are.same(init, worker.initContainers[1].command)
    local argv = {}
    for i, a in ipairs(init) do argv[i] = a:sub(1, 1) == "/" and dir .. a or a end
    r = H.run(argv)
    assert.are.equal(0, r.code, r.stderr)
    local token = dir .. head.initContainers[1].command[#init]
    assert.are.equal("-rw-------", H.run({ "stat", "-c", "%A", token }).stdout:sub(1, 10))

    local c = head.containers[1]
    local hargv = { H.bin }
    for _, a in ipairs(c.args) do hargv[#hargv + 1] = a:sub(1, 1) == "/" and dir .. a or a end
    replace_option(hargv, "--host", "127.0.0.1")   -- the pod's every address; here, loopback only
    replace_option(hargv, "--port", "0")
    hargv[#hargv + 1] = "--ready-file"; hargv[#hargv + 1] = dir .. "/ready"
    start(hargv, dir)
    local address = C.wait_file(dir .. "/ready")

    -- The probe's command, aimed at this head's port.
    local probe = {}
    for i, a in ipairs(c.readinessProbe.exec.command) do
      probe[i] = a == INSTALLED and H.bin or a:sub(1, 1) == "/" and dir .. a or a
    end
    replace_option(probe, "--address", address)
    r = H.run(probe)
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("^cluster at " .. address:gsub("%p", "%%%0") .. ": 0 machines, 0 workers", r.stdout)

    local w = worker.containers[1]
    local wargv = { H.bin }
    for _, a in ipairs(w.args) do wargv[#wargv + 1] = a:sub(1, 1) == "/" and dir .. a or a end
    assert.are.equal("fflua-head:6380", option(wargv, "--address"))
    replace_option(wargv, "--address", address)
    local wp = start(wargv, dir .. w.workingDir)
    assert(wp:expect("joining the head at " .. address, 20))
    wait_workers(address, token, 1)
    local result, where = run_workflow(address, token)
    assert.are.equal("3", result)
    assert.are.equal(wp:pid(), tonumber(where:match(":(%d+)$")))
    r = H.run(probe)
    assert.matches("1 machine, 1 worker", r.stdout)
    assert.are.equal(0, terminate(wp))
  end)
end)
