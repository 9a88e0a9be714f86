-- The connection to an opgraph server: a socket (sockconnect) or a child job (jobstart), both
-- with Neovim's own MessagePack-RPC. Requests never throw: they return result, or nil and a
-- one-line error. A connection that goes away is noticed (a request fails, the child exits,
-- or the periodic check finds the channel gone) and reported once through `on_lost`.
local util = require('opgraph.util')

local M = {}

local S = {
  chan = nil, -- the RPC channel, while connected
  kind = nil, -- 'socket' or 'job'
  address = nil, -- the URL, or 'stdio: <command>'
  url = nil, -- the last socket URL connected to (for reconnecting)
  last_kind = nil, -- kind of the last connection, kept after it is lost
  job = nil,
  info = nil, -- what initialize returned
  stderr = {}, -- last lines the child wrote to stderr
  on_lost = nil,
}

local STDERR_LINES = 20

--- `tcp://host:port` or `unix:///path` (also `host:port` and `/path`) to sockconnect's
--- mode and address.
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

function M.set_on_lost(fn)
  S.on_lost = fn
end

function M.connected()
  return S.chan ~= nil
end

--- A copy of the connection state, for :OpgraphGraphs and for tests.
function M.status()
  return {
    connected = S.chan ~= nil,
    kind = S.kind,
    address = S.address,
    last_kind = S.last_kind,
    url = S.url,
    channel = S.chan,
    server = S.info and { name = S.info.name, version = S.info.version, protocol = S.info.protocol }
      or nil,
  }
end

--- The last socket URL used, for reconnecting; nil when the last connection was a child job.
function M.last_url()
  if S.last_kind == 'job' then
    return nil
  end
  return S.url
end

function M.last_kind()
  return S.last_kind
end

local function last_stderr()
  for i = #S.stderr, 1, -1 do
    local line = vim.trim(S.stderr[i])
    if line ~= '' then
      return line
    end
  end
  return nil
end

--- Forget the connection and report it lost (once); `quiet` when the caller reports it.
local function lost(reason, quiet)
  if not S.chan then
    return
  end
  local address = S.address
  local job = S.job
  S.chan, S.job, S.info = nil, nil, nil
  if job then
    pcall(vim.fn.jobstop, job)
  end
  local message = ('lost the connection to %s'):format(address)
  if reason and reason ~= '' then
    message = message .. ' (' .. reason .. ')'
  end
  if S.on_lost then
    S.on_lost(message, quiet)
  end
  return message
end

--- True while the channel still exists on Neovim's side.
function M.alive()
  if not S.chan then
    return false
  end
  local ok, info = pcall(vim.api.nvim_get_chan_info, S.chan)
  return ok and type(info) == 'table' and info.id ~= nil
end

--- Look for a vanished channel; reports it through on_lost. Returns whether still connected.
function M.check()
  if S.chan and not M.alive() then
    lost('the server closed it')
  end
  return S.chan ~= nil
end

--- Send one request. Returns the result (msgpack nil arrives as vim.NIL), or nil and a
--- one-line error such as "unknown_graph: no graph named 'x'".
function M.request(method, ...)
  if not S.chan then
    return nil, 'not connected'
  end
  local ok, result = pcall(vim.rpcrequest, S.chan, method, ...)
  if ok then
    if result == nil then
      result = vim.NIL -- a nil result (msgpack nil) is still a success
    end
    return result
  end
  local message = util.clean(result)
  if not M.alive() or message:match('^Invalid channel') or message:match('was closed') then
    return nil, lost(S.job and last_stderr() or nil, true)
  end
  return nil, message
end

local function initialize(token)
  local options = { client = { name = 'nvim' }, neovim = true }
  if token then
    options.token = token
  end
  local ok, result = pcall(vim.rpcrequest, S.chan, 'initialize', options)
  if not ok then
    return nil, util.clean(result)
  end
  if type(result) ~= 'table' then
    return nil, 'the server answered initialize with ' .. vim.inspect(result)
  end
  return result
end

--- Close the connection (and stop a server started by `start`), without reporting it lost.
function M.close()
  local chan, job = S.chan, S.job
  S.chan, S.job, S.info = nil, nil, nil
  if job then
    pcall(vim.fn.jobstop, job)
  elseif chan then
    pcall(vim.fn.chanclose, chan)
  end
  return chan ~= nil
end

--- Connect to a server at `url`. Returns the initialize result, or nil and a one-line error.
function M.connect(url, token)
  M.close()
  local mode, address, err = M.parse(url)
  if not mode then
    return nil, err
  end
  S.url, S.last_kind = url, 'socket' -- what automatic reconnection retries, even after a failure
  local ok, chan = pcall(vim.fn.sockconnect, mode, address, { rpc = true })
  if not ok or type(chan) ~= 'number' or chan <= 0 then
    return nil, ('cannot connect to %s: %s'):format(url, ok and 'no channel' or util.clean(chan))
  end
  S.chan, S.kind, S.address = chan, 'socket', url
  local info, ierr = initialize(token)
  if not info then
    M.close()
    return nil, ('%s: %s'):format(url, ierr)
  end
  S.info = info
  return info
end

--- Start `cmd` (a list) as a child speaking MessagePack-RPC on stdin/stdout, and initialize.
function M.start(cmd, token)
  M.close()
  if type(cmd) ~= 'table' or #cmd == 0 then
    return nil, 'start_cmd must be a non-empty list'
  end
  S.stderr = {}
  local starting, exit_code = true, nil
  local ok, job = pcall(vim.fn.jobstart, cmd, {
    rpc = true,
    on_stderr = function(_, data)
      for _, line in ipairs(data or {}) do
        if line ~= '' then
          table.insert(S.stderr, line)
          if #S.stderr > STDERR_LINES then
            table.remove(S.stderr, 1)
          end
        end
      end
    end,
    on_exit = function(id, code)
      exit_code = code
      if not starting and S.job ~= nil and S.job == id then
        local detail = ('the server exited with code %d'):format(code)
        local line = last_stderr()
        if line then
          detail = detail .. ': ' .. line
        end
        S.job = nil -- already gone: nothing to stop
        lost(detail)
      end
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
  S.chan, S.job, S.kind, S.last_kind = job, job, 'job', 'job'
  S.address = 'stdio: ' .. table.concat(cmd, ' ')
  local info, ierr = initialize(token)
  if not info then
    -- Let the child's last words (stderr, exit code) arrive before saying what went wrong.
    vim.wait(1000, function()
      return exit_code ~= nil
    end, 20)
    local address = S.address
    S.job = nil
    M.close()
    pcall(vim.fn.jobstop, job)
    local why = exit_code and ('the server exited with code %d'):format(exit_code) or ierr
    local line = last_stderr()
    return nil, ('%s: %s%s'):format(address, why, line and (': ' .. line) or '')
  end
  starting = false
  S.info = info
  return info
end

return M
