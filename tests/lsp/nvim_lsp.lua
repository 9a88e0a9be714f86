-- Neovim 0.7's built-in LSP client against `opgraph lsp` (run by test_nvim_lsp.py):
-- open a file, attach the server, wait for its diagnostics, hover, edit, and write what was
-- seen to $OPGRAPH_OUT as JSON. Every wait has a time limit; any error is written out too.
local out_path = vim.env.OPGRAPH_OUT
local file = vim.env.OPGRAPH_FILE
local cmd = vim.fn.json_decode(vim.env.OPGRAPH_LSP_CMD)
local hover_line = tonumber(vim.env.OPGRAPH_HOVER_LINE)
local result = { messages = {}, version = vim.fn.matchstr(vim.fn.execute('version'), 'NVIM v[0-9.]*') }

local function write()
  local f = io.open(out_path, 'w')
  f:write(vim.fn.json_encode(result))
  f:close()
end

local function diagnostics(bufnr)
  local got = {}
  for _, d in ipairs(vim.diagnostic.get(bufnr)) do
    local lsp = d.user_data and d.user_data.lsp or {}
    table.insert(got, { lnum = d.lnum, col = d.col, severity = d.severity, message = d.message,
                        source = d.source, code = lsp.code })
  end
  table.sort(got, function(a, b) return a.lnum < b.lnum end)
  return got
end

local function float_lines()
  for _, win in ipairs(vim.api.nvim_list_wins()) do
    if vim.api.nvim_win_get_config(win).relative ~= '' then
      return vim.api.nvim_buf_get_lines(vim.api.nvim_win_get_buf(win), 0, -1, false)
    end
  end
  return nil
end

local ok, err = pcall(function()
  vim.cmd('edit ' .. vim.fn.fnameescape(file))
  local bufnr = vim.api.nvim_get_current_buf()
  local client_id = vim.lsp.start_client({
    cmd = cmd,
    name = 'opgraph',
    root_dir = vim.fn.fnamemodify(file, ':h'),
    handlers = {
      ['window/showMessage'] = function(_, params)
        table.insert(result.messages, params.message)
      end,
    },
  })
  assert(client_id, 'vim.lsp.start_client failed')
  vim.lsp.buf_attach_client(bufnr, client_id)
  assert(vim.wait(30000, function() return #vim.diagnostic.get(bufnr) > 0 end, 50),
         'no diagnostics within 30 s')
  result.diagnostics = diagnostics(bufnr)
  local client = vim.lsp.get_client_by_id(client_id)
  local caps = client.server_capabilities or {}
  result.capabilities = { hover = caps.hoverProvider, inlay = caps.inlayHintProvider ~= nil,
                          code_lens = caps.codeLensProvider ~= nil }

  -- hover as a request, and as the user sees it (K: vim.lsp.buf.hover's floating window)
  local params = { textDocument = { uri = vim.uri_from_bufnr(bufnr) },
                   position = { line = hover_line, character = 0 } }
  local answers = vim.lsp.buf_request_sync(bufnr, 'textDocument/hover', params, 10000) or {}
  local answer = answers[client_id] and answers[client_id].result
  result.hover = answer and answer.contents and answer.contents.value or vim.NIL
  vim.api.nvim_win_set_cursor(0, { hover_line + 1, 0 })
  vim.lsp.buf.hover()
  vim.wait(10000, function() return float_lines() ~= nil end, 50)
  result.hover_window = float_lines() or vim.NIL

  -- two lines typed above: the diagnostics move down with the code they describe
  vim.api.nvim_buf_set_lines(bufnr, 0, 0, false, { '# a comment', '# another' })
  local first = result.diagnostics[1].lnum
  vim.wait(10000, function()
    local now = diagnostics(bufnr)
    return #now > 0 and now[1].lnum == first + 2
  end, 50)
  result.after_insert = diagnostics(bufnr)
  -- the diagnosed line edited: its diagnostic goes (the code it describes no longer exists)
  local moved = first + 2
  vim.api.nvim_buf_set_text(bufnr, moved, 0, moved, 0, { 'x = 1; ' })
  vim.wait(10000, function()
    for _, d in ipairs(diagnostics(bufnr)) do
      if d.lnum == moved then return false end
    end
    return true
  end, 50)
  result.after_edit = diagnostics(bufnr)

  client.stop()
  vim.wait(10000, function() return client.is_stopped() end, 50)
  result.stopped = client.is_stopped()
end)
if not ok then
  result.error = tostring(err)
end
write()
vim.cmd('qa!')
