-- The Neovim plugin against the real daemon, in headless Neovim (0.7 or later).
--
-- Run from the repository root (tests/it/nvim.rs does, with a fresh home):
--
--   CODESEARCH_HOME=$(mktemp -d) CODESEARCH_EMBEDDING_DEVICE=cpu HF_HUB_OFFLINE=1 \
--   CODESEARCH_TEST_CMD=/path/to/codesearch \
--   CODESEARCH_TEST_CORPUS=target/test-corpora/golang-github-pkg-errors-0.9.1 \
--   CODESEARCH_TEST_QUERY='wrap an error with a message' \
--   CODESEARCH_TEST_EXPECT_FILE=usr/share/gocode/src/github.com/pkg/errors/errors.go \
--   CODESEARCH_TEST_EXPECT_LINE=184 \
--   nvim --headless -u NONE -i NONE --cmd 'set rtp+=editors/nvim' \
--     -c 'luafile tests/nvim/test_plugin.lua' -c 'cquit 2'
--
-- Prints one `ok - …` / `not ok - …` line per check and exits 0 when all
-- passed, 1 when one failed (2: the file did not run to its end). No daemon may
-- run in the home at the start: the first command must start it. The daemon it
-- started is shut down at the end.

local uv = vim.uv or vim.loop

local failures = 0
local checks = 0

local function out(line)
  io.stdout:write(line .. "\n")
  io.stdout:flush()
end

local function check(cond, name, detail)
  checks = checks + 1
  if cond then
    out("ok - " .. name)
  else
    failures = failures + 1
    out("not ok - " .. name .. (detail and (": " .. detail) or ""))
  end
  return cond
end

local function env(name, required)
  local v = os.getenv(name)
  if (v == nil or v == "") and required then
    error(("%s is not set (see the top of tests/nvim/test_plugin.lua)"):format(name), 0)
  end
  if v == "" then
    return nil
  end
  return v
end

-- Every message the plugin shows.
local messages = {}
vim.notify = function(msg, level)
  table.insert(messages, { msg = tostring(msg), level = level })
  out("# notify(" .. tostring(level) .. "): " .. tostring(msg):gsub("\n", "\n#   "))
end

local function wait_for(timeout_ms, cond)
  return vim.wait(timeout_ms, cond, 20)
end

--- The first message after `from` (an index into `messages`) matching `pattern`.
local function message_after(from, pattern, level)
  for i = from + 1, #messages do
    local m = messages[i]
    if m.msg:find(pattern) and (level == nil or m.level == level) then
      return m
    end
  end
  return nil
end

local function wait_message(from, pattern, level, timeout_ms)
  local found
  wait_for(timeout_ms or 10000, function()
    found = message_after(from, pattern, level)
    return found ~= nil
  end)
  return found
end

local function internal_errors(from)
  for i = from + 1, #messages do
    if messages[i].msg:find("internal error", 1, true) then
      return messages[i].msg
    end
  end
  return nil
end

--- Runs an Ex command; returns the Lua or Vim error it raised, if any.
local function ex(command)
  local ok, err = pcall(vim.cmd, command)
  if not ok then
    return tostring(err)
  end
  return nil
end

local rpc

--- A request through the plugin's own connection, waited for.
local function call(method, params, timeout_ms)
  local done, err, result = false, nil, nil
  rpc.request(method, params, function(e, r)
    done, err, result = true, e, r
  end)
  wait_for(timeout_ms or 30000, function()
    return done
  end)
  if not done then
    return { message = method .. ": no callback" }
  end
  return err, result
end

--- Calls `cond` every 200 ms until it is true (for conditions that make
--- requests themselves, which vim.wait would call on every event).
local function poll(timeout_ms, cond)
  local deadline = uv.now() + timeout_ms
  while true do
    if cond() then
      return true
    end
    if uv.now() > deadline then
      return false
    end
    vim.wait(200, function()
      return false
    end)
  end
end

