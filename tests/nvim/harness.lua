-- Runs inside a headless Neovim started by test_nvim.py: drives the plugin through its user
-- commands and writes what it saw (extmarks, diagnostics, notifications, windows) to
-- $OPGRAPH_TEST_DIR/results.json. The Python side makes the assertions.
--
-- Phases that need the test driver (publish again, stop the server, ...) are requests through
-- files: this script writes NAME.req and waits (vim.wait, so the event loop and the plugin's
-- notifications keep running) until the driver writes NAME.ok.

local dir = assert(os.getenv('OPGRAPH_TEST_DIR'), 'OPGRAPH_TEST_DIR is not set')
local case = assert(os.getenv('OPGRAPH_TEST_CASE'), 'OPGRAPH_TEST_CASE is not set')
local URL = os.getenv('OPGRAPH_URL')
local SCRIPT = os.getenv('OPGRAPH_SCRIPT')
local LINES = vim.json.decode(os.getenv('OPGRAPH_LINES') or '{}')
local WAIT_MS = 30000

local R = {
  case = case,
  notifications = {},
  commands = {},
  snapshots = {},
  events = {},
  failure = vim.NIL,
}
local notes = R.notifications

-- Every message the plugin shows goes through vim.notify: record them.
vim.notify = function(message, level)
  table.insert(notes, { message = tostring(message), level = level or vim.log.levels.INFO })
end

local function since(n)
  local out = {}
  for i = n + 1, #notes do
    table.insert(out, notes[i])
  end
  return out
end

--- Run an Ex command as a user would; record whether it raised and what it notified.
local function command(cmd)
  local before = #notes
  local ok, err = pcall(vim.cmd, cmd)
  local entry = {
    command = cmd,
    ok = ok,
    error = ok and vim.NIL or tostring(err),
    notifications = since(before),
  }
  table.insert(R.commands, entry)
  return entry
end

--- Every extmark of the plugin's namespaces in `buf`: line (1-based), namespace, text.
local function marks(buf)
  local out = {}
  for name, ns in pairs(vim.api.nvim_get_namespaces()) do
    if type(name) == 'string' and name:match('^opgraph%.values%.') then
      for _, m in ipairs(vim.api.nvim_buf_get_extmarks(buf, ns, 0, -1, { details = true })) do
        local text = {}
        for _, chunk in ipairs(m[4].virt_text or {}) do
          table.insert(text, chunk[1])
        end
        table.insert(out, { line = m[2] + 1, namespace = name, text = table.concat(text) })
      end
    end
  end
  table.sort(out, function(a, b)
    return a.line < b.line
  end)
  return out
end

local function diagnostics(buf)
  local out = {}
  for _, d in ipairs(vim.diagnostic.get(buf)) do
    table.insert(out, {
      line = d.lnum + 1,
      severity = d.severity,
      code = d.code or vim.NIL,
      source = d.source or vim.NIL,
      message = d.message,
    })
  end
  return out
end

local function snapshot(name)
  local buf = vim.api.nvim_get_current_buf()
  R.snapshots[name] = { marks = marks(buf), diagnostics = diagnostics(buf) }
  return R.snapshots[name]
end

local function mark_text()
  return vim.inspect(marks(vim.api.nvim_get_current_buf()))
end

--- Ask the test driver to do `name`, and wait until it has.
local function ask(name)
  vim.fn.writefile({}, dir .. '/' .. name .. '.req')
  local done = vim.wait(WAIT_MS * 2, function()
    return vim.fn.filereadable(dir .. '/' .. name .. '.ok') == 1
  end, 20)
  if not done then
    error('the test driver did not do ' .. name)
  end
end

--- Wait (running the event loop) until `pred()`; records the outcome as event `what`.
local function wait_for(what, pred)
  local ok = vim.wait(WAIT_MS, pred, 20)
  R.events[what] = ok
  return ok
end

local function hover_window()
  local win = require('opgraph.hover').window()
  if not win then
    return vim.NIL
  end
  local config = vim.api.nvim_win_get_config(win)
  return {
    relative = config.relative,
    lines = vim.api.nvim_buf_get_lines(vim.api.nvim_win_get_buf(win), 0, -1, false),
  }
