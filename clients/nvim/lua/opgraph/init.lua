-- opgraph for Neovim: values, gradients and diagnostics of an opgraph graph beside the code
-- that built it, live. See :help opgraph.
--
-- The server pushes changes as `nvim_exec_lua` notifications that call `on_notify` below;
-- refreshes are debounced and run from the main loop. Every entry point reports failures with
-- one vim.notify line and never raises.
local config = require('opgraph.config')
local util = require('opgraph.util')
local rpc = require('opgraph.rpc')
local annotate = require('opgraph.annotate')
local hover = require('opgraph.hover')

local api = vim.api
local M = {}

local PAGE = 5000 -- node records per graph.nodes request

local state = {
  graphs = {}, -- name -> graph state (see annotate.index)
  shown = {}, -- name -> true for graphs being shown (kept across reconnects)
  order = {}, -- the shown names, in the order they were shown
  waiting = {}, -- name -> true: shown, but not on the server now; subscribed when it appears
  pending = {}, -- name -> newest version announced by graph.changed, refresh due
  flush_timer = nil,
  poll_timer = nil,
  reported = {}, -- background errors already shown (a failing refresh says it once)
  autocmds = false,
  highlights = false,
}

-- --- helpers -----------------------------------------------------------------------------

local function error_line(message)
  util.notify(util.clean(message), 'error')
end

--- `fn` wrapped so that any Lua error becomes one notify line instead of a traceback.
local function guard(fn, what)
  return function(...)
    local ok, result = xpcall(fn, debug.traceback, ...)
    if not ok then
      util.notify(('internal error in %s: %s'):format(what or 'opgraph', util.clean(result)), 'error')
      return nil
    end
    return result
  end
end

local function report_once(message)
  if not state.reported[message] then
    state.reported[message] = true
    error_line(message)
  end
end

local function highlights()
  if not state.highlights then
    annotate.define_highlights()
    state.highlights = true
  end
end

local function shown_list()
  local names = {}
  for _, name in ipairs(state.order) do
    if state.shown[name] then
      table.insert(names, name)
    end
  end
  return names
end

-- --- drawing -----------------------------------------------------------------------------

--- Draw graph `name` on every loaded buffer; returns the lines annotated in the current one.
local function redraw(name)
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

local function setup_autocmds()
  if state.autocmds then
    return
  end
  state.autocmds = true
  local group = api.nvim_create_augroup('opgraph', { clear = true })
  api.nvim_create_autocmd({ 'BufWinEnter', 'BufReadPost' }, {
    group = group,
    callback = guard(function(args)
      local opts = config.get()
      for _, name in ipairs(shown_list()) do
        local g = state.graphs[name]
        if g then
          annotate.draw(args.buf, g, opts)
        end
      end
    end, 'drawing a new buffer'),
  })
end

-- --- fetching ----------------------------------------------------------------------------

--- Every node record and the diagnostics of graph `name`, at one version.
local function fetch(name)
  local nodes, version, diagnostics
  for _ = 1, 3 do
    nodes, version = {}, nil
    local start, consistent = 0, true
    while true do
      local page, err = rpc.request('graph.nodes', name, { start = start, count = PAGE })
      if not page then
        return nil, err
      end
      if version ~= nil and page.version ~= version then
        consistent = false -- changed between pages: start again
        break
      end
      version = page.version
      for _, node in ipairs(page.nodes) do
        table.insert(nodes, node)
      end
      start = start + #page.nodes
      if #page.nodes == 0 or start >= page.total then
        break
      end
    end
    if consistent then
      local d, err = rpc.request('graph.diagnostics', name)
      if not d then
        return nil, err
      end
      diagnostics = d.diagnostics
      if d.version == version then
        break
      end
    end
  end
  return annotate.index(name, version, nodes, diagnostics)
end

--- Fetch graph `name` again and redraw it; returns its state and the number of lines annotated
--- in the current buffer, or nil and an error.
local function refresh(name)
  local g, err = fetch(name)
  if not g then
    return nil, err
  end
  if not state.shown[name] then
    return g, 0 -- cleared while we were asking
  end
  local old = state.graphs[name]
  if old and old.version > g.version then
    return old, redraw(name) -- an older answer than what is drawn
  end
  state.graphs[name] = g
  return g, redraw(name)
