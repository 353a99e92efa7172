-- mtpd.nvim commands; completion itself starts with require('mtpd').setup{}.
if vim.g.loaded_mtpd then
  return
end
vim.g.loaded_mtpd = true

vim.api.nvim_create_user_command('MtpdStatus', function()
  print(require('mtpd').status())
end, {desc = 'mtpd: connection, last completion latency and acceptance'})

vim.api.nvim_create_user_command('MtpdComplete', function()
  require('mtpd').trigger()
end, {desc = 'mtpd: ask for a completion at the cursor'})
