-- fflua report: the HTML page about a run, built from run records that a
-- generator here simulates (a scheduler over workers with several CPUs,
-- cache hits, failures and the nodes they skip), checked as text and as
-- headless Chromium renders it. Every expected number is computed from
-- the record, never typed in.
local H = require "spec.helper"
local report = require "functionfuse.cli.report"
-- Names on the page are as fflua prints them (control characters and
-- bytes that are not UTF-8 as \xHH), then HTML-escaped.
local escape = require("functionfuse.core").escape

-- --- records ----------------------------------------------------------------

--- A run record of a layered DAG, simulated. opts:
--   layers   list of layer sizes (nodes in layer order; parents come first)
--   fanin    at most this many parents per node (from the layer before,
--            sometimes the one before that)
--   workers  number of workers; cpus: executors on each (overlapping nodes)
--   loaded   fraction of nodes loaded from the storage instead of computed
--   fail     fraction of nodes that fail (their descendants are skipped)
--   stored   fraction of nodes of the last layer not needed (in the storage)
--   name     function(i, layer, j) -> the node's name
--   seed     for math.random
local function make_record(opts)
  math.randomseed(opts.seed or 1)
  local names, parents, state = {}, {}, {}
  local queued, started, finished, worker = {}, {}, {}, {}
  local nworkers, cpus = opts.workers or 1, opts.cpus or 1
  local layer_of, first_of = {}, {}
  local n = 0
  for l, size in ipairs(opts.layers) do
    first_of[l] = n + 1
    for j = 1, size do
      n = n + 1
      layer_of[n] = l
      names[n] = opts.name and opts.name(n, l, j) or ("L%d.%d"):format(l, j)
      local ps = {}
      if l > 1 then
        local from = (l > 2 and math.random() < 0.2) and l - 2 or l - 1
        local lo, hi = first_of[from], first_of[from] + opts.layers[from] - 1
        local seen = {}
        for _ = 1, math.random(1, opts.fanin or 2) do
          local p = math.random(lo, hi)
          if not seen[p] then seen[p] = true; ps[#ps + 1] = p end
        end
      end
      parents[n] = ps
    end
  end
  -- Executors: each a worker's CPU, free from a time on.
  local free, exec_worker = {}, {}
  for w = 1, nworkers do
    for _ = 1, cpus do free[#free + 1] = 0; exec_worker[#free] = w end
  end
  local last_layer = #opts.layers
  local counts = { computed = 0, loaded = 0, failed = 0, skipped = 0, stored = 0 }
  local failures = {}
  local tmax = 0
  for i = 1, n do
    local ready, dead = 0, false
    for _, p in ipairs(parents[i]) do
      if state[p] == "failed" or state[p] == "skipped" then dead = true end
      ready = math.max(ready, finished[p] or queued[p] or 0)
    end
    local st
    if dead then st = "skipped"
    elseif layer_of[i] == last_layer and math.random() < (opts.stored or 0) then st = "stored"
    elseif math.random() < (opts.loaded or 0) then st = "loaded"
    elseif math.random() < (opts.fail or 0) then st = "failed"
    else st = "computed" end
    state[i] = st
    counts[st] = counts[st] + 1
    queued[i], started[i], finished[i], worker[i] = false, false, false, 0
    if st == "loaded" then
      queued[i] = ready
    elseif st == "computed" or st == "failed" then
      local e = 1
      for k = 2, #free do if free[k] < free[e] then e = k end end
      local s = math.max(ready, free[e]) + 0.0005
      local d = 0.002 + math.random() ^ 3 * 0.4
      queued[i], started[i], finished[i], worker[i] = ready, s, s + d, exec_worker[e]
      free[e] = s + d
      tmax = math.max(tmax, s + d)
      if st == "failed" then
        failures[#failures + 1] = {
          node = names[i],
          error = ("node '%s' failed: boom <b>&amp; \"quoted\"</b>"):format(names[i]),
          traceback = "stack traceback:\n\t[C]: in function 'error'\n\tpipeline.lua:12: in function <pipeline.lua:10>",
        }
      end
    end
  end
  local workers = {}
  for w = 1, nworkers do
    workers[w] = nworkers == 1 and { name = "local", machine = "testhost" }
                 or { name = ("10.0.0.%d:%d"):format(w, 4000 + w), machine = "m" .. w }
  end
  return {
    version = 1, workflow = opts.workflow or "sim", backend = nworkers > 1 and "cluster" or "local",
    started_at = 1765000000.25, elapsed = tmax + 0.01, ok = counts.failed == 0,
    computed = counts.computed, loaded = counts.loaded, skipped = counts.skipped,
    failed = counts.failed, retried = 0, damaged = 0,
    cluster = nworkers > 1 and { address = "127.0.0.1:4242", token_file = "/tmp/token" } or nil,
    workers = workers, names = names, parents = parents, state = state,
    queued = queued, started = started, finished = finished, worker = worker, failures = failures,
  }
end

--- The critical path computed here on its own: one pass in index order
-- (the generator puts parents first), then back from the node that
-- finished last along the parent with the longest chain (the first such
-- in its list) while that chain has any duration.
local function expected_path(r)
  local dist, best = {}, {}
  local last
  for i = 1, #r.names do
    local d = (r.started[i] and r.finished[i]) and (r.finished[i] - r.started[i]) or 0
    local bd, bp = nil, nil
    for _, p in ipairs(r.parents[i]) do
      if bd == nil or dist[p] > bd then bd, bp = dist[p], p end
    end
    dist[i], best[i] = d + (bd or 0), bp
    if r.finished[i] and (last == nil or r.finished[i] > r.finished[last]) then last = i end
  end
  if not last then return {} end
  local path = { last }
  while best[path[1]] and dist[best[path[1]]] > 0 do table.insert(path, 1, best[path[1]]) end
  return path
end

--- How many timeline rects and DAG boxes the page should have.
local function expected_counts(r)
  local lim = report.limits
  local ran = 0
  for i = 1, #r.names do
    if r.started[i] and r.finished[i] and r.worker[i] >= 1 and r.worker[i] <= lim.lanes then ran = ran + 1 end
  end
  return math.min(ran, lim.timeline), math.min(#r.names, lim.dag)
end

-- --- reading the page -------------------------------------------------------

--- How many elements have class cls among their classes.
local function count_class(page, cls)
  local n = 0
  for classes in page:gmatch('class="([^"]*)"') do
    for c in classes:gmatch("%S+") do
      if c == cls then n = n + 1 end
    end
  end
  return n
end

--- The text of the critical path's list items, in order.
local function listed_path(page)
  local out = {}
  for name in page:gmatch('<li class="crit%-node"[^>]*><span class="name">(.-)</span>') do
    out[#out + 1] = name
  end
  return out
end

--- 1234567 as "1,234,567".
local function thousands(n)
  local s = tostring(n)
  while true do
    local t, k = s:gsub("^(%d+)(%d%d%d)", "%1,%2")
    if k == 0 then return s end
    s = t
  end
end

local function html_escape(s)
  return (s:gsub("[&<>\"']", { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }))
end

--- Every reference the page makes to something outside it: URLs,
-- src= and href= that are not #fragments or data:.
local function outside_refs(page)
  local refs = {}
  for url in page:gmatch("https?://[^%s\"'<>]*") do refs[#refs + 1] = url end
  for attr, v in page:gmatch("%f[%w](%a+)%s*=%s*[\"']([^\"']*)") do
    attr = attr:lower()
    if (attr == "src" or attr == "href" or attr == "action" or attr == "poster")
       and not v:match("^#") and not v:match("^data:") then
      refs[#refs + 1] = attr .. "=" .. v
    end
  end
  for v in page:gmatch("url%(([^)]*)%)") do refs[#refs + 1] = "url(" .. v .. ")" end
  return refs
end

-- --- Chromium -------------------------------------------------------------------

local chromium
for _, name in ipairs { "chromium", "chromium-browser" } do
  if H.run({ "sh", "-c", "command -v " .. name }).code == 0 then chromium = name; break end
end

--- Runs headless Chromium on file with extra arguments; returns stdout.
-- --no-sandbox: the specs run as root, where Chromium's sandbox refuses to
-- start. A fresh profile (--user-data-dir, HOME) each time, so that runs
-- never share state or lock each other out; no GPU, no first-run pages.
-- --virtual-time-budget lets the page settle before the dump (the page
-- runs no script, but a regression that added one would be seen). Debian
-- 12's Chromium (120 and later) has only the new headless mode, which plain
-- --headless selects; it needs no display. D-Bus is not there: the errors
-- it logs about that go to stderr and change nothing.
local function headless(file, extra)
  local profile = H.tmpdir()
  local argv = { chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-dev-shm-usage", "--user-data-dir=" .. profile, "--hide-scrollbars",
                 "--virtual-time-budget=5000" }
  for _, a in ipairs(extra) do argv[#argv + 1] = a end
  argv[#argv + 1] = "file://" .. file
  local r = H.run(argv, { timeout = 120, env = { HOME = profile, DBUS_SESSION_BUS_ADDRESS = false } })
  assert.are.equal(0, r.code, ("chromium failed (%s):\n%s"):format(tostring(r.code), r.stderr))
  return r.stdout
end

local function dump_dom(file)
  local dom = headless(file, { "--dump-dom" })
  assert.truthy(dom:find("</html>", 1, true), "chromium dumped no page:\n" .. dom:sub(1, 400))
  return dom
end

local function screenshot(file, png, height)
  headless(file, { "--screenshot=" .. png, ("--window-size=1300,%d"):format(height or 2600) })
  local img = H.read(png)
  assert.truthy(img and img:sub(1, 8) == "\137PNG\r\n\26\n", "no PNG written at " .. png)
  return img
end

--- With FFLUA_REPORT_SHOT=PATH, the pages and the screenshot are kept as
-- PATH followed by suffix, for a person to look at.
local function keep(file, suffix)
  local to = os.getenv("FFLUA_REPORT_SHOT")
  if to and to ~= "" then
    assert.is_true(os.execute(("cp '%s' '%s%s'"):format(file, to, suffix)))
  end
end

local function need_chromium()
  if not chromium then
    pending("chromium is not installed (Debian package chromium; ./build.sh deps installs it)")
    return false
  end
  return true
end

-- --- the specs ------------------------------------------------------------------

describe("fflua report", function()
  local dir
  before_each(function() dir = H.tmpdir() end)
  after_each(H.cleanup)

  local function check_page(r, page)
    local tl, dag = expected_counts(r)
    assert.are.equal(tl, count_class(page, "tl-node"))
    assert.are.equal(dag, count_class(page, "dag-node"))
    local want = {}
    for _, i in ipairs(expected_path(r)) do want[#want + 1] = html_escape(escape(r.names[i])) end
    if #want <= report.limits.path then
      assert.are.same(want, listed_path(page))
    end
    assert.are.same({}, outside_refs(page))
  end

  describe("the page as text", function()
    it("a diamond: every node drawn once, the critical path the slower branch", function()
      local r = make_record { layers = { 1, 2, 1 }, fanin = 2, seed = 3 }
      -- The join needs both branches: give it both, whatever the draw was.
      r.parents[4] = { 2, 3 }
      r.started[4] = math.max(r.finished[2], r.finished[3]) + 0.001
      r.finished[4] = r.started[4] + 0.05
      r.elapsed = r.finished[4] + 0.01
      local page = report.html(r)
      check_page(r, page)
      local path = expected_path(r)
      assert.are.equal(3, #path)
      assert.are.equal(4, path[3])
      local slower = (r.finished[2] - r.started[2]) >= (r.finished[3] - r.started[3]) and 2 or 3
      assert.are.equal(slower, path[2])
      -- Exactly the critical path's boxes, rects and edges are highlighted.
      local crit_boxes = select(2, page:gsub('class="dag%-node st%-%a+ crit"', ""))
      assert.are.equal(#path, crit_boxes)
      assert.are.equal(#path - 1, select(2, page:gsub('class="dag%-edge crit"', "")))
      assert.are.equal(4, count_class(page, "dag-edge"))
    end)

    it("200 nodes on two workers with cache hits and failures", function()
      local r = make_record { layers = { 10, 30, 40, 50, 40, 20, 10 }, fanin = 3, workers = 2, cpus = 3,
                              loaded = 0.15, fail = 0.03, stored = 0.3, seed = 7 }
      assert.is_true(r.failed > 0 and r.loaded > 0 and r.skipped > 0)
      local page = report.html(r)
      check_page(r, page)
      assert.are.equal(r.loaded, count_class(page, "hit"))
      assert.are.equal(#r.failures, count_class(page, "failure"))
      assert.are.equal(math.min(report.limits.slowest, select(1, expected_counts(r))),
                       count_class(page, "slow-row"))
      -- Error text is escaped, not markup: the failure's <b> shows as text.
      assert.truthy(page:find("boom &lt;b&gt;&amp;amp; &quot;quoted&quot;&lt;/b&gt;", 1, true))
      assert.falsy(page:find("<b>&amp;", 1, true))
      -- The traceback keeps its lines; tabs are spaces.
      assert.truthy(page:find("stack traceback:\n  [C]: in function &#39;error&#39;", 1, true))
      -- The summary shows the counts the record gives.
      for _, k in ipairs { "computed", "loaded", "failed", "skipped" } do
        assert.truthy(page:find(("<span>%s</span><b>%d</b>"):format(k, r[k]), 1, true), k)
      end
      assert.truthy(page:find("cluster at 127.0.0.1:4242", 1, true))
    end)

    it("escapes names: markup, quotes, ampersands, control bytes and bytes that are not UTF-8", function()
      local odd = { "<script>alert(1)</script>", "a&b \"q\" 'r'", "bad\255\254utf8", "tab\tand\27[31m" }
      local r = make_record { layers = { 2, 2 }, seed = 2, name = function(i) return odd[i] end }
      local page = report.html(r)
      check_page(r, page)
      assert.falsy(page:find("<script", 1, true))
      assert.truthy(page:find("&lt;script&gt;alert(1)&lt;/script&gt;", 1, true))
      assert.truthy(page:find("a&amp;b &quot;q&quot; &#39;r&#39;", 1, true))
      assert.truthy(page:find("bad\\xff\\xfeutf8", 1, true))
      assert.truthy(page:find("tab\\tand\\x1b[31m", 1, true))
      assert.falsy(page:find("[\0-\8\11\12\14-\31\127]"), "a control byte reached the page")
      assert.truthy(utf8.len(page), "the page is not UTF-8")
    end)

    it("a run with no node run: no timeline, no critical path, every node in the graph", function()
      local r = make_record { layers = { 3, 3 }, loaded = 1, seed = 4 }
      local page = report.html(r)
      check_page(r, page)
      assert.are.equal(0, count_class(page, "tl-node"))
      assert.truthy(page:find("No node ran in this run", 1, true))
      assert.are.equal(r.loaded, count_class(page, "hit"))
    end)

    it("a run of no node at all", function()
      local r = make_record { layers = {} }
      local page = report.html(r)
      check_page(r, page)
      assert.are.equal(0, count_class(page, "dag-node"))
      assert.truthy(page:find("<span>nodes</span><b>0</b>", 1, true))
    end)

    it("caps a run of a million nodes: a page of bounded size, notes with the totals", function()
      local sizes = {}
      for l = 1, 1000 do sizes[l] = 1000 end
      local r = make_record { layers = sizes, fanin = 2, workers = 80, cpus = 4, loaded = 0.1,
                              fail = 0.0002, seed = 11 }
      local n = #r.names
      assert.are.equal(1000000, n)
      local t0 = os.clock()
      local page = report.html(r)
      local took = os.clock() - t0
      assert.is_true(took < 60, ("the page took %.1f s of CPU"):format(took))
      check_page(r, page)
      local lim = report.limits
      assert.are.equal(lim.timeline, count_class(page, "tl-node"))
      assert.are.equal(lim.dag, count_class(page, "dag-node"))
      assert.is_true(count_class(page, "dag-edge") <= lim.dag_edges)
      assert.is_true(count_class(page, "failure") <= lim.failures)
      assert.is_true(count_class(page, "hit") <= lim.cache_hits)
      assert.is_true(#page < 3 * 1024 * 1024, ("the page has %d bytes"):format(#page))
      -- Each cap says what it left out, with the totals.
      assert.truthy(page:find("Timeline capped", 1, true))
      assert.truthy(page:find("of 1,000,000 nodes", 1, true))
      assert.truthy(page:find(("the first %d of 80 workers"):format(lim.lanes), 1, true))
      assert.truthy(page:find(("Cache hits capped: listing the first %s of %s.")
                              :format(thousands(lim.cache_hits), thousands(r.loaded)), 1, true))
      -- The critical path (every node of it drawn as far as the cap allows).
      local path = expected_path(r)
      local crit = 0
      for classes in page:gmatch('class="(dag%-node[^"]*)"') do
        if classes:find("%f[%w]crit%f[^%w]") then crit = crit + 1 end
      end
      assert.are.equal(math.min(#path, lim.dag), crit)
    end)

    it("says which field of a bad record is wrong", function()
      local function err(mutate)
        local r = make_record { layers = { 2, 2 }, seed = 5 }
        mutate(r)
        local ok, e = pcall(report.html, r)
        assert.is_false(ok)
        return e
      end
      assert.are.equal("report: bad run record: 'version' is 2; this fflua reads version 1",
                       err(function(r) r.version = 2 end))
      assert.are.equal("report: bad run record: 'parents[3][1]' is 9, not the index of another node (1 to 4)",
                       err(function(r) r.parents[3] = { 9 } end))
      assert.are.equal("report: bad run record: 'started' has 3 entries, 'names' has 4",
                       err(function(r) r.started[4] = nil end))
      assert.are.equal("report: bad run record: 'state[2]' is 'done', not one of computed, loaded, failed, "
                       .. "skipped, stored, notrun", err(function(r) r.state[2] = "done" end))
      assert.are.equal("report: bad run record: 'worker[1]' is 3, not 0 or a worker's index (1 to 1)",
                       err(function(r) r.worker[1] = 3 end))
      assert.are.equal("report: bad run record: 'elapsed' is inf, not a finite number",
                       err(function(r) r.elapsed = math.huge end))
      assert.are.equal("report: bad run record: 'failures[1]' is not a table with a string 'error' and maybe "
                       .. "strings 'node' and 'traceback'", err(function(r) r.failures = { { node = "x" } } end))
      assert.are.equal("report: bad run record: 'parents' make a cycle through node 'L1.1'",
                       err(function(r) r.parents[1] = { 3 }; r.parents[3] = { 1 } end))
    end)
  end)

  describe("in Chromium", function()
    it("renders the timeline and the graph with one element per node drawn", function()
      if not need_chromium() then return end
      local r = make_record { layers = { 10, 30, 40, 50, 40, 20, 10 }, fanin = 3, workers = 2, cpus = 3,
                              loaded = 0.15, fail = 0.03, stored = 0.3, seed = 7,
                              name = function(i, l, j)
                                return i == 5 and "<script>alert(1)</script>" or ("step%d_%d"):format(l, j)
                              end }
      local file = H.write(dir .. "/report.html", report.html(r))
      local dom = dump_dom(file)
      check_page(r, dom)
      -- Rendered as text: no script element came out of the name.
      assert.falsy(dom:find("<script", 1, true))
      assert.truthy(dom:find("&lt;script&gt;alert(1)&lt;/script&gt;", 1, true))
      screenshot(file, dir .. "/report.png")
      keep(dir .. "/report.png", "")
      keep(file, ".html")
    end)

    it("renders the capped page of a large run", function()
      if not need_chromium() then return end
      local sizes = {}
      for l = 1, 100 do sizes[l] = 500 end
      local r = make_record { layers = sizes, fanin = 2, workers = 8, cpus = 4, loaded = 0.1, seed = 13 }
      local file = H.write(dir .. "/big.html", report.html(r))
      keep(file, "-big.html")
      local dom = dump_dom(file)
      assert.are.equal(report.limits.timeline, count_class(dom, "tl-node"))
      assert.are.equal(report.limits.dag, count_class(dom, "dag-node"))
      assert.are.same({}, outside_refs(dom))
    end)
  end)

  describe("the subcommand", function()
    it("checks its arguments and names the nearest option", function()
      local r = H.fflua({ "report" })
      assert.are.equal(2, r.code)
      assert.matches("^fflua report: give the storage and the workflow\nusage: fflua report", r.stderr)
      r = H.fflua({ "report", "st", "wf", "--rnu", "2" })
      assert.are.equal(2, r.code)
      assert.matches("^fflua report: unknown option '%-%-rnu' %(did you mean '%-%-run'%?%)\n", r.stderr)
      r = H.fflua({ "report", "st", "wf", "--run", "x" })
      assert.are.equal(2, r.code)
      assert.matches("^fflua report: %-%-run takes a run number %(1, 2, ...%), not 'x'\n", r.stderr)
      r = H.fflua({ "report", "st", "wf", "-o" })
      assert.are.equal(2, r.code)
      assert.matches("^fflua report: %-o needs a file name\n", r.stderr)
      r = H.fflua({ "report", "st", "wf", "extra" })
      assert.are.equal(2, r.code)
      assert.matches("^fflua report: unexpected argument 'extra'\n", r.stderr)
      r = H.fflua({ "report", "--help" })
      assert.are.equal(0, r.code)
      assert.matches("^usage: fflua report STORAGE WORKFLOW", r.stdout)
    end)

    it("says when the storage is not one", function()
      local r = H.fflua({ "report", dir .. "/none", "wf" })
      assert.are.equal(1, r.code)
      assert.are.equal(("fflua report: '%s/none' is not an fflua storage (it has no data.mdb)\n"):format(dir),
                       r.stderr)
    end)

    -- main() in this process, with the storage's answer stood in for.
    local function main_with(record, args)
      local saved = report.load_record
      local asked
      report.load_record = function(path, wf, n)
        asked = { path, wf, n }
        if type(record) == "string" then return nil, record end
        return record
      end
      local ok, code = pcall(report.main, args)
      report.load_record = saved
      assert.is_true(ok, tostring(code))
      return code, asked
    end

    it("writes the page of the run the storage returns, to -o FILE", function()
      H.write(dir .. "/data.mdb", "")
      local r = make_record { layers = { 3, 4, 2 }, fanin = 2, seed = 9 }
      local code, asked = main_with(r, { dir, "sim", "-o", dir .. "/out.html", "--run", "2" })
      assert.are.equal(0, code)
      assert.are.same({ dir, "sim", 2 }, asked)
      check_page(r, H.read(dir .. "/out.html"))
      code, asked = main_with(r, { dir, "sim", "--output=" .. dir .. "/o2.html" })
      assert.are.equal(0, code)
      assert.are.same({ dir, "sim" }, asked)
      assert.are.equal(H.read(dir .. "/out.html"), H.read(dir .. "/o2.html"))
      assert.are.equal(1, main_with("storage 'x' has no run of workflow 'sim'", { dir, "sim" }))
      local bad = make_record { layers = { 1 } }
      bad.version = 7
      assert.are.equal(1, main_with(bad, { dir, "sim", "-o", dir .. "/bad.html" }))
      assert.is_nil(H.read(dir .. "/bad.html"))
    end)

    it("reports the saved run of a real workflow", function()
      if type(require("functionfuse.storage").run_record) ~= "function" then
        pending("functionfuse.storage.run_record is not written yet")
        return
      end
      local script = H.write(dir .. "/sums.lua", ([[
        local ff = require "functionfuse"
        local LocalWorkflow = require("functionfuse.backends.builtin.localback").LocalWorkflow
        local storage_factory = require("functionfuse.storage").storage_factory
        local sum = ff.workflow(function(a, b) return a + b end)
        local wf = LocalWorkflow(sum(sum(1, 2), sum(3, 4)), { workflow_name = "sums" })
        wf:set_storage(storage_factory{ kind = "file", options = { path = %q } })
        wf:run()
      ]]):format(dir .. "/st"))
      local r = H.fflua({ script })
      assert.are.equal(0, r.code, r.stderr)
      r = H.fflua({ "report", dir .. "/st", "sums", "-o", dir .. "/sums.html" })
      assert.are.equal(0, r.code, r.stderr)
      local page = H.read(dir .. "/sums.html")
      assert.are.equal(3, count_class(page, "dag-node"))
      assert.are.equal(3, count_class(page, "tl-node"))
    end)
  end)
end)
