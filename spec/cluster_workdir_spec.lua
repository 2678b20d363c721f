-- runtime_env.working_dir on a cluster: the driver packs the directory,
-- the head forwards it once per content to each worker, each run gets its
-- own copy there, and its nodes run in it with it first on package.path.
-- Heads, workers and drivers are separate processes; workers start in
-- directories that have none of the project's files.
local ff = require "functionfuse"
local core = require "functionfuse.core"
local ClusterWorkflow = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
local H = require "spec.helper"
local C = require "spec.cluster_helper"

-- The logs of the processes started, checked once they stopped: a
-- sanitizer build's reports (leaks at exit among them) fail the spec.
local logs = {}

-- A head (-v, its stderr in head.log) and workers (-v, each started in an
-- empty directory of its own, with its stderr in worker<i>.log and its
-- cache under cache<i>). Returns a table with the address, token, dir.
local function cluster(workers)
  local dir = H.tmpdir()
  local token = dir .. "/cluster.token"
  H.write(token, core.token_new() .. "\n")
  assert(os.execute("chmod 600 '" .. token .. "'"))
  C.start_sh({ "head", "--port", "0", "--num-cpus", "0", "--token-file", token,
               "--ready-file", dir .. "/ready", "-v" }, dir .. "/head.log")
  local cl = { address = C.wait_file(dir .. "/ready"), token = token, dir = dir, workers = {} }
  logs[#logs + 1] = dir .. "/head.log"
  for i, cpus in ipairs(workers) do
    local wdir = ("%s/worker%d"):format(dir, i)
    assert(os.execute(("mkdir -p '%s' '%s/cache%d'"):format(wdir, dir, i)))
    C.start_sh({ "worker", "--address", cl.address, "--token-file", token, "--num-cpus",
                 tostring(cpus), "--own-machine", "-v" }, ("%s/worker%d.log"):format(dir, i),
               ("cd '%s' && export XDG_CACHE_HOME='%s/cache%d'"):format(wdir, dir, i))
    cl.workers[i] = wdir
    logs[#logs + 1] = ("%s/worker%d.log"):format(dir, i)
  end
  local client = core.cluster_connect(cl.address, { token_file = token })
  for _ = 1, 400 do
    if #client:status().places == #workers then break end
    core.sleep(0.025)
  end
  assert.are.equal(#workers, #client:status().places)
  client:close()
  return cl
end

-- Runs the driver script text in directory cwd with the cluster's address
-- and token as arguments; returns its stdout, failing on a failure.
local function drive(cl, cwd, text)
  local script = H.write(H.tmpdir() .. "/driver.lua", text)
  local r = H.fflua({ script, cl.address, cl.token }, { cwd = cwd, timeout = 60 })
  assert.are.equal(0, r.code, r.stderr)
  return r.stdout
end

local function count(text, plain)
  local n, at = 0, 1
  while true do
    local s, e = text:find(plain, at, true)
    if not s then return n end
    n, at = n + 1, e + 1
  end
end

local function project(files)
  local dir = H.tmpdir()
  for name, text in pairs(files) do
    assert(os.execute(("mkdir -p \"$(dirname '%s/%s')\""):format(dir, name)))
    H.write(dir .. "/" .. name, text)
  end
  return dir
end

describe("runtime_env.working_dir on a cluster", function()
  after_each(function()
    C.stop_all()
    for _, log in ipairs(logs) do
      local text = H.read(log) or ""
      assert.falsy(text:find("Sanitizer", 1, true), text)
    end
    logs = {}
    H.cleanup()
  end)

  it("gives a node the project's modules and data files on a worker that has neither; " ..
     "edited content goes again, unchanged content does not", function()
    local cl = cluster { 1 }
    local proj = project {
      ["helper.lua"] = 'return { greet = function(x) return "hello " .. x end }\n',
      ["lib/init.lua"] = 'return { tag = "lib-1" }\n',
      ["data/input.txt"] = "payload-1\n",
      [".git/HEAD"] = "ref: refs/heads/main\n",
      ["build/big.bin"] = "left out\n",
    }
    local out = drive(cl, proj, [[
      local ff = require "functionfuse"
      local ClusterWorkflow = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
      local helper = require "helper"   -- shipped by name: the worker requires it
      local use = ff.workflow("use", function(x)
        local f = assert(io.open("data/input.txt"))
        local d = f:read("l")
        f:close()
        local p = io.popen("pwd")
        local cwd = p:read("l")
        p:close()
        local git = io.open(".git/HEAD") ~= nil or io.open("build/big.bin") ~= nil
        return table.concat({ helper.greet(x), require("lib").tag, d, tostring(git), cwd }, "|")
      end)
      local plain = ff.workflow("plain", function()
        local p = io.popen("pwd")
        local cwd = p:read("l")
        p:close()
        return cwd .. "|" .. tostring(io.open("helper.lua") ~= nil) .. "|" ..
               tostring(package.path:find("/run-", 1, true) ~= nil)
      end)
      local init = { address = arg[1], token_file = arg[2], runtime_env = { working_dir = "." } }
      local function run()
        return ClusterWorkflow(use("a"), { workflow_name = "wd", cluster_init_args = init }):run()
      end
      print(run())
      print(run())                       -- unchanged: not sent again
      local f = assert(io.open("helper.lua", "w"))
      f:write('return { greet = function(x) return "bonjour " .. x end }\n')
      f:close()
      f = assert(io.open("data/input.txt", "w"))
      f:write("payload-2\n")
      f:close()
      print(run())                       -- edited: a new hash
      print(ClusterWorkflow(plain(), { workflow_name = "plain",
        cluster_init_args = { address = arg[1], token_file = arg[2] } }):run())
    ]])
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.are.equal(4, #lines, out)
    local cache = cl.dir .. "/cache1/fflua/worker%-[^/]+%-%d+/run%-%d+"
    assert.matches("^hello a|lib%-1|payload%-1|false|" .. cache .. "$", lines[1])
    assert.matches("^hello a|lib%-1|payload%-1|false|" .. cache .. "$", lines[2])
    assert.matches("^bonjour a|lib%-1|payload%-2|false|" .. cache .. "$", lines[3])
    -- Without working_dir: the worker's own directory, its own package.path.
    assert.are.equal(cl.workers[1] .. "|false|false", lines[4])
    local head = H.read(cl.dir .. "/head.log")
    local worker = H.read(cl.dir .. "/worker1.log")
    -- Two contents: each received once by the head and sent once to the
    -- worker, though three runs used them.
    assert.are.equal(2, count(head, " received ("), head)
    assert.are.equal(2, count(head, " sent to worker "), head)
    assert.are.equal(2, count(worker, " received ("), worker)
    assert.are.equal(3, count(worker, " unpacked in "), worker)
    assert.are.equal(3, count(worker, " ended: its working directory removed"), worker)
    -- The lines -v documents.
    local hex = "%x%x%x%x%x%x%x%x"
    local drv = "fflua head: driver 127%.0%.0%.1:%d+: "
    assert.matches(drv .. "working directory " .. hex .. " received %(%d+%.%d KiB%)\n", head)
    assert.matches(drv .. "run 1 submitted: 1 tasks, working directory " .. hex .. "\n", head)
    assert.matches(drv .. "run 1 done: 1 of 1 tasks finished\n", head)
    assert.matches(drv .. "run 4 submitted: 1 tasks\n", head)
    assert.matches("fflua head: working directory " .. hex .. " sent to worker [^\n]+:%d+ %(", head)
    -- The driver left: the head forgets its working directories, and so
    -- does the worker; run copies are gone.
    for _ = 1, 200 do
      if count(H.read(cl.dir .. "/worker1.log"), " forgotten") == 2 then break end
      core.sleep(0.025)
    end
    assert.are.equal(2, count(H.read(cl.dir .. "/head.log"), " forgotten"))
    assert.are.equal(2, count(H.read(cl.dir .. "/worker1.log"), " forgotten"))
    local ls = H.run({ "sh", "-c", "ls -A \"$0\"/fflua/worker-*", cl.dir .. "/cache1" })
    assert.are.equal("", ls.stdout)
  end)

  it("keeps at most 4 working directories per connection on the head", function()
    local cl = cluster { 1 }
    local proj = project { ["n.txt"] = "0\n" }
    drive(cl, proj, [[
      local ff = require "functionfuse"
      local ClusterWorkflow = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
      local read = ff.workflow("read", function()
        local f = assert(io.open("n.txt"))
        local n = f:read("n")
        f:close()
        return n
      end)
      for i = 1, 5 do
        local f = assert(io.open("n.txt", "w"))
        f:write(i, "\n")
        f:close()
        local got = ClusterWorkflow(read(), { workflow_name = "lru", cluster_init_args = {
          address = arg[1], token_file = arg[2], runtime_env = { working_dir = "." } } }):run()
        assert(got == i, got)
      end
    ]])
    local head
    for _ = 1, 200 do
      head = H.read(cl.dir .. "/head.log")
      if count(head, " forgotten") == 5 then break end
      core.sleep(0.025)
    end
    -- Five contents: the first is forgotten as the fifth comes, while the
    -- driver is connected; the other four when it leaves.
    assert.are.equal(5, count(head, " received ("), head)
    assert.are.equal(5, count(head, " forgotten"), head)
    assert.is_true(head:find(" forgotten", 1, true) < head:find("run 5 submitted", 1, true), head)
  end)

  it("keeps two runs of different working dirs on one worker apart", function()
    local cl = cluster { 2 }
    local text = [[
      local ff = require "functionfuse"
      local ClusterWorkflow = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
      local which = require "which"
      local node = ff.workflow("node", function()
        local c = require "functionfuse.core"
        local t0 = c.monotime()
        c.sleep(0.6)
        local f = assert(io.open("which.txt"))
        local w = f:read("l")
        f:close()
        local other = io.open(which.other .. ".txt") ~= nil
        return ("%s %s %s %.3f %.3f"):format(which.name, w, tostring(other), t0, c.monotime())
      end)
      local r = ClusterWorkflow(node(), { workflow_name = "two",
        cluster_init_args = { address = arg[1], token_file = arg[2],
                              runtime_env = { working_dir = "." } } }):run()
      local f = assert(io.open(arg[3], "w"))
      f:write(r, "\n")
      f:close()
    ]]
    local a = project { ["which.lua"] = 'return { name = "A", other = "B" }\n',
                        ["which.txt"] = "A\n", ["A.txt"] = "" }
    local b = project { ["which.lua"] = 'return { name = "B", other = "A" }\n',
                        ["which.txt"] = "B\n", ["B.txt"] = "" }
    local sa = H.write(a .. "/driver.lua", text)
    local sb = H.write(b .. "/driver.lua", text)
    local res = H.tmpdir()
    C.start_sh({ sa, cl.address, cl.token, res .. "/a" }, res .. "/a.err", "cd '" .. a .. "'")
    C.start_sh({ sb, cl.address, cl.token, res .. "/b" }, res .. "/b.err", "cd '" .. b .. "'")
    local outs = { C.wait_file(res .. "/a"), C.wait_file(res .. "/b") }
    local ra = { outs[1]:match("^(%S+) (%S+) (%S+) (%S+) (%S+)") }
    local rb = { outs[2]:match("^(%S+) (%S+) (%S+) (%S+) (%S+)") }
    assert.are.same({ "A", "A", "false" }, { ra[1], ra[2], ra[3] }, outs[1])
    assert.are.same({ "B", "B", "false" }, { rb[1], rb[2], rb[3] }, outs[2])
    -- They ran at once, each in its own directory, on the one worker.
    assert.are.equal(2, C.most_at_once { { 1, tonumber(ra[4]), tonumber(ra[5]) },
                                         { 2, tonumber(rb[4]), tonumber(rb[5]) } })
  end)

  it("refuses a directory over the size cap, a link leading out, and unknown keys", function()
    local cl = cluster { 1 }
    local big = project { ["a.lua"] = "return 1\n" }
    assert(os.execute("truncate -s 101M '" .. big .. "/huge.bin'"))
    local node = ff.workflow("n", function() return 1 end)
    local function run(dir)
      return pcall(function()
        return ClusterWorkflow(node(), { workflow_name = "cap", cluster_init_args = {
          address = cl.address, token_file = cl.token, runtime_env = { working_dir = dir } } }):run()
      end)
    end
    local ok, err = run(big)
    assert.is_false(ok)
    assert.are.equal(("ClusterWorkflow: working_dir '%s' holds 101.0 MiB of files, more than " ..
                      "the 100 MiB a working directory may have"):format(big), tostring(err))
    local out = project { ["a.lua"] = "return 1\n" }
    assert(os.execute(("ln -s /etc/hostname '%s/host'"):format(out)))
    ok, err = run(out)
    assert.is_false(ok)
    assert.are.equal(("ClusterWorkflow: working_dir '%s': the symbolic link 'host' leads " ..
                      "outside the directory (or nowhere): only links to files inside the " ..
                      "directory are followed (packed as copies)"):format(out), tostring(err))
    ok, err = run(out .. "/missing")
    assert.is_false(ok)
    assert.are.equal(("ClusterWorkflow: working_dir '%s/missing': No such file or directory")
                     :format(out), tostring(err))
    ok, err = pcall(ClusterWorkflow, node(), { workflow_name = "k", ray_init_args = { runtime_env = {
      working_dir = ".", pip = { "x" } } } })
    assert.is_false(ok)
    assert.matches("ClusterWorkflow: ray_init_args%.runtime_env: unknown key 'pip' %(", err)
    ok, err = pcall(ClusterWorkflow, node(), { workflow_name = "k", cluster_init_args = { runtime_env = {
      workin_dir = "." } } })
    assert.is_false(ok)
    assert.matches("ClusterWorkflow: cluster_init_args%.runtime_env: unknown key 'workin_dir' " ..
                   "%(did you mean 'working_dir'%?%)", err)
    -- Nothing of that reached the cluster: a good one still runs.
    local good = project { ["a.lua"] = "return 1\n" }
    assert(os.execute(("ln -s a.lua '%s/b.lua'"):format(good)))
    ok, err = run(good)
    assert.is_true(ok, err)
  end)

  it("refuses a hostile blob with a clear error, and the worker stays", function()
    local cl = cluster { 1 }
    local function varint(n) return string.char(n) end -- small numbers only
    local function str(s) return varint(#s) .. s end
    local cases = {
      { "FFWD" .. varint(1) .. varint(1) .. varint(2) .. str("../evil") .. str("x"),
        "entry 1 has a path with '.' or '..'" },
      { "FFWD" .. varint(1) .. varint(1) .. varint(2) .. str("/tmp/evil") .. str("x"),
        "entry 1 has an absolute path" },
      { "FFWD" .. varint(1) .. varint(1) .. varint(2) .. str("d/evil") .. str("x"),
        "entry 'd/evil' comes before its directory" },
      { "FFWD" .. varint(1) .. varint(2) .. varint(2) .. str("x") .. str("1"),
        "entry 2 is malformed" },
      { "NOPE" .. varint(1) .. varint(0), "not a working directory of this version" },
    }
    local node = ff.workflow("n", function() return 1 end)
    local client = core.cluster_connect(cl.address, { token_file = cl.token })
    for i, case in ipairs(cases) do
      local wf = ClusterWorkflow(node(), { workflow_name = "hostile" })
      local leaves = wf._core
      local ok, err = pcall(leaves.run_cluster, leaves, client, {
        run_id = 100 + i, workdir = core.workdir_hash(case[1]), workdir_blob = case[1] })
      assert.is_false(ok)
      local msg = tostring(err)
      assert.truthy(msg:find("its working directory cannot be made on worker ", 1, true), msg)
      assert.truthy(msg:find("from the head is refused: " .. case[2], 1, true), msg)
    end
    client:close()
    assert.is_nil(io.open(cl.dir .. "/cache1/fflua/evil"))
    assert.is_nil(io.open("/tmp/evil"))
    -- The worker is still there and runs a good run.
    local st = core.cluster_connect(cl.address, { token_file = cl.token })
    assert.are.equal(1, #st:status().places)
    st:close()
    local proj = project { ["m.lua"] = "return 7\n" }
    local out = drive(cl, proj, [[
      local ff = require "functionfuse"
      local ClusterWorkflow = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
      local n = ff.workflow("n", function() return (require "m") end)
      print(ClusterWorkflow(n(), { workflow_name = "ok", cluster_init_args = {
        address = arg[1], token_file = arg[2], runtime_env = { working_dir = "." } } }):run())
    ]])
    assert.are.equal("7\n", out)
  end)

  it("on the local cluster, runs nodes in the shipped copy", function()
    local proj = project { ["m.lua"] = "return 'local-m'\n" }
    local out = drive({ address = "", token = "" }, proj, [[
      local ff = require "functionfuse"
      local ClusterWorkflow = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
      local n = ff.workflow("n", function()
        local p = io.popen("pwd")
        local cwd = p:read("l")
        p:close()
        return require("m") .. "|" .. cwd
      end)
      print(ClusterWorkflow(n(), { workflow_name = "lc", cluster_init_args = {
        num_cpus = 1, runtime_env = { working_dir = "." } } }):run())
    ]])
    assert.matches("^local%-m|/.+/worker%-[^/]+%-%d+/run%-%d+\n$", out)
    assert.falsy(out:find(proj, 1, true))
  end)

  it("is in fflua head --help and fflua worker --help", function()
    local r = H.fflua { "head", "--help" }
    assert.truthy(r.stdout:find("[--quiet | --verbose]", 1, true), r.stdout)
    assert.truthy(r.stdout:find("--verbose (-v) also logs each run", 1, true), r.stdout)
    r = H.fflua { "worker", "--help" }
    assert.truthy(r.stdout:find("--verbose (-v) also logs each working directory", 1, true),
                  r.stdout)
  end)
  it("sends the working directory again after a run that failed before sending it", function()
    local dir = H.tmpdir()
    H.write(dir .. "/mod.lua", 'return { who = "shipped" }\n')
    H.write(dir .. "/run.lua", [[
      local ff = require "functionfuse"
      local ClusterWorkflow = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
      local f = ff.workflow("f", function() return require("mod").who end)
      local wf = ClusterWorkflow(f(), { workflow_name = "a", quiet = true,
        cluster_init_args = { num_workers = 1, runtime_env = { working_dir = "." } } })
      local fail = true
      wf:set_plugin(".*", { local_initialize = function() if fail then error("boom") end end,
                            remote_initialize = function() end })
      print(pcall(wf.run, wf) == false)
      fail = false
      print(wf:run())
      print(wf:run())
    ]])
    local r = H.fflua({ dir .. "/run.lua" }, { cwd = dir })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("true\nshipped\nshipped\n", r.stdout)
  end)
  it("never lets a module loaded outside the working directory stand in for its copy", function()
    local dir = H.tmpdir()
    H.write(dir .. "/mod.lua", 'return { who = "home" }\n')
    os.execute("mkdir " .. dir .. "/wd")
    H.write(dir .. "/wd/mod.lua", 'return { who = "shipped" }\n')
    H.write(dir .. "/run.lua", [[
      local ff = require "functionfuse"
      local ClusterWorkflow = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
      local f = ff.workflow("f", function() return require("mod").who end)
      local function run(env)
        return ClusterWorkflow(f(), { workflow_name = "m", quiet = true,
          cluster_init_args = { num_workers = 1, runtime_env = env } }):run()
      end
      print(run(nil), run { working_dir = "wd" }, run(nil))
    ]])
    local r = H.fflua({ dir .. "/run.lua" }, { cwd = dir })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("home\tshipped\thome\n", r.stdout)
  end)
  it("takes the working directory once its worker's cache can be written again", function()
    local cl = cluster { 1 }
    local cache = cl.dir .. "/cache1"
    -- The worker's cache cannot be made: a file stands where it goes.
    assert(os.execute(("rm -rf '%s' && touch '%s'"):format(cache, cache)))
    local proj = project { ["m.lua"] = 'return { v = "from m" }\n' }
    local script = H.write(H.tmpdir() .. "/driver.lua", [[
      local ff = require "functionfuse"
      local ClusterWorkflow = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
      local f = ff.workflow("f", function() return require("m").v end)
      local wf = ClusterWorkflow(f(), { workflow_name = "c", cluster_init_args = { address = arg[1],
        token_file = arg[2], runtime_env = { working_dir = "." } } })
      print(pcall(wf.run, wf))
      io.read("l") -- the spec makes the cache writable
      print(wf:run())
    ]])
    local p = H.fftest.pty { argv = { H.bin, script, cl.address, cl.token },
                            env = { TERM = "dumb" }, cwd = proj }
    C.procs[#C.procs + 1] = p
    assert.truthy(p:expect("cannot make the cache directory", 30))
    assert(os.execute(("rm -f '%s' && mkdir '%s'"):format(cache, cache)))
    p:send("go\n")
    assert.truthy(p:expect("from m", 30))
  end)
end)
