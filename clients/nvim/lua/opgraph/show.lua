-- :OpgraphShow and :OpgraphClear, and keeping shown graphs up to date: fetching a graph,
-- drawing it on every buffer, the debounced refresh after graph.changed, and the shown graphs
-- a (new) server does not have yet.
local annotate = require('opgraph.annotate')
local async = require('opgraph.async')
local config = require('opgraph.config')
local session = require('opgraph.session')
local state = require('opgraph.state')
local util = require('opgraph.util')

local api = vim.api
local M = {}

--- Graphs of up to this many nodes are read whole; bigger ones only as far as their lines of
--- few nodes and their diagnostics need (see fetch).
M.FULL_FETCH = 10000

local PAGE = 5000 -- node records per graph.nodes request
local AGGREGATE_LINES = 10000 -- source lines summed up by graph.aggregate (per version)

local flush_timer = nil ---@type userdata|nil
local quiet_after = 0 -- (vim.loop.now) a change from then on is fetched at once

-- --- drawing -----------------------------------------------------------------------------

--- Draw graph `name` on every loaded buffer.
---@param name string
---@return integer lines annotated in the current buffer
function M.redraw(name)
  local g = state.graphs[name]
  if not g then
    return 0
  end
  local opts = config.get()
  local here = 0
  local current = api.nvim_get_current_buf()
  for _, buf in ipairs(api.nvim_list_bufs()) do
    if api.nvim_buf_is_loaded(buf) then
      local n = annotate.draw(buf, g, opts)
      if buf == current then
        here = n
      end
    end
  end
  return here
end

local function clear_graph(name)
  for _, buf in ipairs(api.nvim_list_bufs()) do
    annotate.clear(buf, name)
  end
end

--- Buffers displayed later get the shown graphs' annotations too.
local function setup_autocmds()
  if state.autocmds then
    return
  end
  state.autocmds = true
  local group = api.nvim_create_augroup('opgraph', { clear = true })
  api.nvim_create_autocmd({ 'BufWinEnter', 'BufReadPost' }, {
    group = group,
    callback = util.guard(function(args)
      local opts = config.get()
      for _, name in ipairs(state.shown_list()) do
        local g = state.graphs[name]
        if g then
          annotate.draw(args.buf, g, opts)
        end
      end
    end, 'drawing a new buffer'),
  })
end

-- --- fetching ----------------------------------------------------------------------------

local function is_unknown(err)
  return tostring(err):match('^unknown_graph') ~= nil
end

--- The summaries of graph `name`'s source lines (graph.aggregate by line, listing the ids of
--- lines of few nodes): the answer, or nil and why. One request a version for every line of
--- every file; the server computes it once per version.
---@param name string
---@return table|nil
---@return string|nil error
local function line_summaries(name)
  return session.request('graph.aggregate', name, { by = 'line', limit = AGGREGATE_LINES,
    members = math.max(1, config.get().display.max_per_line) })
end