end

local function flush()
  if not rpc.connected() then
    state.pending = {}
    return
  end
  local due = state.pending
  state.pending = {}
  for _, name in ipairs(util.sorted_keys(due)) do
    local g = state.graphs[name]
    if state.shown[name] and not (g and g.version >= due[name]) then
      local fresh, err = refresh(name)
      if not fresh and rpc.connected() then
        report_once(("updating graph '%s': %s"):format(name, err))
      end
    end
  end
end

local function schedule_flush()
  if not state.flush_timer then
    state.flush_timer = vim.loop.new_timer()
  end
  if state.flush_timer:is_active() then
    return -- a refresh is already due: this change joins it
  end
  state.flush_timer:start(config.get().debounce_ms, 0, vim.schedule_wrap(guard(flush, 'refresh')))
end

-- --- connection --------------------------------------------------------------------------

local function stop_poll()
  if state.poll_timer then
    state.poll_timer:stop()
  end
end

--- Shown graphs that were missing on the server get subscribed once they appear.
local function await_graphs()
  if next(state.waiting) == nil then
    return
  end
  local list = rpc.request('graph.list')
  if type(list) ~= 'table' then
    return
  end
  for _, summary in ipairs(list) do
    local name = summary.name
    if state.waiting[name] and state.shown[name] and rpc.request('graph.subscribe', name) then
      state.waiting[name] = nil
      local fresh, err = refresh(name)
      if not fresh then
        report_once(("showing graph '%s': %s"):format(name, err))
      end
    end
  end
end

local function poll()
  if not rpc.connected() then
    stop_poll()
    return
  end
  if rpc.check() then
    await_graphs()
  end
end

local function start_poll()
  if not state.poll_timer then
    state.poll_timer = vim.loop.new_timer()
  end
  local every = math.max(50, config.get().poll_ms)
  state.poll_timer:stop()
  state.poll_timer:start(every, every, vim.schedule_wrap(guard(poll, 'connection check')))
end

rpc.set_on_lost(function(message, quiet)
  stop_poll()
  state.pending = {}
  if not quiet then
    local again = rpc.last_kind() == 'job' and ':OpgraphStart starts another'
      or ':OpgraphConnect reconnects'
    util.notify(('%s; the annotations are from before; %s'):format(message, again), 'warn')
  end
end)

--- After (re)connecting: subscribe to the shown graphs again and redraw them.
local function after_connect()
  state.reported = {}
  start_poll()
  for _, name in ipairs(shown_list()) do
    local ok, err = rpc.request('graph.subscribe', name)
    if ok then
      state.waiting[name] = nil
      local fresh, rerr = refresh(name)
      if not fresh then
        report_once(("showing graph '%s': %s"):format(name, rerr))
      end
    elseif tostring(err):match('^unknown_graph') then
      state.waiting[name] = true -- shown again as soon as something publishes it
    else
      report_once(("subscribing to graph '%s': %s"):format(name, err))
    end
  end
end

--- Connected, or connected now (auto_connect); else false and why.
local function ensure()
  if rpc.check() then
    return true
  end
  local opts = config.get()
  if not opts.auto_connect then
    return false, 'not connected: run :OpgraphConnect [url] or :OpgraphStart'
  end
  if rpc.last_kind() == 'job' then
    return false, 'not connected: the server of :OpgraphStart is not running; '
      .. 'run :OpgraphStart or :OpgraphConnect'
  end
  local info, err = rpc.connect(rpc.last_url() or opts.address, opts.token)
  if not info then
    return false, err
  end
  after_connect()
  return true
end

--- A request, connecting first if need be: result, or nil and a one-line error.
local function call(method, ...)
  local ok, err = ensure()
  if not ok then
    return nil, err
  end
  return rpc.request(method, ...)
end

-- --- public API --------------------------------------------------------------------------

--- Options: see :help opgraph-options.
function M.setup(opts)
  local ok, err = config.set(opts)
  if not ok then
    error_line('setup: ' .. err)
    return false
  end
  highlights()
  return true
