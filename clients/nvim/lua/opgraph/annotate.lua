-- Values and gradients as virtual text on the lines that created the nodes, and the graph's
-- diagnostics in vim.diagnostic. One extmark namespace and one diagnostic namespace per graph,
-- so graphs are drawn and cleared independently.
local util = require('opgraph.util')

local api = vim.api
local M = {}

local SEVERITY = {
  error = vim.diagnostic.severity.ERROR,
  warning = vim.diagnostic.severity.WARN,
  info = vim.diagnostic.severity.INFO,
  hint = vim.diagnostic.severity.HINT,
}

local DIAG_HL = {
  [vim.diagnostic.severity.ERROR] = 'DiagnosticError',
  [vim.diagnostic.severity.WARN] = 'DiagnosticWarn',
  [vim.diagnostic.severity.INFO] = 'DiagnosticInfo',
  [vim.diagnostic.severity.HINT] = 'DiagnosticHint',
}

local configured = {}

---@class opgraph.Node a node record of graph.nodes / node.get
---@field id integer
---@field op string|userdata the op's name; vim.NIL for a leaf
---@field symbol string|userdata
---@field inputs integer[]
---@field data number
---@field grad number
---@field label string
---@field source table|userdata [file, line], or vim.NIL
---@field _path string|nil the source file, resolved (set by index)
---@field _line integer|nil the source line (set by index)

---@class opgraph.Diagnostic
---@field code string
---@field severity 'error'|'warning'|'info'|'hint'
---@field node integer|userdata
---@field message string

---@class opgraph.Graph the fetched state of one graph, what the plugin draws from
---@field name string
---@field version integer
---@field server string|nil which server it was fetched from (session.identity)
---@field nodes opgraph.Node[]
---@field by_id table<integer, opgraph.Node>
---@field files table<string, table<integer, integer[]>> realpath -> line -> node ids
---@field diagnostics opgraph.Diagnostic[]
---@field diag_by_node table<integer, opgraph.Diagnostic[]>
---@field line_stats table<string, table<integer, opgraph.LineStats>>|nil realpath -> line ->
---  graph.aggregate's summary of the line (nil when the server gave none)

--- The extmark namespace of graph `graph`'s virtual text.
---@param graph string
---@return integer
function M.values_ns(graph)
  return api.nvim_create_namespace('opgraph.values.' .. graph)
end

--- The vim.diagnostic namespace of graph `graph` (configured with `diagnostic_config`).
---@param graph string
---@param diagnostic_config table|nil
---@return integer
function M.diagnostics_ns(graph, diagnostic_config)
  local ns = api.nvim_create_namespace('opgraph.diagnostics.' .. graph)
  if diagnostic_config and configured[ns] ~= diagnostic_config then
    vim.diagnostic.config(diagnostic_config, ns)
    configured[ns] = diagnostic_config
  end
  return ns
end

--- Define the Opgraph* highlight groups (as links, so colour schemes may override them).
function M.define_highlights()
  vim.cmd([[
    highlight default link OpgraphLabel Identifier
    highlight default link OpgraphData Number
    highlight default link OpgraphGrad Special
    highlight default link OpgraphPunct Comment
    highlight default link OpgraphTitle Title
  ]])
end

--- Turn the node records of a graph (from graph.nodes) into the state the plugin draws from:
--- nodes by id, and for every source file (resolved path) the node ids of each line.
---@param name string
---@param version integer
---@param nodes opgraph.Node[]
---@param diagnostics opgraph.Diagnostic[]|nil
---@param line_stats table|nil the lines' summaries (see index_lines)
---@return opgraph.Graph
function M.index(name, version, nodes, diagnostics, line_stats)
  local g = {
    name = name,
    version = version,
    nodes = nodes,
    by_id = {},
    files = {}, -- realpath -> { [line] = { id, ... } }
    diagnostics = {},
    line_stats = line_stats,
  }
  local resolved = {}
  for _, node in ipairs(nodes) do
    g.by_id[node.id] = node
    local source = util.value(node.source)
    if type(source) == 'table' and type(source[1]) == 'string' and type(source[2]) == 'number' then
      local file = source[1]
      if resolved[file] == nil then
        resolved[file] = util.realpath(file) or false
      end
      local path = resolved[file]
      if path then
        node._path, node._line = path, source[2]
        local lines = g.files[path] or {}
        g.files[path] = lines
        lines[source[2]] = lines[source[2]] or {}
        table.insert(lines[source[2]], node.id)
      end
    end
  end
  M.set_diagnostics(g, diagnostics)
  return g
