-- :OpgraphHover: what the floating window says about the nodes of the cursor line (op,
-- inputs, data, grad, the leaves that influence them, diagnostics). The window is float.lua.
local annotate = require('opgraph.annotate')
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
  for _, node in ipairs(got.nodes) do
    for _, i in ipairs(node.inputs) do
      want[i] = true
    end
    if util.value(node.op) ~= nil then
      local found = local_ok and M.leaves_of(cached, node.id) or nil
      if not found then
        local an, aerr = session.call('graph.analyze', name,
          { node = node.id, diagnostics = false })
        if not an then
          return nil, aerr
        end
        local all = util.value(an.influences)
        found = type(all) == 'table' and all[tostring(node.id)] or {}
      end
      influences[node.id] = found
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

--- A floating window with the nodes created on the cursor line: op, inputs, data, grad, the
--- leaves that influence them, diagnostics. A second call moves into the window.
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
  local most = math.max(1, config.get().display.max_hover_nodes)
  for _, f in ipairs(found) do
    -- The last nodes of a crowded line, as the virtual text shows them: what the line computes.
    local ids, more = f.ids, math.max(0, #f.ids - most)
    if more > 0 then
      ids = vim.list_slice(f.ids, more + 1)
    end
    local ok, err = describe(f.name, ids, more, lines, hls)
    if not ok then
      state.error_line(err)
      return nil
    end
  end
  state.highlights()
  return float.open(lines, hls)
end

return M