--- Every node record of graph `name` (graph.nodes, a page after another) and its diagnostics:
--- nodes, diagnostics and version, or nil, why, and 'changed' when it changed in between.
local function fetch_whole(name)
  local first, err = session.request('graph.nodes', name, { start = 0, count = PAGE })
  if not first then
    return nil, err
  end
  local version = first.version
  local calls = {}
  for start = #first.nodes, first.total - 1, PAGE do
    table.insert(calls, { 'graph.nodes', { name, { start = start, count = PAGE } } })
  end
  table.insert(calls, { 'graph.diagnostics', { name } })
  local rest, rerr = session.request_many(calls)
  if not rest then
    return nil, rerr
  end
  local nodes = first.nodes
  for i = 1, #rest - 1 do
    local page = rest[i]
    if page.version ~= version then
      return nil, nil, 'changed' -- changed between pages
    end
    for _, node in ipairs(page.nodes) do
      table.insert(nodes, node)
    end
  end
  local d = rest[#rest]
  if d.version ~= version then
    return nil, nil, 'changed'
  end
  return { nodes = nodes, diagnostics = d.diagnostics, version = version }
end

--- What a big graph's annotations need, and no more: the node records of the lines with few
--- nodes (their ids are in the summaries `agg`) and of the nodes with diagnostics, with the
--- inputs their names are made of (two levels). Requests in number and size bounded by the
--- lines of the program, not by the graph.
local function fetch_lean(name, agg)
  local display = config.get().display
  local want = {}
  for _, group in ipairs(util.value(agg.groups) or {}) do
    local members = util.value(group.members)
    if type(members) == 'table' and not annotate.crowded(tonumber(group.stats.count) or 0,
      display) then
      for _, id in ipairs(members) do
        want[id] = true
      end
    end
  end
  local d, derr = session.request('graph.diagnostics', name)
  if not d then
    return nil, derr
  end
  if d.version ~= agg.version then
    return nil, nil, 'changed'
  end
  for _, diag in ipairs(type(d.diagnostics) == 'table' and d.diagnostics or {}) do
    local id = type(diag) == 'table' and util.value(diag.node) or nil
    if type(id) == 'number' then
      want[id] = true
    end
  end
  local by_id, nodes = {}, {}
  for level = 0, 2 do -- the nodes, then their inputs, then theirs (names go two levels down)
    local ids = {}
    for id in pairs(want) do
      if not by_id[id] then
        table.insert(ids, id)
      end
    end
    if #ids == 0 then
      break
    end
    table.sort(ids)
    local got, err = session.request('node.get', name, ids)
    if not got then
      return nil, err
    end
    if got.version ~= agg.version then
      return nil, nil, 'changed'
    end
    want = {}
    for _, node in ipairs(got.nodes) do
      by_id[node.id] = node
      table.insert(nodes, node)
      if level < 2 then
        for _, i in ipairs(node.inputs) do
          want[i] = true
        end
      end
    end
  end
  table.sort(nodes, function(a, b)
    return a.id < b.id
  end)
  return { nodes = nodes, diagnostics = d.diagnostics, version = agg.version, partial = true }
end

--- Graph `name` at one version, as the plugin draws it. The line summaries come first
--- (`on_summaries(line_stats, version)` draws the crowded lines at once); then a graph of up to
--- M.FULL_FETCH nodes is read whole, a bigger one only as far as its lines of few nodes and its
--- diagnostics need (see fetch_lean). A graph that changes in between is read again (five
--- times at most).
---@param name string
---@param on_summaries fun(line_stats: table, version: integer)|nil
---@return opgraph.Graph|nil
---@return string|nil error
local function fetch(name, on_summaries)
  local got, agg
  for _ = 1, 5 do
    local aerr, err, changed
    agg, aerr = line_summaries(name)
    if agg and on_summaries then
      on_summaries(annotate.index_lines(agg), agg.version)
    elseif not agg and is_unknown(aerr) then
      return nil, aerr
    elseif not agg and session.connected() then
      -- (an older server, or a time limit: crowded lines show their last nodes instead)
      state.report_once(("summing up graph '%s': %s"):format(name, util.clean(aerr)))
    end
    local total = agg and tonumber(util.value(agg.stats) and agg.stats.count)
    if total and total > M.FULL_FETCH then
      got, err, changed = fetch_lean(name, agg)
    else
      got, err, changed = fetch_whole(name)
      if got and agg and agg.version ~= got.version then
        got, changed = nil, 'changed' -- the summaries are of another version
      end
    end
    if got then
      break
    elseif not changed then
      return nil, err
    end
  end
  if not got then
    return nil, ("graph '%s' kept changing while it was read"):format(name)
  end
  local line_stats = agg and agg.version == got.version and annotate.index_lines(agg) or nil
  local g = annotate.index(name, got.version, got.nodes, got.diagnostics, line_stats)
  g.partial = got.partial or false
  g.total = agg and tonumber(agg.stats.count) or #got.nodes
  return g
end

--- Say what `show` drew: graph `g`, `here` lines annotated in the current buffer.
---@param g opgraph.Graph
---@param here integer
---@param how string|nil words after the graph's name ("appeared", ...)
---@type table<string, boolean> graphs whose appearance was announced since they were awaited
local announced = {}

local function say_drawn(g, here, how)
  local what = ("graph '%s'%s version %d"):format(g.name, how and (' ' .. how .. ':') or '',
    g.version)
  if here > 0 then
    util.notify(('%s: %d nodes, %d lines annotated here'):format(what, g.total or #g.nodes,
      here))
    return
  end
  local paths = vim.tbl_extend('keep', {}, g.files, g.line_stats or {}) -- (read in part)
  local files = {}
  for path in pairs(paths) do
    table.insert(files, vim.fn.fnamemodify(path, ':~:.'))
  end
  table.sort(files)
  local from = #files == 0 and 'no node has a source location (build it under track_source())'
    or ('its nodes come from ' .. table.concat(files, ', ', 1, math.min(#files, 3))
      .. (#files > 3 and ', ...' or ''))
  util.notify(('%s: no node was created in this file; %s'):format(what, from), 'warn')
end

--- Whether the fetched state `g` came from the server connected now. Version numbers say
--- which state is newer only between states of one server: a restarted server counts again.
---@param g opgraph.Graph|nil
---@return boolean
local function current(g)
  return g ~= nil and g.server == session.identity()
end

--- Fetch graph `name` again and redraw it.
---@param name string
---@return opgraph.Graph|nil state
---@return integer|string lines annotated in the current buffer, or the error
function M.refresh(name)
  local server = session.identity()
  local function early(line_stats, version)
    local old = state.graphs[name]
    if not state.shown[name] or server ~= session.identity()
      or (current(old) and old.version >= version) then
      return -- cleared, another server, or not newer than what is drawn
    end
    local opts = config.get()
    for _, buf in ipairs(api.nvim_list_bufs()) do
      annotate.draw_summaries(buf, name, line_stats, opts)
    end
  end
  local g, err = fetch(name, early)
  if not g then
    return nil, err
  end
  g.server = server
  if not state.shown[name] then
    return g, 0 -- cleared while we were asking
  end
  if server ~= session.identity() then
    return g, 0 -- the connection changed while we were asking: the next refresh draws
  end
  state.waiting[name] = nil -- it exists
  local old = state.graphs[name]
  if current(old) and old.version > g.version then
    return old, M.redraw(name) -- an older answer than what is drawn
  end
  state.graphs[name] = g
  return g, M.redraw(name)
end

--- Refresh the graphs whose change notifications are due.
local function flush()
  if not session.connected() then
    state.pending = {}
    return
  end
  local due = state.pending
  state.pending = {}
  for _, name in ipairs(util.sorted_keys(due)) do
    local g = state.graphs[name]
    if state.shown[name] and not (current(g) and g.version >= due[name]) then
      local awaited = state.waiting[name]
      local fresh, err = M.refresh(name)
      if not fresh and session.connected() and not (awaited and is_unknown(err)) then
        state.report_once(("updating graph '%s': %s"):format(name, err))
      elseif fresh and awaited == 'show' then
        -- announced by a server that lets one subscribe first (once: the graph.list check
        -- may find it at the same time)
        if not announced[name] then
          announced[name] = true
          say_drawn(fresh, err, 'appeared')
        end
      end
    end
  end
end

--- Refresh graph `name` soon. The first change after a quiet while is fetched at once; the
--- changes that follow within debounce_ms join one refresh at the end of that time (a burst of
--- changes costs two refreshes, whatever its length).
---@param name string
---@param version number the version announced
function M.schedule_refresh(name, version)
  state.pending[name] = math.max(state.pending[name] or 0, version)
  if not flush_timer then
    flush_timer = vim.loop.new_timer()
  end
  if flush_timer:is_active() then
    return -- a refresh is already due: this change joins it
  end
  local now, window = vim.loop.now(), config.get().debounce_ms
  local wait = now >= quiet_after and 0 or (quiet_after - now)
  quiet_after = now + wait + window
  flush_timer:start(wait, 0, vim.schedule_wrap(function()
    async.run('refresh', flush)
  end))
end

-- --- (re)connections ---------------------------------------------------------------------

--- Graph `name` is shown but not on the server (yet): look for it at every check.
---@param name string
---@param why 'show'|'reconnect' asked by :OpgraphShow (said when it appears), or after a
---  reconnection to a server that does not have it
local function await(name, why)
  state.add_shown(name)
  state.waiting[name] = why
  announced[name] = nil
  setup_autocmds()
end

--- Shown graphs that were missing on the server get subscribed once they appear (one
--- graph.list per check while some are awaited).
local function await_graphs()
  if next(state.waiting) == nil then
    return
  end
  local list = session.request('graph.list')
  if type(list) ~= 'table' then
    return
  end
  for _, summary in ipairs(list) do
    local name = summary.name
    local why = state.waiting[name]
    if why and state.shown[name] and session.request('graph.subscribe', name) then
      local fresh, here = M.refresh(name)
      if not fresh then
        if not is_unknown(here) then -- (dropped again at once: still awaited)
          state.report_once(("showing graph '%s': %s"):format(name, here))
        end
      elseif why == 'show' and not announced[name] then
        announced[name] = true
        say_drawn(fresh, here, 'appeared')
      end
    end
  end
end

--- After (re)connecting: subscribe to the shown graphs again and redraw them.
--- Graph `name` is not on the server connected now: annotations fetched from another server
--- (or from before it was dropped) are stale, so they go, said once.
local function forget_stale(name)
  local g = state.graphs[name]
  if g and not current(g) then
    clear_graph(name)
    state.graphs[name] = nil
    util.notify(("graph '%s' is not on %s: its annotations from before are cleared; it is "
      .. 'shown again once it is published'):format(name, session.status().address or '?'),
      'warn')
  end
end

local function resubscribe()
  local conn = session.connection_id()
  local function gone()
    return session.connection_id() ~= conn -- (another connection does this again)
  end
  for _, name in ipairs(state.shown_list()) do
    local ok, err = session.request('graph.subscribe', name)
    if gone() then
      return
    end
    if ok then
      local fresh, rerr = M.refresh(name)
      if gone() then
        return
      elseif not fresh and is_unknown(rerr) then
        forget_stale(name)
        await(name, state.waiting[name] or 'reconnect') -- subscribed before it exists
      elseif not fresh then
        state.report_once(("showing graph '%s': %s"):format(name, rerr))
      end
    elseif is_unknown(err) then
      forget_stale(name)
      await(name, state.waiting[name] or 'reconnect') -- shown again once something publishes it
    else
      state.report_once(("subscribing to graph '%s': %s"):format(name, err))
    end
  end
end

session.on_connect(resubscribe)
session.on_poll(await_graphs)
session.set_on_notify(function(method, payload)
  M.on_notify(method, payload)
end)

-- --- commands ----------------------------------------------------------------------------

--- Show graph `name`: values and gradients beside the lines that made the nodes, its
--- diagnostics in vim.diagnostic, kept up to date as the graph changes.
---@param name string|nil
---@return opgraph.Graph|nil
function M.show(name)
  if name == nil or name == '' then
    state.error_line('which graph? :OpgraphShow {graph} (:OpgraphGraphs lists them)')
    return nil
  end
  state.highlights()
  local ok, err = session.ensure()
  if not ok then
    state.error_line(err)
    return nil
  end
  local sub, serr = session.request('graph.subscribe', name)
  if not sub and not is_unknown(serr) then
    state.error_line(serr)
    return nil
  end
  local g, here
  if sub then
    state.add_shown(name)
    setup_autocmds()
    g, here = M.refresh(name)
    if not g and not is_unknown(here) then
      state.error_line(here)
      return nil
    end
  end
  if not g then
    -- Not published yet (or a typo: the server's message suggests the closest name).
    await(name, 'show')
    util.notify(("waiting for graph '%s' (%s): it is shown as soon as it is published; "
      .. ':OpgraphClear %s stops waiting'):format(name, util.clean(serr or here), name), 'warn')
    return nil
  end
  say_drawn(g, here)
  return g
end

--- Remove the annotations and diagnostics of graph `name` (default: every shown graph) and
--- stop following its changes.
---@param name string|nil
function M.clear(name)
  local names
  if name ~= nil and name ~= '' then
    if not state.shown[name] then
      util.notify(("graph '%s' is not shown"):format(name), 'warn')
      return
    end
    names = { name }
  else
    names = state.shown_list()
  end
  require('opgraph.hover').close()
  for _, n in ipairs(names) do
    if session.connected() then
      session.request('graph.unsubscribe', n) -- best effort: an error changes nothing here
    end
    clear_graph(n)
    state.forget(n)
  end
end

-- --- notifications -----------------------------------------------------------------------

--- A server notification (`graph.changed`, `graph.diagnostics`, `graph.dropped`). Only notes
--- the change: the refresh runs later, from the main loop, once per burst of changes.
---@param method string
---@param payload any
function M.on_notify(method, payload)
  if type(payload) ~= 'table' or type(payload.graph) ~= 'string' then
    return
  end
  local name = payload.graph
  if not state.shown[name] then
    return
  end
  local g = state.graphs[name]
  if method == 'graph.changed' then
    local version = tonumber(payload.version) or math.huge
    if current(g) and version <= g.version then
      return
    end
    M.schedule_refresh(name, version)
  elseif method == 'graph.diagnostics' then
    if current(g) and payload.version == g.version and type(payload.diagnostics) == 'table' then
      if g.partial then
        for _, d in ipairs(payload.diagnostics) do
          local id = type(d) == 'table' and util.value(d.node) or nil
          if id ~= nil and not g.by_id[id] then
            -- (a graph read in part lacks that node's line: read it again)
            vim.schedule(function()
              async.run('refresh', M.refresh, name)
            end)
            return
          end
        end
      end
      annotate.set_diagnostics(g, payload.diagnostics)
      vim.schedule(util.guard(function()
        if state.graphs[name] == g then
          M.redraw(name)
        end
      end, 'diagnostics'))
    end
  elseif method == 'graph.dropped' then
    vim.schedule(function()
      async.run('graph.dropped', function()
        if state.shown[name] then
          M.clear(name)
          util.notify(("graph '%s' was dropped on the server; its annotations are cleared")
            :format(name), 'warn')
        end
      end)
    end)
  end
end

return M
