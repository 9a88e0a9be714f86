-- The plugin's one connection: connecting (explicitly or automatically), initialize, which
-- server it is, what happens after a (re)connection, the periodic check, and a lost
-- connection. The wire is rpc.lua.
local async = require('opgraph.async')
local config = require('opgraph.config')
local rpc = require('opgraph.rpc')
local state = require('opgraph.state')
local util = require('opgraph.util')

local M = {}

local S = {
  conn = nil, ---@type opgraph.Conn|nil the connection, while initialized and open
  info = nil, ---@type table|nil what initialize returned
  identity = nil, ---@type string|nil which server the connection is to (see `identity`)
  url = nil, ---@type string|nil the last socket URL (for reconnecting), even after a failure
  last_kind = nil, ---@type 'socket'|'job'|nil kind of the last connection, kept after it ends
  poll_timer = nil, ---@type userdata|nil
  polling = nil, ---@type opgraph.Task|nil the periodic check running now
  on_connect = {}, ---@type fun()[] run after every (re)connection
  on_poll = {}, ---@type fun()[] run at every check while connected
  on_notify = nil, ---@type fun(method: string, payload: any)|nil
  retrying = false, -- the connection was lost (not closed on purpose): reconnect by itself
  retry_timer = nil, ---@type userdata|nil
  retry_delay = 0, -- ms before the next attempt (doubles up to MAX_RETRY_MS)
  reconnecting = nil, ---@type opgraph.Task|nil the attempt running now
  connecting = 0, -- connections being opened by a command (an attempt then stands aside)
}

local MAX_RETRY_MS = 5000 -- the longest wait between two attempts to reconnect

--- The field of initialize's result that names the server process. A server that has it
--- keeps it for its lifetime and a restarted one has another, so its graphs' version numbers
--- are comparable only while it stays the same.
M.INSTANCE_FIELD = 'instance'

---@return boolean
function M.connected()
  return S.conn ~= nil and not S.conn.closed
end

--- Which server the connection is to: 'instance:<id>' when initialize says (see
--- INSTANCE_FIELD), else 'connection:<n>', a new one for every connection (a server without an
--- instance id may have restarted in between, so nothing fetched before can be trusted).
---@param info table|nil initialize's result
---@param conn_id integer
---@return string
function M.identity_of(info, conn_id)
  local instance = type(info) == 'table' and util.value(info[M.INSTANCE_FIELD]) or nil
  if (type(instance) == 'string' and instance ~= '') or type(instance) == 'number' then
    return 'instance:' .. tostring(instance)
  end
  return 'connection:' .. tostring(conn_id)
end

