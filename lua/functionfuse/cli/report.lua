--- fflua report STORAGE WORKFLOW [-o FILE] [--run N]: one self-contained
-- HTML page about a saved run of a workflow (docs/report.md).
--
-- M.html(record) builds the page from a run record, the plain table that
-- a run leaves in wf.last_run and the storage keeps (its fields are listed
-- in docs/report.md). The page has no script and fetches nothing: CSS is
-- inline, the timeline and the DAG are inline SVG, tooltips are SVG
-- <title> elements. Every name and error text goes through core.escape
-- (bytes that are not UTF-8, control characters) and then HTML escaping.
--
-- A page about a run of any size stays bounded: M.limits caps what is drawn
-- and listed, and each cap that bites says so on the page with the totals.
-- Everything over the whole record is linear in its nodes and edges; the
-- sorting and the layout work only on what is drawn.
local core = require "functionfuse.core"
local util = require "functionfuse._util"

local M = {}

--- What the page draws and lists at most (see docs/report.md).
M.limits = {
  timeline = 2000,   -- rects in the timeline: the longest nodes are kept
  lanes = 64,        -- workers in the timeline: the first ones of record.workers
  dag = 400,         -- nodes in the DAG: the critical path, failed nodes, then run order
  dag_edges = 3000,  -- edges in the DAG: in the order of the drawn nodes
  slowest = 20,      -- rows of the slowest nodes' table
  path = 100,        -- nodes of the critical path listed (the first and last halves)
  cache_hits = 200,  -- names of loaded nodes listed
  failures = 50,     -- failures shown with their error and traceback
  name = 200,        -- bytes of a name in a tooltip or a table (then "...")
  label = 19,        -- bytes of a name inside a DAG box
  error = 4000,      -- bytes of an error message
  traceback = 12000, -- bytes of a traceback
}

-- notrun: the run ended (at a failure) before the node's turn.
local STATES = { "computed", "loaded", "failed", "skipped", "stored", "notrun" }
local STATE_SET = {}
for _, s in ipairs(STATES) do STATE_SET[s] = true end

-- --- escaping and formatting ------------------------------------------------

local HTML_ESC = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }

--- Text made safe for HTML text and attribute values.
local function html(s)
  return (tostring(s):gsub("[&<>\"']", HTML_ESC))
end

--- A name as fflua prints names (control characters and bytes that are
-- not UTF-8 as \xHH), cut to max bytes, HTML-escaped.
local function name_html(s, max)
  return html(core.escape(s, max or M.limits.name))
end