--- Waits until process `pid` has exited (a zombie counts: it holds no lock
--- and no socket, and its parent, not this test, reaps it).
local function process_gone(pid, timeout_ms)
  return wait_for(timeout_ms or 30000, function()
    if uv.kill(pid, 0) ~= 0 then
      return true
    end
    local f = io.open("/proc/" .. pid .. "/stat", "r")
    if not f then
      return false
    end
    local stat = f:read("*a") or ""
    f:close()
    return stat:match("^%d+ %b() (%a)") == "Z"
  end)
end

--- A Unix socket file nobody listens on, as a crashed daemon leaves.
local function dead_socket(path)
  local server = uv.new_pipe(false)
  assert(server:bind(path .. ".tmp"))
  -- libuv unlinks the path it bound when the pipe closes: keep another name.
  assert(uv.fs_rename(path .. ".tmp", path))
  server:close()
  wait_for(50, function()
    return false
  end)
  local st = uv.fs_stat(path)
  assert(st and st.type == "socket", "no dead socket at " .. path)
end

--- A server on `path` that answers every request line with `respond(id, method, client)`.
local function fake_server(path, respond)
  local server = uv.new_pipe(false)
  assert(server:bind(path))
  server:listen(16, function(err)
    if err then
      return
    end
    local client = uv.new_pipe(false)
    server:accept(client)
    local buf = ""
    client:read_start(function(rerr, data)
      if rerr or not data then
        if not client:is_closing() then
          client:close()
        end
        return
      end
      buf = buf .. data
      while true do
        local nl = buf:find("\n", 1, true)
        if not nl then
          break
        end
        local line = buf:sub(1, nl - 1)
        buf = buf:sub(nl + 1)
        if not client:is_closing() then
          respond(line:match('"id"%s*:%s*(%d+)'), line:match('"method"%s*:%s*"([^"]*)"'), client)
        end
      end
    end)
  end)
  return server
end

local function close_later(client)
  -- shutdown lets the write go out before the close.
  client:shutdown(function()
    if not client:is_closing() then
      client:close()
    end
  end)
end

