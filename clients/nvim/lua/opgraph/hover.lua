-- :OpgraphHover: what the floating window says about the nodes of the cursor line (op,
-- inputs, data, grad, the leaves that influence them, diagnostics). The window is float.lua.
local annotate = require('opgraph.annotate')
local async = require('opgraph.async')
local config = require('opgraph.config')
local float = require('opgraph.float')
local session = require('opgraph.session')
local state = require('opgraph.state')
local util = require('opgraph.util')

local api = vim.api
local M = {}

M.close = float.close
M.window = float.window
M.focus = float.focus

--- The leaves (nodes without inputs) that node `id` depends on, sorted, as graph.analyze's
--- `influences` gives them, found in the fetched graph `g`; nil when `g` lacks a node on the
--- way. Linear in the nodes above `id`, with no request.
---@param g opgraph.Graph
---@param id integer
---@return integer[]|nil
function M.leaves_of(g, id)
  local seen, stack = { [id] = true }, { id }
  local leaves = {}
  while #stack > 0 do
    local at = table.remove(stack)
    local node = g.by_id[at]
    if not node or type(node.inputs) ~= 'table' then
      return nil
    end
    if #node.inputs == 0 and at ~= id then
      table.insert(leaves, at)
    end
    for _, i in ipairs(node.inputs) do
      if not seen[i] then
        seen[i] = true
        table.insert(stack, i)
      end
    end
  end
  table.sort(leaves)
  return leaves
end

