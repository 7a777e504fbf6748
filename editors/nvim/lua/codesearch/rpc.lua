-- The codesearchd client: NDJSON JSON-RPC 2.0 over the daemon's Unix socket,
-- through a libuv pipe of this Neovim (no process per request).
--
-- One connection is kept and reused; it is opened on the first request and
-- again after it closed. Answers are matched to requests by id, `repo.progress`
-- and other notifications go to the handlers registered for their method, and
-- every request has a timeout. When nothing answers on the socket (no file, or
-- nobody listening), `codesearch daemon start` is run once and the connection
-- tried again.
--
-- Callbacks get `(err, result)`: `err` is nil or `{ message = string, code =
-- number|nil }` (a JSON-RPC error's code, nil for transport failures); they run
-- on the main loop (never in a fast event), protected: a failing callback is
-- reported as a message, not a traceback.

local M = {}

local uv = vim.uv or vim.loop

local config = {
  cmd = "codesearch",
  socket = nil,
  auto_start = true,
  timeout_ms = 30000,
  start_timeout_ms = 60000,
}

-- The connection. `status`: "closed", "connecting", "starting" (running
-- `codesearch daemon start`) or "open". `generation` grows with every
-- connection attempt, so callbacks of a connection that was dropped are ignored.
local conn = {
  status = "closed",
  pipe = nil,
  generation = 0,
  buf = "",
  path = nil,
}

local next_id = 0
-- id -> { id, method, line, cb, timer, timeout_ms }
local pending = {}
-- ids waiting for the connection, in order
local queue = {}
-- notification method -> function(params)
local handlers = {}

-- A line this long without a newline is not an answer of the daemon.
local MAX_LINE = 64 * 1024 * 1024

local decode_json
if vim.json and vim.json.decode then
  decode_json = vim.json.decode
else
  decode_json = vim.fn.json_decode
end

-- vim.json.encode prints numbers with 14 significant digits, which mangles
-- subscription ids (53-bit integers); json_encode keeps integers exact.
local function encode_json(value)
  return vim.fn.json_encode(value)
end

--- Shows `msg` as a codesearch message.
function M.notify(msg, level)
  vim.notify("codesearch: " .. msg, level or vim.log.levels.INFO)
end

--- Runs `f(...)`, turning a Lua error into a message.
function M.protect(f, ...)
  local ok, e = pcall(f, ...)
  if not ok then
    M.notify("internal error: " .. tostring(e), vim.log.levels.ERROR)
  end
end

--- Replaces JSON nulls (vim.NIL) with nil, recursively.
local function nilify(v)
  if v == vim.NIL then
    return nil
  end
  if type(v) == "table" then
    for k, x in pairs(v) do
      v[k] = nilify(x)
    end
  end
  return v
end

local function non_empty_env(name)
  local v = vim.env[name]
  if v ~= nil and v ~= "" then
    return v
  end
  return nil
end

--- The socket path: the `socket` option, else `$CODESEARCH_SOCKET`, else
--- `$CODESEARCH_HOME/codesearchd.sock`, else `~/.codesearch/codesearchd.sock`
--- (the rules of proto/src/paths.rs). Nil when no home can be found.
function M.socket_path()
  if config.socket and config.socket ~= "" then
    if config.socket:match("^[~$]") then
      return vim.fn.expand(config.socket)
    end
    return config.socket
  end
  local socket = non_empty_env("CODESEARCH_SOCKET")
  if socket then
    return socket
  end
  local home = non_empty_env("CODESEARCH_HOME")
  if not home then
    local user_home = non_empty_env("HOME")
    if not user_home then
      return nil
    end
    home = user_home .. "/.codesearch"
  end
  return home .. "/codesearchd.sock"
end

local function excerpt(s, n)
  n = n or 80
  s = s:gsub("%s+", " ")
  if #s > n then
    return s:sub(1, n) .. "…"
  end
  return s
end

local function stop_timer(entry)
  if entry.timer then
    entry.timer:stop()
    if not entry.timer:is_closing() then
      entry.timer:close()
    end
    entry.timer = nil
  end
end

local function deliver(cb, err, result)
  if cb then
    M.protect(cb, err, result)
  end
end

--- Ends request `id` with `err` (a table), if it is still pending.
local function fail(id, err)
  local entry = pending[id]
  if not entry then
    return
  end
  pending[id] = nil
  stop_timer(entry)
  deliver(entry.cb, err)
end

--- Ends every pending request with `err`.
local function fail_all(err)
  local ids = vim.tbl_keys(pending)
  table.sort(ids)
  queue = {}
  for _, id in ipairs(ids) do
    fail(id, err)
  end
end

local function close_pipe()
  local pipe = conn.pipe
  conn.pipe = nil
  if pipe and not pipe:is_closing() then
    pcall(pipe.read_stop, pipe)
    pipe:close()
  end
end

--- Closes the connection and fails what was waiting on it with `message`.
local function drop(message)
  conn.generation = conn.generation + 1
  conn.status = "closed"
  conn.buf = ""
  close_pipe()
  if message then
    fail_all({ message = message })
  end
end

local function write(entry)
  local gen = conn.generation
  entry.timer = uv.new_timer()
  entry.timer:start(entry.timeout_ms, 0, function()
    vim.schedule(function()
      fail(entry.id, {
        message = ("the daemon did not answer `%s` within %g s"):format(entry.method, entry.timeout_ms / 1000),
      })
    end)
  end)
  local ok, e = pcall(conn.pipe.write, conn.pipe, entry.line, function(err)
    if err then
      vim.schedule(function()
        if gen == conn.generation then
          drop("cannot write to the daemon: " .. err)
        end
      end)
    end
  end)
  if not ok then
    drop("cannot write to the daemon: " .. tostring(e))
  end
end

local function flush()
  local ids = queue
  queue = {}
  for _, id in ipairs(ids) do
    if conn.status ~= "open" then
      return
    end
    local entry = pending[id]
    if entry then
      write(entry)
    end
  end
end

local function error_of(msg)
  local e = msg.error
  if type(e) ~= "table" then
    return { message = "the daemon sent an error without a message: " .. excerpt(tostring(e)) }
  end
  local message = type(e.message) == "string" and e.message or ("error " .. tostring(e.code))
  if type(e.data) == "string" and e.data ~= "" then
    message = message .. ": " .. e.data
  end
  return { message = message, code = tonumber(e.code) }
end

local function handle_line(line)
  local ok, msg = pcall(decode_json, line)
  if not ok or type(msg) ~= "table" then
    drop("the daemon sent invalid JSON: " .. excerpt(line))
    return
  end
  if rawget(msg, 1) ~= nil then
    drop("the daemon sent a batch answer, which this client never asks for: " .. excerpt(line))
    return
  end
  if msg.method ~= nil then
    -- A notification (or a request, which a client of this protocol never gets).
    local handler = msg.id == nil and handlers[msg.method]
    if handler then
      M.protect(handler, nilify(msg.params))
    end
    return
  end
  local id = msg.id
  if id == nil or id == vim.NIL then
    -- An answer to no request in particular (e.g. a parse error of a line it
    -- could not read, or "permission denied" before closing): it concerns
    -- whatever is waiting.
    if msg.error ~= nil and msg.error ~= vim.NIL then
      fail_all(error_of(msg))
    else
      drop("the daemon sent an answer without an id: " .. excerpt(line))
    end
    return
  end
  local entry = pending[id]
  if not entry then
    return -- an answer that came after its timeout
  end
  pending[id] = nil
  stop_timer(entry)
  if msg.error ~= nil and msg.error ~= vim.NIL then
    deliver(entry.cb, error_of(msg))
  elseif msg.result == nil then
    deliver(entry.cb, { message = ("the daemon's answer to `%s` has no result"):format(entry.method) })
  else
    deliver(entry.cb, nil, nilify(msg.result))
  end
end

local function on_read(gen, err, data)
  if gen ~= conn.generation then
    return
  end
  if err then
    drop("lost the connection to the daemon: " .. err)
    return
  end
  if data == nil then
    if conn.buf:match("%S") then
      drop("the daemon closed the connection in the middle of an answer: " .. excerpt(conn.buf))
    else
      drop("the daemon closed the connection")
    end
    return
  end
  conn.buf = conn.buf .. data
  while gen == conn.generation do
    local nl = conn.buf:find("\n", 1, true)
    if not nl then
      break
    end
    local line = conn.buf:sub(1, nl - 1)
    conn.buf = conn.buf:sub(nl + 1)
    if line:match("%S") then
      handle_line(line)
    end
  end
  if gen == conn.generation and #conn.buf > MAX_LINE then
    drop("the daemon sent a line longer than 64 MiB")
  end
end

local function connect_error(path, err, started)
  if err:match("^ENOENT") or err:match("^ECONNREFUSED") then
    if started then
      return ("started the daemon, but nothing answers on %s (%s); is CODESEARCH_SOCKET set to another path?"):format(
        path,
        err
      )
    end
    return ("no daemon answers on %s (auto_start is off: run `codesearch daemon start`)"):format(path)
  end
  if err:match("^EACCES") or err:match("^EPERM") then
    return ("cannot connect to %s: %s (is it another user's daemon? set CODESEARCH_HOME or CODESEARCH_SOCKET to your own)"):format(
      path,
      err
    )
  end
  return ("cannot connect to %s: %s"):format(path, err)
end

local start_daemon

--- Opens the connection; with `may_start`, starts the daemon when nothing
--- answers. `started`: the daemon was just started.
local function connect(may_start, started)
  local path = M.socket_path()
  if not path then
    conn.status = "closed"
    fail_all({ message = "neither CODESEARCH_HOME nor HOME is set, so there is no socket to connect to" })
    return
  end
  conn.generation = conn.generation + 1
  local gen = conn.generation
  conn.status = "connecting"
  conn.path = path
  conn.buf = ""
  local pipe = uv.new_pipe(false)
  conn.pipe = pipe
  local ok, e = pcall(pipe.connect, pipe, path, function(err)
    vim.schedule(function()
      if gen ~= conn.generation then
        return
      end
      if err then
        close_pipe()
        conn.status = "closed"
        if may_start and (err:match("^ENOENT") or err:match("^ECONNREFUSED")) then
          start_daemon(path)
        else
          fail_all({ message = connect_error(path, err, started) })
        end
        return
      end
      conn.status = "open"
      local read_ok, read_err = pcall(pipe.read_start, pipe, function(rerr, data)
        vim.schedule(function()
          on_read(gen, rerr, data)
        end)
      end)
      if not read_ok then
        drop("cannot read from the daemon: " .. tostring(read_err))
        return
      end
      flush()
    end)
  end)
  if not ok then
    close_pipe()
    conn.status = "closed"
    fail_all({ message = connect_error(path, tostring(e)) })
  end
end

local function clean_output(lines)
  local out = {}
  for _, l in ipairs(lines or {}) do
    l = l:gsub("\r$", "")
    if l:match("%S") then
      table.insert(out, l)
    end
  end
  return table.concat(out, "\n")
end

--- Runs `codesearch daemon start`, then connects once more (without starting).
start_daemon = function(path)
  local cmd = config.cmd
  local argv = { cmd, "daemon", "start" }
  if vim.fn.executable(cmd) ~= 1 then
    fail_all({
      message = ("no daemon answers on %s, and `%s` (the codesearch client, which starts it) is not executable: install codesearch or set `cmd` in require('codesearch').setup()"):format(
        path,
        cmd
      ),
    })
    return
  end
  conn.status = "starting"
  local gen = conn.generation
  local stdout, stderr = {}, {}
  local timer = uv.new_timer()
  local job
  local finished = false
  local function finish(code)
    if finished then
      return
    end
    finished = true
    timer:stop()
    if not timer:is_closing() then
      timer:close()
    end
    if gen ~= conn.generation then
      return
    end
    conn.status = "closed"
    if code == 0 then
      local said = clean_output(stdout)
      M.notify(said ~= "" and said or "started the daemon")
      connect(false, true)
    elseif code == nil then
      fail_all({
        message = ("`%s daemon start` did not finish within %g s"):format(cmd, config.start_timeout_ms / 1000),
      })
    else
      local why = clean_output(stderr):gsub("^codesearch: ", ""):gsub("^error: ", "")
      if why == "" then
        why = "exit status " .. code
      end
      fail_all({ message = "could not start the daemon: " .. why })
    end
  end
  local opts = {
    stdout_buffered = true,
    stderr_buffered = true,
    on_stdout = function(_, data)
      stdout = data
    end,
    on_stderr = function(_, data)
      stderr = data
    end,
    on_exit = function(_, code)
      -- Let the buffered output callbacks run first.
      vim.schedule(function()
        finish(code)
      end)
    end,
  }
  if config.socket and config.socket ~= "" then
    -- The daemon listens where this plugin will look.
    opts.env = { CODESEARCH_SOCKET = path }
  end
  local ok, id = pcall(vim.fn.jobstart, argv, opts)
  if not ok or id <= 0 then
    finished = true
    timer:close()
    conn.status = "closed"
    fail_all({ message = ("cannot run `%s daemon start`: %s"):format(cmd, ok and ("jobstart returned " .. id) or tostring(id)) })
    return
  end
  job = id
  timer:start(config.start_timeout_ms, 0, function()
    vim.schedule(function()
      pcall(vim.fn.jobstop, job)
      finish(nil)
    end)
  end)
end

--- Sends `method` with `params` (nil: none); `cb(err, result)` gets the answer.
--- `opts.timeout_ms` overrides the timeout of this request. Returns its id.
function M.request(method, params, cb, opts)
  opts = opts or {}
  next_id = next_id + 1
  local id = next_id
  local msg = { jsonrpc = "2.0", id = id, method = method }
  if params ~= nil then
    msg.params = params
  end
  local ok, line = pcall(encode_json, msg)
  if not ok then
    vim.schedule(function()
      deliver(cb, { message = "cannot encode the request: " .. tostring(line) })
    end)
    return id
  end
  pending[id] = {
    id = id,
    method = method,
    line = line .. "\n",
    cb = cb,
    timeout_ms = opts.timeout_ms or config.timeout_ms,
  }
  table.insert(queue, id)
  if conn.status == "open" then
    flush()
  elseif conn.status == "closed" then
    connect(config.auto_start)
  end
  return id
end

--- Calls `fn(params)` for every notification `method` (one handler a method).
function M.on_notification(method, fn)
  handlers[method] = fn
end

--- Closes the connection; what is pending fails.
function M.close()
  drop("the connection was closed")
end

--- Sets `cmd`, `socket`, `auto_start`, `timeout_ms`, `start_timeout_ms`
--- (nil keeps the current value, except `socket`, which nil clears). A new
--- socket or command closes the connection.
function M.configure(opts)
  local old_socket, old_cmd = config.socket, config.cmd
  config.socket = opts.socket
  for _, key in ipairs({ "cmd", "auto_start", "timeout_ms", "start_timeout_ms" }) do
    if opts[key] ~= nil then
      config[key] = opts[key]
    end
  end
  if config.socket ~= old_socket or config.cmd ~= old_cmd then
    if conn.status ~= "closed" then
      drop("the connection was closed: the codesearch settings changed")
    end
  end
end

--- The connection's state, for tests and :CodesearchStatus.
function M.state()
  return { status = conn.status, path = conn.path, pending = vim.tbl_count(pending) }
end

return M
