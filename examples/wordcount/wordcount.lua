-- wordcount.lua: the stdlib on real files. Every data/*.txt file is a node
-- (fs.glob: fingerprinted by its content), split into words by tr (shell),
-- counted per file (map), merged, and the top words written as JSON lines
-- (jsonl) and CSV (csv); a LoggingPlugin logs each count node's start.
--
--   fflua examples/wordcount/wordcount.lua [--cluster] [--store DIR] [--out DIR]
--
-- With --store, a second run loads everything; after an edit of one input
-- file, only that file's nodes and those after them run again. With
-- --cluster (or FFLUA_WORDCOUNT_CLUSTER=1), a local ClusterWorkflow runs it.
local ff = require "functionfuse"
local fs = require "functionfuse.stdlib.fs"
local shell = require "functionfuse.stdlib.shell"
local map = require "functionfuse.stdlib.map"
local jsonl = require "functionfuse.stdlib.jsonl"
local csv = require "functionfuse.stdlib.csv"
local splugins = require "functionfuse.stdlib.plugins"

local opts = { cluster = os.getenv("FFLUA_WORDCOUNT_CLUSTER") == "1", out = "wordcount-out" }
local i = 1
while arg[i] do
  if arg[i] == "--cluster" then opts.cluster = true
  elseif arg[i] == "--store" then i = i + 1; opts.store = arg[i]
  elseif arg[i] == "--out" then i = i + 1; opts.out = arg[i]
  else error("wordcount: unknown argument '" .. arg[i] .. "' (--cluster, --store DIR, --out DIR)") end
  i = i + 1
end
os.execute("mkdir -p '" .. opts.out .. "'")

-- The data directory beside this script, as the script was named.
local here = arg[0]:match("^(.*)/[^/]*$") or "."
local texts, paths = fs.glob(here .. "/data/*.txt", { name = "text" })

-- Words, one per line, lower case: tr in the C locale.
local words = {}
for k, text in ipairs(texts) do
  words[k] = shell.run({ "tr", "-cs", "A-Za-z", "\n" }, { stdin = text, env = { LC_ALL = "C" } })
    :set_name("words_" .. k)
end

local function count(text)
  local n = {}
  for w in text:gmatch("%a+") do
    w = w:lower()
    n[w] = (n[w] or 0) + 1
  end
  return n
end
local per_file = map.map(count, words, { name = "count" })

local merge = ff.workflow("merge", function(tables)
  local total = {}
  for _, t in ipairs(tables) do
    for w, n in pairs(t) do total[w] = (total[w] or 0) + n end
  end
  local list = {}
  for w, n in pairs(total) do list[#list + 1] = { word = w, n = n } end
  table.sort(list, function(a, b) return a.n > b.n or a.n == b.n and a.word < b.word end)
  return table.move(list, 1, math.min(5, #list), 1, {})
end)
local top = merge(per_file)

local json_out = jsonl.write(opts.out .. "/top.jsonl", top)
local csv_out = csv.write(opts.out .. "/top.csv", top, { header = { "word", "n" } })

local Workflow = opts.cluster
  and require("functionfuse.backends.builtin.clusterback").ClusterWorkflow
  or require("functionfuse.backends.builtin.localback").LocalWorkflow
local wf_opts = { workflow_name = "wordcount", quiet = true }
if opts.cluster then wf_opts.cluster_init_args = { num_workers = 2 } end
local wf = Workflow(top, json_out, csv_out, wf_opts)
wf:set_plugin("^count_\\d+$", splugins.LoggingPlugin { prefix = "wordcount: " })
if opts.store then
  wf:set_storage(require("functionfuse.storage").storage_factory { kind = "file", options = { path = opts.store } })
end

local result = wf:run()
print(("%d files: %s"):format(#paths, table.concat(paths, " "):gsub("[^ ]*/", "")))
for _, r in ipairs(result) do print(("%-6s %d"):format(r.word, r.n)) end
local lr = wf.last_run
print(("computed %d, loaded %d"):format(lr.computed, lr.loaded))