end

local cases = {}

-- Show a published graph, see it change when the script publishes again, hover, render, clear.
function cases.live()
  require('opgraph').setup({ address = URL, debounce_ms = 50, poll_ms = 200 })
  vim.cmd('edit ' .. vim.fn.fnameescape(SCRIPT))
  command('OpgraphConnect ' .. URL)
  command('OpgraphShow neurons')
  snapshot('first')
  command('OpgraphShow no-such-graph')

  local before = mark_text()
  ask('republish')
  -- No command here: the annotations must change by themselves.
  wait_for('updated', function()
    return mark_text() ~= before
  end)
  snapshot('second')

  vim.api.nvim_win_set_cursor(0, { LINES.o, 0 })
  command('OpgraphHover')
  R.hover = hover_window()
  require('opgraph.hover').close()

  command('OpgraphRender neurons ' .. vim.fn.fnameescape(dir .. '/around.svg'))
  command('OpgraphClear')
  snapshot('cleared')
end

-- Lose the server: noticed, every command says so in one line, Neovim goes on; then recover.
function cases.down()
  require('opgraph').setup({ address = URL, debounce_ms = 50, poll_ms = 200 })
  vim.cmd('edit ' .. vim.fn.fnameescape(SCRIPT))
  command('OpgraphConnect ' .. URL)
  command('OpgraphShow neurons')
  snapshot('before')

  local before = #notes
  ask('stop_server')
  wait_for('noticed', function()
    return not require('opgraph').status().connection.connected
  end)
  R.lost = since(before)

  vim.api.nvim_win_set_cursor(0, { LINES.q, 0 })
  R.down = {
    command('OpgraphGraphs'),
    command('OpgraphShow neurons'),
    command('OpgraphHover'),
    command('OpgraphRender neurons'),
    command('OpgraphConnect'),
  }

  -- Still usable: edit another buffer, evaluate an expression.
  local script_buf = vim.api.nvim_get_current_buf()
  vim.cmd('enew')
  vim.api.nvim_buf_set_lines(0, 0, -1, false, { 'still', 'usable' })
  R.usable = {
    eval = vim.fn.eval('1 + 1'),
    lines = vim.api.nvim_buf_get_lines(0, 0, -1, false),
  }
  vim.cmd('bwipeout!')
  vim.api.nvim_set_current_buf(script_buf)
  snapshot('down')

  ask('restart_server')
  command('OpgraphConnect ' .. URL)
  local stale = mark_text()
  ask('publish')
  wait_for('recovered', function()
    return mark_text() ~= stale
  end)
  snapshot('recovered')
end

-- :OpgraphStart runs `opgraph serve --stdio` (from PATH) and talks to it over its pipes.
function cases.stdio()
  -- (a server starting on a loaded machine can take more than the default second to answer)
  require('opgraph').setup({ wait_ms = 60000 })
  command('OpgraphStart')
  command('OpgraphGraphs')
  vim.cmd('edit ' .. vim.fn.fnameescape(os.getenv('OPGRAPH_DEMO')))
  command('OpgraphShow demo')
  snapshot('demo')
  command('OpgraphStart /nonexistent/opgraph-server')
  command('OpgraphGraphs')
end

-- A server that accepts connections and never answers: each request meets its time limit,
-- CTRL-C cancels a command that waits, a command that waits too long goes on in the background.
function cases.silent()
  local silent = os.getenv('OPGRAPH_SILENT_URL')
  require('opgraph').setup({ address = silent, timeout_ms = 300, wait_ms = 60000 })
  command('OpgraphConnect ' .. silent)
  R.usable = { eval = vim.fn.eval('1 + 1') }

  -- CTRL-C while :OpgraphConnect waits (the time limit is far away).
  require('opgraph').setup({ address = silent, timeout_ms = 120000, wait_ms = 120000 })
  local timer = vim.loop.new_timer()
  timer:start(300, 0, function()
    vim.api.nvim_input('<C-c>')
  end)
  command('OpgraphConnect ' .. silent)
  timer:close()
  R.after_cancel = require('opgraph').status().connection
  ask('check_closed')

  -- A command that waits longer than wait_ms gives the editor back; its error comes later.
  require('opgraph').setup({ address = silent, timeout_ms = 400, wait_ms = 50 })
  local before = #notes
  command('OpgraphConnect ' .. silent)
  wait_for('background_error', function()
    for i = before + 1, #notes do
      if notes[i].level == vim.log.levels.ERROR then
        return true
      end
    end
    return false
  end)
  R.background = since(before)
