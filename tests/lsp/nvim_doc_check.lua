-- Run after docs/editors.md's Neovim 0.7 snippet (the init file): wait for the hints it draws
-- and for the diagnostics, then write them to $OPGRAPH_OUT as JSON and quit.
local out = { version = vim.fn.matchstr(vim.fn.execute('version'), 'NVIM v[0-9.]*') }
local ns = vim.api.nvim_create_namespace('opgraph-hints')
local ok, err = pcall(function()
  local bufnr = vim.api.nvim_get_current_buf()
  local function marks()
    return vim.api.nvim_buf_get_extmarks(bufnr, ns, 0, -1, { details = true })
  end
  assert(vim.wait(30000, function() return #marks() > 0 and #vim.diagnostic.get(bufnr) > 0 end,
                  50), 'no hints or no diagnostics within 30 s')
  out.hints = {}
  for _, m in ipairs(marks()) do
    table.insert(out.hints, { line = m[2], text = m[4].virt_text[1][1] })
  end
  out.diagnostics = {}
  for _, d in ipairs(vim.diagnostic.get(bufnr)) do
    table.insert(out.diagnostics, { lnum = d.lnum, message = d.message })
  end
end)
if not ok then out.error = tostring(err) end
local f = io.open(vim.env.OPGRAPH_OUT, 'w')
f:write(vim.fn.json_encode(out))
f:close()
vim.cmd('qa!')