end

--- Replace the diagnostics of graph state `g` (a list of {code, severity, node, message}).
---@param g opgraph.Graph
---@param diagnostics opgraph.Diagnostic[]|nil
function M.set_diagnostics(g, diagnostics)
  g.diagnostics = {}
  g.diag_by_node = {}
  for _, d in ipairs(type(diagnostics) == 'table' and diagnostics or {}) do
    if type(d) == 'table' then
      table.insert(g.diagnostics, d)
      local id = util.value(d.node)
      if id ~= nil then
        g.diag_by_node[id] = g.diag_by_node[id] or {}
        table.insert(g.diag_by_node[id], d)
      end
    end
  end
end

--- A short name for a node: its label, else an expression of its inputs' names (x1*w1),
--- else op#id.
---@param g {by_id: table<integer, opgraph.Node>}
---@param node opgraph.Node
---@param depth integer|nil how many levels of inputs to name (2)
---@return string
function M.node_name(g, node, depth)
  depth = depth or 2
  local label = util.value(node.label)
  if type(label) == 'string' and label ~= '' then
    return label
  end
  local op = util.value(node.op)
  if op == nil then
    return '#' .. tostring(node.id)
  end
  if depth <= 0 then
    return '#' .. tostring(node.id)
  end
  local inputs = type(node.inputs) == 'table' and node.inputs or {}
  local symbol = util.value(node.symbol)
  local parts = {}
  for i, id in ipairs(inputs) do
    local input = g.by_id[id]
    parts[i] = input and M.node_name(g, input, depth - 1) or ('#' .. tostring(id))
  end
  local name
  if #parts == 2 and type(symbol) == 'string' and symbol ~= '' and not symbol:match('^%a') then
    name = parts[1] .. symbol .. parts[2]
  else
    name = op .. '(' .. table.concat(parts, ', ') .. ')'
  end
  if #name > 24 then
    name = op .. '#' .. tostring(node.id)
  end
  return name
end

--- The line groups of a `graph.aggregate` answer by line (`by = 'line'`), by resolved path and
--- line: {file (as recorded), line, stats}.
---@param agg table|nil
---@return table<string, table<integer, opgraph.LineStats>>
function M.index_lines(agg)
  local out = {}
  local groups = type(agg) == 'table' and util.value(agg.groups) or nil
  if type(groups) ~= 'table' then
    return out
  end
  local resolved = {}
  for _, group in ipairs(groups) do
    local key = type(group) == 'table' and util.value(group.key) or nil
    if type(key) == 'table' and type(key.file) == 'string' and type(key.line) == 'number'
      and type(group.stats) == 'table' then
      if resolved[key.file] == nil then
        resolved[key.file] = util.realpath(key.file) or false
      end
      local path = resolved[key.file]
      if path then
        out[path] = out[path] or {}
        out[path][key.line] = { file = key.file, line = key.line, stats = group.stats }
      end
    end
  end
  return out
end

