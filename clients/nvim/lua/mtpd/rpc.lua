-- mtpd/rpc.lua: an asynchronous msgpack-rpc client of `mtpd serve`
-- (docs/protocol.md) on Neovim's own event loop (vim.loop) and msgpack
-- codec (vim.mpack).
--
-- Why not sockconnect(..., {rpc = true}): rpcrequest() blocks the editor
-- until the answer comes, so a completion could neither be cancelled nor
-- overtaken by typing, and the daemon's generate.chunk notifications would
-- be taken for API calls. Both paths speak the same protocol
-- (tests/daemon/test_client_nvim.py drives the daemon with rpcrequest too).
local M = {}

local uv = vim.loop
local mpack = vim.mpack

local Conn = {}
Conn.__index = Conn

--- The daemon's default address (docs/protocol.md, "Transport").
function M.default_address()
  local xdg = os.getenv('XDG_RUNTIME_DIR')
  if xdg and xdg ~= '' then
    return 'unix:' .. xdg .. '/mtpd/mtpd.sock'
  end
  local tmp = os.getenv('TMPDIR')
  if not tmp or tmp == '' then
    tmp = '/tmp'
  end
  return 'unix:' .. tmp .. '/mtpd-' .. uv.getuid() .. '/mtpd.sock'
end

--- 'unix:PATH' | 'tcp:HOST:PORT' -> kind, path-or-host, port
function M.parse_address(addr)
  if addr:sub(1, 5) == 'unix:' then
    return 'unix', addr:sub(6)
  end
  local host, port = addr:match('^tcp:%[?([^%]]+)%]?:(%d+)$')
  if host then
    return 'tcp', host, tonumber(port)
  end
  if addr:sub(1, 1) == '/' then
    return 'unix', addr
  end
  return nil, 'bad address ' .. addr .. ' (want unix:PATH or tcp:HOST:PORT)'
end

local function is_nil(x)
  return x == nil or x == vim.NIL
end

--- Connects; cb(err, conn) runs on the main loop (vim.schedule).
--- opts.on_close(reason) is called once when the connection ends.
function M.connect(address, cb, opts)
  opts = opts or {}
  local kind, a, port = M.parse_address(address)
  if not kind then
    return vim.schedule(function() cb(a) end)
  end
  local handle = kind == 'unix' and uv.new_pipe(false) or uv.new_tcp()
  local self = setmetatable({
    handle = handle, next_id = 1, pending = {}, closed = false,
    on_close = opts.on_close, unpacker = mpack.Unpacker(), address = address,
  }, Conn)
  local function connected(err)
    vim.schedule(function()
      if err then
        self:close('connect: ' .. tostring(err))
        return cb(tostring(err))
      end
      handle:read_start(function(rerr, data)
        if rerr or not data then
          return vim.schedule(function()
            self:close(rerr and tostring(rerr) or 'the daemon closed the connection')
          end)
        end
        vim.schedule(function() self:_feed(data) end)
      end)
      cb(nil, self)
    end)
  end
  local ok, err
  if kind == 'unix' then
    ok, err = pcall(handle.connect, handle, a, connected)
  else
    ok, err = pcall(handle.connect, handle, a, port, connected)
  end
  if not ok then
    vim.schedule(function() self:close(tostring(err)); cb(tostring(err)) end)
  end
  return self
end

function Conn:_feed(data)
  local pos = 1
  while pos <= #data do
    local ok, obj, newpos = pcall(self.unpacker, data, pos)
    if not ok then
      return self:close('protocol: bad msgpack from the daemon')
    end
    pos = newpos
    if obj == nil then
      break
    end
    self:_dispatch(obj)
    if self.closed then
      return
    end
  end
end

function Conn:_dispatch(f)
  if type(f) ~= 'table' then
    return
  end
  if f[1] == 1 then
    local p = self.pending[f[2]]
    self.pending[f[2]] = nil
    if p and p.cb then
      local err = not is_nil(f[3]) and f[3] or nil
      p.cb(err, (not is_nil(f[4])) and f[4] or nil)
    end
  elseif f[1] == 2 then
    local body = type(f[3]) == 'table' and f[3][1] or nil
    if f[2] == 'generate.chunk' and type(body) == 'table' then
      local p = self.pending[body.msgid]
      if p and p.on_chunk then
        p.on_chunk(body)
      end
    elseif f[2] == 'error' then
      local msg = type(body) == 'table' and body.message or 'protocol error'
      self:close('protocol: ' .. tostring(msg))
    end
  end
end

--- Sends `method` with the map params; cb(err, result) on the main loop
--- (err: the protocol's {code, message, ...} map, or {code = 'connection'}).
--- on_chunk(chunk) for each generate.chunk of a streaming request.
--- -> the request's msgid, or nil when the connection is closed.
function Conn:request(method, params, cb, on_chunk)
  if self.closed then
    if cb then
      vim.schedule(function() cb({code = 'connection', message = 'not connected'}) end)
    end
    return nil
  end
  local id = self.next_id
  self.next_id = (self.next_id % 4294967295) + 1
  self.pending[id] = {cb = cb, on_chunk = on_chunk}
  local p = params
  if p == nil or next(p) == nil then
    p = vim.empty_dict()
  end
  self.handle:write(mpack.encode({0, id, method, {p}}))
  return id
end

function Conn:close(reason)
  if self.closed then
    return
  end
  self.closed = true
  pcall(function()
    self.handle:read_stop()
    self.handle:close()
  end)
  local pending = self.pending
  self.pending = {}
  for _, p in pairs(pending) do
    if p.cb then
      p.cb({code = 'connection', message = reason or 'closed'})
    end
  end
  if self.on_close then
    self.on_close(reason)
  end
end

M.is_nil = is_nil
return M
