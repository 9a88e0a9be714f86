-- What the plugin knows between commands: the graphs it shows, their fetched state, what is
-- due for a refresh. One table shared by the modules; nothing here talks to the server.
local util = require('opgraph.util')

local api = vim.api

---@class opgraph.State
---@field graphs table<string, opgraph.Graph> fetched state of each shown graph
---@field shown table<string, boolean> graphs being shown (kept across reconnects)
---@field order string[] the shown names, in the order they were shown
---@field waiting table<string, boolean> shown, but not on the server now; fetched when it appears
---@field pending table<string, number> newest version announced by graph.changed, refresh due
---@field reported table<string, boolean> background errors already shown (said once)
---@field lost_message string|nil the lost connection just reported (requests failing with it stay quiet)
---@field autocmds boolean the BufWinEnter autocommand is set
---@field highlights_defined boolean the highlight groups are defined
local M = {
  graphs = {},
  shown = {},
  order = {},
  waiting = {},
  pending = {},
  reported = {},
  autocmds = false,
  highlights_defined = false,
}

--- Show `message` as one error line.
---@param message any
function M.error_line(message)
  local text = util.clean(message)
  if M.lost_message and text == M.lost_message then
    return -- the lost connection was said already, once
  end
  util.notify(text, 'error')
end

--- Show a background error once (a refresh that keeps failing says it once).
---@param message string
function M.report_once(message)
  if not M.reported[message] then
    M.reported[message] = true
    M.error_line(message)
  end
end

--- Define the highlight groups once.
function M.highlights()
  if not M.highlights_defined then
    require('opgraph.annotate').define_highlights()
    M.highlights_defined = true
  end
end

--- The names of the shown graphs, in the order they were shown.
---@return string[]
function M.shown_list()
  local names = {}
  for _, name in ipairs(M.order) do
    if M.shown[name] then
      table.insert(names, name)
    end
  end
  return names
end

--- Mark `name` shown (it keeps its place if it already was).
---@param name string
function M.add_shown(name)
  if not M.shown[name] then
    M.shown[name] = true
    table.insert(M.order, name)
  end
end

--- Forget everything about graph `name`.
---@param name string
function M.forget(name)
  M.shown[name], M.graphs[name], M.waiting[name], M.pending[name] = nil, nil, nil, nil
  local kept = {}
  for _, n in ipairs(M.order) do
    if M.shown[n] then
      table.insert(kept, n)
    end
  end
  M.order = kept
end

--- The shown graph meant when a command gets none: the only one, else one with nodes on the
--- cursor line, else the last shown (graphs still awaited count only when no other is shown).
---@return string|nil
function M.default_graph()
  local names = {}
  for _, name in ipairs(M.shown_list()) do
    if M.graphs[name] then
      table.insert(names, name)
    end
  end
  if #names == 0 then
    names = M.shown_list()
  end
  if #names <= 1 then
    return names[1]
  end
  local annotate = require('opgraph.annotate')
  local buf, line = api.nvim_get_current_buf(), api.nvim_win_get_cursor(0)[1]
  for i = #names, 1, -1 do
    local g = M.graphs[names[i]]
    if g and select(3, annotate.line_at(g, buf, line)) > 0 then
      return names[i]
    end
  end
  return names[#names]
end

return M
