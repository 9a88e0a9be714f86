-- Tasks: the plugin's work runs in coroutines that wait for the server without blocking the
-- editor. Code inside a task is written straight (`local r, err = conn:request(...)`); a
-- request yields the task and the answer resumes it from the main loop.
--
-- Outside a task (a Lua caller of the API, :checkhealth), waiting means vim.wait, which keeps
-- the event loop running and is ended early by CTRL-C: Neovim 0.7's vim.wait does not stop on
-- CTRL-C itself when given a condition (it only reports it at the end), so the condition looks
-- for the interrupt (see `interrupted`).
local util = require('opgraph.util')

local M = {}

local unpack = table.unpack or unpack -- Lua 5.1 and LuaJIT: the global

---@class opgraph.Task
---@field what string what the task does, for messages (":OpgraphShow", "refresh", ...)
---@field co thread
---@field done boolean finished, failed or cancelled
---@field cancelled boolean
---@field result table the values the function returned, packed ({n = ...})
---@field error string|nil the Lua error that ended it
---@field cleanups function[]|nil run if it is cancelled (see on_cancel)
local Task = {}
Task.__index = Task

local tasks = setmetatable({}, { __mode = 'k' }) -- coroutine -> task

local function pack(...)
  return { n = select('#', ...), ... }
end

--- The task running now, or nil outside tasks.
---@return opgraph.Task|nil
function M.current()
  local co = coroutine.running()
  return co and tasks[co] or nil
end

--- Continue `task` with `...` as the values of its pending `await`.
---@param task opgraph.Task
local function step(task, ...)
  if task.done then
    return -- cancelled: an answer that comes late is dropped
  end
  local out = pack(coroutine.resume(task.co, ...))
  if not out[1] then
    task.done = true
    task.error = tostring(out[2])
    tasks[task.co] = nil
    util.notify(('internal error in %s: %s'):format(task.what, util.clean(out[2])), 'error')
  elseif coroutine.status(task.co) == 'dead' then
    task.done = true
    task.result = pack(select(2, unpack(out, 1, out.n)))
    tasks[task.co] = nil
  end
end

--- Run `fn(...)` as a task. It starts at once and runs until it first waits.
---@param what string
---@param fn function
---@return opgraph.Task
function M.run(what, fn, ...)
  local task = setmetatable({
    what = what,
    co = coroutine.create(fn),
    done = false,
    cancelled = false,
    result = { n = 0 },
  }, Task)
  tasks[task.co] = task
  step(task, ...)
  return task
end

--- Stop the task: it is not resumed again (answers it waits for are dropped), and what it
--- registered with `on_cancel` runs.
function Task:cancel()
  if not self.done then
    self.done, self.cancelled = true, true
    tasks[self.co] = nil
    local cleanups = self.cleanups or {}
    self.cleanups = nil
    for i = #cleanups, 1, -1 do
      pcall(cleanups[i])
    end
  end
end

--- Inside a task: run `fn` if the task is cancelled. Returns a function that takes it back.
--- Outside a task nothing is registered.
---@param fn function
---@return fun()
function M.on_cancel(fn)
  local task = M.current()
  if not task then
    return function() end
  end
  task.cleanups = task.cleanups or {}
  table.insert(task.cleanups, fn)
  return function()
    for i, f in ipairs(task.cleanups or {}) do
      if f == fn then
        table.remove(task.cleanups, i)
        return
      end
    end
  end
end

--- The first value the task returned (nil while it runs or when it failed).
---@return any
function Task:value()
  return self.result[1]
end

--- Inside a task: call `start(resume)` and wait until something calls `resume(...)`;
--- returns what `resume` got. `resume` may be called at once, or later from the main loop;
--- calls after the first are ignored.
---@param start fun(resume: function)
---@return any ...
function M.await(start)
  local task = assert(M.current(), 'opgraph: async.await outside a task')
  local waiting, early, resumed = false, nil, false
  start(function(...)
    if resumed then
      return
    end
    resumed = true
    if waiting then
      step(task, ...)
    else
      early = pack(...)
    end
  end)
  if early then
    return unpack(early, 1, early.n)
  end
  waiting = true
  return coroutine.yield()
end

--- True once if CTRL-C was typed (Neovim's got_int is set). Reading it clears it.
---@return boolean
function M.interrupted()
  local ok, err = pcall(vim.fn.getchar, 1)
  return not ok and tostring(err):match('Keyboard interrupt') ~= nil
end

---@alias opgraph.WaitOutcome 'done'|'timeout'|'interrupted'

--- Block (running the event loop) until `pred()`, `timeout_ms` or CTRL-C. Not inside a task.
---@param pred fun(): boolean
---@param timeout_ms number
---@return opgraph.WaitOutcome
function M.block(pred, timeout_ms)
  if pred() then
    return 'done'
  end
  local interrupted = false
  vim.wait(timeout_ms, function()
    if pred() then
      return true
    end
    interrupted = M.interrupted()
    return interrupted
  end, 10)
  if pred() then
    return 'done'
  end
  return interrupted and 'interrupted' or 'timeout'
end

--- Wait `ms` milliseconds: inside a task without blocking, else with vim.wait.
---@param ms number
function M.sleep(ms)
  if M.current() then
    M.await(function(resume)
      vim.defer_fn(resume, ms)
    end)
  else
    vim.wait(ms)
  end
end

--- Wait until `pred()` or `timeout_ms` (inside a task: checking every 20 ms). Returns pred().
---@param pred fun(): boolean
---@param timeout_ms number
---@return boolean
function M.wait_until(pred, timeout_ms)
  if not M.current() then
    return M.block(pred, timeout_ms) == 'done'
  end
  local deadline = vim.loop.now() + timeout_ms
  while not pred() and vim.loop.now() < deadline do
    M.sleep(20)
  end
  return pred()
end

return M