--- Several lines of text (an error, a traceback) kept as lines: each line
-- escaped on its own, tabs as two spaces, the whole cut to max bytes.
local function lines_html(s, max)
  local cut = #s > max
  if cut then s = s:sub(1, max) end
  local out = {}
  for line in (s .. "\n"):gmatch("([^\n]*)\n") do
    line = line:gsub("\r$", ""):gsub("\t", "  ")
    out[#out + 1] = line == "" and "" or html(core.escape(line))
  end
  if out[#out] == "" then out[#out] = nil end
  if cut then out[#out + 1] = ("... (cut at %d bytes)"):format(max) end
  return table.concat(out, "\n")
end

--- A whole number with thousands separators: 1,000,000.
local function count(n)
  local s = tostring(math.tointeger(n) or n)
  local sign, digits = s:match("^(-?)(%d+)$")
  if not digits then return s end
  return sign .. digits:reverse():gsub("(%d%d%d)", "%1,"):reverse():gsub("^,", "")
end

local function plural(n, word, words)
  return count(n) .. " " .. (n == 1 and word or (words or word .. "s"))
end

--- A duration for people: 12 us, 3.4 ms, 1.25 s, 2.5 min, 1.2 h.
local function human_time(s)
  if s < 0 then return "-" .. human_time(-s) end
  if s == 0 then return "0 s" end
  if s < 1e-3 then return ("%.0f us"):format(s * 1e6) end
  if s < 1 then return ("%.1f ms"):format(s * 1e3) end
  if s < 120 then return ("%.2f s"):format(s) end
  if s < 7200 then return ("%.1f min"):format(s / 60) end
  return ("%.1f h"):format(s / 3600)
end

--- A number for an SVG attribute: two decimals at most.
local function num(x)
  return (("%.2f"):format(x):gsub("%.?0+$", ""))
end

-- --- checking the record ----------------------------------------------------

local function bad(fmt, ...)
  error("report: bad run record: " .. fmt:format(...), 0)
end

local function check_array(r, key, n, check)
  local t = r[key]
  if type(t) ~= "table" then bad("'%s' is %s, not a table", key, type(t)) end
  if #t ~= n then bad("'%s' has %d entries, 'names' has %d", key, #t, n) end
  if check then
    for i = 1, n do check(t[i], i) end
  end
  return t
end

--- Raises an error naming the first field of r that does not have the
-- form the report reads (docs/report.md), and where it is.
local function check_record(r)
  if type(r) ~= "table" then bad("the record is %s, not a table", type(r)) end
  if r.version ~= 1 then
    bad("'version' is %s; this fflua reads version 1", tostring(r.version))
  end
  for _, k in ipairs { "workflow", "backend" } do
    if type(r[k]) ~= "string" then bad("'%s' is %s, not a string", k, type(r[k])) end
  end
  for _, k in ipairs { "started_at", "elapsed" } do
    local v = r[k]
    if type(v) ~= "number" or v ~= v or v == math.huge or v == -math.huge then
      bad("'%s' is %s, not a finite number", k, tostring(v))
    end
  end
  if type(r.ok) ~= "boolean" then bad("'ok' is %s, not a boolean", type(r.ok)) end
  for _, k in ipairs { "computed", "loaded", "skipped", "failed", "retried", "damaged" } do
    if r[k] ~= nil and math.type(r[k]) ~= "integer" then
      bad("'%s' is %s, not a whole number", k, tostring(r[k]))
    end
  end
  if r.cluster ~= nil and (type(r.cluster) ~= "table" or type(r.cluster.address) ~= "string") then
    bad("'cluster' is neither nil nor a table with a string 'address'")
  end
  local workers = r.workers
  if type(workers) ~= "table" then bad("'workers' is %s, not a table", type(workers)) end
  for i = 1, #workers do
    local w = workers[i]
    if type(w) ~= "table" or type(w.name) ~= "string" then
      bad("'workers[%d]' is not a table with a string 'name'", i)
    end
  end
  local nw = #workers
  if type(r.names) ~= "table" then bad("'names' is %s, not a table", type(r.names)) end
  local n = #r.names
  check_array(r, "names", n, function(v, i)
    if type(v) ~= "string" then bad("'names[%d]' is %s, not a string", i, type(v)) end
  end)
  check_array(r, "parents", n, function(ps, i)
    if type(ps) ~= "table" then bad("'parents[%d]' is %s, not a table", i, type(ps)) end
    for j = 1, #ps do
      local p = ps[j]
      if math.type(p) ~= "integer" or p < 1 or p > n or p == i then
        bad("'parents[%d][%d]' is %s, not the index of another node (1 to %d)", i, j, tostring(p), n)
      end
    end
  end)
  check_array(r, "state", n, function(v, i)
    if not STATE_SET[v] then
      bad("'state[%d]' is %s, not one of %s", i, type(v) == "string" and "'" .. core.escape(v, 40) .. "'"
          or type(v), table.concat(STATES, ", "))
    end
  end)
  for _, key in ipairs { "queued", "started", "finished" } do
    check_array(r, key, n, function(v, i)
      if v ~= false and type(v) ~= "number" then
        bad("'%s[%d]' is %s, not a number or false", key, i, tostring(v))
      end
    end)
  end
  check_array(r, "worker", n, function(v, i)
    if math.type(v) ~= "integer" or v < 0 or v > nw then
      bad("'worker[%d]' is %s, not 0 or a worker's index (1 to %d)", i, tostring(v), nw)
    end
  end)
  local failures = r.failures or {}
  if type(failures) ~= "table" then bad("'failures' is %s, not a table", type(failures)) end
  for i = 1, #failures do
    local f = failures[i]
    if type(f) ~= "table" or (f.node ~= nil and type(f.node) ~= "string") or type(f.error) ~= "string"
       or (f.traceback ~= nil and type(f.traceback) ~= "string") then
      bad("'failures[%d]' is not a table with a string 'error' and maybe strings 'node' and 'traceback'", i)
    end
  end
  return n
end

-- --- analysis ---------------------------------------------------------------

--- For every node of a graph given by parents_of(i) -> list of parents
-- (each drawn from 1..n), the longest weighted path that ends there:
-- dist[i] = weight(i) + the largest dist of its parents, and best[i] the
-- parent with that largest dist (the first such in its list; nil for a
-- root). Iterative depth-first search, so deep chains need no C stack;
-- a cycle raises an error naming a node on it.
local function longest(n, parents_of, weight, names)
  local dist, best, mark = {}, {}, {}
  local stack = {}
  for root = 1, n do
    if not mark[root] then
      stack[1] = root
      local top = 1
      while top > 0 do
        local t = stack[top]
        local m = mark[t]
        if m == nil then
          mark[t] = 1
          local ps = parents_of(t)
          for j = 1, #ps do
            local p = ps[j]
            local pm = mark[p]
            if pm == nil then
              top = top + 1
              stack[top] = p
            elseif pm == 1 then
              bad("'parents' make a cycle through node '%s'", core.escape(names[p], 80))
            end
          end
        elseif m == 1 then
          local ps = parents_of(t)
          local bd, bp = nil, nil
          for j = 1, #ps do
            local d = dist[ps[j]]
            if bd == nil or d > bd then bd, bp = d, ps[j] end
          end
          dist[t] = weight(t) + (bd or 0)
          best[t] = bp
          mark[t] = 2
          stack[top] = nil
          top = top - 1
        else
          stack[top] = nil
          top = top - 1
        end
      end
    end
  end
  return dist, best
end

--- The k indices of 1..n with the largest key(i) (nil keys left out),
-- largest first; ties go to the smaller index. A min-heap of k entries,
-- so n may be large.
local function top_k(n, k, key)
  local heap, hk = {}, {}
  local size = 0
  -- a is "smaller" than b: smaller key, or equal key and larger index.
  local function less(a, b)
    local ka, kb = hk[a], hk[b]
    if ka ~= kb then return ka < kb end
    return heap[a] > heap[b]
  end
  local function swap(a, b)
    heap[a], heap[b] = heap[b], heap[a]
    hk[a], hk[b] = hk[b], hk[a]
  end
  local function down(i)
    while true do
      local l, r, s = 2 * i, 2 * i + 1, i
      if l <= size and less(l, s) then s = l end
      if r <= size and less(r, s) then s = r end
      if s == i then return end
      swap(i, s)
      i = s
    end
  end
  if k <= 0 then return {} end
  for i = 1, n do
    local v = key(i)
    if v ~= nil then
      if size < k then
        size = size + 1
        heap[size], hk[size] = i, v
        local c = size
        while c > 1 and less(c, c // 2) do swap(c, c // 2); c = c // 2 end
      elseif v > hk[1] then
        heap[1], hk[1] = i, v
        down(1)
      end
    end
  end
  local order = {}
  for i = 1, size do order[i] = i end
  table.sort(order, function(a, b)
    if hk[a] ~= hk[b] then return hk[a] > hk[b] end
    return heap[a] < heap[b]
  end)
  local out = {}
  for i, h in ipairs(order) do out[i] = heap[h] end
  return out
end

--- The critical path: the chain through 'parents' with the largest sum of
-- durations that ends at the node that finished last. From that node it
-- goes to the parent whose own longest chain is longest (the first such
-- in its parents' list) while that chain has any duration. Returns the
-- node indices from the first to the last, and the chain's duration.
function M.critical_path(record)
  local n = #record.names
  local started, finished, parents = record.started, record.finished, record.parents
  local function duration(i)
    local s, f = started[i], finished[i]
    if s and f and f > s then return f - s end
    return 0
  end
  local last, lf
  for i = 1, n do
    local f = finished[i]
    if f and (lf == nil or f > lf) then last, lf = i, f end
  end
  local dist, best = longest(n, function(i) return parents[i] end, duration, record.names)
  if last == nil then return {}, 0 end
  local rev = { last }
  local i = last
  while best[i] and dist[best[i]] > 0 do
    i = best[i]
    rev[#rev + 1] = i
  end
  local path = {}
  for k = #rev, 1, -1 do path[#path + 1] = rev[k] end
  return path, dist[last]
end

local function ran(record, i)
  local s, f = record.started[i], record.finished[i]
  return s ~= false and f ~= false
end

-- --- page parts -------------------------------------------------------------

local CSS = [[
:root { --computed: #7fb2e5; --loaded: #9bd3a0; --failed: #ef8a8a; --skipped: #d5d8dc;
        --stored: #d9c6ee; --notrun: #ffffff; --ink: #1f2933; --muted: #616e7c; --line: #e4e7eb; --crit: #c2410c; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 "DejaVu Sans", "Liberation Sans", Arial, sans-serif;
       color: var(--ink); background: #f8f9fb; }
main { max-width: 1240px; margin: 0 auto; padding: 20px 28px 60px; }
h1 { font-size: 24px; margin: 8px 0 4px; font-weight: 600; }
h1 .wf { font-family: "DejaVu Sans Mono", monospace; }
h2 { font-size: 18px; margin: 30px 0 10px; font-weight: 600; border-bottom: 1px solid var(--line);
     padding-bottom: 4px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 4px 18px 16px;
          margin-top: 18px; }
.status { display: inline-block; padding: 1px 10px; border-radius: 10px; font-size: 13px;
          font-weight: 600; vertical-align: middle; margin-left: 8px; }
.status.ok { background: #dcf2de; color: #1d6b2a; } .status.bad { background: #fbdcdc; color: #9b1c1c; }
.summary { display: grid; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); gap: 10px;
           margin: 12px 0 4px; }
.summary div { background: #f4f6f8; border-radius: 6px; padding: 6px 10px; }
.summary b { display: block; font-size: 17px; font-weight: 600; word-break: break-all; }
.summary span { font-size: 12px; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
.meta { color: var(--muted); font-size: 14px; }
.note { background: #fff8e1; border-left: 4px solid #f0b429; padding: 6px 10px; font-size: 14px;
        margin: 8px 0; }
.legend { display: flex; flex-wrap: wrap; gap: 14px; font-size: 13px; color: var(--muted); margin: 6px 0; }
.legend i { display: inline-block; width: 14px; height: 14px; border-radius: 3px; vertical-align: -2px;
            margin-right: 5px; border: 1px solid rgba(0,0,0,.15); }
.legend i.crit { background: #fff; border: 2.5px solid var(--crit); }
.sw-computed { background: var(--computed); } .sw-loaded { background: var(--loaded); }
.sw-failed { background: var(--failed); } .sw-skipped { background: var(--skipped); }
.sw-stored { background: var(--stored); } .sw-notrun { background: var(--notrun); }
.scroll { overflow: auto; max-height: 760px; border: 1px solid var(--line); border-radius: 6px;
          background: #fff; }
svg { display: block; font-family: "DejaVu Sans", "Liberation Sans", Arial, sans-serif; }
svg.fit { width: 100%; height: auto; }
svg text { fill: var(--ink); }
svg .axis text { fill: var(--muted); font-size: 11px; }
svg .grid { stroke: #eef0f3; } svg .lane-bg { fill: #f6f7f9; }
svg .lane-label { font-size: 12px; }
rect.st-computed, g.st-computed rect { fill: var(--computed); }
rect.st-loaded, g.st-loaded rect { fill: var(--loaded); }
rect.st-failed, g.st-failed rect { fill: var(--failed); }
rect.st-skipped, g.st-skipped rect { fill: var(--skipped); }
rect.st-stored, g.st-stored rect { fill: var(--stored); }
rect.st-notrun, g.st-notrun rect { fill: var(--notrun); stroke-dasharray: 3 2; }
rect.tl-node { stroke: rgba(0,0,0,.25); stroke-width: .5; }
rect.tl-node.crit { stroke: var(--crit); stroke-width: 1.5; }
g.dag-node rect { stroke: rgba(0,0,0,.3); stroke-width: 1; }
g.dag-node.crit rect { stroke: var(--crit); stroke-width: 2.5; }
g.dag-node text { font-size: 11px; }
path.dag-edge { fill: none; stroke: #9aa5b1; stroke-width: 1; }
path.dag-edge.crit { stroke: var(--crit); stroke-width: 2.2; }
table { border-collapse: collapse; width: 100%; font-size: 14px; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-weight: 600; color: var(--muted); font-size: 12px; text-transform: uppercase; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.name { font-family: "DejaVu Sans Mono", monospace; font-size: 13px; word-break: break-all; }
.pill { display: inline-block; padding: 0 7px; border-radius: 8px; font-size: 12px; }
ol.path { margin: 6px 0; padding-left: 28px; columns: 2; column-gap: 40px; }
ol.path li { font-size: 14px; }
ol.path li .d { color: var(--muted); font-size: 12px; margin-left: 6px; }
ul.hits { margin: 6px 0; padding-left: 0; list-style: none; display: flex; flex-wrap: wrap; gap: 6px; }
ul.hits li { background: #eef8ef; border-radius: 4px; padding: 1px 8px; }
.failure { border-left: 4px solid var(--failed); padding: 4px 12px; margin: 12px 0; background: #fff7f7; }
.failure pre { white-space: pre-wrap; word-break: break-word; font-size: 13px; margin: 4px 0;
               font-family: "DejaVu Sans Mono", monospace; }
details summary { cursor: pointer; color: var(--muted); font-size: 13px; }
.empty { color: var(--muted); font-style: italic; }
]]

local function legend(with_crit)
  local out = { '<div class="legend">' }
  for _, s in ipairs(STATES) do
    out[#out + 1] = ('<span><i class="sw-%s"></i>%s</span>'):format(s, s == "notrun" and "not run" or s)
  end
  if with_crit then out[#out + 1] = '<span><i class="crit"></i>critical path</span>' end
  out[#out + 1] = "</div>"
  return table.concat(out)
end

--- A section of the page: an h2 title over its body.
local function section(id, title, body)
  return ('<section id="%s"><h2>%s</h2>\n%s\n</section>'):format(id, title, body)
end

--- What a section says when it has nothing to show.
local function empty(text)
  return '<p class="empty">' .. text .. "</p>"
end

local function note(text)
  return '<p class="note">' .. text .. "</p>"
end

--- A worker as "name (machine)", cut to max bytes (default 120).
local function worker_label(record, w, max)
  local wk = record.workers[w]
  if not wk then return "-" end
  local s = wk.name
  if type(wk.machine) == "string" and wk.machine ~= "" and wk.machine ~= wk.name then
    s = s .. " (" .. wk.machine .. ")"
  end
  return html(core.escape(s, max or 120))
end

--- Tooltip text of a node: name, state, worker and times.
local function node_title(record, i)
  local parts = { name_html(record.names[i]), "\n", record.state[i] }
  local w = record.worker[i]
  if w > 0 then parts[#parts + 1] = ", worker " .. worker_label(record, w) end
  local q, s, f = record.queued[i], record.started[i], record.finished[i]
  if s and f then
    parts[#parts + 1] = ("\nstarted %s, finished %s: took %s"):format(human_time(s), human_time(f),
                                                                       human_time(f - s))
    if q then parts[#parts + 1] = ("\nqueued %s (waited %s)"):format(human_time(q), human_time(s - q)) end
  elseif q then
    parts[#parts + 1] = "\nqueued " .. human_time(q)
  end
  return table.concat(parts)
end

local function summary(record, n, path_len)
  local out = {}
  local when = os.date("%Y-%m-%d %H:%M:%S %z", math.floor(record.started_at))
  out[#out + 1] = ('<h1>Run of <span class="wf">%s</span><span class="status %s">%s</span></h1>')
    :format(name_html(record.workflow), record.ok and "ok" or "bad", record.ok and "succeeded" or "failed")
  local meta = ("%s backend &middot; started %s &middot; took %s"):format(
    html(core.escape(record.backend, 40)), html(when), human_time(record.elapsed))
  if record.cluster then
    meta = meta .. " &middot; cluster at " .. html(core.escape(record.cluster.address, 100))
  end
  out[#out + 1] = '<p class="meta">' .. meta .. "</p>"
  out[#out + 1] = '<div class="summary" id="summary">'
  local function cell(label, value) out[#out + 1] = ("<div><span>%s</span><b>%s</b></div>"):format(label, value) end
  cell("nodes", count(n))
  cell("elapsed", human_time(record.elapsed))
  for _, k in ipairs { "computed", "loaded", "failed", "skipped", "retried", "damaged" } do
    cell(k, count(record[k] or 0))
  end
  cell("workers", count(#record.workers))
  cell("critical path", plural(path_len, "node"))
  out[#out + 1] = "</div>"
  return table.concat(out, "\n")
end

--- Tick step for an axis of length t (in its unit): 1, 2 or 5 times a
-- power of ten, giving about eight ticks.
local function tick_step(t)
  local raw = t / 8
  local p = 10 ^ math.floor(math.log(raw, 10))
  for _, m in ipairs { 1, 2, 5, 10 } do
    if m * p >= raw then return m * p end
  end
  return 10 * p
end

--- The unit of a time axis from 0 to tmax seconds: its name and its
-- length in seconds.
local function axis_unit(tmax)
  if tmax < 1e-3 then return "us", 1e-6 end
  if tmax < 1 then return "ms", 1e-3 end
  if tmax < 120 then return "s", 1 end
  if tmax < 7200 then return "min", 60 end
  return "h", 3600
end

local function timeline(record, n, on_path)
  local L = M.limits
  local out = {}
  local nw = #record.workers
  local lanes = math.min(nw, L.lanes)
  -- Nodes that ran on a drawn lane; the longest L.timeline of them drawn.
  local nran, beyond = 0, 0
  local tmax = record.elapsed
  for i = 1, n do
    if ran(record, i) then
      nran = nran + 1
      if record.finished[i] > tmax then tmax = record.finished[i] end
      if record.worker[i] > lanes or record.worker[i] == 0 then beyond = beyond + 1 end
    end
  end
  local drawn = top_k(n, L.timeline, function(i)
    local w = record.worker[i]
    if ran(record, i) and w >= 1 and w <= lanes then return record.finished[i] - record.started[i] end
  end)
  if nran == 0 then
    return empty("No node ran in this run.")
  end
  local notes = {}
  if #drawn < nran - beyond then
    notes[#notes + 1] = ("drawn: the %s longest of the %s nodes that ran"):format(count(#drawn), count(nran))
  end
  if nw > lanes then
    notes[#notes + 1] = ("lanes: the first %s of %s workers (%s that ran on the others are left out)")
      :format(count(lanes), count(nw), plural(beyond, "node"))
  elseif beyond > 0 then
    notes[#notes + 1] = ("%s that ran without a worker in the record are left out"):format(plural(beyond, "node"))
  end
  if #notes > 0 then out[#out + 1] = note("Timeline capped (limit " .. count(L.timeline) .. " rects): "
                                          .. table.concat(notes, "; ") .. ".") end
  out[#out + 1] = legend(true)

  -- Within a lane, overlapping nodes (a worker with several executors)
  -- go to sub-rows: each to the first row free at its start.
  table.sort(drawn, function(a, b)
    local sa, sb = record.started[a], record.started[b]
    if sa ~= sb then return sa < sb end
    return a < b
  end)
  local rows_of, row = {}, {}
  for w = 1, lanes do rows_of[w] = {} end
  for _, i in ipairs(drawn) do
    local ends = rows_of[record.worker[i]]
    local r = 1
    while ends[r] and ends[r] > record.started[i] + 1e-12 do r = r + 1 end
    ends[r] = record.finished[i]
    row[i] = r
  end
  local LABEL, W, TOP, ROW, PAD = 190, 1000, 26, 16, 6
  local lane_y, y = {}, TOP
  for w = 1, lanes do
    lane_y[w] = y
    y = y + math.max(1, #rows_of[w]) * ROW + 2 * PAD
  end
  local height = y + 4
  local width = LABEL + W + 20
  if tmax <= 0 then tmax = 1e-6 end
  local scale = W / tmax
  local svg = {}
  -- Scaled to the page's width (the labels with it), so that the whole run
  -- shows without scrolling sideways.
  svg[#svg + 1] = ('<svg id="timeline" class="fit" width="%d" height="%d" viewBox="0 0 %d %d">')
    :format(width, height, width, height)
  for w = 1, lanes do
    local h = math.max(1, #rows_of[w]) * ROW + 2 * PAD
    if w % 2 == 1 then
      svg[#svg + 1] = ('<rect class="lane-bg" x="0" y="%d" width="%d" height="%d"/>'):format(lane_y[w], width, h)
    end
    svg[#svg + 1] = ('<text class="lane-label" x="8" y="%s">%s</text>')
      :format(num(lane_y[w] + h / 2 + 4), worker_label(record, w, 28))
  end
  -- Ticks in one unit for the whole axis, with the decimals the step needs.
  local unit, div = axis_unit(tmax)
  local step = tick_step(tmax / div)
  local fmt = "%." .. math.max(0, -math.floor(math.log(step, 10) + 1e-9)) .. "f " .. unit
  svg[#svg + 1] = '<g class="axis">'
  local k = 0
  while k * step <= tmax / div * 1.0001 do
    local x = LABEL + k * step * div * scale
    svg[#svg + 1] = ('<line class="grid" x1="%s" y1="%d" x2="%s" y2="%d"/>'
                     .. '<text x="%s" y="16" text-anchor="middle">%s</text>')
      :format(num(x), TOP - 4, num(x), height, num(x), fmt:format(k * step))
    k = k + 1
  end
  svg[#svg + 1] = "</g>"
  for _, i in ipairs(drawn) do
    local s, f = record.started[i], record.finished[i]
    local x = LABEL + s * scale
    local wpx = math.max((f - s) * scale, 1)
    local yy = lane_y[record.worker[i]] + PAD + (row[i] - 1) * ROW + 2
    svg[#svg + 1] = ('<rect class="tl-node st-%s%s" x="%s" y="%d" width="%s" height="%d" rx="2">'
                     .. '<title>%s</title></rect>')
      :format(record.state[i], on_path[i] and " crit" or "", num(x), yy, num(wpx), ROW - 4, node_title(record, i))
  end
  svg[#svg + 1] = "</svg>"
  out[#out + 1] = '<div class="scroll">' .. table.concat(svg, "\n") .. "</div>"
  return table.concat(out, "\n")
end

local function slowest(record, n)
  local L = M.limits
  local top = top_k(n, L.slowest, function(i)
    if ran(record, i) then return record.finished[i] - record.started[i] end
  end)
  local out = {}
  if #top == 0 then
    return empty("No node ran in this run.")
  end
  out[#out + 1] = '<table id="slowest"><tr><th class="num">#</th><th>node</th><th>state</th><th>worker</th>'
                  .. '<th class="num">took</th><th class="num">started</th><th class="num">waited</th></tr>'
  for rank, i in ipairs(top) do
    local s, f, q = record.started[i], record.finished[i], record.queued[i]
    out[#out + 1] = ('<tr class="slow-row"><td class="num">%d</td><td class="name">%s</td>'
                     .. '<td><span class="pill sw-%s">%s</span></td><td>%s</td><td class="num">%s</td>'
                     .. '<td class="num">%s</td><td class="num">%s</td></tr>')
      :format(rank, name_html(record.names[i]), record.state[i], record.state[i],
              worker_label(record, record.worker[i]), human_time(f - s), human_time(s),
              q and human_time(math.max(0, s - q)) or "-")
  end
  out[#out + 1] = "</table>"
  return table.concat(out, "\n")
end

local function critical(record, path, total)
  local L = M.limits
  local out = {}
  if #path == 0 then
    return empty("No node ran in this run, so there is no critical path.")
  end
  out[#out + 1] = ('<p class="meta">The chain of nodes with the longest total duration that ends at the '
                   .. 'node that finished last: %s taking %s of the run\'s %s.</p>')
    :format(plural(#path, "node"), human_time(total), human_time(record.elapsed))
  local shown_head, shown_tail = #path, 0
  if #path > L.path then
    shown_head = L.path // 2
    shown_tail = L.path - shown_head
    out[#out + 1] = note(("Critical path capped: listing its first %s and last %s of %s nodes.")
      :format(count(shown_head), count(shown_tail), count(#path)))
  end
  out[#out + 1] = '<ol class="path" id="critical-path">'
  local function item(k)
    local i = path[k]
    local s, f = record.started[i], record.finished[i]
    local d = s and f and human_time(f - s) or record.state[i]
    out[#out + 1] = ('<li class="crit-node" value="%d"><span class="name">%s</span><span class="d">%s</span></li>')
      :format(k, name_html(record.names[i]), d)
  end
  for k = 1, shown_head do item(k) end
  if shown_tail > 0 then
    out[#out + 1] = ('<li class="gap">&hellip; %s more &hellip;</li>'):format(count(#path - shown_head - shown_tail))
    for k = #path - shown_tail + 1, #path do item(k) end
  end
  out[#out + 1] = "</ol>"
  return table.concat(out, "\n")
end

local function cache_hits(record, n)
  local L = M.limits
  local hits, stored = {}, 0
  local nhits = 0
  for i = 1, n do
    local s = record.state[i]
    if s == "loaded" then
      nhits = nhits + 1
      if nhits <= L.cache_hits then hits[nhits] = i end
    elseif s == "stored" then
      stored = stored + 1
    end
  end
  local out = {}
  out[#out + 1] = ('<p class="meta">%s loaded from the storage instead of computed; %s in the storage '
                   .. 'and not read (not needed).</p>'):format(plural(nhits, "node"), plural(stored, "node"))
  if nhits > #hits then
    out[#out + 1] = note(("Cache hits capped: listing the first %s of %s.")
      :format(count(#hits), count(nhits)))
  end
  if nhits > 0 then
    out[#out + 1] = '<ul class="hits" id="cache-hits">'
    for _, i in ipairs(hits) do
      out[#out + 1] = ('<li class="hit name">%s</li>'):format(name_html(record.names[i]))
    end
    out[#out + 1] = "</ul>"
  end
  return table.concat(out, "\n")
end

local function failures(record)
  local L = M.limits
  local fs = record.failures or {}
  local out = {}
  if #fs == 0 then
    return empty("No node failed.")
  end
  if #fs > L.failures then
    out[#out + 1] = note(("Failures capped: showing the first %s of %s.")
      :format(count(L.failures), count(#fs)))
  end
  for k = 1, math.min(#fs, L.failures) do
    local f = fs[k]
    -- A failure that is no node's (a result that could not be stored, a
    -- leaf that could not be read) has no node.
    local head = f.node and ('node <span class="name">%s</span>'):format(name_html(f.node)) or "the run"
    out[#out + 1] = ('<div class="failure"><b>%s</b><pre class="error">%s</pre>')
      :format(head, lines_html(f.error, L.error))
    if f.traceback and f.traceback ~= "" then
      out[#out + 1] = ('<details><summary>traceback</summary><pre class="traceback">%s</pre></details>')
        :format(lines_html(f.traceback, L.traceback))
    end
    out[#out + 1] = "</div>"
  end
  return table.concat(out, "\n")
end

--- The nodes the DAG draws: all when they fit, else the critical path,
-- then failed nodes, then the others in run order, up to the cap.
local function dag_nodes(record, n, path)
  local cap = M.limits.dag
  if n <= cap then
    local all = {}
    for i = 1, n do all[i] = i end
    return all
  end
  local chosen, set = {}, {}
  local function take(i)
    if #chosen < cap and not set[i] then
      set[i] = true
      chosen[#chosen + 1] = i
    end
  end
  for _, i in ipairs(path) do take(i) end
  for i = 1, n do
    if #chosen >= cap then break end
    if record.state[i] == "failed" then take(i) end
  end
  for i = 1, n do
    if #chosen >= cap then break end
    take(i)
  end
  table.sort(chosen)
  return chosen
end

local function dag(record, n, path, on_path)
  local L = M.limits
  local out = {}
  local nodes = dag_nodes(record, n, path)
  local m = #nodes
  local local_of = {}
  for k, i in ipairs(nodes) do local_of[i] = k end
  -- Edges among the drawn nodes, as local indices; all edges counted.
  local lparents, total_edges, drawn_edges = {}, 0, 0
  local children = {}
  for k = 1, m do children[k] = {} end
  for k, i in ipairs(nodes) do
    local ps = {}
    for _, p in ipairs(record.parents[i]) do
      local lp = local_of[p]
      if lp then ps[#ps + 1] = lp end
    end
    lparents[k] = ps
  end
  for i = 1, n do total_edges = total_edges + #record.parents[i] end
  local notes = {}
  if m < n then
    notes[#notes + 1] = ("drawing %s of %s nodes (the critical path, the failed nodes, then the first in "
                         .. "run order)"):format(count(m), count(n))
  end
  -- Layers: the longest path from a root among the drawn nodes.
  local depth = longest(m, function(k) return lparents[k] end, function() return 1 end,
                        setmetatable({}, { __index = function(_, k) return record.names[nodes[k]] end }))
  local layers = {}
  for k = 1, m do
    local d = depth[k]
    layers[d] = layers[d] or {}
    table.insert(layers[d], k)
  end
  local edges = {}
  for k = 1, m do
    for _, lp in ipairs(lparents[k]) do
      if drawn_edges < L.dag_edges then
        drawn_edges = drawn_edges + 1
        edges[drawn_edges] = { lp, k }
        table.insert(children[lp], k)
      end
    end
  end
  if drawn_edges < total_edges then
    notes[#notes + 1] = ("drawing %s of %s edges"):format(count(drawn_edges), count(total_edges))
  end
  if #notes > 0 then
    out[#out + 1] = note("Graph capped (limits " .. count(L.dag) .. " nodes, " .. count(L.dag_edges)
                         .. " edges): " .. table.concat(notes, "; ") .. ".")
  end
  out[#out + 1] = legend(true)
  -- Order within each layer by the barycenter of the neighbours' positions:
  -- two sweeps down (parents) and one up (children), then a last one down.
  local pos = {}
  for _, layer in ipairs(layers) do
    for r, k in ipairs(layer) do pos[k] = r end
  end
  local function sweep(from, to, stepd, neighbours)
    for d = from, to, stepd do
      local layer = layers[d]
      local key = {}
      for _, k in ipairs(layer) do
        local ns = neighbours[k]
        if #ns > 0 then
          local sum = 0
          for _, q in ipairs(ns) do sum = sum + pos[q] end
          key[k] = sum / #ns
        else
          key[k] = pos[k]
        end
      end
      table.sort(layer, function(a, b)
        if key[a] ~= key[b] then return key[a] < key[b] end
        return a < b
      end)
      for r, k in ipairs(layer) do pos[k] = r end
    end
  end
  local nl = #layers
  -- Neighbours through drawn edges only.
  local eparents = {}
  for k = 1, m do eparents[k] = {} end
  for _, e in ipairs(edges) do table.insert(eparents[e[2]], e[1]) end
  sweep(2, nl, 1, eparents)
  sweep(nl - 1, 1, -1, children)
  sweep(2, nl, 1, eparents)
  sweep(nl - 1, 1, -1, children)

  local BW, BH, GAPX, GAPY, MARGIN = 140, 22, 50, 8, 16
  local tallest = 0
  for _, layer in ipairs(layers) do tallest = math.max(tallest, #layer) end
  local height = MARGIN * 2 + tallest * (BH + GAPY) - GAPY
  local width = MARGIN * 2 + nl * (BW + GAPX) - GAPX
  local x, y = {}, {}
  for d, layer in ipairs(layers) do
    local top = MARGIN + (tallest - #layer) * (BH + GAPY) / 2
    for r, k in ipairs(layer) do
      x[k] = MARGIN + (d - 1) * (BW + GAPX)
      y[k] = top + (r - 1) * (BH + GAPY)
    end
  end
  local svg = {}
  svg[#svg + 1] = ('<svg id="dag" width="%d" height="%d" viewBox="0 0 %d %d">')
    :format(width, height, width, height)
  -- Edges first so that boxes cover their ends; the critical path's last.
  local crit_edges = {}
  for _, e in ipairs(edges) do
    local a, b = e[1], e[2]
    local crit = on_path[nodes[a]] and on_path[nodes[b]] and on_path[nodes[b]] == on_path[nodes[a]] + 1
    local x1, y1 = x[a] + BW, y[a] + BH / 2
    local x2, y2 = x[b], y[b] + BH / 2
    local mx = (x1 + x2) / 2
    local d = ('<path class="dag-edge%s" d="M%s %sC%s %s %s %s %s %s"/>')
      :format(crit and " crit" or "", num(x1), num(y1), num(mx), num(y1), num(mx), num(y2), num(x2), num(y2))
    if crit then crit_edges[#crit_edges + 1] = d else svg[#svg + 1] = d end
  end
  for _, d in ipairs(crit_edges) do svg[#svg + 1] = d end
  for k, i in ipairs(nodes) do
    svg[#svg + 1] = ('<g class="dag-node st-%s%s" transform="translate(%s %s)"><title>%s</title>'
                     .. '<rect width="%d" height="%d" rx="4"/><text x="8" y="15">%s</text></g>')
      :format(record.state[i], on_path[i] and " crit" or "", num(x[k]), num(y[k]), node_title(record, i),
              BW, BH, name_html(record.names[i], L.label))
  end
  svg[#svg + 1] = "</svg>"
  out[#out + 1] = '<div class="scroll">' .. table.concat(svg, "\n") .. "</div>"
  return table.concat(out, "\n")
end

--- The HTML page about a run record (docs/report.md), as one string.
-- Raises "report: bad run record: ..." naming the first field that does
-- not have the documented form.
function M.html(record)
  local n = check_record(record)
  local path, total = M.critical_path(record)
  local on_path = {}
  for k, i in ipairs(path) do on_path[i] = k end
  local parts = {
    "<!DOCTYPE html>",
    '<html lang="en"><head><meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    -- No fetch of any kind: scripts, images, fonts, styles and frames are
    -- refused by the page's own policy, and nothing here asks for one.
    '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; style-src \'unsafe-inline\'">',
    ("<title>fflua report: %s</title>"):format(name_html(record.workflow, 80)),
    "<style>" .. CSS .. "</style></head><body><main>",
    summary(record, n, #path),
    section("timeline-section", "Timeline", timeline(record, n, on_path)),
    section("critical-section", "Critical path", critical(record, path, total)),
    section("slowest-section", "Slowest nodes", slowest(record, n)),
    section("failures-section", "Failures", failures(record)),
    section("cache-section", "Cache hits", cache_hits(record, n)),
    section("dag-section", "Graph", dag(record, n, path, on_path)),
    ('<p class="meta">Written by fflua %s.</p>'):format(html(require("functionfuse").version)),
    "</main></body></html>\n",
  }
  return table.concat(parts, "\n")
end

-- --- the subcommand ---------------------------------------------------------

local usage = [==[
usage: fflua report STORAGE WORKFLOW [-o FILE] [--run N]
  Writes one self-contained HTML page about a saved run of WORKFLOW in the
  storage directory STORAGE: a summary, a timeline of the nodes across the
  workers, the slowest nodes, the critical path, the failures with their
  errors, the cache hits and the graph coloured by state. The page fetches
  nothing; open it in any browser.
  -o FILE   write the page to FILE (without -o, or with -o -: standard output)
  --run N   the Nth newest saved run (1, the default: the latest; 2: the one before)
]==]

local OPTIONS = { "-o", "--output", "--run", "--help", "-h" }

--- The run record of a workflow in a storage: the one place that asks the
-- storage for it, so that the spec can stand in for it. Returns the record,
-- or nil and a message.
function M.load_record(path, workflow, n)
  local storage = require "functionfuse.storage"
  if type(storage.run_record) ~= "function" then
    return nil, "this fflua's storage keeps no run records (functionfuse.storage.run_record is missing)"
  end
  return storage.run_record(path, workflow, n)
end

local function say(fmt, ...)
  io.stderr:write("fflua report: " .. fmt:format(...) .. "\n")
end

function M.main(args)
  local out, run
  local pos = {}
  local i = 1
  while i <= #args do
    local a = args[i]
    local k, v = a:match("^(%-%-[%w-]+)=(.*)$")
    if not k then k = a end
    if k == "--help" or k == "-h" then io.write(usage); return 0 end
    if k == "-o" or k == "--output" or k == "--run" then
      if v == nil then v = args[i + 1]; i = i + 1 end
      if v == nil or v == "" then say("%s needs %s", k, k == "--run" and "a run number" or "a file name")
        io.stderr:write(usage); return 2 end
      if k == "--run" then
        run = math.tointeger(tonumber(v))
        if not run or run < 1 or not v:match("^%d+$") then
          say("--run takes a run number (1, 2, ...), not '%s'", core.escape(v, 40)); io.stderr:write(usage)
          return 2
        end
      else
        out = v
      end
    elseif a == "--" then
      table.move(args, i + 1, #args, #pos + 1, pos)
      break
    elseif a:sub(1, 1) == "-" and a ~= "-" then
      local near = util.nearest(k, OPTIONS)
      say("unknown option '%s'%s", core.escape(a, 60), near and (" (did you mean '%s'?)"):format(near) or "")
      io.stderr:write(usage)
      return 2
    else
      pos[#pos + 1] = a
    end
    i = i + 1
  end
  if #pos < 2 then say("give the storage and the workflow"); io.stderr:write(usage); return 2 end
  if #pos > 2 then say("unexpected argument '%s'", core.escape(pos[3], 60)); io.stderr:write(usage); return 2 end
  local path, workflow = pos[1], pos[2]
  local f = io.open(path .. "/data.mdb", "rb")
  if not f then say("'%s' is not an fflua storage (it has no data.mdb)", core.escape(path)); return 1 end
  f:close()
  local record, err = M.load_record(path, workflow, run)
  if not record then say("%s", tostring(err)); return 1 end
  local ok, page = pcall(M.html, record)
  if not ok then say("%s", (tostring(page):gsub("^report: ", ""))); return 1 end
  if out == nil or out == "-" then
    io.stdout:write(page)
    return 0
  end
  local wok, werr = util.write_file(out, page)
  if not wok then say("cannot write %s", werr); return 1 end
  return 0
end

return M