local function main()
  local home = env("CODESEARCH_HOME", true)
  local cmd = env("CODESEARCH_TEST_CMD", true)
  local corpus = uv.fs_realpath(env("CODESEARCH_TEST_CORPUS", true))
  local query = env("CODESEARCH_TEST_QUERY", true)
  local expect_file = env("CODESEARCH_TEST_EXPECT_FILE", true)
  local expect_line = tonumber(env("CODESEARCH_TEST_EXPECT_LINE", false))
  assert(corpus, "CODESEARCH_TEST_CORPUS does not exist")
  vim.env.CODESEARCH_SOCKET = nil
  local socket = home .. "/codesearchd.sock"
  local scratch = vim.fn.tempname()
  vim.fn.mkdir(scratch, "p")

  -- Other Neovims (tests run in parallel) may have the corpus's files open.
  vim.o.swapfile = false
  out("# Neovim " .. tostring(vim.version().major) .. "." .. vim.version().minor .. "." .. vim.version().patch)
  vim.cmd("runtime plugin/codesearch.lua")
  check(vim.fn.exists(":Codesearch") == 2 and vim.fn.exists(":CodesearchIndex") == 2 and vim.fn.exists(":CodesearchStatus") == 2, "the plugin defines :Codesearch, :CodesearchIndex and :CodesearchStatus")
  local codesearch = require("codesearch")
  rpc = require("codesearch.rpc")
  codesearch.setup({ cmd = cmd, timeout_ms = 60000 })

  -- 1. No daemon runs: :CodesearchIndex starts one and indexes the corpus.
  check(uv.fs_stat(socket) == nil, "no daemon runs at the start", "a socket is already at " .. socket)
  local from = #messages
  vim.v.errmsg = ""
  local err = ex("CodesearchIndex " .. vim.fn.fnameescape(corpus))
  check(err == nil, ":CodesearchIndex runs", err)
  local started = wait_message(from, "running %(pid %d+%)", nil, 60000)
  check(started ~= nil, ":CodesearchIndex starts the daemon with `codesearch daemon start`")
  local status
  local ready = poll(240000, function()
    local e, repos = call("repo.list")
    if e or type(repos) ~= "table" then
      return false
    end
    for _, repo in ipairs(repos) do
      if repo.path == corpus then
        status = repo
        return repo.state == "ready" or repo.state == "error"
      end
    end
    return false
  end)
  check(ready and status and status.state == "ready", "the corpus is indexed", vim.inspect(status))
  local e, daemon = call("daemon.status")
  check(not e and daemon and daemon.started_by == "codesearch", "the daemon was started by the plugin through `codesearch daemon start`", vim.inspect(e or daemon))
  local done = wait_message(from, vim.pesc(corpus) .. ": ready, %d+ files", nil, 30000)
  check(done ~= nil, ":CodesearchIndex says when the corpus is ready")

  -- 2. :Codesearch fills the quickfix list, scoped to the repository of the cwd.
  vim.cmd("cd " .. vim.fn.fnameescape(corpus .. "/" .. vim.fn.fnamemodify(expect_file, ":h")))
  vim.fn.setqflist({}, " ", { title = "empty" })
  from = #messages
  err = ex("Codesearch " .. query)
  check(err == nil, ":Codesearch runs", err)
  local title = "codesearch: " .. query
  local filled = wait_for(60000, function()
    return vim.fn.getqflist({ title = 1 }).title == title
  end)
  local items = vim.fn.getqflist()
  check(filled and #items > 0, ":Codesearch fills the quickfix list", "title " .. vim.inspect(vim.fn.getqflist({ title = 1 }).title) .. ", " .. #items .. " items")
  local want = corpus .. "/" .. expect_file
  local file_rank, line_rank
  for i, item in ipairs(items) do
    local name = vim.api.nvim_buf_get_name(item.bufnr)
    if name == want then
      file_rank = file_rank or i
      if expect_line and item.lnum <= expect_line and expect_line <= math.max(item.end_lnum, item.lnum) then
        line_rank = line_rank or i
      end
    end
  end
  local listing = {}
  for i = 1, math.min(#items, 5) do
    local item = items[i]
    table.insert(listing, ("%s:%d-%d %s"):format(vim.api.nvim_buf_get_name(item.bufnr), item.lnum, item.end_lnum, item.text))
  end
  listing = table.concat(listing, "\n#   ")
  out("#   " .. listing)
  check(file_rank ~= nil, ("the quickfix list has %s (rank %s)"):format(expect_file, tostring(file_rank)), listing)
  if expect_line then
    check(line_rank ~= nil, ("an entry of %s spans line %d (rank %s)"):format(expect_file, expect_line, tostring(line_rank)), listing)
  end
  local qf_open = false
  for _, win in ipairs(vim.api.nvim_list_wins()) do
    if vim.fn.getwinvar(win, "&buftype") == "quickfix" then
      qf_open = true
    end
  end
  check(qf_open, "the quickfix window is open")
  vim.cmd("cclose")
  check(vim.v.errmsg == "", "no error so far", vim.v.errmsg)

  from = #messages
  vim.fn.setqflist({}, " ", { title = "empty" })
  err = ex("Codesearch! " .. query)
  filled = wait_for(60000, function()
    return vim.fn.getqflist({ title = 1 }).title == title
  end)
  check(err == nil and filled and #vim.fn.getqflist() > 0, ":Codesearch! searches every repository", err)
  vim.cmd("cclose")

  -- The select picker: vim.ui.select gets the hits, a choice opens the file at its line.
  codesearch.setup({ cmd = cmd, timeout_ms = 60000, picker = "select" })
  local real_select = vim.ui.select
  local offered
  vim.ui.select = function(choices, opts, on_choice)
    offered = { choices = choices, prompt = opts.prompt, first = opts.format_item(choices[1]) }
    on_choice(choices[1])
  end
  err = ex("Codesearch " .. query)
  wait_for(60000, function()
    return offered ~= nil
  end)
  vim.ui.select = real_select
  local cursor = vim.api.nvim_win_get_cursor(0)
  check(
    err == nil and offered and offered.prompt == title and vim.api.nvim_buf_get_name(0) == offered.choices[1].filename and cursor[1] == offered.choices[1].lnum,
    "picker = \"select\": vim.ui.select offers the hits and a choice opens the file at its line",
    vim.inspect({ err = err, offered = offered and offered.first, buffer = vim.api.nvim_buf_get_name(0), cursor = cursor })
  )
  vim.cmd("enew")
  codesearch.setup({ cmd = cmd, timeout_ms = 60000 })

  from = #messages
  err = ex("CodesearchStatus")
  local said = wait_message(from, "codesearchd [^\n]*, pid " .. daemon.pid .. ", up", vim.log.levels.INFO, 30000)
  check(err == nil and said ~= nil and said.msg:find(vim.pesc(corpus) .. ": ready"), ":CodesearchStatus shows the daemon and the corpus", said and said.msg)

  -- 3. A malformed answer gives a message, no Lua error.
  local fakes = {
    {
      name = "a line that is not JSON",
      pattern = "invalid JSON",
      respond = function(_, _, client)
        client:write("not json\n")
      end,
    },
    {
      name = "an answer cut short, then a closed connection",
      pattern = "closed the connection",
      respond = function(id, _, client)
        client:write('{"jsonrpc":"2.0","id":' .. (id or 1) .. ',"result":')
        close_later(client)
      end,
    },
    {
      name = "an answer of the wrong shape",
      pattern = "unexpected answer",
      respond = function(id, _, client)
        client:write('{"jsonrpc":"2.0","id":' .. (id or 1) .. ',"result":42}\n')
      end,
    },
    {
      name = "search hits of the wrong shape",
      pattern = "unexpected answer to `search`",
      respond = function(id, method, client)
        local result = method == "repo.list" and '[{"path":"/nowhere","state":"ready"}]' or '{"results":[1,"x",{"repo":3}]}'
        client:write('{"jsonrpc":"2.0","id":' .. (id or 1) .. ',"result":' .. result .. "}\n")
      end,
    },
    {
      name = "a JSON-RPC error",
      pattern = "^codesearch: unknown repository: /nowhere$",
      respond = function(id, _, client)
        client:write('{"jsonrpc":"2.0","id":' .. (id or 1) .. ',"error":{"code":-32001,"message":"unknown repository: /nowhere"}}\n')
      end,
    },
    {
      name = "an error with a null id",
      pattern = "Parse error: expected value",
      respond = function(_, _, client)
        client:write('{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error: expected value"}}\n')
      end,
    },
    {
      name = "no answer at all",
      pattern = "did not answer `repo.list` within",
      timeout_ms = 300,
      respond = function() end,
    },
  }
  for i, fake in ipairs(fakes) do
    local path = scratch .. "/fake" .. i .. ".sock"
    local server = fake_server(path, fake.respond)
    codesearch.setup({ cmd = cmd, socket = path, timeout_ms = fake.timeout_ms or 5000 })
    from = #messages
    vim.v.errmsg = ""
    err = ex("Codesearch " .. query)
    local m = wait_message(from, fake.pattern, vim.log.levels.ERROR, 10000)
    check(err == nil and m ~= nil and vim.v.errmsg == "" and not internal_errors(from), "malformed answer, " .. fake.name .. ": a message, no Lua error", vim.inspect({ err = err, errmsg = vim.v.errmsg, messages = vim.list_slice(messages, from + 1) }))
    server:close()
  end
  rpc.close()

  -- 4. A dead socket gives a message, no Lua error.
  local dead = scratch .. "/dead.sock"
  dead_socket(dead)
  local plain = scratch .. "/plain.sock"
  vim.fn.writefile({ "not a socket" }, plain)
  local failing = scratch .. "/failing-codesearch"
  vim.fn.writefile({ "#!/bin/sh", "echo 'codesearch: error: cannot start codesearchd (a test)' >&2", "exit 1" }, failing)
  vim.fn.setfperm(failing, "rwx------")
  local deads = {
    { name = "no client to start the daemon", socket = dead, cmd = scratch .. "/no-such-codesearch", pattern = "is not executable" },
    { name = "auto_start off", socket = dead, auto_start = false, pattern = "no daemon answers on " .. vim.pesc(dead) },
    { name = "a plain file, auto_start off", socket = plain, auto_start = false, pattern = "no daemon answers on " .. vim.pesc(plain) },
    { name = "`codesearch daemon start` fails", socket = dead, cmd = failing, pattern = "could not start the daemon: cannot start codesearchd %(a test%)" },
    { name = "no file, auto_start off", socket = scratch .. "/none.sock", auto_start = false, pattern = "no daemon answers on" },
  }
  for _, case in ipairs(deads) do
    codesearch.setup({ cmd = case.cmd or cmd, socket = case.socket, auto_start = case.auto_start, timeout_ms = 5000 })
    for _, command in ipairs({ "Codesearch " .. query, "CodesearchIndex " .. vim.fn.fnameescape(corpus), "CodesearchStatus" }) do
      from = #messages
      vim.v.errmsg = ""
      err = ex(command)
      local m = wait_message(from, case.pattern, vim.log.levels.ERROR, 10000)
      check(err == nil and m ~= nil and vim.v.errmsg == "" and not internal_errors(from), ("dead socket, %s, :%s: a message, no Lua error"):format(case.name, command:match("^%S+")), vim.inspect({ err = err, errmsg = vim.v.errmsg, messages = vim.list_slice(messages, from + 1) }))
    end
  end

  -- 5. A stopped daemon that left its socket behind is started again.
  codesearch.setup({ cmd = cmd, timeout_ms = 60000 })
  e = call("daemon.shutdown")
  check(not e and process_gone(daemon.pid), "the daemon stops on daemon.shutdown", vim.inspect(e))
  if uv.fs_stat(socket) == nil then
    dead_socket(socket)
  end
  from = #messages
  vim.v.errmsg = ""
  err = ex("CodesearchStatus")
  said = wait_message(from, "codesearchd [^\n]*, pid %d+, up", vim.log.levels.INFO, 60000)
  local new_pid = said and tonumber(said.msg:match("pid (%d+)"))
  check(err == nil and new_pid and new_pid ~= daemon.pid and message_after(from, "running %(pid") ~= nil, "a stopped daemon (dead socket left behind) is started again", vim.inspect(vim.list_slice(messages, from + 1)))
  check(said and said.msg:find("\n" .. vim.pesc(corpus) .. ": "), "the daemon started again has the corpus registered", said and said.msg)
  check(vim.v.errmsg == "" and not internal_errors(0), "no Lua error and no internal error anywhere", vim.v.errmsg)

  -- Leave nothing running.
  if new_pid then
    e = call("daemon.shutdown")
    check(not e and process_gone(new_pid), "the daemon stops at the end", vim.inspect(e))
  end
  vim.fn.delete(scratch, "rf")
end

-- Bounded: a hang fails rather than waits forever.
local watchdog = uv.new_timer()
watchdog:start(280000, 0, function()
  io.stdout:write("not ok - the test did not finish within 280 s\n")
  io.stdout:flush()
  os.exit(1)
end)

local ok, err = xpcall(main, debug.traceback)
watchdog:stop()
if not ok then
  check(false, "the test ran without a Lua error", tostring(err))
end
out(("# %d checks, %d failed"):format(checks, failures))
if failures == 0 then
  vim.cmd("qall!")
else
  vim.cmd("cquit 1")
end
