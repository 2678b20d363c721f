-- Storage on a cluster: a storage of kind "cluster" (functionfuse's "ray")
-- lives on the worker that holds its remote args' resources; every save
-- and load of a ClusterWorkflow happens there, and the storage's calls from
-- the driver are routed there. A head, two workers and the drivers run as
-- separate processes, each in a directory of its own, so where the LMDB
-- files appear shows where the storage is.
local core = require "functionfuse.core"
local H = require "spec.helper"
local C = require "spec.cluster_helper"

-- The stderr files of the cluster processes started: read after they
-- stopped, so that a sanitizer's report (in a sanitizer build) fails the
-- spec.
local logs = {}

-- A head and two workers, each --own-machine and started in a directory of
-- its own; the first declares _disk. Returns address, token and the dirs
-- (head, disk, other, driver; disk_worker: the _disk worker's process).
-- Each worker has one CPU, so runs its tasks on the thread that serves
-- the storage; disk_cpus gives the _disk worker more, run on threads of
-- their own.
local function disk_cluster(disk_cpus)
  local d = { head = H.tmpdir(), disk = H.tmpdir(), other = H.tmpdir(), driver = H.tmpdir() }
  local token = d.head .. "/cluster.token"
  H.write(token, core.token_new() .. "\n")
  assert(os.execute("chmod 600 '" .. token .. "'"))
  C.start_sh({ "head", "--port", "0", "--num-cpus", "0", "--token-file", token, "--quiet",
               "--ready-file", d.head .. "/ready" }, d.head .. "/head.log", "cd '" .. d.head .. "'")
  local address = C.wait_file(d.head .. "/ready")
  logs[#logs + 1] = d.head .. "/head.log"
  logs[#logs + 1] = d.disk .. "/worker.log"
  logs[#logs + 1] = d.other .. "/worker.log"
  local common = { "worker", "--address", address, "--token-file", token, "--num-cpus", "1",
                   "--own-machine", "--quiet" }
  local a = { table.unpack(common) }
  a[#a + 1] = "--resources"; a[#a + 1] = '{"_disk": 1}'
  if disk_cpus then a[7] = tostring(disk_cpus) end -- after --num-cpus
  d.disk_worker = C.start_sh(a, d.disk .. "/worker.log", "cd '" .. d.disk .. "'")
  C.start_sh(common, d.other .. "/worker.log", "cd '" .. d.other .. "'")
  local client = core.cluster_connect(address, { token_file = token })
  for _ = 1, 400 do
    if #client:status().places == 2 then break end
    core.sleep(0.025)
  end
  assert.are.equal(2, #client:status().places)
  client:close()
  return address, token, d
end

-- The LMDB files under dir.
local function mdb_files(dir)
  local r = H.run { "find", dir, "-name", "*.mdb" }
  local t = {}
  for l in r.stdout:gmatch("[^\n]+") do t[#t + 1] = l:sub(#dir + 2) end
  table.sort(t)
  return t
end

-- The seed page's storage example, with a node beside it: node1 = sum(1, B),
-- node2 = sum(node1, 1), node3 = sum(10, 20), total = sum(node2, node3).
-- Every call appends "a+b" to LOG. Prints the result, what was computed,
-- the stored tasks and node3's stored value.
local SEED = [[
local ff = require "functionfuse"
local storage_factory = require("functionfuse.storage").storage_factory
local ClusterWorkflow = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
local LOG, ADDRESS, TOKEN, B = arg[1], arg[2], arg[3], tonumber(arg[4])
local cache = arg[5]
if cache == "false" then cache = false end
local sum = ff.workflow(function(a, b)
  local f = assert(io.open(LOG, "a"))
  f:write(a, "+", b, "\n")
  f:close()
  return a + b
end)
local node1 = sum(1, B):set_name("node1")
local node2 = sum(node1, 1):set_name("node2")
local node3 = sum(10, 20):set_name("node3")
local total = sum(node2, node3):set_name("total")
local wf = ClusterWorkflow(total, { workflow_name = "sums", quiet = true, cache = cache,
                                    ray_init_args = { address = ADDRESS, token_file = TOKEN } })
local ray_storage_remote_args = { resources = { _disk = 0.001 } }
local storage = storage_factory{ kind = "ray",
  options = { remoteArgs = ray_storage_remote_args, path = "storage" } }
wf:set_storage(storage)
print("result", wf:run())
print("computed", wf.last_run.computed)
print("tasks", table.concat(storage:list_tasks("sums"), ","))
print("node3", storage:read_task("sums", "node3"))
]]

local function lines(path)
  local t = C.lines_of(path)
  table.sort(t)
  return t
end

describe("a storage on a cluster", function()
  after_each(function()
    -- Newest first: a worker that ends because its head did could be hit
    -- by the SIGTERM meant for it while it reports leaks.
    for i = #C.procs, 1, -1 do
      C.procs[i]:kill(H.signals.SIGTERM)
      C.procs[i]:wait(10)
    end
    C.stop_all()
    for _, log in ipairs(logs) do
      local text = H.read(log) or ""
      assert.is_nil(text:find("Sanitizer") or text:find("runtime error"), log .. ":\n" .. text)
    end
    logs = {}
    H.cleanup()
  end)

  it("saves and loads on the _disk worker only; a rerun runs nothing", function()
    local address, token, d = disk_cluster()
    local script = d.driver .. "/seed.lua"
    H.write(script, SEED)
    local log = d.driver .. "/calls.log"
    local function run(b, cache)
      local r = H.fflua({ script, log, address, token, tostring(b), cache }, { cwd = d.driver })
      assert.are.equal(0, r.code, r.stderr)
      return r.stdout
    end
    local out = run(1)
    assert.are.equal("result\t33\ncomputed\t4\ntasks\tnode1,node2,node3,total\nnode3\t30\n", out)
    assert.are.same({ "1+1", "10+20", "2+1", "3+30" }, lines(log))
    -- Where the storage is: under the _disk worker's startup directory,
    -- and nowhere else.
    assert.are.same({ "storage/data.mdb", "storage/lock.mdb" }, mdb_files(d.disk))
    assert.are.same({}, mdb_files(d.other))
    assert.are.same({}, mdb_files(d.driver))
    assert.are.same({}, mdb_files(d.head))
    -- A second driver: nothing runs, the leaf comes from the storage.
    os.remove(log)
    out = run(1)
    assert.are.equal("result\t33\ncomputed\t0\ntasks\tnode1,node2,node3,total\nnode3\t30\n", out)
    assert.are.same({}, lines(log))
    -- Both runs' records are kept beside the results, on the _disk
    -- worker's machine; the newest says what the second run did.
    local storage = require "functionfuse.storage"
    local rec = assert(storage.run_record(d.disk .. "/storage", "sums"))
    assert.are.equal("cluster", rec.backend)
    assert.are.same({ 0, 4 }, { rec.computed, rec.loaded })
    assert.are.same({ "stored", "stored", "stored", "loaded" }, rec.state)
    assert.are.equal(address, rec.cluster.address)
    rec = assert(storage.run_record(d.disk .. "/storage", "sums", 2))
    assert.are.equal(4, rec.computed)
    assert.are.same({ "computed", "computed", "computed", "computed" }, rec.state)
    assert.is_nil(storage.run_record(d.disk .. "/storage", "sums", 3))
    -- A changed argument: that node and its descendants run, node3 not.
    out = run(2)
    assert.are.equal("result\t34\ncomputed\t3\ntasks\tnode1,node2,node3,total\nnode3\t30\n", out)
    assert.are.same({ "1+2", "3+1", "4+30" }, lines(log))
    assert.are.same({}, mdb_files(d.other))
    assert.are.same({}, mdb_files(d.driver))
    -- cache = "name": stored under the name is enough, as locally (the
    -- result of B = 2 stays); cache = false: everything runs, and is saved.
    os.remove(log)
    out = run(1, "name")
    assert.are.equal("result\t34\ncomputed\t0\ntasks\tnode1,node2,node3,total\nnode3\t30\n", out)
    out = run(1, "false")
    assert.are.equal("result\t33\ncomputed\t4\ntasks\tnode1,node2,node3,total\nnode3\t30\n", out)
    assert.are.same({ "1+1", "10+20", "2+1", "3+30" }, lines(log))
    os.remove(log)
    assert.are.equal("result\t33\ncomputed\t0\ntasks\tnode1,node2,node3,total\nnode3\t30\n",
                     run(1))
    assert.are.same({}, lines(log))
  end)

  it("answers from the driver, on its own or bound to a workflow", function()
    local address, token, d = disk_cluster()
    H.write(d.driver .. "/calls.lua", [[
      local ff = require "functionfuse"
      local storage_factory = require("functionfuse.storage").storage_factory
      local ClusterWorkflow = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
      local init = { address = arg[1], token_file = arg[2] }
      local st = storage_factory{ kind = "cluster", options = {
        remote_args = { resources = { _disk = 0.001 } }, path = "st", cluster_init_args = init } }
      local new_workflow, read, save = st:get_writer_funcs("w")
      new_workflow()
      save("a", { x = 1 })
      save("b", 2)
      assert(read.remote_args.resources._disk == 0.001)
      assert(read.file_exists("a") and not read.file_exists("zz"))
      assert(read.read_task("a").x == 1)
      print(table.concat(st:list_tasks("w"), ","), table.concat(st:list_tasks("w", "[b]"), ","))
      print(st:remove_task("w", "a"), table.concat(st:list_tasks("w"), ","))
      print(pcall(st.read_task, st, "w", "a"))
      print(table.concat(st:workflows(), ","))
      st:remove_workflow("w")
      print(#st:list_tasks("w"))
      -- Bound to a workflow without init args: through its cluster.
      local inc = ff.workflow(function(x) return x + 1 end)
      local n = inc(41):set_name("n")
      local wf = ClusterWorkflow(n, { workflow_name = "w2", quiet = true, cluster_init_args = init })
      local st2 = storage_factory{ kind = "cluster", options = {
        remote_args = { resources = { _disk = 0.001 } }, path = "st" } }
      print(pcall(st2.list_tasks, st2, "w2"))
      wf:set_storage(st2)
      print(wf:run(), st2:read_task("w2", "n"))
    ]])
    local r = H.fflua({ d.driver .. "/calls.lua", address, token }, { cwd = d.driver })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("a,b\tb\n1\tb\nfalse\tstorage 'st': no stored result for task 'a' of " ..
                     "workflow 'w'\nw\n0\nfalse\tstorage 'st' (kind 'cluster') is not bound to " ..
                     "a cluster: set it on a ClusterWorkflow (set_storage) or give " ..
                     "options.cluster_init_args\n42\t42\n", (r.stdout:gsub("[^\t\n]*calls%.lua:%d+: ", "")))
    assert.are.same({ "st/data.mdb", "st/lock.mdb" }, mdb_files(d.disk))
    assert.are.same({}, mdb_files(d.driver))
  end)

  it("keeps what was committed when the driver is killed; the rerun computes the rest", function()
    local address, token, d = disk_cluster()
    local script = d.driver .. "/many.lua"
    H.write(script, [[
      local ff = require "functionfuse"
      local storage_factory = require("functionfuse.storage").storage_factory
      local ClusterWorkflow = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
      local LOG = arg[1]
      local step = ff.workflow(function(i)
        require("functionfuse.core").sleep(0.05)
        local f = assert(io.open(LOG, "a"))
        f:write(i, "\n")
        f:close()
        return i * i
      end)
      local all = ff.workflow(function(...) return select("#", ...) end)
      local nodes = {}
      for i = 1, 60 do nodes[i] = step(i):set_name(("step%02d"):format(i)) end
      local wf = ClusterWorkflow(all(table.unpack(nodes)):set_name("all"), { workflow_name = "many",
        quiet = true, cluster_init_args = { address = arg[2], token_file = arg[3] } })
      wf:set_storage(storage_factory{ kind = "cluster",
        options = { remote_args = { resources = { _disk = 0.001 } }, path = "storage" } })
      print(wf:run(), wf.last_run.computed)
    ]])
    local log = d.driver .. "/calls.log"
    local p = C.start_sh({ script, log, address, token }, d.driver .. "/driver.log",
                         "cd '" .. d.driver .. "'")
    for _ = 1, 400 do
      if #C.lines_of(log) >= 15 then break end
      core.sleep(0.02)
    end
    p:kill(H.signals.SIGKILL)
    p:wait(10)
    core.sleep(0.3) -- a group commit: at most 100 ms after the last save
    local st = require("functionfuse.storage").storage_factory { kind = "cluster", options = {
      remote_args = { resources = { _disk = 0.001 } }, path = "storage",
      cluster_init_args = { address = address, token_file = token } } }
    local stored = st:list_tasks("many")
    local ran = #C.lines_of(log)
    assert.is_true(#stored >= 10 and #stored <= ran and ran < 60,
                   ("%d stored, %d ran"):format(#stored, ran))
    for _, name in ipairs(stored) do
      local i = tonumber(name:match("^step(%d+)$"))
      assert.are.equal(i * i, st:read_task("many", name))
    end
    os.remove(log)
    local r = H.fflua({ script, log, address, token }, { cwd = d.driver })
    assert.are.equal(0, r.code, r.stderr)
    -- Exactly the steps not stored ran again, and the leaf.
    assert.are.equal(("60\t%d\n"):format(60 - #stored + 1), r.stdout)
    local again = {}
    for _, l in ipairs(C.lines_of(log)) do again[("step%02d"):format(tonumber(l))] = true end
    for _, name in ipairs(stored) do assert.is_nil(again[name], name) end
    local n = 0
    for _ in pairs(again) do n = n + 1 end
    assert.are.equal(60 - #stored, n)
    assert.are.equal(61, #st:list_tasks("many"))
  end)

  it("fails the run, naming it, when the storage's worker leaves", function()
    local address, token, d = disk_cluster()
    local script = d.driver .. "/slow.lua"
    H.write(script, [[
      local ff = require "functionfuse"
      local storage_factory = require("functionfuse.storage").storage_factory
      local ClusterWorkflow = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
      local step = ff.workflow(function(i)
        require("functionfuse.core").sleep(0.1)
        return i
      end)
      local all = ff.workflow(function(...) return select("#", ...) end)
      local nodes = {}
      for i = 1, 40 do nodes[i] = step(i):set_name(("step%02d"):format(i)) end
      local wf = ClusterWorkflow(all(table.unpack(nodes)):set_name("all"), { workflow_name = "slow",
        quiet = true, cluster_init_args = { address = arg[1], token_file = arg[2] } })
      wf:set_storage(storage_factory{ kind = "cluster",
        options = { remote_args = { resources = { _disk = 0.001 } }, path = "storage" } })
      local ok, err = pcall(wf.run, wf)
      print(ok, tostring(err))
    ]])
    local log = d.driver .. "/out.log"
    local p = C.start_sh({ script, address, token }, d.driver .. "/err.log",
                         "cd '" .. d.driver .. "'; exec >'" .. log .. "'")
    core.sleep(0.5)
    local pid = d.disk_worker:pid()
    d.disk_worker:kill(H.signals.SIGKILL)
    p:wait(20)
    local out = H.read(log) or ""
    assert.truthy(out:find("^false\t.*%(.+:" .. pid .. "%) left the cluster"), out)
  end)

  it("fails the run on a full disk, naming the storage and its worker", function()
    local dir = H.tmpdir()
    H.write(dir .. "/big.lua", [[
      local ff = require "functionfuse"
      local storage_factory = require("functionfuse.storage").storage_factory
      local ClusterWorkflow = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
      local big = ff.workflow(function(i) return ("x"):rep(512 * 1024) .. i end)
      local all = ff.workflow(function(...) return select("#", ...) end)
      local nodes = {}
      for i = 1, 20 do nodes[i] = big(i):set_name(("big%02d"):format(i)) end
      local wf = ClusterWorkflow(all(table.unpack(nodes)), { workflow_name = "full", quiet = true,
        cluster_init_args = { address = arg[1], token_file = arg[2] } })
      wf:set_storage(storage_factory{ kind = "cluster",
        options = { remote_args = { resources = { _disk = 0.001 } }, path = "disk/st" } })
      print(wf:run())
    ]])
    H.write(dir .. "/tok", core.token_new() .. "\n")
    -- The _disk worker's storage on a 4 MiB file system, in a mount
    -- namespace with the whole cluster.
    local r = H.in_namespace(dir, [[
      mkdir -p w/disk && mount -t tmpfs -o size=4m tmpfs w/disk 2>/dev/null || exit 77
      chmod 600 tok
      "$FF" head --port 0 --num-cpus 0 --token-file tok --ready-file ready --quiet & head=$!
      while [ ! -s ready ]; do sleep 0.05; done
      a=$(cat ready)
      cd w
      "$FF" worker --address "$a" --token-file ../tok --num-cpus 1 --own-machine --quiet \
        --resources '{"_disk": 1}' & worker=$!
      cd ..
      until "$FF" status --address "$a" --token-file tok | grep -q _disk; do sleep 0.05; done
      "$FF" big.lua "$a" tok 2>big.err; echo "big exited $?"
      cat big.err
      kill $worker $head; wait
    ]])
    if not r then return pending("no tmpfs can be mounted here") end
    assert.are.equal(0, r.code, r.stderr)
    assert.matches("big exited 1", r.stdout, 1, true)
    assert.truthy(r.stdout:find("storage 'disk/st' on the worker .+:%d+ in " ..
                                dir:gsub("%p", "%%%0") .. "/w: .*No space left on device"),
                  r.stdout)
  end)

  it("runs actors every time and stores only plain nodes, as RayWorkflow does", function()
    local address, token, d = disk_cluster()
    local ff = require "functionfuse"
    local ClusterWorkflow = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
    local storage_factory = require("functionfuse.storage").storage_factory
    -- functionfuse's IncrementalSum, every node named.
    local IncrementalSum = ff.workflow("IncrementalSum", {
      __init = function(self, start_at) self.start = start_at end,
      add = function(self, n)
        self.start = self.start + n
        return self.start
      end,
    })
    local minus = ff.workflow("minus", function(a, b) return a - b end)
    local one = minus(4, 3):set_name("four_minus_three")
    local incremental_sum = IncrementalSum(one):set_name("IncrementalSum")
    local two = minus(3, one):set_name("three_minus_one")
    incremental_sum:add(two):set_name("one_plus_two")
    incremental_sum:add(two):set_name("three_plus_two")
    local six = incremental_sum:add(one):set_name("five_plus_one")
    local wf = ClusterWorkflow(minus(six, 2):set_name("six_minus_two"), { workflow_name = "actors",
      quiet = true, cluster_init_args = { address = address, token_file = token } })
    local st = storage_factory { kind = "cluster",
      options = { remote_args = { resources = { _disk = 0.001 } }, path = "storage" } }
    wf:set_storage(st)
    assert.are.equal(4, wf:run())
    assert.are.equal(7, wf.last_run.computed)
    assert.are.same({ "four_minus_three", "six_minus_two", "three_minus_one" },
                    st:list_tasks("actors"))
    -- Again: the actor and its calls run (from the stored values they
    -- take), the plain nodes are stored.
    assert.are.equal(4, wf:run())
    assert.are.equal(4, wf.last_run.computed)
    assert.are.equal(3, wf.last_run.loaded)
    assert.are.same({ "storage/data.mdb", "storage/lock.mdb" }, mdb_files(d.disk))
  end)

  it("takes a storage of kind file only where a worker runs on this machine", function()
    local dir = H.tmpdir()
    local script = dir .. "/file.lua"
    H.write(script, [[
      local ff = require "functionfuse"
      local storage_factory = require("functionfuse.storage").storage_factory
      local ClusterWorkflow = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
      local inc = ff.workflow(function(x) return x + 1 end)
      local a = inc(1):set_name("a")
      local b = inc(a):set_name("b")
      local init = arg[1] and { address = arg[1], token_file = arg[2] } or { num_workers = 1 }
      local wf = ClusterWorkflow(b, { workflow_name = "f", quiet = true, cluster_init_args = init })
      local st = storage_factory{ kind = "file", options = { path = "fs" } }
      wf:set_storage(st)
      print(wf:run(), wf.last_run.computed)
      print(wf:run(), wf.last_run.computed)
      print(table.concat(st:list_tasks("f"), ","), st:read_task("f", "a"))
    ]])
    -- The local cluster runs here: the file storage is used by its worker.
    local r = H.fflua({ script }, { cwd = dir })
    assert.are.equal(0, r.code, r.stderr)
    assert.are.equal("3\t2\n3\t0\na,b\t2\n", r.stdout)
    assert.are.same({ "fs/data.mdb", "fs/lock.mdb" }, mdb_files(dir))
    -- A cluster whose workers are all machines of their own: refused.
    local address, token = disk_cluster()
    r = H.fflua({ script, address, token }, { cwd = H.tmpdir() })
    assert.are.equal(1, r.code)
    assert.truthy(r.stderr:find("ClusterWorkflow: storage 'fs' is of kind 'file', on this " ..
                                "machine, and no worker of the cluster runs here: use " ..
                                "storage_factory{ kind = \"cluster\", options = { remote_args = " ..
                                "{ resources = { ... } }, path = ... } } (set " ..
                                "options.remote_args to the resources of the machine that has " ..
                                "the disk)", 1, true), r.stderr)
  end)

  it("takes a storage kind written in Lua, through get_writer_funcs, as RayWorkflow does", function()
    local dir = H.tmpdir()
    H.write(dir .. "/mine.lua", [[
      local ff = require "functionfuse"
      local ClusterWorkflow = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
      local DIR = arg[1]
      -- A storage of one file per task, a number in each.
      local Mine = {}
      function Mine.get_writer_funcs(_, wf_name)
        local root = DIR .. "/" .. wf_name
        local function path(task) return root .. "/" .. task end
        local function new_workflow() os.execute("mkdir -p " .. root) end
        local function file_exists(task)
          local f = io.open(path(task)); if f then f:close() end
          return f ~= nil
        end
        local function read_task(task)
          local f = assert(io.open(path(task))); local v = f:read("a"); f:close()
          if v == "false" then return false end
          return tonumber(v)
        end
        local function save(task, v)
          local f = assert(io.open(path(task), "w")); f:write(tostring(v)); f:close()
        end
        return new_workflow, { remote_args = {}, file_exists = file_exists,
                               read_task = read_task }, save
      end
      local sum = ff.workflow(function(a, b)
        local f = assert(io.open(DIR .. "/runs.log", "a")); f:write(a, "+", b, "\n"); f:close()
        return a + b
      end)
      local n1 = sum(1, 2):set_name("n1")
      local n2 = sum(n1, 3):set_name("n2")
      local n3 = sum(n2, n1):set_name("n3")
      local big = ff.workflow(function(x) return x > 100 end)(n3):set_name("big")
      local wf = ClusterWorkflow(n3, big, { workflow_name = "mine",
        quiet = true, cluster_init_args = { num_workers = 2 } })
      wf:set_storage(setmetatable({}, { __index = Mine }))
      print(wf:run())
      print(wf:run())
      wf:set_storage(setmetatable({}, { __index = { get_writer_funcs = function() return nil, {} end } }))
      print(pcall(wf.run, wf))
      print(pcall(wf.set_storage, wf, 42))
    ]])
    local r = H.fflua({ dir .. "/mine.lua", dir }, { cwd = dir })
    assert.are.equal(0, r.code, r.stderr)
    local out = {}
    for l in r.stdout:gmatch("[^\n]+") do out[#out + 1] = l end
    assert.are.equal("9\tfalse", out[1])
    assert.are.equal("9\tfalse", out[2])
    -- Computed once: the second run read every node by name.
    assert.are.same({ "1+2", "3+3", "6+3" }, lines(dir .. "/runs.log"))
    assert.are.same({ "3", "6", "9" }, { H.read(dir .. "/mine/n1"), H.read(dir .. "/mine/n2"),
                                        H.read(dir .. "/mine/n3") })
    assert.are.equal("false", H.read(dir .. "/mine/big")) -- a false result stays false
    assert.truthy(out[3]:find("^false\t.*get_writer_funcs must return new_workflow, a read " ..
                              "object with file_exists and read_task, and a save function"), out[3])
    assert.truthy(out[4]:find("^false\t.*bad argument #1 to 'set_storage' %(a storage, or an " ..
                              "object with get_writer_funcs, expected, got number%)"), out[4])
  end)

  it("fails a run whose loaded result another run rewrote after it looked", function()
    -- Run A's S must not hold the thread that serves the storage.
    local address, token, d = disk_cluster(2)
    local script = d.driver .. "/race.lua"
    -- Leaves S (a log node: it always runs) and X = val(P). With one task
    -- out at a time, X's load waits behind S, which waits (when WAIT is
    -- given) for the file WAIT.go, writing WAIT.started first.
    H.write(script, [[
      local ff = require "functionfuse"
      local core = require "functionfuse.core"
      local storage_factory = require("functionfuse.storage").storage_factory
      local ClusterWorkflow = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
      local ADDRESS, TOKEN, P, WAIT, CACHE = arg[1], arg[2], tonumber(arg[3]), arg[4], arg[5]
      local slow = ff.workflow(function(wait)
        if wait == "" then return "s" end
        io.open(wait .. ".started", "w"):close()
        for _ = 1, 1000 do
          local f = io.open(wait .. ".go")
          if f then f:close() return "s" end
          core.sleep(0.02)
        end
        error("no " .. wait .. ".go")
      end)
      local val = ff.workflow(function(p) return p * 10 end)
      local S = slow(WAIT or ""):set_name("S")
      local X = val(P):set_name("X")
      local wf = ClusterWorkflow(S, X, { workflow_name = "race", quiet = true,
        cache = CACHE ~= "" and CACHE or nil,
        cluster_init_args = { address = ADDRESS, token_file = TOKEN } })
      wf:log_nodes("S")
      wf:set_storage(storage_factory{ kind = "cluster",
        options = { remote_args = { resources = { _disk = 0.001 } }, path = "storage" } })
      local ok, s, x = pcall(wf.run, wf, { max_pending_tasks = 1 })
      print(ok, ok and x or tostring(s), ok and wf.last_run.loaded or "")
    ]])
    local function run(p, cache)
      local r = H.fflua({ script, address, token, tostring(p), "", cache or "" }, { cwd = d.driver })
      assert.are.equal(0, r.code, r.stderr)
      return r.stdout
    end
    assert.are.equal("true\t10\t0\n", run(1))
    assert.are.equal("true\t10\t1\n", run(1)) -- X is stored
    -- Run A (p = 1) plans to load X, then waits in S; run B (p = 2)
    -- computes X anew and saves it over A's; then A reads X.
    local function race(cache, other)
      local wait = H.tmpdir() .. "/s"
      local out = d.driver .. "/a.out"
      local a = C.start_sh({ script, address, token, "1", wait, cache or "" },
                           d.driver .. "/a.err", "cd '" .. d.driver .. "'; exec >'" .. out .. "'")
      for _ = 1, 500 do
        if H.read(wait .. ".started") then break end
        core.sleep(0.02)
      end
      assert.truthy(H.read(wait .. ".started"), "S of run A did not start")
      other()
      H.write(wait .. ".go", "")
      a:wait(20)
      return H.read(out) or ""
    end
    local failed = race(nil, function() assert.are.equal("true\t20\t0\n", run(2)) end)
    assert.truthy(failed:find("^false\tnode 'X' %(function 'val' defined at [^)]+%) failed: " ..
                              "its stored result changed during the run %(another run of the " ..
                              "same workflow wrote it%): run again\t\n$"), failed)
    -- The storage holds B's X; a run with p = 2 loads it.
    assert.are.equal("true\t20\t1\n", run(2))
    -- With cache = "name" any stored X will do: A takes what is there when
    -- it reads (here one the driver saved meanwhile, without a fingerprint).
    local taken = race("name", function()
      local st = require("functionfuse.storage").storage_factory { kind = "cluster", options = {
        remote_args = { resources = { _disk = 0.001 } }, path = "storage",
        cluster_init_args = { address = address, token_file = token } } }
      st:save("race", "X", 77)
      st:flush()
    end)
    assert.are.equal("true\t77\t1\n", taken)
  end)

  it("refuses bad options and resources no worker has", function()
    local sf = require("functionfuse.storage").storage_factory
    assert.has_error(function()
      sf { kind = "cluster", options = { path = "s", remote_arg = {} } }
    end, "storage_factory: unknown option 'remote_arg' (did you mean 'remote_args'?)")
    assert.has_error(function() sf { kind = "ray", options = { path = "s" } } end,
                     "storage_factory: kind 'ray' needs options.remote_args (a table, e.g. " ..
                     "{ resources = { _disk = 0.001 } }), got nil")
    assert.has_error(function()
      sf { kind = "cluster", options = { path = "s", remote_args = { resource = {} } } }
    end, "storage_factory: options.remote_args: unknown key 'resource' (did you mean 'resources'?)")
    assert.has_error(function()
      sf { kind = "cluster", options = { path = "s", remote_args = {}, remoteArgs = {} } }
    end, "storage_factory: give options.remote_args or options.remoteArgs, not both")
    local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow
    local ff = require "functionfuse"
    local wf = LocalWorkflow(ff.workflow(function() return 1 end)(), { workflow_name = "x" })
    assert.has_error(function()
      wf:set_storage(sf { kind = "ray", options = { path = "s", remoteArgs = {} } })
    end, "set_storage: a storage of kind 'ray' lives on a cluster: use it with a " ..
         "ClusterWorkflow (or use kind \"file\")")
    local address, token, d = disk_cluster()
    H.write(d.driver .. "/bad.lua", [[
      local ff = require "functionfuse"
      local sf = require("functionfuse.storage").storage_factory
      local ClusterWorkflow = require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
      local init = { address = arg[1], token_file = arg[2] }
      local wf = ClusterWorkflow(ff.workflow(function() return 1 end)(), { workflow_name = "x",
        quiet = true, cluster_init_args = init })
      wf:set_storage(sf { kind = "cluster",
                          options = { path = "s", remote_args = { resources = { _tape = 1 } } } })
      print(pcall(wf.run, wf))
      wf:set_storage(sf { kind = "cluster",
                          options = { path = "s", remote_args = { resources = { _disk = 2 } } } })
      print(pcall(wf.run, wf))
      wf:set_storage(sf { kind = "cluster", options = { path = "/proc/nope/s",
                                                        remote_args = { resources = { _disk = 1 } } } })
      print(pcall(wf.run, wf))
    ]])
    local r = H.fflua({ d.driver .. "/bad.lua", address, token }, { cwd = d.driver })
    assert.are.equal(0, r.code, r.stderr)
    local out = {}
    for l in r.stdout:gmatch("[^\n]+") do out[#out + 1] = l end
    assert.are.equal("false\tno worker of the cluster has the resource '_tape'", out[1])
    assert.are.equal("false\tno worker of the cluster has the resources the storage asks for", out[2])
    -- A storage its worker cannot open: the path, the worker and why.
    assert.are.equal(3, #out, r.stdout)
    assert.truthy(out[3]:find("false\tstorage '/proc/nope/s' on the worker " ..
                              ".+:%d+ in " .. d.disk:gsub("%p", "%%%0") .. ": cannot make the " ..
                              "directory '/proc/nope'"), out[3])
  end)
end)