--- Append the hover text of nodes `ids` of graph `name` to `lines` (and their highlights to
--- `hls`, as {group, line (0-based), col_start, col_end}); `more` nodes of the line are left
--- out.
---@param name string
---@param ids integer[]
---@param more integer
---@param lines string[]
---@param hls table[]
---@return boolean|nil ok
---@return string|nil error
local function describe(name, ids, more, lines, hls)
  local opts = config.get().display
  local p = opts.hover_precision
  local got, err = session.call('node.get', name, ids)
  if not got then
    return nil, err
  end
  local cached = state.graphs[name]
  -- The fetched graph answers "which leaves" when it is the version node.get just read.
  local local_ok = cached ~= nil and cached.server == session.identity()
    and cached.version == got.version
  local want, influences = {}, {}
  local ask = {} -- nodes whose leaves the fetched graph cannot tell: graph.analyze, at once
  for _, node in ipairs(got.nodes) do
    for _, i in ipairs(node.inputs) do
      want[i] = true
    end
    if util.value(node.op) ~= nil then
      influences[node.id] = local_ok and M.leaves_of(cached, node.id) or nil
      if not influences[node.id] then
        table.insert(ask, node.id)
      end
    end
  end
  if #ask > 0 then
    local calls = {}
    for _, id in ipairs(ask) do
      table.insert(calls, { 'graph.analyze', { name, { node = id, diagnostics = false } } })
    end
    local answers, aerr = session.request_many(calls)
    if not answers then
      return nil, aerr
    end
    for k, id in ipairs(ask) do
      local all = util.value(answers[k].influences)
      influences[id] = type(all) == 'table' and all[tostring(id)] or {}
    end
  end
  for _, node in ipairs(got.nodes) do
    for k, i in ipairs(influences[node.id] or {}) do
      if k <= opts.max_influences then
        want[i] = true
      end
    end
  end
  local others = {}
  local want_ids = util.sorted_keys(want)
  if #want_ids > 0 then
    local more, merr = session.call('node.get', name, want_ids)
    if not more then
      return nil, merr
    end
    for _, n in ipairs(more.nodes) do
      others[n.id] = n
    end
  end
  local ctx = { by_id = setmetatable({}, {
    __index = function(_, id)
      return others[id] or (cached and cached.by_id[id])
    end,
  }) }
  local function named(id)
    local n = ctx.by_id[id]
    local name = n and annotate.node_name(ctx, n) or '?'
    if name == '#' .. tostring(id) then
      return name -- (an unlabelled leaf: its id is its name)
    end
    return name .. ' #' .. tostring(id)
  end
  local function add(text, group)
    table.insert(lines, text)
    if group then
      table.insert(hls, { group, #lines - 1, 0, -1 })
    end
  end
  if #lines > 0 then
    add('')
  end
  add(('graph %s · version %d'):format(name, got.version), 'OpgraphTitle')
  if more > 0 then
    add(('+%d more nodes made on this line; the last %d:'):format(more, #ids), 'OpgraphPunct')
  end
  for _, node in ipairs(got.nodes) do
    local op = util.value(node.op)
    local what
    if op == nil then
      what = 'leaf'
    else
      local parts = {}
      for _, i in ipairs(node.inputs) do
        table.insert(parts, named(i))
      end
      what = op .. '(' .. table.concat(parts, ', ') .. ')'
    end
    add(('%s #%d = %s'):format(annotate.node_name(ctx, node), node.id, what), 'OpgraphLabel')
    add('  data  ' .. util.num(node.data, p))
    add('  grad  ' .. util.num(node.grad, p))
    if #node.inputs > 0 then
      local parts = {}
      for _, i in ipairs(node.inputs) do
        local n = ctx.by_id[i]
        table.insert(parts, ('%s = %s'):format(named(i), n and util.num(n.data, p) or '?'))
      end
      add('  inputs  ' .. table.concat(parts, ', '))
    end
    local leaves = influences[node.id]
    if leaves and #leaves > 0 then
      local parts = {}
      for k, i in ipairs(leaves) do
        if k > opts.max_influences then
          table.insert(parts, ('and %d more'):format(#leaves - opts.max_influences))
          break
        end
        table.insert(parts, named(i))
      end
      add('  influenced by  ' .. table.concat(parts, ', '))
    end
    for _, d in ipairs(cached and cached.diag_by_node[node.id] or {}) do
      add(('  %s %s: %s'):format(tostring(d.severity), tostring(util.value(d.code)),
        tostring(util.value(d.message))), d.severity == 'error' and 'DiagnosticError'
        or d.severity == 'warning' and 'DiagnosticWarn' or 'DiagnosticInfo')
    end
  end
  if cached and got.version ~= cached.version then
    require('opgraph.show').schedule_refresh(name, got.version)
  end
  return true
end

-- --- crowded lines: the summary and its drill-down ------------------------------------------

local ROWS = 8 -- rows of each list of groups at first
local ALL_ROWS = 1000 -- rows of a list opened whole (<CR> on its "… more" row)

local SECTIONS = {
  { by = 'part', title = 'by model part', filter = 'part' },
  { by = 'call', title = 'by call (one per sample)', filter = 'call', periodic = true },
  { by = 'position', title = 'by position in a call (the same node of every call)',
    filter = 'position', periodic = true },
}

---@class opgraph.DrillView what the hover window shows of a crowded line
---@field name string the graph
---@field file string the line's file, as the nodes recorded it
---@field line integer
---@field filters table<string, any> part, call, position: the selection within the line
---@field limits table<string, integer> rows listed of each section (by `by`)

-- The hover window's drill-down: the views opened (the last is shown), and which view each
-- line of it opens on <CR>.
---@type {views: opgraph.DrillView[], rows: table<integer, opgraph.DrillView>}|nil
local drill = nil

--- The columns of one group's statistics in a list: data range, mean, gradient norm, zero
--- gradients (and how many values are not finite, when some are).
local function stats_cells(stats, p)
  local range, mean = annotate.range_text(stats.data, p)
  local bad = (tonumber(util.value(stats.nonfinite_data)) or 0)
    + (tonumber(util.value(stats.nonfinite_grad)) or 0)
  return {
    range or 'none finite',
    mean or '',
    util.num(util.value(stats.grad_norm) or 0, p),
    tostring(tonumber(util.value(stats.zero_grad)) or 0),
    bad > 0 and ('%d not finite'):format(bad) or '',
  }
end

--- `rows` ({label, count, cells}) as the lines of a table under a header, columns aligned.
local function table_lines(rows)
  local head = { '', 'nodes', 'data', 'mean', '∇ norm', 'zero ∇' }
  local width = {}
  local function cells(r)
    return { r[1], r[2], r[3][1], r[3][2], r[3][3], r[3][4] }
  end
  for i, h in ipairs(head) do
    width[i] = vim.fn.strdisplaywidth(h)
  end
  for _, r in ipairs(rows) do
    for i, c in ipairs(cells(r)) do
      width[i] = math.max(width[i], vim.fn.strdisplaywidth(c))
    end
  end
  local function pad(text, w, right)
    local fill = string.rep(' ', w - vim.fn.strdisplaywidth(text))
    return right and (fill .. text) or (text .. fill)
  end
  local function line(c, extra)
    local out = '  ' .. pad(c[1], width[1]) .. '  ' .. pad(c[2], width[2], true) .. '  '
      .. pad(c[3], width[3]) .. '  ' .. pad(c[4], width[4], true) .. '  '
      .. pad(c[5], width[5], true) .. '  ' .. pad(c[6], width[6], true)
    local text = (out .. (extra ~= '' and ('  ' .. extra) or '')):gsub('%s+$', '')
    return text
  end
  local out = { line(head, '') }
  for _, r in ipairs(rows) do
    table.insert(out, line(cells(r), r[3][5]))
  end
  return out
end

--- The words for a selection: "line 65 · part layer1 · call 3".
local function selection_text(view)
  local words = { ('%s:%d'):format(vim.fn.fnamemodify(view.file, ':t'), view.line) }
  local f = view.filters
  if f.part then
    table.insert(words, 'part ' .. f.part)
  end
  if f.call then
    table.insert(words, 'call ' .. f.call)
  end
  if f.position then
    table.insert(words, 'position ' .. f.position)
  end
  return table.concat(words, ' · ')
end

--- The graph.aggregate options of `view`'s selection, listing groups `by` (at most `limit`).
local function query(view, by, limit, members)
  -- (a position's group is named after its first member: it needs one listed)
  members = members or (by == 'position' and 1 or 0)
  local q = { line = { view.file, view.line }, by = by, limit = limit, members = members }
  for key, value in pairs(view.filters) do
    q[key] = value
  end
  return q
end

--- The hover text of `view` (a crowded line, or a selection within it): its statistics, then
--- the lists to drill down into, capped, with their totals. Rows that drill down further are
--- in `rows` (line number -> the view they open).
---@param view opgraph.DrillView
---@param lines string[]
---@param hls table[]
---@param rows table<integer, opgraph.DrillView>
---@return boolean|nil ok
---@return string|nil error
local function describe_summary(view, lines, hls, rows)
  local opts = config.get().display
  local p, few = opts.hover_precision, math.max(1, opts.max_hover_nodes)
  local function add(text, group)
    table.insert(lines, text)
    if group then
      table.insert(hls, { group, #lines - 1, 0, -1 })
    end
  end
  -- The selection, listed by part (every selection has parts), says whether the line repeats.
  local first, err = session.call('graph.aggregate', view.name,
    query(view, 'part', view.limits.part or ROWS, few))
  if not first then
    return nil, err
  end
  local period, calls = util.value(first.period), util.value(first.calls)
  local answers = { part = first }
  local calls_wanted = {}
  for _, section in ipairs(SECTIONS) do
    if section.periodic and period and view.filters[section.filter] == nil then
      table.insert(calls_wanted, section)
    end
  end
  if #calls_wanted > 0 then
    local many = {}
    for _, section in ipairs(calls_wanted) do
      table.insert(many, { 'graph.aggregate',
        { view.name, query(view, section.by, view.limits[section.by] or ROWS) } })
    end
    local got, merr = session.request_many(many)
    if not got then
      return nil, merr
    end
    for i, section in ipairs(calls_wanted) do
      answers[section.by] = got[i]
    end
  end
  local stats = first.stats
  if #lines > 0 then
    add('')
  end
  add(('graph %s · version %d · %s'):format(view.name, first.version, selection_text(view)),
    'OpgraphTitle')
  local what = annotate.count_text(stats.count)
  if next(view.filters) == nil then
    what = what .. ' made on this line'
    if period and calls then
      what = what .. (': %d calls of %d'):format(calls, period)
    end
  end
  add(what, 'OpgraphLabel')
  local ops = annotate.ops_text(stats)
  if ops ~= '' then
    add('  ops   ' .. ops)
  end
  local range, mean = annotate.range_text(stats.data, p)
  add('  data  ' .. (range and (range .. '  mean ' .. mean) or 'none finite'))
  range, mean = annotate.range_text(stats.grad, p)
  add('  grad  ' .. (range and (range .. '  mean ' .. mean) or 'none finite'))
  local zero = tonumber(util.value(stats.zero_grad)) or 0
  local bad_data = tonumber(util.value(stats.nonfinite_data)) or 0
  local bad_grad = tonumber(util.value(stats.nonfinite_grad)) or 0
  add(('  ∇ norm %s · %d zero · %s'):format(util.num(util.value(stats.grad_norm) or 0, p), zero,
    (bad_data + bad_grad == 0) and 'all finite'
    or ('%d data, %d ∇ not finite'):format(bad_data, bad_grad)),
    (bad_data + bad_grad > 0) and 'DiagnosticError' or nil)
  for _, section in ipairs(SECTIONS) do
    local answer = answers[section.by]
    local groups = answer and util.value(answer.groups)
    local counts = answer and util.value(answer.counts)
    local total = type(counts) == 'table' and tonumber(util.value(counts.groups)) or 0
    -- (a list of one group says nothing the statistics above do not)
    if type(groups) == 'table' and total > 1 then
      local shown = #groups
      add(('%s: %d%s'):format(section.title, total,
        shown < total and (', the first %d'):format(shown) or ''), 'OpgraphTitle')
      local table_rows, targets = {}, {}
      for _, group in ipairs(groups) do
        local key = util.value(group.key)
        local label
        if key == nil then
          label = '(in no part below)'
        elseif section.by == 'call' then
          label = 'call ' .. tostring(key)
        elseif section.by == 'position' then
          local named = util.value(group.name)
          label = tostring(key) .. (named and (' ' .. named) or '')
        else
          label = tostring(key)
        end
        if vim.fn.strchars(label) > 28 then
          label = vim.fn.strcharpart(label, 0, 27) .. '…'
        end
        table.insert(table_rows, { label, tostring(tonumber(group.stats.count) or 0),
          stats_cells(group.stats, 4) })
        local target = false
        if key ~= nil then
          local filters = vim.deepcopy(view.filters)
          filters[section.filter] = key
          target = { name = view.name, file = view.file, line = view.line,
            filters = filters, limits = {} }
        end
        table.insert(targets, target)
      end
      for i, text in ipairs(table_lines(table_rows)) do
        add(text, i == 1 and 'OpgraphPunct' or nil)
        if i > 1 and targets[i - 1] then
          rows[#lines] = targets[i - 1]
        end
      end
      if shown < total then
        add(('  … %d more (<CR> here lists %s)'):format(total - shown,
          total <= ALL_ROWS and 'them all' or ('the first %d'):format(ALL_ROWS)), 'OpgraphPunct')
        local limits = vim.deepcopy(view.limits)
        limits[section.by] = ALL_ROWS
        rows[#lines] = { name = view.name, file = view.file, line = view.line,
          filters = vim.deepcopy(view.filters), limits = limits }
      end
    end
  end
  -- A selection of a few nodes (one sample's score): the nodes themselves.
  local members = util.value(first.members)
  if (tonumber(stats.count) or 0) <= few and type(members) == 'table' and #members > 0 then
    local ok, derr = describe(view.name, members, 0, lines, hls)
    if not ok then
      return nil, derr
    end
  end
  return true
end

--- The footer of a window that drills down.
local function footer(lines, hls, deeper)
  table.insert(lines, '')
  table.insert(lines, (deeper and '<BS> back · ' or '')
    .. '<CR> on a row drills down · q closes'
    .. (deeper and '' or ' · :OpgraphHover again enters this window'))
  table.insert(hls, { 'OpgraphPunct', #lines - 1, 0, -1 })
end

--- Show the last view of `drill` in the open window (in a task).
local function show_drill()
  local d = drill
  if not d then
    return
  end
  local lines, hls, rows = {}, {}, {}
  local ok, err = describe_summary(d.views[#d.views], lines, hls, rows)
  if not ok then
    state.error_line(err)
    return
  end
  footer(lines, hls, #d.views > 1)
  if drill == d then
    d.rows = rows
    float.replace(lines, hls)
  end
end

--- <CR> in the window: open what row `row` leads to.
---@param row integer 1-based
function M.drill_down(row)
  local d = drill
  local target = d and d.rows[row]
  if not target then
    return
  end
  table.insert(d.views, target)
  async.run(':OpgraphHover drill-down', show_drill)
end

--- <BS> in the window: back to the view before.
function M.drill_back()
  local d = drill
  if not d or #d.views <= 1 then
    return
  end
  table.remove(d.views)
  async.run(':OpgraphHover drill-down', show_drill)
end

--- A floating window with the nodes created on the cursor line: op, inputs, data, grad, the
--- leaves that influence them, diagnostics; a line that made more than max_per_line nodes is
--- summed up instead (graph.aggregate), with lists to drill down into by model part, by call
--- and by position. A second call moves into the window.
---@return integer|nil window
---@return integer|nil buffer
function M.hover()
  if float.focus() then
    return nil
  end
  local names = state.shown_list()
  if #names == 0 then
    util.notify('no graph is shown: run :OpgraphShow {graph} first', 'warn')
    return nil
  end
  local buf = api.nvim_get_current_buf()
  local line = api.nvim_win_get_cursor(0)[1]
  local found = {}
  for _, name in ipairs(names) do
    local g = state.graphs[name]
    if g then
      local ids, stats, count = annotate.line_at(g, buf, line)
      if count > 0 then
        table.insert(found, { name = name, ids = ids, stats = stats, count = count })
      end
    end
  end
  if #found == 0 then
    util.notify(('no node of %s was created on line %d of this file'):format(
      "graph '" .. table.concat(names, "', '") .. "'", line))
    return nil
  end
  local opts = config.get().display
  local lines, hls, rows = {}, {}, {}
  local views = nil
  local most = math.max(1, opts.max_hover_nodes)
  for _, f in ipairs(found) do
    local ok, err
    if f.stats and annotate.crowded(f.count, opts) then
      local view = { name = f.name, file = f.stats.file, line = f.stats.line, filters = {},
        limits = {} }
      views = views or { view }
      ok, err = describe_summary(view, lines, hls, views[1] == view and rows or {})
    else
      -- The last nodes of a crowded line, as the virtual text shows them (when the server
      -- gave no summary): what the line computes.
      local ids, more = f.ids, math.max(0, #f.ids - most)
      if more > 0 then
        ids = vim.list_slice(f.ids, more + 1)
      end
      ok, err = describe(f.name, ids, more, lines, hls)
    end
    if not ok then
      state.error_line(err)
      return nil
    end
  end
  state.highlights()
  if views then
    footer(lines, hls, false)
  end
  local win, fbuf = float.open(lines, hls, views and {
    ['<CR>'] = M.drill_down,
    ['<BS>'] = M.drill_back,
  } or nil)
  drill = views and { views = views, rows = rows } or nil
  return win, fbuf
end

return M
