"""Neovim's own msgpack-RPC client against the daemon: a headless `nvim`
connects with sockconnect('pipe', path, {rpc = true}) and calls hello,
session.open and a greedy generate with rpcrequest; the answer equals the
daemon's answer to the same request from the Python client."""
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import msgpack
import pytest

from daemon_fixture import DEFAULT_MODEL, ROOT, daemon, mtpd_serve  # noqa: F401 (fixtures)
from fakeserver import FakeServer
import mtpd_client

LUA = r"""
local args = vim.fn.json_decode(table.concat(vim.fn.readfile(ARGS), "\n"))
local ok, res = pcall(function()
  local ch = vim.fn.sockconnect('pipe', args.socket, {rpc = true})
  assert(ch > 0, 'sockconnect failed')
  local hello = vim.fn.rpcrequest(ch, 'hello', vim.empty_dict())
  local opened = vim.fn.rpcrequest(ch, 'session.open')   -- params [] = {}
  local gen = vim.fn.rpcrequest(ch, 'generate', {session = opened.session,
      prompt = args.prompt, max_tokens = args.max_tokens, temperature = 0})
  local again = vim.fn.rpcrequest(ch, 'generate', {session = opened.session,
      prompt = args.prompt, max_tokens = args.max_tokens})
  local bad = {pcall(vim.fn.rpcrequest, ch, 'generate', {prompt = 7})}
  local closed = vim.fn.rpcrequest(ch, 'session.close', {session = opened.session})
  vim.fn.chanclose(ch)
  return {hello = hello, session = opened.session, gen = gen, again = again,
          bad_error = tostring(bad[2]), closed = closed}
end)
vim.fn.writefile({vim.fn.json_encode(ok and res or {error = tostring(res)})}, args.out)
vim.cmd(ok and 'qa!' or 'cquit!')
"""