end

-- :checkhealth opgraph: nothing at the address, then a reachable server not connected yet,
-- then connected.
function cases.health()
  local function health()
    vim.cmd('checkhealth opgraph')
    local lines = vim.api.nvim_buf_get_lines(0, 0, -1, false)
    vim.cmd('tabclose')
    return lines
  end
  require('opgraph').setup({ address = os.getenv('OPGRAPH_DEAD_URL') })
  R.health_dead = health()
  require('opgraph').setup({ address = URL })
  R.health_reachable = health()
  command('OpgraphConnect ' .. URL)
  R.health_connected = health()
end

-- The server restarts and counts versions again from the start: the new, lower, version is
-- drawn, not kept out as "older" than what was drawn.
function cases.restart()
  require('opgraph').setup({ address = URL, debounce_ms = 50, poll_ms = 200 })
  vim.cmd('edit ' .. vim.fn.fnameescape(SCRIPT))
  command('OpgraphConnect ' .. URL)
  command('OpgraphShow neurons')
  snapshot('before')
  R.version_before = require('opgraph').status().versions.neurons
  local before = #notes
  ask('restart_server')
  wait_for('noticed', function()
    return not require('opgraph').status().connection.connected
  end)
  command('OpgraphConnect ' .. URL)
  snapshot('reconnected') -- (the new server does not have the graph yet)
  R.reconnect_notes = since(before)
  local stale = mark_text()
  ask('publish')
  wait_for('redrawn', function()
    return mark_text() ~= stale
  end)
  snapshot('after')
  R.version_after = require('opgraph').status().versions.neurons
end

-- The server is killed and started again on its store, on the same port: with no command,
-- the plugin reconnects, subscribes again and redraws from the new server; later changes
-- still arrive by themselves.
function cases.durable()
  require('opgraph').setup({ address = URL, debounce_ms = 50, poll_ms = 200 })
  vim.cmd('edit ' .. vim.fn.fnameescape(SCRIPT))
  command('OpgraphShow neurons')
  snapshot('before')
  R.identity_before = require('opgraph').status().connection.identity
  local before = #notes
  local drawn = mark_text()
  ask('kill_restart_publish') -- (killed, started on its data, the graph published again)
  wait_for('redrawn', function()
    return require('opgraph').status().connection.connected and mark_text() ~= drawn
  end)
  snapshot('after_restart')
  R.identity_after = require('opgraph').status().connection.identity
  R.restart_notes = since(before)
  drawn = mark_text()
  ask('publish_again')
  wait_for('followed', function()
    return mark_text() ~= drawn
  end)
  snapshot('followed')
end

-- :OpgraphShow before the graph exists: it waits, and draws the graph once it is published.
function cases.waiting()
  require('opgraph').setup({ address = URL, debounce_ms = 50, poll_ms = 100 })
  vim.cmd('edit ' .. vim.fn.fnameescape(SCRIPT))
  command('OpgraphShow neurons')
  R.status_waiting = require('opgraph').status()
  local before = #notes
  ask('publish')
  wait_for('appeared', function()
    return #marks(vim.api.nvim_get_current_buf()) > 0
  end)
  vim.wait(300) -- the announcement follows the drawing; nothing else may come
  R.appeared = since(before)
  snapshot('appeared')
  R.status_after = require('opgraph').status()
end

-- A line that made thousands of nodes: one summary beside it, and the hover sums it up.
function cases.crowded()
  require('opgraph').setup({ address = URL })
  vim.cmd('edit ' .. vim.fn.fnameescape(os.getenv('OPGRAPH_CROWDED')))
  command('OpgraphShow crowded')
  snapshot('shown')
  vim.api.nvim_win_set_cursor(0, { tonumber(os.getenv('OPGRAPH_CROWDED_LINE')), 0 })
  command('OpgraphHover')
  R.hover = hover_window()
  require('opgraph.hover').close()
  -- Without the server's summaries (a server before graph.aggregate): the last nodes, after
  -- "+N more", as before.
  require('opgraph.state').graphs.crowded.line_stats = nil
  require('opgraph.show').redraw('crowded')
  snapshot('listed')
