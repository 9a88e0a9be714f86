-- :OpgraphRender: the server draws the graph (Graphviz runs there); the plugin writes the file.
local annotate = require('opgraph.annotate')
local config = require('opgraph.config')
local session = require('opgraph.session')
local state = require('opgraph.state')
local util = require('opgraph.util')

local api = vim.api
local M = {}

local FORMATS = { svg = true, dot = true, png = true }

--- Where to write, and in which format: `file` (its extension gives the format) or the
--- default file of graph `name`. Nil and an error for an extension the server cannot draw.
---@param name string
---@param file string|nil
---@return string|nil path
---@return string format or the error
local function target(name, file)
  local opts = config.get().render
  if file and file ~= '' then
    file = vim.fn.fnamemodify(vim.fn.expand(file), ':p')
    local ext = file:match('%.(%w+)$')
    if ext and FORMATS[ext:lower()] then
      return file, ext:lower()
    elseif ext then
      return nil, ("cannot draw to '%s': use a .svg, .dot or .png file"):format(file)
    end
    return file, opts.format
  end
  local dir = opts.dir or (vim.fn.stdpath('cache') .. '/opgraph')
  local safe = name:gsub('[^%w%-_.]', '_')
  return ('%s/%s.%s'):format(dir, safe, opts.format), opts.format
end

--- The last node made on `line` of buffer `buf` in graph `name` (what the line computes), or
--- nil. A big graph is fetched only in part (see show.fetch): for a line of many nodes, the
--- server says which (the last position of the last call of a repeating line).
---@param name string
---@param g opgraph.Graph|nil
---@param buf integer
---@param line integer
---@return integer|nil
local function last_node(name, g, buf, line)
  if not g then
    return nil
  end
  local ids, stats, count = annotate.line_at(g, buf, line)
  if not stats or #ids >= count then
    return ids[#ids]
  end
  local where = { stats.file, stats.line }
  local sel = session.call('graph.aggregate', name, { line = where, members = 0 })
  local period, calls = sel and util.value(sel.period), sel and util.value(sel.calls)
  if period and calls then
    local last = session.call('graph.aggregate', name,
      { line = where, call = calls - 1, position = period - 1, members = 1 })
    local members = last and util.value(last.members)
    if type(members) == 'table' and members[1] then
      return members[1]
    end
  end
  return ids[#ids] or util.value(stats.stats.first)
end

--- Draw graph `name` (default: the shown graph) to `file` through the server: the
--- neighbourhood of the node under the cursor, or with `whole` (or no node there) all of it.
---@param name string|nil
---@param file string|nil
---@param whole boolean|nil
---@return string|nil path written
function M.render(name, file, whole)
  name = (name ~= nil and name ~= '') and name or state.default_graph()
  if not name then
    state.error_line('which graph? :OpgraphRender {graph} [file]')
    return nil
  end
  local opts = config.get().render
  local path, format = target(name, file)
  if not path then
    state.error_line(format)
    return nil
  end
  local options = { format = format, depth = opts.depth }
  local around
  if not whole then
    around = last_node(name, state.graphs[name], api.nvim_get_current_buf(),
      api.nvim_win_get_cursor(0)[1])
    options.around = around
  end
  local result, err = session.call('graph.render', name, options)
  if not result then
    state.error_line(err)
    return nil
  end
  vim.fn.mkdir(vim.fn.fnamemodify(path, ':h'), 'p')
  local handle, ferr = io.open(path, 'wb')
  if not handle then
    state.error_line(('cannot write %s: %s'):format(path, util.clean(ferr)))
    return nil
  end
  handle:write(result.data)
  handle:close()
  local where = ''
  if around then
    local g = state.graphs[name]
    local node = g and g.by_id[around]
    where = node and (' around %s #%d (depth %d)'):format(annotate.node_name(g, node), around,
      opts.depth) or (' around #%d (depth %d)'):format(around, opts.depth)
  end
  util.notify(("graph '%s'%s drawn to %s"):format(name, where, path))
  return path
end

return M
