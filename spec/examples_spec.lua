-- The examples run and print what they promise.
local H = require "spec.helper"

local function example(name, ...)
  local r = H.fflua({ "examples/" .. name .. ".lua", ... }, { cwd = H.source })
  assert.are.equal(0, r.code, r.stderr)
  return r.stdout, r.stderr
end

describe("examples", function()
  after_each(H.cleanup)

  it("cached.lua computes once, then loads", function()
    local dir = H.tmpdir() .. "/st"
    local out, err = example("cached", dir)
    assert.are.equal("15150\ncomputed 3, loaded 0\n", out)
    assert.matches("workflow 'cached': 3 computed, 0 loaded", err, 1, true)
    -- Every node counts as loaded; only the leaf is read back.
    assert.are.equal("15150\ncomputed 0, loaded 3\n", (example("cached", dir)))
  end)

  it("classifiers.lua trains and stores every model below the dataset, then reads them back", function()
    local dir = H.tmpdir() .. "/st"
    local scores = "model1: shift -0.10, accuracy 0.840\nmodel2: shift  0.00, accuracy 0.930\n" ..
                   "model3: shift  0.05, accuracy 0.995\nmodel4: shift  0.10, accuracy 0.940\n"
    assert.are.equal("nodes 6: computed 6, loaded 0\n" .. scores, (example("classifiers", dir)))
    assert.are.equal("nodes 6: computed 0, loaded 6\n" .. scores, (example("classifiers", dir)))
  end)

  it("cluster.lua prints 3 from a local cluster", function()
    assert.are.equal("3\nnode1 ran on a worker, node2 on a worker\n", (example("cluster")))
  end)

  it("sums.lua prints 3", function()
    assert.are.equal("3\n", example("sums"))
  end)

  it("diamond.lua runs the branches and combines them", function()
    assert.are.equal("run order: source_0000 -> double_0000 -> square_0000 -> combine_0000\n" ..
                     "combine_0000 = 35\n", example("diamond"))
  end)

  it("actors.lua gives 4 with the method calls chained in order", function()
    assert.are.equal("nodes: minus_0000 IncrementalSum_0000 minus_0001 IncrementalSum.add_0000 " ..
                     "IncrementalSum.add_0001 IncrementalSum.add_0002 minus_0002\n4\n", example("actors"))
  end)

  it("plugins.lua shows the same seeds and draws on every run", function()
    local out = example("plugins")
    assert.matches("^about to collect\na=%d+ b=%d+ c=%d+\nseeds: 101 102 103\n$", out)
    assert.are.equal(out, example("plugins"))
  end)
  it("wordcount/ counts words of its files with the stdlib, locally and on a cluster, cached", function()
    local d = H.tmpdir()
    local top = "of     7\nthe    6\na      5\nit     5\nwas    4\n"
    local head = "3 files: moby.txt pride.txt tale.txt\n"
    local out, err = example("wordcount/wordcount", "--out", d .. "/out", "--store", d .. "/st")
    assert.are.equal(head .. top .. "computed 15, loaded 0\n", out)
    assert.matches("wordcount: node 'count_1' starts", err, 1, true)
    assert.are.equal('{"n":7,"word":"of"}\n{"n":6,"word":"the"}\n{"n":5,"word":"a"}\n' ..
                     '{"n":5,"word":"it"}\n{"n":4,"word":"was"}\n', H.read(d .. "/out/top.jsonl"))
    assert.are.equal("word,n\r\nof,7\r\nthe,6\r\na,5\r\nit,5\r\nwas,4\r\n", H.read(d .. "/out/top.csv"))
    -- Cached: only the two writers (which always run) are computed, on the cluster too.
    assert.are.equal(head .. top .. "computed 2, loaded 13\n",
                     (example("wordcount/wordcount", "--cluster", "--out", d .. "/out", "--store", d .. "/st")))
    os.remove(d .. "/out/top.csv")
    assert.are.equal(head .. top .. "computed 15, loaded 0\n",
                     (example("wordcount/wordcount", "--cluster", "--out", d .. "/out2")))
    assert.truthy(H.read(d .. "/out2/top.csv"))
  end)
end)
