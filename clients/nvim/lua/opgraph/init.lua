-- opgraph for Neovim: values, gradients and diagnostics of an opgraph graph beside the code
-- that built it, live. See :help opgraph.
--
-- This module is the public API; the work is done by
--   config   options                      session  the connection, (re)connecting, checks
--   state    what is shown and fetched    rpc      the wire (MessagePack-RPC)
--   show     :OpgraphShow/:OpgraphClear, fetching, live updates
--   hover    :OpgraphHover's content      float    its floating window
--   render   :OpgraphRender               annotate virtual text and vim.diagnostic
--   health   :checkhealth opgraph         util     messages, numbers, paths
-- Every entry point reports failures with one vim.notify line and never raises.
local async = require('opgraph.async')
local config = require('opgraph.config')
local hover = require('opgraph.hover')
local render = require('opgraph.render')
local session = require('opgraph.session')
local show = require('opgraph.show')
local state = require('opgraph.state')
local util = require('opgraph.util')

local M = {}

local COMPLETE_MS = 500 -- command-line completion asks the server for names this long at most

--- Options: see :help opgraph-options.
---@param opts table|nil
---@return boolean ok
function M.setup(opts)
  local ok, err = config.set(opts)
  if not ok then
    state.error_line('setup: ' .. err)
    return false
  end
  state.highlights()
  return true
end

--- Connect to `url` (default: the `address` option).
---@param url string|nil
---@return boolean ok
function M.connect(url)
  return session.connect(url)
end

--- Start a server as a child job (`cmd`, default the `start_cmd` option) and talk over stdio.
---@param cmd string[]|nil
---@return boolean ok
function M.start(cmd)
  return session.start(cmd)
end

--- Close the connection (a server started by :OpgraphStart is stopped).
function M.disconnect()
  session.disconnect()
end

---@class opgraph.GraphSummary
---@field name string
---@field nodes integer
---@field version integer
---@field subscribers integer

--- List the server's graphs (and say them in one message).
---@return opgraph.GraphSummary[]|nil
function M.graphs()
  local list, err = session.call('graph.list')
  if not list then
    state.error_line(err)
    return nil
  end
  local where = session.status().address
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

--- Show graph `name` beside the code that built it, kept up to date (see :OpgraphShow).
---@param name string
---@return opgraph.Graph|nil
function M.show(name)
  return show.show(name)
end

--- A floating window with the nodes created on the cursor line (see :OpgraphHover).
---@return integer|nil window
function M.hover()
  return hover.hover()
end

--- Draw graph `name` to `file` through the server (see :OpgraphRender).
---@param name string|nil
---@param file string|nil
---@param whole boolean|nil
---@return string|nil path
function M.render(name, file, whole)
  return render.render(name, file, whole)
end

--- Remove the annotations of graph `name` (default: every shown graph) and stop following it.
---@param name string|nil
function M.clear(name)
  show.clear(name)
end

--- Server notifications sent as `nvim_exec_lua` calls of
--- "return require('opgraph').on_notify(...)" arrive here. Never raises.
---@param method string
---@param payload any
function M.on_notify(method, payload)
  local ok, err = pcall(show.on_notify, method, payload)
  if not ok then
    vim.schedule(function()
      util.notify('internal error in a server notification: ' .. util.clean(err), 'error')
    end)
  end
  return nil
end

--- Graph names for command-line completion (never connects, never complains).
---@param arglead string|nil
---@return string[]
function M.complete_graphs(arglead)
  local names = {}
  if session.connected() then
    local list = session.request_within(COMPLETE_MS, 'graph.list')
    if type(list) == 'table' then
      for _, g in ipairs(list) do
        table.insert(names, g.name)
      end
    end
  end
  if #names == 0 then
    names = state.shown_list()
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

---@class opgraph.Status
---@field connection table what rpc.status() says
---@field shown string[]
---@field versions table<string, integer>
---@field waiting string[]

--- What is connected and shown (for statuslines and tests).
---@return opgraph.Status
function M.status()
  local versions = {}
  for name, g in pairs(state.graphs) do
    versions[name] = g.version
  end
  return {
    connection = session.status(),
    shown = state.shown_list(),
    versions = versions,
    waiting = util.sorted_keys(state.waiting),
  }
end

--- `fn` as a user command: it runs as a task, so its requests do not block the editor; the
--- command waits for it up to the wait_ms option, CTRL-C cancelling, then lets it finish in
--- the background. Errors become one notify line, never a traceback.
---@param fn function
---@param what string
---@return function
local function command(fn, what)
  return function(...)
    local task = async.run(what, fn, ...)
    if task.done then
      return task:value()
    end
    local outcome = async.block(function()
      return task.done
    end, config.get().wait_ms)
    if outcome == 'interrupted' then
      task:cancel()
      util.notify(('%s cancelled (CTRL-C)'):format(what), 'warn')
    elseif outcome == 'timeout' then
      util.notify(('%s is still waiting for the server; it goes on in the background')
        :format(what))
    end
    return task:value()
  end
end

-- The entry points of the user commands (plugin/opgraph.lua).
M.commands = {
  connect = command(M.connect, ':OpgraphConnect'),
  start = command(M.start, ':OpgraphStart'),
  disconnect = command(M.disconnect, ':OpgraphDisconnect'),
  graphs = command(M.graphs, ':OpgraphGraphs'),
  show = command(M.show, ':OpgraphShow'),
  hover = command(M.hover, ':OpgraphHover'),
  render = command(M.render, ':OpgraphRender'),
  clear = command(M.clear, ':OpgraphClear'),
}

return M
