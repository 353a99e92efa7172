"""Neovim's own msgpack-RPC client against the daemon: a headless `nvim`
connects with sockconnect('pipe', path, {rpc = true}) and calls hello,
session.open and a greedy generate with rpcrequest; the answer equals the
daemon's answer to the same request from the Python client."""
import json
import shutil
import subprocess

import pytest

from daemon_fixture import daemon, mtpd_serve  # noqa: F401 (fixtures)
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
