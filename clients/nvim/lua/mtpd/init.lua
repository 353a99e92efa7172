-- mtpd.nvim: fill-in-the-middle completion from `mtpd serve` as ghost text.
--
--   require('mtpd').setup({
--     address = nil,        -- 'unix:PATH' | 'tcp:HOST:PORT' (default: the daemon's socket)
--     model = nil,          -- a model dir: start `mtpd serve` when no daemon answers
--     mtpd = 'mtpd',        -- the binary used to start it
--     accept_key = '<Tab>', -- accepts the ghost text (else the key does what it did)
--     max_tokens = 64, stop = nil, temperature = 0, draft_tokens = nil,
--     debounce_ms = 30,     -- wait this long after a keystroke before asking
--     max_prefix_lines = 200, max_suffix_lines = 50,
--     filetypes = nil,      -- a list to enable only those ('*' or nil: all)
--   })
--
-- Each buffer gets its own daemon session, so the cached prefix is reused
-- from one keystroke to the next; a new keystroke cancels the request in
-- flight. :MtpdStatus and require('mtpd').statusline() show the last
-- completion's latency and acceptance.
local rpc = require('mtpd.rpc')

local M = {}

local defaults = {
  address = nil, model = nil, mtpd = 'mtpd', accept_key = '<Tab>',
  max_tokens = 64, stop = nil, temperature = 0, draft_tokens = nil,
  debounce_ms = 30, max_prefix_lines = 200, max_suffix_lines = 50,
  filetypes = nil, start_timeout_ms = 30000,
}

local ns = vim.api.nvim_create_namespace('mtpd')
local cfg = vim.deepcopy(defaults)
local conn, connecting, job = nil, false, nil
local waiters = {}      -- callbacks waiting for a connection
local inflight = nil    -- {msgid, buf, tick, row, col, t0}
local ghost = nil       -- {buf, row, col, text, mark}
local timer = nil
local sessions = {}     -- buf -> session id
local last = {}         -- the last completion: latency_ms, stats, error
M.last = last

local function enabled_for(buf)
  if not vim.api.nvim_buf_is_valid(buf) or vim.bo[buf].buftype ~= '' then
    return false
  end
  if not cfg.filetypes or cfg.filetypes == '*' then
    return true
  end
  return vim.tbl_contains(cfg.filetypes, vim.bo[buf].filetype)
end

local function flush_waiters(err)
  local ws = waiters
  waiters = {}
  for _, w in ipairs(ws) do
    w(err, conn)
  end
end

local function try_connect(cb)
  rpc.connect(cfg.address, function(err, c)
    if err then
      return cb(err)
    end
    conn = c
    cb(nil, c)
  end, {on_close = function(reason)
    conn = nil
    last.error = reason
    sessions = {}  -- ids stay valid in the daemon; reopened on demand
  end})
end

local function start_daemon_and_connect()
  local kind, path = rpc.parse_address(cfg.address)
  local cmd = {cfg.mtpd, 'serve', '--model', cfg.model, '--listen', cfg.address}
  if kind == 'unix' then
    vim.fn.mkdir(vim.fn.fnamemodify(path, ':h'), 'p', 448)  -- 0700
  end
  job = vim.fn.jobstart(cmd, {detach = true})
  if job <= 0 then
    connecting = false
    return flush_waiters('cannot start ' .. cfg.mtpd)
  end
  local deadline = vim.loop.now() + cfg.start_timeout_ms
  local function again()
    try_connect(function(err)
      if not err then
        connecting = false
        return flush_waiters(nil)
      end
      if vim.loop.now() > deadline then
        connecting = false
        return flush_waiters('mtpd serve did not start: ' .. err)
      end
      vim.defer_fn(again, 100)
    end)
  end
  again()
end

--- cb(err, conn) once connected (starting the daemon when configured).
local function with_conn(cb)
  if conn and not conn.closed then
    return cb(nil, conn)
  end
  table.insert(waiters, cb)
  if connecting then
    return
  end
  connecting = true
  try_connect(function(err)
    if not err then
      connecting = false
      return flush_waiters(nil)
    end
    if cfg.model then
      return start_daemon_and_connect()
    end
    connecting = false
    flush_waiters(err)
  end)
end

--- The buffer split at the cursor: text = table.concat(lines, '\n') .. '\n'
--- (within max_prefix_lines / max_suffix_lines of the cursor).
local function context(buf, row, col)
  local first = math.max(0, row - 1 - cfg.max_prefix_lines)
  local last_line = math.min(vim.api.nvim_buf_line_count(buf), row + cfg.max_suffix_lines)
  local before = vim.api.nvim_buf_get_lines(buf, first, row - 1, false)
  local cur = vim.api.nvim_buf_get_lines(buf, row - 1, row, false)[1] or ''
  local after = vim.api.nvim_buf_get_lines(buf, row, last_line, false)
  local prefix = table.concat(before, '\n') .. (#before > 0 and '\n' or '') .. cur:sub(1, col)
  local suffix = cur:sub(col + 1) .. '\n' .. table.concat(after, '\n') .. (#after > 0 and '\n' or '')
  return prefix, suffix
end
M._context = context

function M.clear()
  if ghost and vim.api.nvim_buf_is_valid(ghost.buf) then
    vim.api.nvim_buf_clear_namespace(ghost.buf, ns, 0, -1)
  end
  ghost = nil
end

function M.cancel()
  if inflight and conn and inflight.msgid then
    conn:request('cancel', {msgid = inflight.msgid})
  end
  inflight = nil
end

local function show(buf, row, col, text)
  M.clear()
  if text == '' then
    return
  end
  local lines = vim.split(text, '\n', {plain = true})
  local cur = vim.api.nvim_buf_get_lines(buf, row - 1, row, false)[1] or ''
  local opts = {virt_text = {{lines[1], 'MtpdGhost'}}, hl_mode = 'combine'}
  if col >= #cur then
    opts.virt_text_pos = 'overlay'
  else
    opts.virt_text_pos = 'eol'
  end
  if #lines > 1 then
    opts.virt_lines = {}
    for i = 2, #lines do
      table.insert(opts.virt_lines, {{lines[i], 'MtpdGhost'}})
    end
  end
  local mark = vim.api.nvim_buf_set_extmark(buf, ns, row - 1, col, opts)
  ghost = {buf = buf, row = row, col = col, text = text, mark = mark}
end

local function with_session(c, buf, cb)
  if sessions[buf] then
    return cb(sessions[buf])
  end
  c:request('session.open', {}, function(err, res)
    if err or not res then
      return cb(nil, err)
    end
    sessions[buf] = res.session
    cb(res.session)
  end)
end

local function request(buf, retried)
  if vim.api.nvim_get_current_buf() ~= buf or vim.fn.mode() ~= 'i' then
    return
  end
  local row, col = unpack(vim.api.nvim_win_get_cursor(0))
  local tick = vim.api.nvim_buf_get_changedtick(buf)
  local prefix, suffix = context(buf, row, col)
  local req = {buf = buf, tick = tick, row = row, col = col, t0 = vim.loop.hrtime()}
  inflight = req
  with_conn(function(err, c)
    if err then
      last.error = err
      return
    end
    if inflight ~= req then
      return
    end
    with_session(c, buf, function(sid, serr)
      if inflight ~= req then
        return
      end
      if not sid then
        last.error = serr and serr.message or 'session.open failed'
        return
      end
      local p = {session = sid, prefix = prefix, suffix = suffix,
                 max_tokens = cfg.max_tokens, temperature = cfg.temperature,
                 stop = cfg.stop, draft_tokens = cfg.draft_tokens, stream = true}
      M.last_request = p
      local function still_here()
        local r2, c2 = unpack(vim.api.nvim_win_get_cursor(0))
        return inflight == req and vim.api.nvim_get_current_buf() == buf
          and vim.fn.mode() == 'i' and vim.api.nvim_buf_get_changedtick(buf) == tick
          and r2 == row and c2 == col
      end
      local streamed = {}
      -- the ghost text grows as the chunks arrive
      local function on_chunk(ch)
        if type(ch.text) == 'string' and ch.text ~= '' and still_here() then
          table.insert(streamed, ch.text)
          show(buf, row, col, table.concat(streamed))
        end
      end
      req.msgid = c:request('fim', p, function(ferr, res)
        if ferr and ferr.code == 'unknown_session' and not retried then
          sessions[buf] = nil  -- evicted or expired: open a new one
          if inflight == req then
            return request(buf, true)
          end
          return
        end
        if inflight ~= req then
          return  -- overtaken by typing (and cancelled)
        end
        local here = still_here()
        inflight = nil
        last.latency_ms = (vim.loop.hrtime() - req.t0) / 1e6
        last.count = (last.count or 0) + 1
        if ferr then
          last.error = ferr.code .. ': ' .. tostring(ferr.message)
          return
        end
        last.error = nil
        last.stats = res.stats
        last.finish_reason = res.finish_reason
        last.text = res.text
        if here then
          show(buf, row, col, res.text or '')
        end
      end, on_chunk)
    end)
  end)
end

--- Schedules a completion at the cursor (cancelling the one in flight).
function M.trigger()
  local buf = vim.api.nvim_get_current_buf()
  M.clear()
  M.cancel()
  if not enabled_for(buf) then
    return
  end
  if timer then
    timer:stop()
  end
  timer = timer or vim.loop.new_timer()
  timer:start(cfg.debounce_ms, 0, vim.schedule_wrap(function() request(buf) end))
end

--- Inserts the ghost text at the cursor; -> false when there is none.
function M.accept()
  if not ghost or ghost.buf ~= vim.api.nvim_get_current_buf() then
    return false
  end
  local g = ghost
  M.clear()
  local lines = vim.split(g.text, '\n', {plain = true})
  vim.api.nvim_buf_set_text(g.buf, g.row - 1, g.col, g.row - 1, g.col, lines)
  if #lines == 1 then
    vim.api.nvim_win_set_cursor(0, {g.row, g.col + #lines[1]})
  else
    vim.api.nvim_win_set_cursor(0, {g.row + #lines - 1, #lines[#lines]})
  end
  return true
end

--- The daemon session of buffer buf (default: the current one), or nil.
function M.session(buf)
  return sessions[buf or vim.api.nvim_get_current_buf()]
end

--- The pid of the `mtpd serve` this plugin started, or nil.
function M.daemon_pid()
  if not job then
    return nil
  end
  local ok, pid = pcall(vim.fn.jobpid, job)
  return ok and pid or nil
end

--- The msgid of the completion in flight (tests), or nil.
function M._inflight_msgid()
  return inflight and inflight.msgid or nil
end

--- The ghost text shown now (nil when none).
function M.ghost_text()
  return ghost and ghost.text or nil
end

function M.status()
  local s = last.stats or {}
  local parts = {}
  table.insert(parts, 'mtpd ' .. (conn and not conn.closed and ('connected to ' .. conn.address)
    or 'not connected'))
  if last.latency_ms then
    table.insert(parts, string.format('last completion: %.0f ms, %d tokens (%s), '
      .. 'acceptance %.2f, mean accepted length %.2f, prompt tokens reused %d/%d',
      last.latency_ms, s.generated_tokens or 0, tostring(last.finish_reason),
      s.acceptance_rate or 0, s.mean_accepted_length or 0,
      s.prompt_tokens_reused or 0, s.prompt_tokens or 0))
  end
  local buf = vim.api.nvim_get_current_buf()
  if sessions[buf] then
    table.insert(parts, 'session ' .. sessions[buf])
  end
  if last.error then
    table.insert(parts, 'last error: ' .. tostring(last.error))
  end
  return table.concat(parts, '\n')
end

--- A short statusline item: "mtpd 23ms acc 0.71".
function M.statusline()
  if not last.latency_ms then
    return conn and 'mtpd' or ''
  end
  local s = last.stats or {}
  return string.format('mtpd %.0fms acc %.2f', last.latency_ms, s.acceptance_rate or 0)
end

local function close_session(buf)
  local sid = sessions[buf]
  sessions[buf] = nil
  if sid and conn and not conn.closed then
    conn:request('session.close', {session = sid})
  end
end

function M.setup(opts)
  cfg = vim.tbl_extend('force', vim.deepcopy(defaults), opts or {})
  cfg.address = cfg.address or rpc.default_address()
  vim.cmd('highlight default link MtpdGhost Comment')
  local group = vim.api.nvim_create_augroup('mtpd', {clear = true})
  vim.api.nvim_create_autocmd({'TextChangedI', 'TextChangedP'}, {group = group,
    callback = function() M.trigger() end})
  vim.api.nvim_create_autocmd('CursorMovedI', {group = group, callback = function()
    if ghost and (function()
      local r, c = unpack(vim.api.nvim_win_get_cursor(0))
      return r ~= ghost.row or c ~= ghost.col
    end)() then
      M.trigger()
    end
  end})
  vim.api.nvim_create_autocmd({'InsertLeave', 'BufLeave'}, {group = group,
    callback = function() M.clear(); M.cancel() end})
  vim.api.nvim_create_autocmd({'BufDelete', 'BufWipeout'}, {group = group,
    callback = function(a) close_session(a.buf) end})
  vim.keymap.set('i', cfg.accept_key, function()
    if not M.accept() then
      local k = vim.api.nvim_replace_termcodes(cfg.accept_key, true, false, true)
      vim.api.nvim_feedkeys(k, 'n', false)
    end
  end, {desc = 'mtpd: accept the completion'})
  M.config = cfg
end

return M
