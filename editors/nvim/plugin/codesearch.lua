-- codesearch: the user commands. The module loads on first use.

if vim.g.loaded_codesearch then
  return
end
vim.g.loaded_codesearch = true

if vim.fn.has("nvim-0.7") ~= 1 then
  vim.api.nvim_echo({ { "codesearch: Neovim 0.7 or later is needed", "WarningMsg" } }, true, {})
  return
end

local command = vim.api.nvim_create_user_command

command("Codesearch", function(o)
  require("codesearch").search(o.args, { all = o.bang })
end, {
  nargs = "*",
  bang = true,
  desc = "codesearch: search the repository you are in (! every repository) into the quickfix list",
})

command("CodesearchIndex", function(o)
  require("codesearch").index(o.args ~= "" and o.args or nil)
end, {
  nargs = "?",
  complete = "dir",
  desc = "codesearch: index a folder (default: the repository you are in)",
})

command("CodesearchStatus", function()
  require("codesearch").status()
end, {
  nargs = 0,
  desc = "codesearch: the daemon's status and its repositories",
})
