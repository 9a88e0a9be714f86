-- The wire: MessagePack-RPC to an opgraph server over a socket (sockconnect) or a child's
-- stdin/stdout (jobstart), with the plugin's own framing.
--
-- Neovim's {rpc = true} channels only offer vim.rpcrequest, which blocks the editor until the
-- answer comes, with no time limit and no way to interrupt it. So the channel here is a raw
-- one: requests are encoded with vim.mpack and sent with chansend, the answers are decoded as
-- they arrive (on_data) and matched to their request by msgid. Every request has a time limit;
-- none blocks unless its caller chooses to wait (see async.lua).
--
-- Callbacks get (result) on success (msgpack nil arrives as vim.NIL), or (nil, message, kind)
-- with `kind` one of 'server' (an error response), 'timeout', 'lost' (the connection went
-- away), 'send' (the request could not be encoded or written), 'cancelled'.
local async = require('opgraph.async')
local util = require('opgraph.util')

local M = {}

--- Requests sent so far, by method (for tests and benchmarks: what a command cost).
---@type table<string, integer>
M.sent = {}

local STDERR_LINES = 20
local MAX_MSGID = 4294967295 -- msgids are unsigned 32-bit integers

---@alias opgraph.ErrorKind 'server'|'timeout'|'lost'|'send'|'cancelled'

---@class opgraph.Pending
---@field method string
---@field callback fun(result: any, err: string|nil, kind: opgraph.ErrorKind|nil)
---@field timer userdata|nil

---@class opgraph.Conn
---@field id integer a serial number, unique in this Neovim
---@field kind 'socket'|'job'
---@field address string the URL, or 'stdio: <command>'
---@field chan integer|nil the channel (for a job, the job id)
---@field job integer|nil
---@field closed boolean
---@field close_reason string|nil why it closed
---@field exit_code integer|nil a job's exit code, once it exited
---@field stderr string[] the last lines a job wrote to stderr
---@field on_notify fun(method: string, payload: any)|nil
---@field on_close fun(conn: opgraph.Conn, reason: string|nil, closed_here: boolean)|nil
---@field pending table<integer, opgraph.Pending>
local Conn = {}
Conn.__index = Conn

local serial = 0

---@param kind 'socket'|'job'
---@param address string
---@param handlers table|nil {on_notify = fn, on_close = fn}
---@return opgraph.Conn
local function new_conn(kind, address, handlers)
  serial = serial + 1
  handlers = handlers or {}
  return setmetatable({
    id = serial,
    kind = kind,
    address = address,
    closed = false,
    stderr = {},
    pending = {},
    next_id = 0,
    unpacker = vim.mpack.Unpacker(),
    on_notify = handlers.on_notify,
    on_close = handlers.on_close,
  }, Conn)
end

--- `tcp://host:port` or `unix:///path` (also `host:port` and `/path`) to sockconnect's
--- mode and address.
---@param url string
---@return string|nil mode 'tcp' or 'pipe'
---@return string|nil address
---@return string|nil error
function M.parse(url)
  if type(url) ~= 'string' or url == '' then
    return nil, nil, 'the address must be tcp://host:port or unix:///path'
  end
  local rest = url:match('^tcp://(.+)$')
  if rest then
    local host, port = rest:match('^%[?([^%]]+)%]?:(%d+)/?$')
    if not host then
      return nil, nil, url .. ': a tcp address needs a host and a port (tcp://127.0.0.1:7450)'
    end
    return 'tcp', host .. ':' .. port
  end
  local path = url:match('^unix://(.+)$')
  if path then
    return 'pipe', path
  end
  if url:sub(1, 1) == '/' then
    return 'pipe', url
  end
  if url:match('^[%w%.%-]+:%d+$') then
    return 'tcp', url
  end
  return nil, nil, url .. ': use tcp://host:port or unix:///path'
end