def test_nvim_rpcrequest(daemon, tmp_path):
    nvim = shutil.which("nvim")
    if nvim is None:
        pytest.skip("nvim is not installed (tools/setup.sh installs Debian's neovim)")
    prompt, n = "def quicksort(items):\n", 32
    args = tmp_path / "args.json"
    out = tmp_path / "out.json"
    args.write_text(json.dumps({"socket": daemon.path, "prompt": prompt,
                                "max_tokens": n, "out": str(out)}))
    script = tmp_path / "t.lua"
    script.write_text(f"local ARGS = {json.dumps(str(args))}\n" + LUA)
    r = subprocess.run([nvim, "--headless", "--clean", "-c", f"luafile {script}"],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.exists(), f"nvim wrote nothing (rc {r.returncode}): {r.stdout}{r.stderr}"
    got = json.loads(out.read_text())
    assert "error" not in got, got["error"]
    assert r.returncode == 0, r.stderr

    assert got["hello"]["server"] == "mtpd" and got["hello"]["protocol"] == 1
    assert len(got["session"]) == 32
    with mtpd_client.Client(daemon.address, timeout=120) as c:
        want = c.generate(prompt, max_tokens=n, temperature=0)
        with pytest.raises(mtpd_client.UnknownSessionError):
            c.session_info(got["session"])  # nvim closed it
    for k in ("ids", "text", "finish_reason"):
        assert got["gen"][k] == getattr(want, k), k
    assert got["again"]["ids"] == want.ids
    assert got["again"]["stats"]["prompt_tokens_reused"] > 0
    # Neovim reports an error object that is not [type, message] as "unknown
    # error": the call fails, the channel keeps working (the close below)
    assert "Error invoking 'generate'" in got["bad_error"]
    assert got["closed"]["closed"] is True


# -- the plugin (clients/nvim) ------------------------------------------------

PLUGIN = os.path.join(ROOT, "clients", "nvim")


class Nvim:
    """A headless nvim driven over its own msgpack-RPC socket (--listen),
    as a UI would: nvim_input types keys, the event loop runs the plugin."""

    def __init__(self, nvim, workdir):
        self.path = os.path.join(workdir, "nvim.sock")
        self.proc = subprocess.Popen([nvim, "--headless", "--clean", "--listen", self.path],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(self.path)
                break
            except OSError:
                self.sock.close()
                assert time.monotonic() < deadline, "nvim did not listen"
                assert self.proc.poll() is None, self.proc.stderr.read()
                time.sleep(0.05)
        self.sock.settimeout(30)
        self.unp = msgpack.Unpacker(raw=False)
        self.next_id = 1

    def request(self, method, *args):
        msgid = self.next_id
        self.next_id += 1
        self.sock.sendall(msgpack.packb([0, msgid, method, list(args)]))
        while True:
            for f in self.unp:
                if f[0] == 1 and f[1] == msgid:
                    if f[2] is not None:
                        raise RuntimeError(f"nvim {method}: {f[2]}")
                    return f[3]
            data = self.sock.recv(65536)
            assert data, "nvim closed the connection"
            self.unp.feed(data)

    def lua(self, code, *args):
        return self.request("nvim_exec_lua", code, list(args))

    def wait(self, code, timeout=30):
        """Polls the Lua expression `code` until it is truthy; -> its value."""
        deadline = time.monotonic() + timeout
        while True:
            v = self.lua("return " + code)
            if v:
                return v
            assert time.monotonic() < deadline, f"timed out waiting for {code}"
            time.sleep(0.02)

    def close(self):
        try:
            self.sock.close()
        finally:
            self.proc.kill()
            self.proc.wait()
            self.proc.stderr.close()


@pytest.fixture(params=["fake", "daemon"])
def backend(request, tmp_path):
    """The server the plugin talks to: the fake (always) and the daemon
    (skipped only when build/mtpd has no serve)."""
    if request.param == "daemon":
        yield "daemon", request.getfixturevalue("daemon").address, None
        return
    srv = FakeServer(os.path.join(tempfile.mkdtemp(prefix="mtpd-f-", dir="/tmp"), "s.sock"),
                     delay=0.001)
    yield "fake", srv.address, srv
    srv.close()


def buffer_text(nv):
    return "\n".join(nv.request("nvim_buf_get_lines", 0, 0, -1, False)) + "\n"


def test_nvim_plugin(backend, tmp_path):
    nvim = shutil.which("nvim")
    if nvim is None:
        pytest.skip("nvim is not installed (tools/setup.sh installs Debian's neovim)")
    kind, address, fake = backend
    nv = Nvim(nvim, str(tmp_path))
    try:
        nv.lua("vim.opt.rtp:prepend(...); vim.cmd('runtime! plugin/mtpd.lua'); "
               "require('mtpd').setup({address = select(2, ...), debounce_ms = 10, "
               "max_tokens = 24})", PLUGIN, address)
        nv.request("nvim_buf_set_lines", 0, 0, -1, False,
                   ["def add(a, b):", "", "", "print(add(1, 2))"])
        nv.request("nvim_input", "2GA    return")
        # the ghost text streams in; the completion is whole once it is answered
        nv.wait("require('mtpd').last.count == 1")
        ghost = nv.lua("return require('mtpd').ghost_text()")
        assert nv.request("nvim_get_mode")["mode"] == "i"
        row, col = nv.request("nvim_win_get_cursor", 0)
        assert (row, col) == (2, len("    return"))
        text = buffer_text(nv)
        prefix = "def add(a, b):\n    return"
        suffix = text[len(prefix):]
        assert suffix == "\n\nprint(add(1, 2))\n"
        with mtpd_client.Client(address, timeout=120) as c:
            want = c.fim(prefix, suffix, max_tokens=24, temperature=0)
        assert want.text, "the daemon completes nothing here: pick another test prompt"
        assert ghost == want.text
        assert nv.lua("return require('mtpd').last_request.stream") is True
        sid = nv.lua("return require('mtpd').session()")
        assert sid and len(sid) == 32

        nv.request("nvim_input", "<Tab>")
        nv.wait(f"#table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), '\\n') + 1 "
                f"~= {len(text.encode())}")
        assert buffer_text(nv) == prefix + want.text + suffix
        lines = (prefix + want.text).split("\n")
        assert nv.request("nvim_win_get_cursor", 0) == [len(lines), len(lines[-1].encode())]

        # the next completion (after the accepted text) reuses the session's cache
        nv.wait("(require('mtpd').last.count or 0) >= 2")
        assert nv.lua("return require('mtpd').session()") == sid
        stats = nv.lua("return require('mtpd').last.stats")
        assert stats["prompt_tokens_reused"] > 0
        status = nv.request("nvim_exec", "MtpdStatus", True)
        assert "last completion" in status and "ms" in status
        assert nv.lua("return require('mtpd').statusline()").startswith("mtpd ")

        if fake is not None:
            # the ghost text grows while the completion streams
            fake.delay = 0.03
            n0 = nv.lua("return require('mtpd').last.count")
            nv.request("nvim_input", "z")
            partial = nv.wait("require('mtpd')._inflight_msgid() and "
                              "require('mtpd').ghost_text()")
            nv.wait(f"require('mtpd').last.count > {n0}")
            final = nv.lua("return require('mtpd').ghost_text()")
            assert final.startswith(partial) and len(final) > len(partial)
        # typing over a slow completion cancels it; the key still inserts
        if fake is not None:
            fake.delay = 0.1
            before = fake.cancelled
            nv.request("nvim_input", "x")
            nv.wait("require('mtpd')._inflight_msgid()")
            nv.request("nvim_input", "y")
            deadline = time.monotonic() + 10
            while fake.cancelled == before and time.monotonic() < deadline:
                time.sleep(0.02)
            assert fake.cancelled > before
            fake.delay = 0.001
        # <Tab> without ghost text is a plain tab
        nv.lua("require('mtpd').clear(); require('mtpd').cancel()")
        line_before = nv.request("nvim_get_current_line")
        nv.request("nvim_input", "<Esc>A<Tab>")
        nv.wait("vim.api.nvim_get_current_line() ~= " + json.dumps(line_before))
        assert nv.request("nvim_get_current_line") == line_before + "\t"
        # wiping the buffer closes its session
        nv.request("nvim_input", "<Esc>")
        nv.request("nvim_command", "enew | bwipeout! #")
        with mtpd_client.Client(address, timeout=60) as c:
            deadline = time.monotonic() + 10
            while True:
                try:
                    c.session_info(sid)
                except mtpd_client.UnknownSessionError:
                    break
                assert time.monotonic() < deadline, "the buffer's session stayed open"
                time.sleep(0.05)
    finally:
        nv.close()


def test_nvim_plugin_starts_the_daemon(mtpd_serve, tmp_path):
    """No daemon answers at the configured address and a model is
    configured: the plugin starts `mtpd serve` itself and completes."""
    nvim = shutil.which("nvim")
    if nvim is None:
        pytest.skip("nvim is not installed (tools/setup.sh installs Debian's neovim)")
    sockdir = tempfile.mkdtemp(prefix="mtpd-auto-", dir="/tmp")
    address = "unix:" + os.path.join(sockdir, "sub", "mtpd.sock")
    nv = Nvim(nvim, str(tmp_path))
    pid = None
    try:
        nv.lua("vim.opt.rtp:prepend(...); vim.cmd('runtime! plugin/mtpd.lua'); "
               "local a = {...}; require('mtpd').setup({address = a[2], model = a[3], "
               "mtpd = a[4], debounce_ms = 10, max_tokens = 8})",
               PLUGIN, address, DEFAULT_MODEL, mtpd_serve)
        nv.request("nvim_buf_set_lines", 0, 0, -1, False, ["import os", ""])
        nv.request("nvim_input", "2GAdef ")
        nv.wait("require('mtpd').daemon_pid()")
        pid = nv.lua("return require('mtpd').daemon_pid()")
        nv.wait("require('mtpd').last.finish_reason", timeout=60)
        assert nv.lua("return require('mtpd').last.error") is None
        with mtpd_client.Client(address, timeout=60) as c:
            assert c.hello()["server"] == "mtpd"
    finally:
        nv.close()
        if pid:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        shutil.rmtree(sockdir, ignore_errors=True)
