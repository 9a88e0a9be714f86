-- Small helpers: one-line messages, numbers, paths.
local M = {}

--- The first non-empty line of an error or message, as a string.
---@param value any
---@return string
function M.first_line(value)
  local text = tostring(value == nil and '' or value)
  for line in text:gmatch('[^\n]+') do
    line = vim.trim(line)
    if line ~= '' then
      return line
    end
  end
  return ''
end

--- An error from Vim, Lua or the server reduced to the one line worth showing.
---@param err any
---@return string
function M.clean(err)
  local text = M.first_line(err)
  text = text:gsub('^Vim%b():', ''):gsub('^Vim:', '')
  text = text:gsub('^E%d+: ', '')
  text = text:gsub('^[^%s:]+%.lua:%d+: ', '')
  text = text:gsub('^connection failed: ', '')
  return text
end

local levels = {
  error = vim.log.levels.ERROR,
  warn = vim.log.levels.WARN,
  info = vim.log.levels.INFO,
  debug = vim.log.levels.DEBUG,
}

--- vim.notify with the plugin's prefix; `level` is 'error', 'warn', 'info' or 'debug'.
---@param message string
---@param level 'error'|'warn'|'info'|'debug'|nil
function M.notify(message, level)
  vim.notify('opgraph: ' .. message, levels[level or 'info'] or vim.log.levels.INFO)
end

--- A number with `precision` significant digits ("%g"), spelling out NaN and infinities.
---@param x any
---@param precision integer|nil (4)
---@return string
function M.num(x, precision)
  if type(x) ~= 'number' then
    return tostring(x)
  end
  if x ~= x then
    return 'nan'
  elseif x == math.huge then
    return 'inf'
  elseif x == -math.huge then
    return '-inf'
  elseif x == 0 then
    return '0' -- (not "-0")
  end
  return string.format('%.' .. (precision or 4) .. 'g', x)
end

--- Nil for msgpack nil (vim.NIL) and nil, else the value.
---@generic T
---@param x T
---@return T|nil
function M.value(x)
  if x == vim.NIL then
    return nil
  end
  return x
end

--- The resolved full path of `path` (symbolic links followed when the file exists).
---@param path string|nil
---@return string|nil
function M.realpath(path)
  if type(path) ~= 'string' or path == '' then
    return nil
  end
  return vim.loop.fs_realpath(path) or vim.fn.fnamemodify(path, ':p')
end

--- The resolved path of the file in buffer `bufnr`, or nil for buffers that are no file.
---@param bufnr integer
---@return string|nil
function M.buf_path(bufnr)
  if not vim.api.nvim_buf_is_valid(bufnr) then
    return nil
  end
  if vim.api.nvim_buf_get_option(bufnr, 'buftype') ~= '' then
    return nil
  end
  local name = vim.api.nvim_buf_get_name(bufnr)
  if name == '' then
    return nil
  end
  return M.realpath(name)
end

--- `fn` wrapped so that any Lua error becomes one notify line ("internal error in `what`")
--- instead of a traceback.
---@param fn function
---@param what string|nil
---@return function
function M.guard(fn, what)
  return function(...)
    local ok, result = xpcall(fn, debug.traceback, ...)
    if not ok then
      M.notify(('internal error in %s: %s'):format(what or 'opgraph', M.clean(result)), 'error')
      return nil
    end
    return result
  end
end

--- Keys of a table, sorted.
---@param t table
---@return any[]
function M.sorted_keys(t)
  local keys = vim.tbl_keys(t)
  table.sort(keys, function(a, b)
    if type(a) == type(b) then
      return a < b
    end
    return tostring(a) < tostring(b)
  end)
  return keys
end

return M