--- The text of an error response: `[kind, "name: message"]` (the server's default), a
--- structured map `{name, message}`, or a string.
---@param err any
---@return string
function M.error_text(err)
  if type(err) == 'string' then
    return err
  end
  if type(err) == 'table' then
    if type(err[2]) == 'string' then
      return err[2]
    end
    local name, message = util.value(err.name), util.value(err.message)
    if type(message) == 'string' then
      return type(name) == 'string' and (name .. ': ' .. message) or message
    end
  end
  return 'the server answered with an error: ' .. vim.inspect(err)
end

--- The bytes of an on_data callback: Neovim splits them at newlines into a list, and shows
--- NUL bytes as "\n" inside the items.
---@param data string[]
---@return string
function M.join_chunk(data)
  local parts = {}
  for i, item in ipairs(data) do
    parts[i] = (item:gsub('\n', '\0'))
  end
  return table.concat(parts, '\n')
end

-- --- a connection ------------------------------------------------------------------------

--- The newest non-empty line the child wrote to stderr.
---@return string|nil
function Conn:last_stderr()
  for i = #self.stderr, 1, -1 do
    local line = vim.trim(self.stderr[i])
    if line ~= '' then
      return line
    end
  end
  return nil
end

--- Close the connection. Requests still waiting fail (kind 'lost'); on_close is told.
---@param reason string|nil why (nil when closed on purpose)
---@param closed_here boolean|nil true when closed by this side on purpose
function Conn:shut(reason, closed_here)
  if self.closed then
    return
  end
  self.closed = true
  self.close_reason = reason
  if self.job then
    pcall(vim.fn.jobstop, self.job)
  elseif self.chan then
    pcall(vim.fn.chanclose, self.chan)
  end
  local pending = self.pending
  self.pending = {}
  if self.on_close then
    self.on_close(self, reason, closed_here == true)
  end
  local message = ('lost the connection to %s'):format(self.address)
  if reason and reason ~= '' then
    message = message .. ' (' .. reason .. ')'
  end
  for _, id in ipairs(util.sorted_keys(pending)) do
    local p = pending[id]
    if p.timer then
      p.timer:stop()
      p.timer:close()
    end
    p.callback(nil, closed_here and 'the connection was closed' or message, 'lost')
  end
end

--- Close on purpose (no "lost" report).
function Conn:close()
  self:shut(nil, true)
end

--- True while the channel still exists on Neovim's side.
---@return boolean
function Conn:alive()
  if self.closed or not self.chan then
    return false
  end
  local ok, info = pcall(vim.api.nvim_get_chan_info, self.chan)
  return ok and type(info) == 'table' and info.id ~= nil
end

---@param msg any
---@return boolean ok
---@return string|nil error
function Conn:write(msg)
  local ok, bytes = pcall(vim.mpack.encode, msg)
  if not ok then
    return false, 'cannot encode the request: ' .. util.clean(bytes)
  end
  local sent_ok, sent = pcall(vim.fn.chansend, self.chan, bytes)
  if not sent_ok or sent == 0 then
    local why = sent_ok and 'nothing was written' or util.clean(sent)
    self:shut('cannot write to it: ' .. why)
    return false, self.close_reason
  end
  return true
end

local function call_back(fn, ...)
  local ok, err = xpcall(fn, debug.traceback, ...)
  if not ok then
    util.notify('internal error in an answer of the server: ' .. util.clean(err), 'error')
  end
end

--- One message from the server.
function Conn:dispatch(msg)
  if type(msg) ~= 'table' then
    return self:shut('it sent something that is not a MessagePack-RPC message')
  end
  local kind = msg[1]
  if kind == 1 then
    local p = self.pending[msg[2]]
    if not p then
      return -- the answer to a request that timed out or was cancelled
    end
    self.pending[msg[2]] = nil
    if p.timer then
      p.timer:stop()
      p.timer:close()
    end
    local err, result = msg[3], msg[4]
    if err ~= nil and err ~= vim.NIL then
      call_back(p.callback, nil, util.clean(M.error_text(err)), 'server')
    else
      call_back(p.callback, result == nil and vim.NIL or result)
    end
  elseif kind == 2 then
    local method, params = msg[2], msg[3]
    local payload
    if method == 'nvim_exec_lua' and type(params) == 'table' and type(params[2]) == 'table' then
      method, payload = params[2][1], params[2][2] -- the shape a Neovim rpc channel gets
    else
      payload = type(params) == 'table' and params[1] or nil
    end
    if self.on_notify and type(method) == 'string' then
      call_back(self.on_notify, method, payload)
    end
  elseif kind == 0 then
    -- The server asks something: this client answers no requests.
    self:write({ 1, msg[2], { 0, 'method_not_found: the opgraph Neovim client answers no requests' },
      vim.NIL })
  else
    self:shut('it sent a message of unknown type ' .. tostring(kind))
  end
end

--- Bytes from the server (an on_data or on_stdout callback).
---@param data string[]
function Conn:receive(data)
  if self.closed then
    return
  end
  if #data == 1 and data[1] == '' then
    if self.kind == 'socket' then
      self:shut('the server closed it')
    end
    return -- a job's end is reported by on_exit, with its exit code
  end
  local bytes = M.join_chunk(data)
  local pos, n = 1, #bytes
  while pos <= n and not self.closed do
    local ok, msg, npos = pcall(self.unpacker, bytes, pos)
    if not ok then
      return self:shut('it sent bytes that are not MessagePack: ' .. util.clean(msg))
    end
    if msg == nil then
      return -- the rest of the message comes with the next bytes
    end
    pos = npos
    self:dispatch(msg)
  end
end

--- Send a request; `callback` gets the answer (see the top of this file), exactly once, at
--- the latest after `timeout_ms` (none when nil or 0).
---@param method string
---@param params any[]
---@param timeout_ms number|nil
---@param callback fun(result: any, err: string|nil, kind: opgraph.ErrorKind|nil)
---@return integer|nil msgid
function Conn:send(method, params, timeout_ms, callback)
  if self.closed then
    callback(nil, self.close_reason and ('lost the connection to %s (%s)'):format(self.address,
      self.close_reason) or 'not connected', 'lost')
    return nil
  end
  self.next_id = self.next_id >= MAX_MSGID and 0 or self.next_id + 1
  local msgid = self.next_id
  M.sent[method] = (M.sent[method] or 0) + 1
  local p = { method = method, callback = callback }
  self.pending[msgid] = p
  local ok, err = self:write({ 0, msgid, method, params })
  if not ok then
    if self.pending[msgid] == p then
      self.pending[msgid] = nil
      callback(nil, err, 'send')
    end
    return nil
  end
  if timeout_ms and timeout_ms > 0 then
    p.timer = vim.loop.new_timer()
    p.timer:start(timeout_ms, 0, vim.schedule_wrap(function()
      if self.pending[msgid] == p then
        self.pending[msgid] = nil
        p.timer:close()
        call_back(callback, nil, ('no answer to %s within %d ms'):format(method, timeout_ms),
          'timeout')
      end
    end))
  end
  return msgid
end

--- Stop waiting for request `msgid`: its answer, if it comes, is dropped.
---@param msgid integer|nil
function Conn:forget(msgid)
  local p = msgid and self.pending[msgid]
  if p then
    self.pending[msgid] = nil
    if p.timer then
      p.timer:stop()
      p.timer:close()
    end
  end
end

--- A request written as a function call: inside a task it waits without blocking; outside,
--- it blocks (the event loop runs) until the answer, the time limit or CTRL-C.
---@param method string
---@param params any[]
---@param timeout_ms number
---@return any result or nil
---@return string|nil error
---@return opgraph.ErrorKind|nil kind
function Conn:request(method, params, timeout_ms)
  if async.current() then
    return async.await(function(resume)
      self:send(method, params, timeout_ms, resume)
    end)
  end
  local done, result, err, kind = false, nil, nil, nil
  local msgid = self:send(method, params, timeout_ms, function(r, e, k)
    done, result, err, kind = true, r, e, k
  end)
  if done then
    return result, err, kind
  end
  local outcome = async.block(function()
    return done
  end, timeout_ms + 1000)
  if done then
    return result, err, kind
  end
  self:forget(msgid)
  if outcome == 'interrupted' then
    return nil, ('%s: cancelled (CTRL-C)'):format(method), 'cancelled'
  end
  return nil, ('no answer to %s within %d ms'):format(method, timeout_ms), 'timeout'
end

--- Several requests sent at once (the server answers them in order, so its work on one
--- overlaps the decoding of the last): a list of results in the order of `calls`, or nil and
--- the first error. Waits as `request` does.
---@param calls table[] {method, params} each
---@param timeout_ms number for each request
---@return any[]|nil results
---@return string|nil error
---@return opgraph.ErrorKind|nil kind
function Conn:request_many(calls, timeout_ms)
  local results, left = {}, #calls
  local failed, failed_kind = nil, nil
  local finished = nil -- called once when every answer (or the first error) is in
  local sent = {}
  local function answer(i)
    return function(result, err, kind)
      if failed or left == 0 then
        return
      end
      if err then
        failed, failed_kind = err, kind
        for _, msgid in ipairs(sent) do
          self:forget(msgid) -- the rest of the answers are not needed
        end
      else
        results[i] = result
        left = left - 1
      end
      if (failed or left == 0) and finished then
        finished()
      end
    end
  end
  local function send_all()
    for i, c in ipairs(calls) do
      local msgid = self:send(c[1], c[2], timeout_ms, answer(i))
      if msgid then
        table.insert(sent, msgid)
      end
      if failed then
        break
      end
    end
  end
  if #calls == 0 then
    return results
  end
  if async.current() then
    async.await(function(resume)
      finished = resume
      send_all()
      if failed or left == 0 then
        resume()
      end
    end)
  else
    send_all()
    local outcome = async.block(function()
      return failed ~= nil or left == 0
    end, timeout_ms * #calls + 1000)
    if not failed and left > 0 then
      for _, msgid in ipairs(sent) do
        self:forget(msgid)
      end
      if outcome == 'interrupted' then
        return nil, ('%s: cancelled (CTRL-C)'):format(calls[1][1]), 'cancelled'
      end
      return nil, ('no answer to %s within %d ms'):format(calls[1][1], timeout_ms), 'timeout'
    end
  end
  if failed then
    return nil, failed, failed_kind
  end
  return results
end

-- --- opening -----------------------------------------------------------------------------

--- Open a socket to `url` (not yet initialized).
---@param url string
---@param handlers table|nil {on_notify = fn, on_close = fn}
---@return opgraph.Conn|nil
---@return string|nil error
function M.open_socket(url, handlers)
  local mode, address, err = M.parse(url)
  if not mode then
    return nil, err
  end
  local conn = new_conn('socket', url, handlers)
  local ok, chan = pcall(vim.fn.sockconnect, mode, address, {
    on_data = function(_, data)
      conn:receive(data)
    end,
  })
  if not ok or type(chan) ~= 'number' or chan <= 0 then
    conn.closed = true
    return nil, ('cannot connect to %s: %s'):format(url, ok and 'no channel' or util.clean(chan))
  end
  conn.chan = chan
  return conn
end

--- Start `cmd` (a list) as a child that speaks MessagePack-RPC on stdin/stdout.
---@param cmd string[]
---@param handlers table|nil {on_notify = fn, on_close = fn}
---@return opgraph.Conn|nil
---@return string|nil error
function M.open_job(cmd, handlers)
  if type(cmd) ~= 'table' or #cmd == 0 then
    return nil, 'start_cmd must be a non-empty list'
  end
  local conn = new_conn('job', 'stdio: ' .. table.concat(cmd, ' '), handlers)
  local ok, job = pcall(vim.fn.jobstart, cmd, {
    on_stdout = function(_, data)
      conn:receive(data)
    end,
    on_stderr = function(_, data)
      for _, line in ipairs(data or {}) do
        if line ~= '' then
          table.insert(conn.stderr, line)
          if #conn.stderr > STDERR_LINES then
            table.remove(conn.stderr, 1)
          end
        end
      end
    end,
    on_exit = function(_, code)
      conn.exit_code = code
      conn.job = nil -- already gone: nothing to stop
      local detail = ('the server exited with code %d'):format(code)
      local line = conn:last_stderr()
      if line then
        detail = detail .. ': ' .. line
      end
      conn:shut(detail)
    end,
  })
  local name = tostring(cmd[1])
  if not ok then
    return nil, ('cannot start %s: %s'):format(name, util.clean(job))
  end
  if type(job) ~= 'number' or job <= 0 then
    local why = job == -1 and 'not executable' or 'invalid arguments'
    return nil, ('cannot start %s: %s'):format(name, why)
  end
  conn.chan, conn.job = job, job
  return conn
end

return M
