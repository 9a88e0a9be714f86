-- The floating window of :OpgraphHover (what it says is hover.lua).
local api = vim.api
local M = {}

local current = nil -- { win, buf }
local MAX_WIDTH = 90

--- Close the window, if one is open.
function M.close()
  if current and api.nvim_win_is_valid(current.win) then
    pcall(api.nvim_win_close, current.win, true)
  end
  current = nil
end

--- The hover window, if one is open (for tests and for focusing it).
---@return integer|nil
function M.window()
  if current and api.nvim_win_is_valid(current.win) then
    return current.win
  end
  return nil
end

--- Put `lines` and their highlights into the hover buffer `buf`.
local function fill(buf, lines, highlights)
  api.nvim_buf_set_option(buf, 'modifiable', true)
  api.nvim_buf_set_lines(buf, 0, -1, false, lines)
  api.nvim_buf_set_option(buf, 'modifiable', false)
  local ns = api.nvim_create_namespace('opgraph.hover')
  api.nvim_buf_clear_namespace(buf, ns, 0, -1)
  for _, h in ipairs(highlights or {}) do
    api.nvim_buf_add_highlight(buf, ns, h[1], h[2], h[3], h[4])
  end
end

--- The width of a window for `lines`, and the height they take in it (long lines wrap).
local function size(lines)
  local widest = 1
  for _, line in ipairs(lines) do
    widest = math.max(widest, vim.fn.strdisplaywidth(line))
  end
  local width = math.max(1, math.min(widest, MAX_WIDTH, vim.o.columns - 4))
  local height = 0
  for _, line in ipairs(lines) do
    height = height + math.max(1, math.ceil(vim.fn.strdisplaywidth(line) / width))
  end
  return width, height
end

--- Open a float below the cursor with `lines`; `highlights` is a list of {group, line (0-based),
--- col_start, col_end}; `keys` maps keys to functions called with the cursor's line (1-based)
--- when typed in the window. It closes when the cursor moves or the buffer is left.
---@param lines string[]
---@param highlights table[]|nil
---@param keys table<string, fun(row: integer)>|nil
---@return integer window
---@return integer buffer
function M.open(lines, highlights, keys)
  M.close()
  local buf = api.nvim_create_buf(false, true)
  fill(buf, lines, highlights)
  api.nvim_buf_set_option(buf, 'bufhidden', 'wipe')
  api.nvim_buf_set_option(buf, 'filetype', 'opgraph-hover')
  local width, height = size(lines)
  -- Below the cursor line when it fits, else above it (as LSP hovers do).
  local below = vim.fn.winheight(0) - vim.fn.winline()
  local above = vim.fn.winline() - 1
  local anchor, row = 'NW', 1
  if height + 2 > below and above > below then
    anchor, row = 'SW', 0
    height = math.min(height, math.max(1, above - 2))
  else
    height = math.min(height, math.max(1, below - 2))
  end
  local win = api.nvim_open_win(buf, false, {
    relative = 'cursor',
    anchor = anchor,
    row = row,
    col = 0,
    width = width,
    height = height,
    style = 'minimal',
    border = 'rounded',
    focusable = true,
  })
  api.nvim_win_set_option(win, 'wrap', true)
  api.nvim_win_set_option(win, 'linebreak', true)
  current = { win = win, buf = buf }
  local source = api.nvim_get_current_buf()
  local group = api.nvim_create_augroup('opgraph.hover', { clear = true })
  api.nvim_create_autocmd({ 'CursorMoved', 'CursorMovedI', 'InsertEnter', 'BufLeave' }, {
    group = group,
    buffer = source,
    once = true,
    callback = function()
      M.close()
      pcall(api.nvim_del_augroup_by_id, group)
    end,
  })
  for _, key in ipairs({ 'q', '<Esc>' }) do
    vim.keymap.set('n', key, M.close, { buffer = buf, nowait = true, silent = true })
  end
  for key, fn in pairs(keys or {}) do
    vim.keymap.set('n', key, function()
      fn(api.nvim_win_get_cursor(0)[1])
    end, { buffer = buf, nowait = true, silent = true })
  end
  return win, buf
end

--- Show `lines` in the open window instead of what it shows (the cursor goes to the top).
--- Returns false when no window is open.
---@param lines string[]
---@param highlights table[]|nil
---@return boolean
function M.replace(lines, highlights)
  local win = M.window()
  if not win then
    return false
  end
  fill(current.buf, lines, highlights)
  local width, height = size(lines)
  api.nvim_win_set_width(win, math.max(width, api.nvim_win_get_width(win)))
  api.nvim_win_set_height(win, math.max(1, math.min(height, vim.o.lines - 6)))
  api.nvim_win_set_cursor(win, { 1, 0 })
  return true
end

--- Move into the hover window (a second :OpgraphHover does this, as with LSP hovers).
---@return boolean moved whether there was a window to move into
function M.focus()
  local win = M.window()
  if not win then
    return false
  end
  pcall(api.nvim_del_augroup_by_name, 'opgraph.hover') -- leaving the source must not close it
  local buf = current.buf
  api.nvim_set_current_win(win)
  api.nvim_create_autocmd('BufLeave', {
    buffer = buf,
    once = true,
    callback = function()
      vim.schedule(M.close)
    end,
  })
  return true
end

return M