end

--- In the hover window: put the cursor on the first line starting with `prefix`, type `key`
--- as a user would, and wait until the window shows something else.
local function press(prefix, key, what)
  local win = assert(require('opgraph.hover').window(), 'no hover window')
  local buf = vim.api.nvim_win_get_buf(win)
  local lines = vim.api.nvim_buf_get_lines(buf, 0, -1, false)
  local row = nil
  for i, line in ipairs(lines) do
    if prefix == nil or vim.startswith(line, prefix) then
      row = i
      break
    end
  end
  if not row then
    error(('no line starting with %q in the hover window: %s'):format(prefix, vim.inspect(lines)))
  end
  vim.api.nvim_set_current_win(win)
  vim.api.nvim_win_set_cursor(win, { row, 0 })
  local before = table.concat(lines, '\n')
  vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes(key, true, false, true), 'x', false)
  wait_for(what, function()
    return table.concat(vim.api.nvim_buf_get_lines(buf, 0, -1, false), '\n') ~= before
  end)
  return hover_window()
end

-- The moons training step: the scores line (64,000 nodes) shows one summary; the hover sums it
-- up and drills down by call and by position; what it all cost, in requests.
function cases.moons()
  local rpc = require('opgraph.rpc')
  require('opgraph').setup({ address = URL, wait_ms = 60000 })
  vim.cmd('edit ' .. vim.fn.fnameescape(SCRIPT))
  command('OpgraphShow moons')
  snapshot('shown')
  R.sent_show = vim.deepcopy(rpc.sent)
  vim.api.nvim_win_set_cursor(0, { LINES.scores, 0 })
  command('OpgraphHover')
  R.hover = hover_window()
  command('OpgraphHover') -- (again: into the window)
  R.entered = vim.api.nvim_get_current_win() == require('opgraph.hover').window()
  R.call3 = press('  call 3 ', '<CR>', 'call 3')
  R.back = press(nil, '<BS>', 'back')
  R.all_calls = press('  … ', '<CR>', 'all calls') -- (the first "… N more" row)
  R.back2 = press(nil, '<BS>', 'back again')
  local lines = R.back2.lines
  local more = {}
  for _, line in ipairs(lines) do
    if vim.startswith(line, '  … ') then
      table.insert(more, line)
    end
  end
  R.more_rows = more
  -- the positions' "… more" row is the second one
  local win = require('opgraph.hover').window()
  local buf = vim.api.nvim_win_get_buf(win)
  local n = 0
  for i, line in ipairs(vim.api.nvim_buf_get_lines(buf, 0, -1, false)) do
    if vim.startswith(line, '  … ') then
      n = n + 1
      if n == 2 then
        vim.api.nvim_win_set_cursor(win, { i, 0 })
      end
    end
  end
  local before = table.concat(vim.api.nvim_buf_get_lines(buf, 0, -1, false), '\n')
  vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes('<CR>', true, false, true), 'x', false)
  wait_for('every position', function()
    return table.concat(vim.api.nvim_buf_get_lines(buf, 0, -1, false), '\n') ~= before
  end)
  R.every_position = hover_window()
  R.last_position = press(('  %d '):format(tonumber(os.getenv('OPGRAPH_PERIOD')) - 1), '<CR>',
    'last position')
  require('opgraph.hover').close()
  R.sent_all = vim.deepcopy(rpc.sent)
  -- :OpgraphRender on the scores line: the neighbourhood of what the line computes last.
  vim.api.nvim_win_set_cursor(0, { LINES.scores, 0 })
  command('OpgraphRender moons ' .. vim.fn.fnameescape(dir .. '/scores.svg'))
  -- A line of one node, in a graph read only in part: described as before.
  vim.api.nvim_win_set_cursor(0, { LINES.total, 0 })
  command('OpgraphHover')
  R.hover_total = hover_window()
  require('opgraph.hover').close()
  -- Pushed diagnostics naming a node the plugin did not read (the graph was read in part):
  -- it reads the version again rather than lose the diagnostic's line.
  local g = require('opgraph.state').graphs.moons
  local before = rpc.sent['graph.aggregate']
  local unread = nil
  for id = 0, 70000 do
    if not g.by_id[id] then
      unread = id
      break
    end
  end
  require('opgraph').on_notify('graph.diagnostics', { graph = 'moons', version = g.version,
    diagnostics = { { node = unread, code = 'x', severity = 'warning', message = 'm' } } })
  wait_for('read again', function()
    return rpc.sent['graph.aggregate'] > before and require('opgraph.state').graphs.moons ~= g
  end)
  R.read_again = rpc.sent['graph.aggregate'] - before