---@class opgraph.LineStats one line's group of graph.aggregate
---@field file string the file as the nodes recorded it (what graph.aggregate's `line` takes)
---@field line integer
---@field stats table graph.aggregate's statistics of the line's nodes

--- "30400 mul, 30400 add, 3200 relu, 2 leaves": the ops of aggregate statistics `stats`,
--- biggest first (at most `most` of them), then the leaves.
---@param stats table
---@param most integer|nil
---@return string
function M.ops_text(stats, most)
  local ops = {}
  local by_op = util.value(stats.ops)
  for op, n in pairs(type(by_op) == 'table' and by_op or {}) do
    table.insert(ops, { tostring(op), tonumber(n) or 0 })
  end
  table.sort(ops, function(a, b)
    if a[2] ~= b[2] then
      return a[2] > b[2]
    end
    return a[1] < b[1]
  end)
  local parts = {}
  for i, o in ipairs(ops) do
    if most and i > most then
      table.insert(parts, ('%d more ops'):format(#ops - most))
      break
    end
    table.insert(parts, ('%d %s'):format(o[2], o[1]))
  end
  local leaves = tonumber(util.value(stats.leaves)) or 0
  if leaves > 0 then
    table.insert(parts, ('%d lea%s'):format(leaves, leaves == 1 and 'f' or 'ves'))
  end
  return table.concat(parts, ', ')
end

--- "-5.203…3.689 mean 0.04284" for a {min, mean, max} of aggregate statistics, or nil.
---@param dist table|nil
---@param precision integer
---@return string|nil range
---@return string|nil mean
function M.range_text(dist, precision)
  dist = util.value(dist)
  if type(dist) ~= 'table' then
    return nil
  end
  local lo, hi = util.num(dist.min, precision), util.num(dist.max, precision)
  return (lo == hi and lo or (lo .. '…' .. hi)), util.num(dist.mean, precision)
end

--- "N nodes" (one node, 12 nodes).
---@param n any
---@return string
function M.count_text(n)
  n = tonumber(n) or 0
  return ('%d node%s'):format(n, n == 1 and '' or 's')
end

--- The virtual text of a crowded line: one summary of its nodes from graph.aggregate's
--- statistics `stats`, the most telling first (the end of a long one may be cut off by the
--- window): "64000 nodes │ data -5.2…3.7 mean 0.04 │ ∇ norm 0.99, 41876 zero │ 30400 add,
--- …".
---@param stats table
---@param display table the display options
---@return table[] chunks
function M.summary_chunks(stats, display)
  local p = display.precision
  local chunks = {
    { display.prefix, 'OpgraphPunct' },
    { M.count_text(stats.count), 'OpgraphLabel' },
    { display.separator .. 'data ', 'OpgraphPunct' },
  }
  local range, mean = M.range_text(stats.data, p)
  if range then
    table.insert(chunks, { range, 'OpgraphData' })
    table.insert(chunks, { ' mean ', 'OpgraphPunct' })
    table.insert(chunks, { mean, 'OpgraphData' })
  else
    table.insert(chunks, { 'none finite', 'DiagnosticError' })
  end
  if display.show_grad then
    table.insert(chunks, { display.separator .. display.grad_symbol .. ' norm ', 'OpgraphPunct' })
    table.insert(chunks, { util.num(util.value(stats.grad_norm) or 0, p), 'OpgraphGrad' })
    local zero = tonumber(util.value(stats.zero_grad)) or 0
    if zero > 0 then
      table.insert(chunks, { (', %d zero'):format(zero), 'OpgraphPunct' })
    end
  end
  local bad_data = tonumber(util.value(stats.nonfinite_data)) or 0
  local bad_grad = tonumber(util.value(stats.nonfinite_grad)) or 0
  if bad_data > 0 then
    table.insert(chunks, { (', %d data not finite'):format(bad_data), 'DiagnosticError' })
  end
  if bad_grad > 0 then
    table.insert(chunks, { (', %d ∇ not finite'):format(bad_grad), 'DiagnosticError' })
  end
  local ops = M.ops_text(stats, 3)
  if ops ~= '' then
    table.insert(chunks, { display.separator .. ops, 'OpgraphPunct' })
  end
  return chunks
end

--- The diagnostic codes of nodes `ids` as chunks ("  dead-relu"), each code once.
local function code_chunks(g, ids, chunks)
  local codes, seen = {}, {}
  for _, id in ipairs(ids) do
    for _, d in ipairs(g.diag_by_node[id] or {}) do
      local severity = SEVERITY[d.severity] or vim.diagnostic.severity.INFO
      local code = tostring(util.value(d.code) or '?')
      if not seen[code] then
        seen[code] = true
        table.insert(codes, { code, severity })
      end
    end
  end
  for _, c in ipairs(codes) do
    table.insert(chunks, { '  ' .. c[1], DIAG_HL[c[2]] or 'DiagnosticInfo' })
  end
  return chunks
end

--- Whether a line of `count` nodes is shown as one summary (more than max_per_line).
---@param count integer
---@param display table
---@return boolean
function M.crowded(count, display)
  return count > math.max(1, display.max_per_line)
end

--- The virtual text chunks for the nodes `ids` of one line: each node's name, data and grad,
--- or, for more than max_per_line nodes, the line's summary `line_stats` (graph.aggregate's;
--- without one, the last nodes after "+N more").
---@param g opgraph.Graph
---@param ids integer[]
---@param display table the display options
---@param line_stats opgraph.LineStats|nil
---@return table[] chunks {text, highlight group}
function M.chunks(g, ids, display, line_stats)
  if line_stats and M.crowded(tonumber(line_stats.stats.count) or #ids, display) then
    local chunks = M.summary_chunks(line_stats.stats, display)
    return display.diagnostic_codes and code_chunks(g, ids, chunks) or chunks
  end
  local chunks = { { display.prefix, 'OpgraphPunct' } }
  local shown = math.min(#ids, math.max(1, display.max_per_line))
  -- Keep the last nodes of a crowded line: the last one is what the line computes.
  local first = #ids - shown + 1
  if first > 1 then
    table.insert(chunks, { ('+%d more'):format(first - 1), 'OpgraphPunct' })
    table.insert(chunks, { display.separator, 'OpgraphPunct' })
  end
  for i = first, #ids do
    local node = g.by_id[ids[i]]
    if i > first then
      table.insert(chunks, { display.separator, 'OpgraphPunct' })
    end
    table.insert(chunks, { M.node_name(g, node), 'OpgraphLabel' })
    table.insert(chunks, { ' = ', 'OpgraphPunct' })
    table.insert(chunks, { util.num(node.data, display.precision), 'OpgraphData' })
    if display.show_grad then
      table.insert(chunks, { ' ' .. display.grad_symbol .. ' ', 'OpgraphPunct' })
      table.insert(chunks, { util.num(node.grad, display.precision), 'OpgraphGrad' })
    end
  end
  return display.diagnostic_codes and code_chunks(g, ids, chunks) or chunks
end

--- The summary of `path`:`line` in graph state `g`, if graph.aggregate gave one.
---@param g opgraph.Graph
---@param path string|nil
---@param line integer
---@return opgraph.LineStats|nil
function M.line_stats(g, path, line)
  local lines = path and g.line_stats and g.line_stats[path]
  return lines and lines[line] or nil
end

--- Draw only the crowded lines of `line_stats` (a new version's summaries, which come before
--- its node records) on buffer `bufnr`, replacing what those lines showed.
---@param bufnr integer
---@param name string the graph
---@param line_stats table<string, table<integer, opgraph.LineStats>>
---@param opts table the options
---@return integer lines drawn
function M.draw_summaries(bufnr, name, line_stats, opts)
  if not api.nvim_buf_is_valid(bufnr) or not api.nvim_buf_is_loaded(bufnr) then
    return 0
  end
  local path = util.buf_path(bufnr)
  local lines = path and line_stats[path]
  if not lines then
    return 0
  end
  local ns, count, drawn = M.values_ns(name), api.nvim_buf_line_count(bufnr), 0
  for line, ls in pairs(lines) do
    if line >= 1 and line <= count and M.crowded(tonumber(ls.stats.count) or 0, opts.display) then
      api.nvim_buf_set_extmark(bufnr, ns, line - 1, 0, {
        id = line,
        virt_text = M.summary_chunks(ls.stats, opts.display),
        virt_text_pos = opts.display.virt_text_pos,
        hl_mode = 'combine',
      })
      drawn = drawn + 1
    end
  end
  return drawn
end

--- Remove graph `name`'s annotations from buffer `bufnr`.
---@param bufnr integer
---@param name string
function M.clear(bufnr, name)
  if not api.nvim_buf_is_valid(bufnr) then
    return
  end
  api.nvim_buf_clear_namespace(bufnr, M.values_ns(name), 0, -1)
  vim.diagnostic.reset(M.diagnostics_ns(name), bufnr)
end

--- Draw graph state `g` on buffer `bufnr` (if it holds a file the graph's nodes came from).
--- Returns the number of annotated lines.
---@param bufnr integer
---@param g opgraph.Graph
---@param opts table the options (config.get())
---@return integer
function M.draw(bufnr, g, opts)
  if not api.nvim_buf_is_valid(bufnr) or not api.nvim_buf_is_loaded(bufnr) then
    return 0
  end
  local ns = M.values_ns(g.name)
  local dns = M.diagnostics_ns(g.name, opts.diagnostics.config)
  api.nvim_buf_clear_namespace(bufnr, ns, 0, -1)
  local path = util.buf_path(bufnr)
  local lines = path and g.files[path]
  local summaries = path and g.line_stats and g.line_stats[path]
  if not lines and not summaries then
    vim.diagnostic.reset(dns, bufnr)
    return 0
  end
  local count = api.nvim_buf_line_count(bufnr)
  local drawn = 0
  -- The lines that made nodes: those of the fetched records, and those the summaries name (a
  -- big graph is fetched only as far as its lines of few nodes need).
  local all = {}
  for line in pairs(lines or {}) do
    all[line] = true
  end
  for line in pairs(summaries or {}) do
    all[line] = true
  end
  for line in pairs(all) do
    if line >= 1 and line <= count then
      local ids = lines and lines[line] or {}
      api.nvim_buf_set_extmark(bufnr, ns, line - 1, 0, {
        id = line, -- (one mark a line: a new version's summary replaces it, see draw_summaries)
        virt_text = M.chunks(g, ids, opts.display, summaries and summaries[line]),
        virt_text_pos = opts.display.virt_text_pos,
        hl_mode = 'combine',
      })
      drawn = drawn + 1
    end
  end
  local diags = {}
  if opts.diagnostics.enable then
    for _, d in ipairs(g.diagnostics) do
      local node = g.by_id[util.value(d.node)]
      if node and node._path == path and node._line >= 1 and node._line <= count then
        local code = util.value(d.code)
        table.insert(diags, {
          lnum = node._line - 1,
          col = 0,
          severity = SEVERITY[d.severity] or vim.diagnostic.severity.INFO,
          message = (code and (code .. ': ') or '') .. tostring(util.value(d.message) or ''),
          code = code,
          source = 'opgraph',
          user_data = { graph = g.name, node = node.id, version = g.version },
        })
      end
    end
  end
  vim.diagnostic.set(dns, bufnr, diags)
  return drawn
end

--- What graph state `g` has of `line` of the file in `bufnr`: the ids fetched of the nodes
--- created there (maybe not all of them: see show.fetch), the line's summary if the server
--- gave one, and how many nodes the line made.
---@param g opgraph.Graph
---@param bufnr integer
---@param line integer 1-based
---@return integer[] ids
---@return opgraph.LineStats|nil summary
---@return integer count
function M.line_at(g, bufnr, line)
  local ids = M.ids_at(g, bufnr, line)
  local stats = M.line_stats(g, util.buf_path(bufnr), line)
  return ids, stats, stats and (tonumber(stats.stats.count) or #ids) or #ids
end

--- The ids of graph state `g` created on `line` of the file in `bufnr` (maybe empty).
---@param g opgraph.Graph
---@param bufnr integer
---@param line integer 1-based
---@return integer[]
function M.ids_at(g, bufnr, line)
  local path = util.buf_path(bufnr)
  local lines = path and g.files[path]
  return lines and lines[line] or {}
end

return M
