-- classifiers.lua: functionfuse's basic ML example, in Lua. One dataset
-- node, a split, and several models trained in a loop whose nodes are not
-- kept in any variable: the workflow is given the dataset node alone and
-- still trains (and stores) every model built from it, because a workflow
-- is everything below the roots of the nodes it is given. A second part
-- then reads the models back from the storage, as functionfuse's notebook
-- does. Run it twice: the second run loads everything and trains nothing.
--
--   fflua examples/classifiers.lua [STORAGE_DIR]   (default: ./fflua-storage)
--   fflua graph examples/classifiers.lua -o classifiers.svg   its graph
local ff = require "functionfuse"
local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow
local storage_factory = require("functionfuse.storage").storage_factory

-- Points on a line with a label: 1 above 0.6, else 0 (a fixed generator,
-- so every run has the same data).
local function make_dataset(n)
  local x, y, s = {}, {}, 12345
  for i = 1, n do
    s = (s * 1103515245 + 12345) % 2147483648
    x[i] = s / 2147483648
    y[i] = x[i] > 0.6 and 1 or 0
  end
  return { x = x, y = y }
end

local function train_test_split(data, train_size)
  local function part(t, a, b) return table.move(t, a, b, 1, {}) end
  local n = #data.x
  return { X_train = part(data.x, 1, train_size), y_train = part(data.y, 1, train_size),
           X_test = part(data.x, train_size + 1, n), y_test = part(data.y, train_size + 1, n) }
end

-- A "model": the threshold halfway between the two classes' means, moved
-- by `shift` (each shift is another model).
local function train_model(shift, X, y)
  local sum, n = { [0] = 0, [1] = 0 }, { [0] = 0, [1] = 0 }
  for i = 1, #X do
    sum[y[i]] = sum[y[i]] + X[i]
    n[y[i]] = n[y[i]] + 1
  end
  return { shift = shift, threshold = (sum[0] / n[0] + sum[1] / n[1]) / 2 + shift }
end

local dataset = ff.workflow(make_dataset)
local split = ff.workflow(train_test_split)
local train = ff.workflow(train_model)

local data = dataset(1000):set_name("dataset")
local parts = split(data, 800):set_name("dataset_split")
for i, shift in ipairs { -0.1, 0, 0.05, 0.1 } do
  train(shift, parts.X_train, parts.y_train):set_name("model" .. i)
end

local path = arg[1] or "fflua-storage"
local storage = storage_factory { kind = "file", options = { path = path } }
local wf = LocalWorkflow(data, { workflow_name = "classifiers" })
wf:set_storage(storage)
wf:run()
local r = wf.last_run
print(("nodes %d: computed %d, loaded %d"):format(#wf:names(), r.computed, r.loaded))

-- The "notebook": every stored model, read back and scored on the test set.
local test = storage:read_task("classifiers", "dataset_split")
for _, task in ipairs(storage:list_tasks("classifiers", "model*")) do
  local m = storage:read_task("classifiers", task)
  local right = 0
  for i, x in ipairs(test.X_test) do
    if (x > m.threshold and 1 or 0) == test.y_test[i] then right = right + 1 end
  end
  print(("%s: shift %5.2f, accuracy %.3f"):format(task, m.shift, right / #test.X_test))
end