end

-- A big graph whose only source line made all its sourced nodes: nothing of it is read but
-- that line's summary (and its diagnostics), and it is still said where its nodes come from.
function cases.chain()
  require('opgraph').setup({ address = URL })
  vim.cmd('edit ' .. vim.fn.fnameescape(os.getenv('OPGRAPH_OTHER')))
  command('OpgraphShow acc')
  vim.cmd('edit ' .. vim.fn.fnameescape(SCRIPT))
  snapshot('chain')
  R.sent = vim.deepcopy(require('opgraph.rpc').sent)
end

-- The wire and the helpers, against a real server: strings with newlines and NUL bytes arrive
-- whole, graphs of several pages are fetched whole, the leaves found in the fetched graph are
-- the server's, and which server a connection is to.
function cases.units()
  local session = require('opgraph.session')
  local state = require('opgraph.state')
  require('opgraph').setup({ address = URL })
  require('opgraph.show').FULL_FETCH = math.huge -- (read the 11,999 nodes whole, page by page)
  command('OpgraphConnect ' .. URL)
  command('OpgraphShow odd')
  local odd = state.graphs.odd
  R.odd = { count = #odd.nodes, labels = {} }
  local labelled = {}
  for _, node in ipairs(odd.nodes) do
    if node.label ~= '' then
      table.insert(R.odd.labels, node.label)
      table.insert(labelled, node.id)
    end
  end
  local got = session.request('node.get', 'odd', labelled)
  R.odd.node_get = {}
  for _, node in ipairs(got.nodes) do
    table.insert(R.odd.node_get, node.label)
  end

  command('OpgraphShow neurons')
  local hover = require('opgraph.hover')
  local g = state.graphs.neurons
  R.leaves = {}
  for _, node in ipairs(g.nodes) do
    local an = session.request('graph.analyze', 'neurons', { node = node.id, diagnostics = false })
    R.leaves[tostring(node.id)] = {
      here = hover.leaves_of(g, node.id),
      server = an.influences[tostring(node.id)],
    }
  end

  R.identity = {
    instance = session.identity_of({ name = 'opgraph', instance = 'abc' }, 7),
    number = session.identity_of({ instance = 12 }, 7),
    none = session.identity_of({ name = 'opgraph' }, 7),
    empty = session.identity_of({ instance = '' }, 8),
    nil_value = session.identity_of({ instance = vim.NIL }, 9),
    current = session.identity(),
    status = session.status().identity,
  }
  local rpc = require('opgraph.rpc')
  R.error_text = {
    rpc.error_text({ 1, 'unknown_graph: no graph named x' }),
    rpc.error_text({ code = -32010, name = 'unknown_graph', message = 'no graph', data = vim.NIL }),
    rpc.error_text('plain words'),
  }
  R.join_chunk = rpc.join_chunk({ 'a\nb', 'c', '' }) == 'a\0b\nc\n'
end

local ok, err = xpcall(function()
  local run = cases[case]
  if not run then
    error('no test case named ' .. case)
  end
  run()
end, debug.traceback)
if not ok then
  R.failure = tostring(err)
end
R.errmsg = vim.v.errmsg
local file = io.open(dir .. '/results.json', 'w')
file:write(vim.json.encode(R))
file:close()
vim.cmd('qall!')
