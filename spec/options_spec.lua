-- Option keys, remote-arg keys and plugin fields the code does not know are
-- errors that name the key (and the nearest known one), at the caller's
-- line; Ray's num_gpus is the resource GPU.
local ff = require "functionfuse"
local plugins = require "functionfuse.backends.plugins"
local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow
local ClusterWorkflow = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
local GraphWorkflow = require("functionfuse.backends.builtin.graphback").GraphWorkflow
local storage_factory = require("functionfuse.storage").storage_factory
local util = require "functionfuse._util"
local H = require "spec.helper"
local C = require "spec.cluster_helper"

-- The error of f(), which must fail, and the line it was raised for.
local function failure(f)
  local ok, err = pcall(f)
  assert.is_false(ok)
  return err
end

local THIS = "[^:]*options_spec%.lua:%d+: "

describe("unknown keys", function()
  after_each(function()
    C.stop_all()
    H.cleanup()
  end)

  it("measure the distance to the known names with swaps counted once", function()
    assert.are.equal(1, util.distance("cahce", "cache"))
    assert.are.equal(1, util.distance("verbos", "verbose"))
    assert.are.equal(3, util.distance("", "abc"))
    assert.are.equal("num_gpus", util.nearest("num_gpu", { "num_cpus", "num_gpus", "resources" }))
    assert.is_nil(util.nearest("max_retries", { "num_cpus", "num_gpus", "resources" }))
  end)

  it("in a workflow's options are errors on every backend", function()
    local n = ff.workflow("f", function() end)()
    local err = failure(function() LocalWorkflow(n, { workflow_name = "w", cahce = false }) end)
    assert.matches("^" .. THIS .. "LocalWorkflow: unknown option 'cahce' %(did you mean 'cache'%?%)$", err)
    err = failure(function() ClusterWorkflow(n, { workflow_name = "w", verbos = true }) end)
    assert.matches("^" .. THIS .. "ClusterWorkflow: unknown option 'verbos' %(did you mean 'verbose'%?%)$",
                   err)
    err = failure(function() GraphWorkflow(n, { workflow_name = "w", doc_pth = "d" }) end)
    assert.matches("GraphWorkflow: unknown option 'doc_pth' %(did you mean 'doc_path'%?%)$", err)
    err = failure(function() LocalWorkflow(n, { workflow_name = "w", runtime_env = {} }) end)
    assert.matches("LocalWorkflow: unknown option 'runtime_env' %(known: workflow_name, only_needed, cache, quiet, " ..
                   "verbose, progress%)$", err)
    -- A ClusterWorkflow's run options and init args too.
    err = failure(function() ClusterWorkflow(n, { workflow_name = "w", ray_init_args = { adress = "h:1" } }) end)
    assert.matches("^" .. THIS .. "ClusterWorkflow: ray_init_args: unknown key 'adress' %(did you mean " ..
                   "'address'%?%)$", err)
    err = failure(function()
      ClusterWorkflow(n, { workflow_name = "w", ray_init_args = {}, cluster_init_args = {} })
    end)
    assert.matches("give cluster_init_args or ray_init_args, not both$", err)
    local cw = ClusterWorkflow(n, { workflow_name = "w", cluster_init_args = { address = "127.0.0.1:1" } })
    err = failure(function() cw:run { max_pending = 2 } end)
    assert.matches("^" .. THIS .. "ClusterWorkflow:run: unknown option 'max_pending' %(did you mean " ..
                   "'max_pending_tasks'%?%)$", err)
  end)

  it("in remote args, plugin fields and storage options are errors", function()
    local n = ff.workflow("f", function() end)()
    local wf = LocalWorkflow(n, { workflow_name = "w" })
    local err = failure(function() wf:query(".*"):set_remote_args { num_gpu = 1 } end)
    assert.matches("^" .. THIS .. "set_remote_args: unknown remote arg 'num_gpu' %(did you mean " ..
                   "'num_gpus'%?%)$", err)
    err = failure(function() wf:query(".*"):set_remote_args { memory = 3 } end)
    assert.matches("unknown remote arg 'memory' %(known: num_cpus, num_gpus, resources, " ..
                   "max_retries, retry_exceptions, timeout_s, max_restarts%)$", err)
    err = failure(function() plugins.RandomStatePlugin { sede = 1 } end)
    assert.matches("^" .. THIS .. "RandomStatePlugin: unknown field 'sede' %(did you mean 'seed'%?%)$", err)
    local dir = H.tmpdir()
    err = failure(function() storage_factory { kind = "file", options = { pth = dir } } end)
    assert.matches("^" .. THIS .. "storage_factory: unknown option 'pth' %(did you mean 'path'%?%)$", err)
    err = failure(function() storage_factory { kind = "file", option = { path = dir } } end)
    assert.matches("^" .. THIS .. "storage_factory: unknown key 'option' %(did you mean 'options'%?%)$", err)
  end)

  it("a worker advertises GPUs only when told or when it detects them", function()
    local address, token = C.cluster {}
    local function worker(env, resources)
      local args = { "worker", "--address", address, "--token-file", token, "--num-cpus", "1",
                     "--own-machine" }
      if resources then args[#args + 1] = "--resources"; args[#args + 1] = resources end
      env.TERM = "dumb"
      return C.start(args, env)
    end
    local seen = worker({ CUDA_VISIBLE_DEVICES = "0,1" })           -- detected: 2
    local told = worker({ CUDA_VISIBLE_DEVICES = "0,1" }, '{"GPU": 1}') -- told: 1
    local hidden = worker({ CUDA_VISIBLE_DEVICES = "" })            -- none visible
    local client = ff.core.cluster_connect(address, { token_file = token })
    local places
    for _ = 1, 400 do
      places = client:status().places
      if #places == 3 then break end
      ff.core.sleep(0.025)
    end
    client:close()
    local gpus = {}
    for _, pl in ipairs(places) do
      gpus[tonumber(pl.name:match(":(%d+)$"))] = pl.resources.GPU and pl.resources.GPU.total or 0
    end
    assert.are.equal(2, gpus[seen:pid()])
    assert.are.equal(1, gpus[told:pid()])
    assert.are.equal(0, gpus[hidden:pid()])
  end)

  it("a worker counts every /dev/nvidiaN, also with gaps", function()
    -- A private /dev (a mount namespace of its own) holding what NVIDIA's
    -- driver makes in a container given GPUs 0 and 2 of a machine.
    local dir = H.tmpdir()
    H.write(dir .. "/tok", ff.core.token_new() .. "\n")
    local r = H.in_namespace(dir, [[
      mkdir olddev && mount --rbind /dev olddev && mount -t tmpfs fakedev /dev 2>/dev/null || exit 77
      for d in null zero random urandom; do
        touch /dev/$d && mount --bind olddev/$d /dev/$d || exit 77
      done
      touch /dev/nvidia0 /dev/nvidia2 /dev/nvidiactl /dev/nvidia-uvm /dev/nvidia-modeset
      chmod 600 tok
      "$FF" head --port 0 --num-cpus 0 --token-file tok --ready-file ready --quiet & head=$!
      while [ ! -s ready ]; do sleep 0.05; done
      a=$(cat ready)
      "$FF" worker --address "$a" --token-file tok --num-cpus 1 --own-machine --quiet & worker=$!
      n=0
      until "$FF" status --address "$a" --token-file tok | grep -q ' 1 worker;'; do
        sleep 0.05; n=$((n + 1)); [ $n -lt 400 ] || break
      done
      "$FF" status --address "$a" --token-file tok
      kill $worker $head; wait
    ]])
    if not r then return pending("no file system can be mounted on /dev here") end
    assert.are.equal(0, r.code, r.stderr)
    assert.truthy(r.stdout:find("GPU 2/2 free", 1, true), r.stdout)
  end)

  it("keep the remote args as they were set", function()
    -- (GPU 0 on the first: a machine with GPUs would show them otherwise.)
    local address, token, ps = C.cluster { { cpus = 1, resources = '{"GPU": 0}' },
                                           { cpus = 1, resources = '{"GPU": 1}' } }
    local with_gpu = tostring(ps[2]:pid())
    local f = ff.workflow("f", function(x) return x + 1 end)
    local wf = ClusterWorkflow(f(1):set_name("g"), f(2):set_name("c"), { workflow_name = "gpus",
      cluster_init_args = { address = address, token_file = token } })
    local args = { num_gpus = 1 }
    wf:query("g"):set_remote_args(args)
    args.num_gpus = 5 -- too late: the nodes have their copy
    assert.are.same({ 2, 3 }, { wf:run() })
    assert.matches(":" .. with_gpu .. "$", wf.last_run.placement.g)
    -- num_gpus is the resource GPU: more than any worker has is refused.
    wf:query("c"):set_remote_args { num_gpus = 2 }
    local err = failure(function() wf:run() end)
    assert.matches("node 'c' asks for 2 of 'GPU', but no node of the cluster has more than 1", err)
    wf:query("c"):set_remote_args { num_gpus = 1, resources = { GPU = 1 } }
    err = failure(function() wf:run() end)
    assert.matches("give GPUs once, as num_gpus or as resources%.GPU", err)
  end)
end)
