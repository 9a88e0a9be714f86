-- opgraph: user commands only. The plugin itself (lua/opgraph/) loads on the first command.
if vim.g.loaded_opgraph then
  return
end
vim.g.loaded_opgraph = true

local function run(name, ...)
  return require('opgraph').commands[name](...)
end

local function graphs(arglead)
  return require('opgraph').complete_graphs(arglead)
end

local command = vim.api.nvim_create_user_command

command('OpgraphConnect', function(o)
  run('connect', o.args)
end, { nargs = '?', desc = 'opgraph: connect to a server (tcp://host:port or unix:///path)' })

command('OpgraphStart', function(o)
  run('start', o.fargs)
end, { nargs = '*', complete = 'shellcmd', desc = 'opgraph: start a server over stdio' })

command('OpgraphDisconnect', function()
  run('disconnect')
end, { desc = 'opgraph: close the connection' })

command('OpgraphGraphs', function()
  run('graphs')
end, { desc = "opgraph: list the server's graphs" })

command('OpgraphShow', function(o)
  run('show', o.args)
end, { nargs = '?', complete = graphs, desc = 'opgraph: show values and gradients beside the code' })

command('OpgraphHover', function()
  run('hover')
end, { desc = 'opgraph: the nodes of the cursor line in a floating window' })

command('OpgraphRender', function(o)
  if #o.fargs > 2 then
    vim.notify('opgraph: :OpgraphRender[!] [graph] [file] takes at most two arguments',
      vim.log.levels.ERROR)
    return
  end
  run('render', o.fargs[1], o.fargs[2], o.bang)
end, {
  nargs = '*',
  bang = true,
  complete = function(arglead, cmdline)
    local before = cmdline:sub(1, #cmdline - #arglead)
    local args = vim.split(vim.trim(before), '%s+')
    if #args <= 1 then
      return graphs(arglead)
    end
    return vim.fn.getcompletion(arglead, 'file')
  end,
  desc = 'opgraph: draw the graph (around the cursor node; ! for all of it) to SVG',
})

command('OpgraphClear', function(o)
  run('clear', o.args)
end, { nargs = '?', complete = graphs, desc = 'opgraph: remove the annotations' })
