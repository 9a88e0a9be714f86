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
---@return opgraph.Graph
function M.index(name, version, nodes, diagnostics)
  local g = {
    name = name,
    version = version,
    nodes = nodes,
    by_id = {},
    files = {}, -- realpath -> { [line] = { id, ... } }
    diagnostics = {},
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

--- The virtual text chunks for the nodes `ids` of one line.
---@param g opgraph.Graph
---@param ids integer[]
---@param display table the display options
---@return table[] chunks {text, highlight group}
function M.chunks(g, ids, display)
  local chunks = { { display.prefix, 'OpgraphPunct' } }
  local shown = math.min(#ids, math.max(1, display.max_per_line))
  -- Keep the last nodes of a crowded line: the last one is what the line computes.
  local first = #ids - shown + 1
  if first > 1 then
    table.insert(chunks, { ('+%d more'):format(first - 1), 'OpgraphPunct' })
    table.insert(chunks, { display.separator, 'OpgraphPunct' })
  end
  local codes, seen = {}, {}
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
  if display.diagnostic_codes then
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
  end
  return chunks
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
  if not lines then
    vim.diagnostic.reset(dns, bufnr)
    return 0
  end
  local count = api.nvim_buf_line_count(bufnr)
  local drawn = 0
  for line, ids in pairs(lines) do
    if line >= 1 and line <= count then
      api.nvim_buf_set_extmark(bufnr, ns, line - 1, 0, {
        virt_text = M.chunks(g, ids, opts.display),
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
