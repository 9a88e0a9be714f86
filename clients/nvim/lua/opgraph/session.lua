-- The plugin's one connection: connecting (explicitly or automatically), what happens after a
-- (re)connection, the periodic check, and a lost connection. The wire is in rpc.lua.
local config = require('opgraph.config')
local rpc = require('opgraph.rpc')
local state = require('opgraph.state')
local util = require('opgraph.util')

local M = {}

local S = {
  poll_timer = nil, ---@type userdata|nil
  on_connect = {}, ---@type fun()[] run after every (re)connection
  on_poll = {}, ---@type fun()[] run at every check while connected
}

---@return boolean
function M.connected()
  return rpc.connected()
end

--- Run `fn` after every (re)connection (the shown graphs are subscribed again there).
---@param fn fun()
function M.on_connect(fn)
  table.insert(S.on_connect, fn)
end

--- Run `fn` at every periodic check while connected.
---@param fn fun()
function M.on_poll(fn)
  table.insert(S.on_poll, fn)
end

local function stop_poll()
  if S.poll_timer then
    S.poll_timer:stop()
  end
end

local function poll()
  if not rpc.connected() then
    stop_poll()
    return
  end
  if rpc.check() then
    for _, fn in ipairs(S.on_poll) do
      fn()
    end
  end
end

local function start_poll()
  if not S.poll_timer then
    S.poll_timer = vim.loop.new_timer()
  end
  local every = math.max(50, config.get().poll_ms)
  S.poll_timer:stop()
  S.poll_timer:start(every, every, vim.schedule_wrap(util.guard(poll, 'connection check')))
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

local function after_connect()
  state.reported = {}
  start_poll()
  for _, fn in ipairs(S.on_connect) do
    fn()
  end
end

--- Connected, or connected now (the auto_connect option); else false and why.
---@return boolean ok
---@return string|nil why
function M.ensure()
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

--- A request on the current connection, connecting first if need be.
---@param method string
---@return any result, or nil
---@return string|nil error one line
function M.call(method, ...)
  local ok, err = M.ensure()
  if not ok then
    return nil, err
  end
  return rpc.request(method, ...)
end

--- A request only if connected (never connects).
---@param method string
---@return any result, or nil
---@return string|nil error one line
function M.request(method, ...)
  return rpc.request(method, ...)
end

--- Connect to `url` (default: the address option) and say so. Returns true on success.
---@param url string|nil
---@return boolean
function M.connect(url)
  local opts = config.get()
  if url == nil or url == '' then
    url = opts.address
  end
  local info, err = rpc.connect(url, opts.token)
  if not info then
    state.error_line(err)
    return false
  end
  util.notify(('connected to %s (%s %s)'):format(url, tostring(info.name), tostring(info.version)))
  after_connect()
  return true
end

--- Start a server as a child job (`cmd`, default the start_cmd option) and talk over stdio.
---@param cmd string[]|nil
---@return boolean
function M.start(cmd)
  local opts = config.get()
  if cmd == nil or #cmd == 0 then
    cmd = opts.start_cmd
  end
  local info, err = rpc.start(cmd, opts.token)
  if not info then
    state.error_line(err)
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

--- A copy of the connection state (see rpc.status).
---@return table
function M.status()
  return rpc.status()
end

return M
