-- :checkhealth opgraph: the Neovim version, whether the server is reachable (and answers),
-- whether :OpgraphStart's command and Graphviz's `dot` are installed.
local config = require('opgraph.config')
local session = require('opgraph.session')

local M = {}

local PROBE_MS = 3000 -- how long the check waits for a server to answer initialize

---@class opgraph.HealthReporter
---@field start fun(name: string)
---@field ok fun(msg: string)
---@field warn fun(msg: string, advice: string[]|nil)
---@field error fun(msg: string, advice: string[]|nil)
---@field info fun(msg: string)

--- The health functions of this Neovim: vim.health.start/ok/... (0.9 and later), else
--- vim.health.report_* (0.8) or require('health').report_* (0.7).
---@return opgraph.HealthReporter
function M.reporter()
  local h = vim.health
  if h and h.start and h.ok then
    return { start = h.start, ok = h.ok, warn = h.warn, error = h.error, info = h.info }
  end
  if not (h and h.report_start) then
    h = require('health')
  end
  return {
    start = h.report_start,
    ok = h.report_ok,
    warn = h.report_warn,
    error = h.report_error,
    info = h.report_info,
  }
end

--- "0.7.2" from the first line of :version ("NVIM v0.7.2"); vim.version() is 0.9 and later.
---@return string
function M.nvim_version()
  local ok, text = pcall(vim.api.nvim_exec, 'version', true)
  local version = ok and text:match('NVIM v(%d+%.%d+%.%d+[%w%-%.+]*)')
  return version or 'unknown'
end

local function check_neovim(h)
  h.start('Neovim')
  local version = M.nvim_version()
  if vim.fn.has('nvim-0.7') == 1 then
    h.ok(('Neovim %s (0.7.2 or later is needed)'):format(version))
  else
    h.error(('Neovim %s is too old'):format(version), { 'use Neovim 0.7.2 or later' })
  end
  if type(vim.mpack) == 'table' and vim.mpack.Unpacker then
    h.ok('vim.mpack is there (the plugin speaks MessagePack-RPC with it)')
  else
    h.error('vim.mpack is missing: the plugin cannot talk to the server',
      { 'use Neovim 0.7.2 or later' })
  end
end

local function describe(info)
  return ('%s %s, protocol %s'):format(tostring(info.name), tostring(info.version),
    tostring(info.protocol))
end

local function check_server(h)
  h.start('Server')
  local opts = config.get()
  local status = session.status()
  if status.connected then
    local answer, err = session.request_within(PROBE_MS, 'graph.list')
    if type(answer) == 'table' then
      h.ok(('connected to %s (%s); it answers: %d graph%s'):format(status.address,
        describe(status.server or {}), #answer, #answer == 1 and '' or 's'))
    else
      h.error(('connected to %s, but graph.list failed: %s'):format(status.address,
        tostring(err)), { 'try :OpgraphConnect again' })
    end
  else
    local url = status.url or opts.address
    local info, err = session.probe(url, PROBE_MS)
    if info then
      h.ok(('the server at %s is reachable (%s); not connected yet: commands connect by '
        .. 'themselves'):format(url, describe(info)))
      if info.protocol ~= 1 then
        h.warn(('it speaks protocol %s; this plugin knows protocol 1'):format(
          tostring(info.protocol)))
      end
    else
      h.error(('the server at %s is not reachable: %s'):format(url, tostring(err)), {
        'start one with `opgraph serve` (`make serve` in the repository)',
        "or let Neovim start one: :OpgraphStart (the 'start_cmd' option)",
        "or point the 'address' option at yours: require('opgraph').setup({address = ...})",
      })
    end
  end
  local cmd = opts.start_cmd[1]
  local path = vim.fn.exepath(cmd)
  if path ~= '' then
    h.ok(('start_cmd for :OpgraphStart: %s'):format(path))
  else
    h.warn(("start_cmd '%s' is not an executable: :OpgraphStart cannot start a server"):format(
      cmd), { "set 'start_cmd' to the full path, e.g. the repository's .venv/bin/opgraph" })
  end
end

local function check_graphviz(h)
  h.start('Graphviz')
  local dot = vim.fn.exepath('dot')
  if dot ~= '' then
    h.ok(('dot: %s (the server draws :OpgraphRender pictures with it)'):format(dot))
  else
    h.warn('dot is not on $PATH: a server on this machine cannot draw :OpgraphRender pictures',
      { 'install Graphviz (apt-get install graphviz, brew install graphviz)' })
  end
end

--- Run by :checkhealth opgraph.
function M.check()
  local h = M.reporter()
  check_neovim(h)
  check_server(h)
  check_graphviz(h)
end

return M
