-- Options of the opgraph plugin: defaults, merging what setup() gets, and checking it.
local M = {}

M.defaults = {
  -- Where :OpgraphConnect (without an argument) and the automatic connection go.
  address = 'tcp://127.0.0.1:7450',
  -- The command :OpgraphStart runs; it must speak MessagePack-RPC on stdin/stdout.
  start_cmd = { 'opgraph', 'serve', '--stdio' },
  -- The server's token, when it was started with --token.
  token = nil,
  -- Commands connect to `address` (or the last address) by themselves when not connected.
  auto_connect = true,
  -- Changes notified by the server are gathered for this long before one refresh.
  debounce_ms = 100,
  -- How often a lost connection is looked for (and graphs awaited after a reconnect).
  poll_ms = 1000,
  -- The time limit of every request: a server that does not answer within it is an error.
  timeout_ms = 10000,
  -- How long a command waits for its answers (CTRL-C stops it) before it lets them come in
  -- the background and gives the editor back.
  wait_ms = 1000,
  display = {
    virt_text_pos = 'eol', -- or 'right_align'
    prefix = '   ', -- before the first node of a line
    separator = ' │ ', -- between the nodes of one line
    precision = 4, -- significant digits of data and grad in the virtual text
    hover_precision = 8, -- significant digits in the hover window
    grad_symbol = '∇',
    show_grad = true,
    max_per_line = 6, -- a line with more nodes shows one summary of them (graph.aggregate)
    diagnostic_codes = true, -- add the diagnostic codes of a line to its virtual text
    max_influences = 12, -- leaves listed by :OpgraphHover before "and N more"
    max_hover_nodes = 6, -- nodes of one line :OpgraphHover describes (the last ones)
  },
  diagnostics = {
    enable = true,
    -- Passed to vim.diagnostic.config() for the plugin's namespaces.
    config = { virtual_text = false, signs = true, underline = false, severity_sort = true },
  },
  render = {
    format = 'svg', -- when the file name has no .svg/.dot/.png extension
    depth = 2, -- neighbourhood around the node under the cursor
    dir = nil, -- default: stdpath('cache') .. '/opgraph'
  },
}

---@class opgraph.Options see :help opgraph-options
---@field address string
---@field start_cmd string[]
---@field token string|nil
---@field auto_connect boolean
---@field debounce_ms number
---@field poll_ms number
---@field timeout_ms number
---@field wait_ms number
---@field display table
---@field diagnostics table
---@field render table

---@type opgraph.Options
local current = vim.deepcopy(M.defaults)

---@param opts opgraph.Options
local function check(opts)
  vim.validate({
    address = { opts.address, 'string' },
    start_cmd = { opts.start_cmd, 'table' },
    token = { opts.token, 'string', true },
    auto_connect = { opts.auto_connect, 'boolean' },
    debounce_ms = { opts.debounce_ms, 'number' },
    poll_ms = { opts.poll_ms, 'number' },
    timeout_ms = { opts.timeout_ms, 'number' },
    wait_ms = { opts.wait_ms, 'number' },
    display = { opts.display, 'table' },
    diagnostics = { opts.diagnostics, 'table' },
    render = { opts.render, 'table' },
  })
  local d = opts.display
  vim.validate({
    ['display.virt_text_pos'] = { d.virt_text_pos, 'string' },
    ['display.precision'] = { d.precision, 'number' },
    ['display.hover_precision'] = { d.hover_precision, 'number' },
    ['display.max_per_line'] = { d.max_per_line, 'number' },
    ['display.max_hover_nodes'] = { d.max_hover_nodes, 'number' },
    ['render.depth'] = { opts.render.depth, 'number' },
    ['render.format'] = { opts.render.format, 'string' },
  })
  if #opts.start_cmd == 0 then
    error('start_cmd must not be empty', 0)
  end
  if opts.timeout_ms <= 0 then
    error('timeout_ms must be more than 0 (every request has a time limit)', 0)
  end
  if opts.wait_ms < 0 then
    error('wait_ms must be 0 or more', 0)
  end
end

local KNOWN_TOP = { token = true }
for key in pairs(M.defaults) do
  KNOWN_TOP[key] = true
end

--- The first option name in `opts` that the plugin does not know, as "display.foo".
local function unknown(opts)
  for key, value in pairs(opts) do
    if not KNOWN_TOP[key] then
      return tostring(key)
    end
    local known = M.defaults[key]
    if type(value) == 'table' and type(known) == 'table' and key ~= 'start_cmd' then
      for sub in pairs(value) do
        if known[sub] == nil and not (key == 'render' and sub == 'dir') then
          return key .. '.' .. tostring(sub)
        end
      end
    end
  end
  return nil
end

--- Merge `opts` over the defaults; returns true, or false and a one-line reason.
---@param opts table|nil
---@return boolean ok
---@return string|nil reason
function M.set(opts)
  if opts ~= nil and type(opts) ~= 'table' then
    return false, 'setup() takes a table of options'
  end
  local bad = opts and unknown(opts)
  if bad then
    return false, ("unknown option '%s' (see :help opgraph-options)"):format(bad)
  end
  local merged = vim.tbl_deep_extend('force', vim.deepcopy(M.defaults), opts or {})
  if opts and opts.start_cmd then
    merged.start_cmd = vim.deepcopy(opts.start_cmd) -- a list replaces, never merges
  end
  local ok, err = pcall(check, merged)
  if not ok then
    return false, require('opgraph.util').clean(err)
  end
  current = merged
  return true
end

--- The options in force.
---@return opgraph.Options
function M.get()
  return current
end

return M
