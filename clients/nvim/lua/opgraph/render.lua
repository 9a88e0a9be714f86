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
    local g = state.graphs[name]
    local ids = g and annotate.ids_at(g, api.nvim_get_current_buf(),
      api.nvim_win_get_cursor(0)[1]) or {}
    around = ids[#ids] -- the last node of the line: what the line computes
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
    where = (' around %s #%d (depth %d)'):format(node and annotate.node_name(g, node) or '?',
      around, opts.depth)
  end
  util.notify(("graph '%s'%s drawn to %s"):format(name, where, path))
  return path
end

return M
