-- codesearch for Neovim: semantic code search through the codesearchd daemon.
--
-- `search` fills the quickfix list (or a picker), `index` registers and
-- indexes a repository and says when it is ready, `status` summarises
-- `daemon.status`. Everything is asynchronous; daemon errors are messages.

local rpc = require("codesearch.rpc")

local M = {}

local levels = vim.log.levels
local uv = vim.uv or vim.loop

local defaults = {
  -- The codesearch client, which starts the daemon (`codesearch daemon start`).
  cmd = "codesearch",
  -- The daemon's socket; nil: $CODESEARCH_SOCKET, else $CODESEARCH_HOME/codesearchd.sock,
  -- else ~/.codesearch/codesearchd.sock.
  socket = nil,
  -- Results a search asks for (1 to 1000).
  k = 20,
  -- "quickfix", "select" (vim.ui.select), "telescope", or "auto" (Telescope
  -- when installed, else the quickfix list).
  picker = "quickfix",
  -- How long to wait for an answer.
  timeout_ms = 30000,
  -- Start the daemon when nothing answers on the socket.
  auto_start = true,
  -- The search mode: nil (the daemon's default, hybrid), "hybrid", "semantic" or "lexical".
  mode = nil,
}

M.config = vim.deepcopy(defaults)

local notify = rpc.notify

local function report(err)
  notify(err.message, levels.ERROR)
end

local function unexpected(method)
  notify(("the daemon sent an unexpected answer to `%s`"):format(method), levels.ERROR)
end

local valid = {
  cmd = function(v)
    return type(v) == "string" and v ~= ""
  end,
  socket = function(v)
    return v == nil or type(v) == "string"
  end,
  k = function(v)
    return type(v) == "number" and v >= 1 and v <= 1000 and v == math.floor(v)
  end,
  picker = function(v)
    return v == "quickfix" or v == "select" or v == "telescope" or v == "auto"
  end,
  timeout_ms = function(v)
    return type(v) == "number" and v > 0
  end,
  auto_start = function(v)
    return type(v) == "boolean"
  end,
  mode = function(v)
    return v == nil or v == "hybrid" or v == "semantic" or v == "lexical"
  end,
}

--- Sets the options (see `defaults` above); a bad value is reported and its
--- default kept.
--- Calls `fn(repos)` with `repo.list`'s answer; says why when there is none.
local function with_repos(fn)
  rpc.request("repo.list", nil, function(err, repos)
    if err then
      return report(err)
    end
    if type(repos) ~= "table" then
      return unexpected("repo.list")
    end
    fn(repos)
  end)
end

function M.setup(opts)
  opts = opts or {}
  local config = vim.deepcopy(defaults)
  for key, value in pairs(opts) do
    if not valid[key] then
      notify(("unknown option `%s`"):format(tostring(key)), levels.WARN)
    elseif not valid[key](value) then
      notify(("invalid value for `%s`: %s; using %s"):format(key, vim.inspect(value), vim.inspect(defaults[key])), levels.WARN)
    else
      config[key] = value
    end
  end
  M.config = config
  rpc.configure({
    cmd = config.cmd,
    socket = config.socket,
    auto_start = config.auto_start,
    timeout_ms = config.timeout_ms,
  })
end

local function realpath(path)
  return uv.fs_realpath(path) or path
end

local function strip_slash(path)
  if #path > 1 then
    path = path:gsub("/+$", "")
  end
  return path
end

--- The registered repository that holds `dir` (the longest such root), or nil.
local function root_of(repos, dir)
  dir = realpath(dir)
  local best
  for _, repo in ipairs(repos) do
    local root = type(repo) == "table" and repo.path
    if type(root) == "string" and root ~= "" then
      root = strip_slash(root)
      if (dir == root or dir:sub(1, #root + 1) == root .. "/") and (not best or #root > #best.path) then
        best = repo
      end
    end
  end
  return best
end

--- The folder holding `.git` above `dir`, or nil.
local function git_root(dir)
  local d = dir
  while d and d ~= "" do
    if uv.fs_stat(d .. "/.git") then
      return d
    end
    local parent = vim.fn.fnamemodify(d, ":h")
    if parent == d then
      return nil
    end
    d = parent
  end
  return nil
end

local function first_line(text)
  if type(text) ~= "string" then
    return ""
  end
  for line in text:gmatch("[^\n]+") do
    if line:match("%S") then
      return vim.trim(line)
    end
  end
  return ""
end

--- A quickfix item of a search hit, or nil when the hit is not one.
local function to_item(hit)
  if type(hit) ~= "table" or type(hit.repo) ~= "string" or type(hit.path) ~= "string" then
    return nil
  end
  local lnum = tonumber(hit.start_line) or 1
  local text
  if type(hit.symbol) == "string" and hit.symbol ~= "" then
    text = (type(hit.kind) == "string" and (hit.kind .. " ") or "") .. hit.symbol
  else
    text = first_line(hit.snippet)
  end
  if hit.stale == true then
    text = text .. " (changed since indexed)"
  end
  local filename = hit.path:sub(1, 1) == "/" and hit.path or (strip_slash(hit.repo) .. "/" .. hit.path)
  return {
    filename = filename,
    lnum = lnum,
    end_lnum = tonumber(hit.end_line) or lnum,
    text = text,
  }
end

local function open_item(item)
  local ok, err = pcall(vim.cmd, "edit " .. vim.fn.fnameescape(item.filename))
  -- E325 (a swap file exists) still opens the file; anything else did not.
  if not ok and not tostring(err):find("E325", 1, true) then
    notify(("cannot open %s: %s"):format(item.filename, tostring(err):gsub("^Vim%(edit%):", "")), levels.ERROR)
    return
  end
  pcall(vim.api.nvim_win_set_cursor, 0, { item.lnum, 0 })
  vim.cmd("normal! zz")
end

local function show_select(items, title)
  vim.ui.select(items, {
    prompt = title,
    format_item = function(item)
      return ("%s:%d  %s"):format(vim.fn.fnamemodify(item.filename, ":~:."), item.lnum, item.text)
    end,
  }, function(choice)
    if choice then
      rpc.protect(open_item, choice)
    end
  end)
end

local function show_telescope(items, title)
  local ok = pcall(require, "telescope")
  if not ok then
    return false
  end
  local pickers = require("telescope.pickers")
  local finders = require("telescope.finders")
  local make_entry = require("telescope.make_entry")
  local conf = require("telescope.config").values
  local opts = {}
  local entries = {}
  for _, item in ipairs(items) do
    -- Telescope's quickfix entries want a column.
    table.insert(entries, vim.tbl_extend("force", item, { col = 1 }))
  end
  pickers
    .new(opts, {
      prompt_title = title,
      finder = finders.new_table({
        results = entries,
        entry_maker = make_entry.gen_from_quickfix(opts),
      }),
      previewer = conf.qflist_previewer(opts),
      sorter = conf.generic_sorter(opts),
    })
    :find()
  return true
end

local function show(items, query, picker)
  local title = "codesearch: " .. query
  -- The quickfix list always gets the results, so :copen finds them after a picker too.
  vim.fn.setqflist({}, " ", { title = title, items = items })
  if picker == "auto" then
    picker = pcall(require, "telescope") and "telescope" or "quickfix"
  end
  if picker == "telescope" then
    if show_telescope(items, title) then
      return
    end
    notify("Telescope is not installed; the results are in the quickfix list", levels.WARN)
    picker = "quickfix"
  end
  if picker == "select" then
    show_select(items, title)
    return
  end
  vim.cmd("copen")
end

--- Searches `query` in the registered repository that holds the current
--- directory (all repositories when none does, or with `opts.all`), and shows
--- the hits. `opts`: `all`, `k`, `picker`, `mode`.
function M.search(query, opts)
  opts = opts or {}
  query = vim.trim(query or "")
  if query == "" then
    notify("usage: :Codesearch {query} (:Codesearch! {query} searches every repository)", levels.WARN)
    return
  end
  local picker = opts.picker or M.config.picker
  local function run(repos)
    local params = { query = query, k = opts.k or M.config.k }
    if repos then
      params.repos = repos
    end
    local mode = opts.mode or M.config.mode
    if mode then
      params.mode = mode
    end
    rpc.request("search", params, function(err, res)
      if err then
        return report(err)
      end
      if type(res) ~= "table" or type(res.results) ~= "table" then
        return unexpected("search")
      end
      local items = {}
      for _, hit in ipairs(res.results) do
        local item = to_item(hit)
        if item then
          table.insert(items, item)
        end
      end
      if #items == 0 then
        if #res.results > 0 then
          return unexpected("search")
        end
        notify("no results for " .. query, levels.WARN)
        return
      end
      show(items, query, picker)
    end)
  end
  if opts.all then
    run(nil)
    return
  end
  with_repos(function(repos)
    if #repos == 0 then
      notify("no repository is indexed yet; :CodesearchIndex indexes the one you are in", levels.WARN)
      return
    end
    local repo = root_of(repos, uv.cwd())
    run(repo and { repo.path } or nil)
  end)
end

local function plural(n, one, many)
  return ("%d %s"):format(n, n == 1 and one or many)
end

local function describe(repo)
  local parts = { tostring(repo.state) }
  if tonumber(repo.files) then
    table.insert(parts, plural(repo.files, "file", "files"))
  end
  if tonumber(repo.chunks) then
    table.insert(parts, plural(repo.chunks, "chunk", "chunks"))
  end
  if tonumber(repo.pending) and repo.pending > 0 then
    table.insert(parts, repo.pending .. " pending")
  end
  local text = table.concat(parts, ", ")
  if type(repo.error) == "string" then
    text = text .. ": " .. repo.error
  end
  return text
end

-- subscription id -> function(progress)
local followers = {}

rpc.on_notification("repo.progress", function(params)
  if type(params) ~= "table" then
    return
  end
  local follow = followers[params.subscription]
  if follow and type(params.result) == "table" then
    follow(params.result)
  end
end)

--- Waits for the end of the indexing run of `path` on subscription `sub`,
--- then says how it went.
local function follow_run(sub, path)
  followers[sub] = function(progress)
    if progress.path ~= path or (progress.state ~= "ready" and progress.state ~= "error") then
      return
    end
    followers[sub] = nil
    rpc.request("repo.unsubscribe", { sub }, nil)
    if progress.state == "error" then
      notify(("indexing %s failed: %s"):format(path, tostring(progress.error)), levels.ERROR)
      return
    end
    local took = tonumber(progress.elapsed_s)
    rpc.request("repo.list", nil, function(err, repos)
      local repo = not err and type(repos) == "table" and root_of(repos, path)
      local what = repo and describe(repo) or "ready"
      notify(("%s: %s%s"):format(path, what, took and (" (%.1f s)"):format(took) or ""))
    end)
  end
end

local function unfollow(sub)
  if sub then
    followers[sub] = nil
    rpc.request("repo.unsubscribe", { sub }, nil)
  end
end

--- Registers `path` (default: the registered repository holding the current
--- directory, else its git root, else the directory itself) and indexes it;
--- a registered repository is indexed again. Says when the run ends.
function M.index(path)
  local function go(repos)
    local target
    if path and path ~= "" then
      target = strip_slash(vim.fn.fnamemodify(vim.fn.expand(path), ":p"))
    else
      local cwd = realpath(uv.cwd())
      local repo = root_of(repos, cwd)
      target = repo and repo.path or git_root(cwd) or cwd
    end
    target = strip_slash(realpath(target))
    local known
    for _, repo in ipairs(repos) do
      if type(repo) == "table" and repo.path == target then
        known = repo
      end
    end
    -- Subscribe first, so the end of the run is not missed.
    rpc.request("repo.subscribe", { path = target }, function(sub_err, sub)
      if sub_err or type(sub) ~= "number" then
        sub = nil
      else
        follow_run(sub, target)
      end
      -- Whether `method` answered with a status; says why not, and stops
      -- following the run, otherwise.
      local function answered(method, err, status)
        if err or type(status) ~= "table" then
          unfollow(sub)
          if err then
            report(err)
          else
            unexpected(method)
          end
          return false
        end
        return true
      end
      rpc.request("repo.add", { path = target, wait = false }, function(err, status)
        if not answered("repo.add", err, status) then
          return
        end
        if status.state == "error" then
          unfollow(sub)
          notify(("%s: %s"):format(target, describe(status)), levels.ERROR)
          return
        end
        if status.state == "indexing" then
          notify(("indexing %s"):format(target))
          if not sub then
            notify("(:CodesearchStatus shows how far it is)")
          end
          return
        end
        if not known then
          -- Registered and already done: nothing more will come.
          unfollow(sub)
          notify(("%s: %s"):format(target, describe(status)))
          return
        end
        rpc.request("repo.reindex", { path = target }, function(rerr, rstatus)
          if not answered("repo.reindex", rerr, rstatus) then
            return
          end
          if rstatus.state == "indexing" then
            notify(("indexing %s again"):format(target))
          elseif not sub then
            notify(("%s: %s"):format(target, describe(rstatus)))
          end
        end)
      end)
    end)
  end
  with_repos(go)
end

local function duration(s)
  s = tonumber(s) or 0
  if s < 120 then
    return ("%d s"):format(s)
  elseif s < 7200 then
    return ("%d min"):format(s / 60)
  end
  return ("%.1f h"):format(s / 3600)
end

--- Shows `daemon.status`: version, pid, models, and each repository's state.
function M.status()
  rpc.request("daemon.status", nil, function(err, s)
    if err then
      return report(err)
    end
    if type(s) ~= "table" then
      return unexpected("daemon.status")
    end
    local head = ("codesearchd %s, pid %s, up %s"):format(tostring(s.version), tostring(s.pid), duration(s.uptime_s))
    if type(s.started_by) == "string" then
      head = head .. ", started by " .. s.started_by
    end
    if tonumber(s.rss_bytes) then
      head = head .. (", %d MiB"):format(s.rss_bytes / 1048576)
    end
    local lines = { head .. ", on " .. tostring(rpc.state().path) }
    local models = {}
    for _, m in ipairs(type(s.models) == "table" and s.models or {}) do
      if type(m) == "table" then
        table.insert(models, ("%s (%s)"):format(tostring(m.name), tostring(m.device)))
      end
    end
    table.insert(lines, "models: " .. (#models > 0 and table.concat(models, ", ") or "none loaded yet"))
    -- daemon.status answers at once, with the repositories opened so far; a
    -- daemon that just started opens its registered ones first, and
    -- repo.list waits for that.
    rpc.request("repo.list", nil, function(list_err, list)
      local repos = not list_err and type(list) == "table" and list or (type(s.repos) == "table" and s.repos or {})
      if #repos == 0 then
        table.insert(lines, "no repositories (:CodesearchIndex adds the one you are in)")
      end
      for _, repo in ipairs(repos) do
        if type(repo) == "table" then
          table.insert(lines, ("%s: %s"):format(tostring(repo.path), describe(repo)))
        end
      end
      notify(table.concat(lines, "\n"))
    end)
  end)
end

return M