--- The serial number of the current connection (see rpc.lua's Conn.id), or nil.
---@return integer|nil
function M.connection_id()
  return M.connected() and S.conn.id or nil
end

--- The identity of the current (or last) server; nil before the first connection.
---@return string|nil
function M.identity()
  return S.identity
end

--- Where server notifications go.
---@param fn fun(method: string, payload: any)
function M.set_on_notify(fn)
  S.on_notify = fn
end

--- Run `fn` after every (re)connection (the shown graphs are subscribed again there).
---@param fn fun()
function M.on_connect(fn)
  table.insert(S.on_connect, fn)
end

--- Run `fn` at every periodic check while connected (in a task).
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
  local conn = S.conn
  if not conn or conn.closed then
    stop_poll()
    return
  end
  if not conn:alive() then
    conn:shut('the server closed it')
    return
  end
  if S.polling and not S.polling.done then
    return -- the last check is still waiting for the server
  end
  S.polling = async.run('connection check', function()
    for _, fn in ipairs(S.on_poll) do
      fn()
    end
  end)
end

local function start_poll()
  if not S.poll_timer then
    S.poll_timer = vim.loop.new_timer()
  end
  local every = math.max(50, config.get().poll_ms)
  S.poll_timer:stop()
  S.poll_timer:start(every, every, vim.schedule_wrap(util.guard(poll, 'connection check')))
end

--- The connection `conn` closed: forget it, and say so unless it was closed on purpose.
local function on_close(conn, reason, closed_here)
  if conn ~= S.conn then
    return -- not (or no longer) the plugin's connection
  end
  S.conn = nil
  stop_poll()
  state.pending = {}
  if closed_here then
    return
  end
  local message = ('lost the connection to %s'):format(conn.address)
  if reason and reason ~= '' then
    message = message .. ' (' .. reason .. ')'
  end
  state.lost_message = message -- a request that fails with this says nothing more
  local again
  if S.last_kind == 'job' then
    again = ':OpgraphStart starts another'
  elseif config.get().auto_connect then
    again = 'reconnecting by itself (:OpgraphConnect does it now)'
    M.retry()
  else
    again = ':OpgraphConnect reconnects'
  end
  util.notify(('%s; the annotations are from before; %s'):format(message, again), 'warn')
end

local function on_notify(conn, method, payload)
  if conn == S.conn and S.on_notify then
    S.on_notify(method, payload)
  end
end

--- Open a connection with `open(handlers)` and initialize it.
---@return table|nil info initialize's result
---@return string|nil error
local function open(open_fn, token)
  local conn, err
  conn, err = open_fn({
    on_notify = function(method, payload)
      on_notify(conn, method, payload)
    end,
    on_close = on_close,
  })
  if not conn then
    return nil, err
  end
  local options = { client = { name = 'opgraph.nvim' } }
  if token then
    options.token = token
  end
  -- Cancelled half-way (CTRL-C during :OpgraphConnect): the socket is closed, not left open.
  local undo = async.on_cancel(function()
    conn:close()
  end)
  local info, ierr = conn:request('initialize', { options }, config.get().timeout_ms)
  undo()
  if type(info) ~= 'table' then
    if info ~= nil then
      ierr = 'the server answered initialize with ' .. vim.inspect(info)
    end
    return nil, ierr, conn
  end
  return info, nil, conn
end

--- Make `conn` the plugin's connection and run the after-connection hooks.
local function adopt(conn, info)
  if S.conn and S.conn ~= conn then
    S.conn:close()
  end
  S.conn, S.info = conn, info
  S.identity = M.identity_of(info, conn.id)
  M.stop_retry()
  state.reported = {}
  state.lost_message = nil
  start_poll()
  for _, fn in ipairs(S.on_connect) do
    fn()
  end
end

--- Stop reconnecting by itself (connected again, disconnected on purpose, or a job started).
function M.stop_retry()
  S.retrying = false
  if S.retry_timer then
    S.retry_timer:stop()
  end
end

local try_reconnect

local function schedule_retry()
  if not S.retry_timer then
    S.retry_timer = vim.loop.new_timer()
  end
  S.retry_timer:stop()
  S.retry_timer:start(S.retry_delay, 0, vim.schedule_wrap(util.guard(function()
    try_reconnect()
  end, 'reconnecting')))
  S.retry_delay = math.min(S.retry_delay * 2, MAX_RETRY_MS)
end

--- One attempt to connect again to the last address; another is scheduled if it fails. Once
--- connected, the after-connection hooks subscribe to the shown graphs again and redraw them.
try_reconnect = function()
  if not S.retrying or M.connected() or S.last_kind ~= 'socket' or not S.url then
    return
  end
  if (S.reconnecting and not S.reconnecting.done) or S.connecting > 0 then
    schedule_retry() -- an attempt (or a command's connection) is under way
    return
  end
  local url = S.url
  S.reconnecting = async.run('reconnecting', function()
    local info, _, conn = open(function(handlers)
      return rpc.open_socket(url, handlers)
    end, config.get().token)
    if not S.retrying or M.connected() or S.connecting > 0 or url ~= S.url then
      if conn then
        conn:close() -- a command connected meanwhile, or reconnecting was stopped
      end
      return
    end
    if not info then
      if conn then
        conn:close()
      end
      schedule_retry()
      return
    end
    util.notify(('reconnected to %s (%s %s)'):format(url, tostring(info.name),
      tostring(info.version)))
    adopt(conn, info)
  end)
end

--- Reconnect by itself, soon and then less and less often, until connected (the connection
--- to a socket was lost, not closed on purpose).
function M.retry()
  S.retrying = true
  S.retry_delay = math.max(50, config.get().poll_ms)
  schedule_retry()
end

--- Close the current connection on purpose. Returns whether there was one.
---@return boolean
function M.close()
  local conn = S.conn
  S.conn, S.info = nil, nil
  stop_poll()
  if conn then
    conn:close()
  end
  return conn ~= nil
end

--- Connect to the server at `url` and initialize; the old connection is closed first.
---@param url string
---@return table|nil info
---@return string|nil error
local function connect_socket(url)
  M.close()
  S.url, S.last_kind = url, 'socket' -- what automatic reconnection retries, even after a failure
  S.connecting = S.connecting + 1
  local undo = async.on_cancel(function()
    S.connecting = S.connecting - 1
  end)
  local info, err, conn = open(function(handlers)
    return rpc.open_socket(url, handlers)
  end, config.get().token)
  undo()
  S.connecting = S.connecting - 1
  if not info then
    if conn then
      conn:close()
      err = ('%s: %s'):format(url, err)
    end
    return nil, err
  end
  adopt(conn, info)
  return info
end

--- Start `cmd` as a child job and initialize it over its stdin/stdout.
---@param cmd string[]
---@return table|nil info
---@return string|nil error
local function connect_job(cmd)
  M.close()
  M.stop_retry()
  local info, err, conn = open(function(handlers)
    return rpc.open_job(cmd, handlers)
  end, config.get().token)
  if conn then
    S.last_kind = 'job'
  end
  if not info then
    if not conn then
      return nil, err
    end
    -- Let the child's last words (stderr, exit code) arrive before saying what went wrong.
    async.wait_until(function()
      return conn.exit_code ~= nil
    end, 1000)
    conn:close()
    local why = conn.exit_code and ('the server exited with code %d'):format(conn.exit_code)
      or err
    local line = conn:last_stderr()
    return nil, ('%s: %s%s'):format(conn.address, why, line and (': ' .. line) or '')
  end
  adopt(conn, info)
  return info
end

--- Connected, or connected now (the auto_connect option); else false and why.
---@return boolean ok
---@return string|nil why
function M.ensure()
  if M.connected() then
    return true
  end
  local opts = config.get()
  if not opts.auto_connect then
    return false, 'not connected: run :OpgraphConnect [url] or :OpgraphStart'
  end
  if S.last_kind == 'job' then
    return false, 'not connected: the server of :OpgraphStart is not running; '
      .. 'run :OpgraphStart or :OpgraphConnect'
  end
  local info, err = connect_socket(S.url or opts.address)
  if not info then
    return false, err
  end
  return true
end

--- A request on the current connection (never connects): the result, or nil, a one-line
--- error and its kind (see rpc.lua). In a task it waits without blocking the editor.
---@param method string
---@return any result
---@return string|nil error
---@return opgraph.ErrorKind|nil kind
function M.request(method, ...)
  local conn = S.conn
  if not conn or conn.closed then
    return nil, 'not connected', 'lost'
  end
  return conn:request(method, { ... }, config.get().timeout_ms)
end

--- Several requests at once (see rpc's Conn:request_many): `calls` is a list of
--- {method, params}; the results in that order, or nil and the first error.
---@param calls table[]
---@return any[]|nil results
---@return string|nil error
---@return opgraph.ErrorKind|nil kind
function M.request_many(calls)
  local conn = S.conn
  if not conn or conn.closed then
    return nil, 'not connected', 'lost'
  end
  return conn:request_many(calls, config.get().timeout_ms)
end

--- `request` with a time limit of its own (command-line completion must not wait long).
---@param timeout_ms number
---@param method string
---@return any result
---@return string|nil error
---@return opgraph.ErrorKind|nil kind
function M.request_within(timeout_ms, method, ...)
  local conn = S.conn
  if not conn or conn.closed then
    return nil, 'not connected', 'lost'
  end
  return conn:request(method, { ... }, timeout_ms)
end

--- A request, connecting first if need be (see `request`).
---@param method string
---@return any result
---@return string|nil error
---@return opgraph.ErrorKind|nil kind
function M.call(method, ...)
  local ok, err = M.ensure()
  if not ok then
    return nil, err
  end
  return M.request(method, ...)
end

--- Connect to `url` (default: the address option) and say so. Returns true on success.
---@param url string|nil
---@return boolean
function M.connect(url)
  if url == nil or url == '' then
    url = config.get().address
  end
  local info, err = connect_socket(url)
  if not info then
    state.error_line(err)
    return false
  end
  util.notify(('connected to %s (%s %s)'):format(url, tostring(info.name), tostring(info.version)))
  return true
end

--- Start a server as a child job (`cmd`, default the start_cmd option) and talk over stdio.
---@param cmd string[]|nil
---@return boolean
function M.start(cmd)
  if cmd == nil or #cmd == 0 then
    cmd = config.get().start_cmd
  end
  local info, err = connect_job(cmd)
  if not info then
    state.error_line(err)
    return false
  end
  util.notify(('started %s (%s %s)'):format(table.concat(cmd, ' '), tostring(info.name),
    tostring(info.version)))
  return true
end

--- Close the connection (a server started by :OpgraphStart is stopped), and say so.
function M.disconnect()
  M.stop_retry()
  if M.close() then
    util.notify('disconnected')
  else
    util.notify('not connected')
  end
end

--- Open a connection of its own to `url`, initialize, close: initialize's result or why not.
--- For :checkhealth; the plugin's connection is not touched.
---@param url string
---@param timeout_ms number
---@return table|nil info
---@return string|nil error
function M.probe(url, timeout_ms)
  local conn, err = rpc.open_socket(url, {})
  if not conn then
    return nil, err
  end
  local options = { client = { name = 'opgraph.nvim' } }
  if config.get().token then
    options.token = config.get().token
  end
  local info, ierr = conn:request('initialize', { options }, timeout_ms)
  conn:close()
  if type(info) ~= 'table' then
    return nil, ierr or ('the server answered initialize with ' .. vim.inspect(info))
  end
  return info
end

---@class opgraph.ConnectionStatus
---@field connected boolean
---@field kind 'socket'|'job'|nil
---@field address string|nil
---@field last_kind 'socket'|'job'|nil
---@field url string|nil
---@field channel integer|nil
---@field identity string|nil which server (see identity_of)
---@field reconnecting boolean the connection was lost and is being tried again by itself
---@field server table|nil {name, version, protocol, instance}

--- The connection state, for :OpgraphGraphs, :checkhealth and tests.
---@return opgraph.ConnectionStatus
function M.status()
  local conn, info = S.conn, S.info
  local connected = conn ~= nil and not conn.closed
  return {
    connected = connected,
    kind = connected and conn.kind or nil,
    address = connected and conn.address or nil,
    last_kind = S.last_kind,
    url = S.url,
    channel = connected and conn.chan or nil,
    identity = S.identity,
    reconnecting = S.retrying,
    server = connected and info and {
      name = info.name,
      version = info.version,
      protocol = info.protocol,
      instance = util.value(info[M.INSTANCE_FIELD]),
    } or nil,
  }
end

return M