end

--- Connect to `url` (default: the `address` option). Returns true on success.
function M.connect(url)
  local opts = config.get()
  if url == nil or url == '' then
    url = opts.address
  end
  local info, err = rpc.connect(url, opts.token)
  if not info then
    error_line(err)
    return false
  end
  util.notify(('connected to %s (%s %s)'):format(url, tostring(info.name), tostring(info.version)))
  after_connect()
  return true
end

--- Start a server as a child job (`cmd`, default the `start_cmd` option) and talk over stdio.
function M.start(cmd)
  local opts = config.get()
  if cmd == nil or #cmd == 0 then
    cmd = opts.start_cmd
  end
  local info, err = rpc.start(cmd, opts.token)
  if not info then
    error_line(err)
    return false
  end
  util.notify(('started %s (%s %s)'):format(table.concat(cmd, ' '), tostring(info.name),
    tostring(info.version)))
  after_connect()
  return true
end

--- Close the connection (a server started by :OpgraphStart is stopped).
function M.disconnect()
  stop_poll()
  if rpc.close() then
    util.notify('disconnected')
  else
    util.notify('not connected')
  end
end

--- List the server's graphs; returns the list (name, nodes, version, subscribers) or nil.
function M.graphs()
  local list, err = call('graph.list')
  if not list then
    error_line(err)
    return nil
  end
  local where = rpc.status().address
  if #list == 0 then
    util.notify(('no graphs on %s'):format(where))
    return list
  end
  local width = 4
  for _, g in ipairs(list) do
    width = math.max(width, #tostring(g.name))
  end
  local lines = { ('%d graph%s on %s:'):format(#list, #list == 1 and '' or 's', where) }
  for _, g in ipairs(list) do
    table.insert(lines, ('  %-' .. width .. 's  %6d nodes  version %d%s'):format(
      tostring(g.name), g.nodes, g.version, state.shown[g.name] and '  (shown)' or ''))
  end
  util.notify(table.concat(lines, '\n'))
  return list
end

--- Show graph `name`: values and gradients beside the lines that made the nodes, its
--- diagnostics in vim.diagnostic, kept up to date as the graph changes.
function M.show(name)
  if name == nil or name == '' then
    error_line('which graph? :OpgraphShow {graph} (:OpgraphGraphs lists them)')
    return nil
  end
  highlights()
  local ok, err = ensure()
  if not ok then
    error_line(err)
    return nil
  end
  local sub, serr = rpc.request('graph.subscribe', name)
  if not sub then
    error_line(serr)
    return nil
  end
  if not state.shown[name] then
    state.shown[name] = true
    table.insert(state.order, name)
  end
  state.waiting[name] = nil
  setup_autocmds()
  local g, here = refresh(name)
  if not g then
    error_line(here)
    return nil
  end
  if here > 0 then
    util.notify(("graph '%s' version %d: %d nodes, %d lines annotated here"):format(
      name, g.version, #g.nodes, here))
  else
    local files = {}
    for path in pairs(g.files) do
      table.insert(files, vim.fn.fnamemodify(path, ':~:.'))
    end
    table.sort(files)
    local from = #files == 0 and 'no node has a source location (build it under track_source())'
      or ('its nodes come from ' .. table.concat(files, ', ', 1, math.min(#files, 3))
        .. (#files > 3 and ', ...' or ''))
    util.notify(("graph '%s' version %d: no node was created in this file; %s"):format(
      name, g.version, from), 'warn')
  end
  return g
end

--- The shown graph meant when a command gets none: the only one, else one with nodes on the
--- cursor line, else the last shown.
local function default_graph()
  local names = shown_list()
  if #names <= 1 then
    return names[1]
  end
  local buf, line = api.nvim_get_current_buf(), api.nvim_win_get_cursor(0)[1]
  for i = #names, 1, -1 do
    local g = state.graphs[names[i]]
    if g and #annotate.ids_at(g, buf, line) > 0 then
      return names[i]
    end
  end
  return names[#names]
end

local function hover_graph(name, ids, lines, hls)
  local opts = config.get().display
  local p = opts.hover_precision
  local got, err = call('node.get', name, ids)
  if not got then
    return nil, err
  end
  local want, influences = {}, {}
  for _, node in ipairs(got.nodes) do
    for _, i in ipairs(node.inputs) do
      want[i] = true
    end
    if util.value(node.op) ~= nil then
      local an, aerr = call('graph.analyze', name, { node = node.id, diagnostics = false })
      if not an then
        return nil, aerr
      end
      local found = util.value(an.influences)
      influences[node.id] = type(found) == 'table' and found[tostring(node.id)] or {}
      for k, i in ipairs(influences[node.id]) do
        if k <= opts.max_influences then
          want[i] = true
        end
      end
    end
  end
  local others = {}
  local want_ids = util.sorted_keys(want)
  if #want_ids > 0 then
    local more, merr = call('node.get', name, want_ids)
    if not more then
      return nil, merr
    end
    for _, n in ipairs(more.nodes) do
      others[n.id] = n
    end
  end
  local cached = state.graphs[name]
  local ctx = { by_id = setmetatable({}, {
    __index = function(_, id)
      return others[id] or (cached and cached.by_id[id])
    end,
  }) }
  local function named(id)
    local n = ctx.by_id[id]
    return (n and annotate.node_name(ctx, n) or '?') .. ' #' .. tostring(id)
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
    state.pending[name] = math.max(state.pending[name] or 0, got.version)
    schedule_flush()
  end
  return true
end

--- A floating window with the nodes created on the cursor line: op, inputs, data, grad, the
--- leaves that influence them, diagnostics. A second call moves into the window.
function M.hover()
  if hover.focus() then
    return nil
  end
  local names = shown_list()
  if #names == 0 then
    util.notify('no graph is shown: run :OpgraphShow {graph} first', 'warn')
    return nil
  end
  local buf = api.nvim_get_current_buf()
  local line = api.nvim_win_get_cursor(0)[1]
  local found = {}
  for _, name in ipairs(names) do
    local g = state.graphs[name]
    local ids = g and annotate.ids_at(g, buf, line) or {}
    if #ids > 0 then
      table.insert(found, { name = name, ids = ids })
    end
  end
  if #found == 0 then
    util.notify(('no node of %s was created on line %d of this file'):format(
      "graph '" .. table.concat(names, "', '") .. "'", line))
    return nil
  end
  local lines, hls = {}, {}
  for _, f in ipairs(found) do
    local ok, err = hover_graph(f.name, f.ids, lines, hls)
    if not ok then
      error_line(err)
      return nil
    end
  end
  highlights()
  return hover.open(lines, hls)
end

local FORMATS = { svg = true, dot = true, png = true }

--- Draw graph `name` (default: the shown graph) to `file` through the server: the
--- neighbourhood of the node under the cursor, or with `whole` (or no node there) all of it.
--- Returns the path written.
function M.render(name, file, whole)
  name = (name ~= nil and name ~= '') and name or default_graph()
  if not name then
    error_line('which graph? :OpgraphRender {graph} [file]')
    return nil
  end
  local opts = config.get().render
  local format = opts.format
  if file and file ~= '' then
    file = vim.fn.fnamemodify(vim.fn.expand(file), ':p')
    local ext = file:match('%.(%w+)$')
    if ext and FORMATS[ext:lower()] then
      format = ext:lower()
    elseif ext then
      error_line(("cannot draw to '%s': use a .svg, .dot or .png file"):format(file))
      return nil
    end
  else
    local dir = opts.dir or (vim.fn.stdpath('cache') .. '/opgraph')
    file = ('%s/%s.%s'):format(dir, name:gsub('[^%w%-_.]', '_'), format)
  end
  local options = { format = format, depth = opts.depth }
  local around
  if not whole then
    local g = state.graphs[name]
    local ids = g and annotate.ids_at(g, api.nvim_get_current_buf(),
      api.nvim_win_get_cursor(0)[1]) or {}
    around = ids[#ids] -- the last node of the line: what the line computes
    options.around = around
  end
  local result, err = call('graph.render', name, options)
  if not result then
    error_line(err)
    return nil
  end
  vim.fn.mkdir(vim.fn.fnamemodify(file, ':h'), 'p')
  local handle, ferr = io.open(file, 'wb')
  if not handle then
    error_line(('cannot write %s: %s'):format(file, util.clean(ferr)))
    return nil
  end
  handle:write(result.data)
  handle:close()
  local where = ''
  if around then
    local g = state.graphs[name]
    local node = g and g.by_id[around]
    where = (' around %s #%d (depth %d)'):format(node and annotate.node_name(g, node) or '?',
      around, opts.depth)
  end
  util.notify(("graph '%s'%s drawn to %s"):format(name, where, file))
  return file
end

--- Remove the annotations and diagnostics of graph `name` (default: every shown graph) and
--- stop following its changes.
function M.clear(name)
  local names
  if name ~= nil and name ~= '' then
    if not state.shown[name] then
      util.notify(("graph '%s' is not shown"):format(name), 'warn')
      return
    end
    names = { name }
  else
    names = shown_list()
  end
  hover.close()
  for _, n in ipairs(names) do
    if rpc.connected() and not state.waiting[n] then
      rpc.request('graph.unsubscribe', n) -- best effort: an error changes nothing here
    end
    clear_graph(n)
    state.shown[n], state.graphs[n], state.waiting[n], state.pending[n] = nil, nil, nil, nil
  end
  local kept = {}
  for _, n in ipairs(state.order) do
    if state.shown[n] then
      table.insert(kept, n)
    end
  end
  state.order = kept
end

--- Server notifications arrive here (the server calls nvim_exec_lua with
--- "return require('opgraph').on_notify(...)"). Only notes the change: the refresh runs later,
--- from the main loop, once per burst of changes.
function M.on_notify(method, payload)
  local ok, err = pcall(function()
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
      if g and version <= g.version then
        return
      end
      state.pending[name] = math.max(state.pending[name] or 0, version)
      schedule_flush()
    elseif method == 'graph.diagnostics' then
      if g and payload.version == g.version and type(payload.diagnostics) == 'table' then
        annotate.set_diagnostics(g, payload.diagnostics)
        vim.schedule(guard(function()
          if state.graphs[name] == g then
            redraw(name)
          end
        end, 'diagnostics'))
      end
    elseif method == 'graph.dropped' then
      vim.schedule(guard(function()
        if state.shown[name] then
          M.clear(name)
          util.notify(("graph '%s' was dropped on the server; its annotations are cleared")
            :format(name), 'warn')
        end
      end, 'graph.dropped'))
    end
  end)
  if not ok then
    vim.schedule(function()
      util.notify('internal error in a server notification: ' .. util.clean(err), 'error')
    end)
  end
  return nil
end

--- Graph names for command-line completion (never connects, never complains).
function M.complete_graphs(arglead)
  local names = {}
  if rpc.connected() then
    local list = rpc.request('graph.list')
    if type(list) == 'table' then
      for _, g in ipairs(list) do
        table.insert(names, g.name)
      end
    end
  end
  if #names == 0 then
    names = shown_list()
  end
  local out = {}
  for _, n in ipairs(names) do
    if vim.startswith(n, arglead or '') then
      table.insert(out, n)
    end
  end
  table.sort(out)
  return out
end

--- What is connected and shown (for statuslines and tests).
function M.status()
  local versions = {}
  for name, g in pairs(state.graphs) do
    versions[name] = g.version
  end
  return {
    connection = rpc.status(),
    shown = shown_list(),
    versions = versions,
    waiting = util.sorted_keys(state.waiting),
  }
end

-- The entry points commands use: errors become one notify line, never a traceback.
M.commands = {
  connect = guard(M.connect, ':OpgraphConnect'),
  start = guard(M.start, ':OpgraphStart'),
  disconnect = guard(M.disconnect, ':OpgraphDisconnect'),
  graphs = guard(M.graphs, ':OpgraphGraphs'),
  show = guard(M.show, ':OpgraphShow'),
  hover = guard(M.hover, ':OpgraphHover'),
  render = guard(M.render, ':OpgraphRender'),
  clear = guard(M.clear, ':OpgraphClear'),
}

return M
