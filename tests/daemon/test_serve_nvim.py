"""Neovim's own msgpack-rpc client talks to `mtpd serve` with no adapter:
sockconnect(..., {'rpc': v:true}) and rpcrequest(ch, METHOD, {...})."""
import json
import os
import shutil
import subprocess

import pytest

from serve_helpers import Daemon, offline

SCRIPT = r"""
let out = {}
try
  let ch = sockconnect('pipe', $MTPD_SOCK, {'rpc': v:true})
  let out.hello = rpcrequest(ch, 'hello', {})
  let out.session = rpcrequest(ch, 'session.open', {})
  let out.generate = rpcrequest(ch, 'generate', {'session':
        \ out.session.session, 'prompt': 'def add(a, b):', 'max_tokens': 16})
  try
    call rpcrequest(ch, 'generate', {'max_tokens': 'x', 'prompt': 'a'})
  catch
    let out.error = v:exception
  endtry
catch
  let out.failure = v:exception
endtry
call writefile([json_encode(out)], $MTPD_OUT)
qall!
"""


@pytest.mark.skipif(shutil.which("nvim") is None,
                    reason="nvim not installed (tools/setup.sh installs it)")
def test_neovim_client(tmp_path):
    d = Daemon(tmp_path)
    try:
        script = tmp_path / "t.vim"
        script.write_text(SCRIPT)
        out = tmp_path / "out.json"
        env = dict(os.environ, MTPD_SOCK=d.path, MTPD_OUT=str(out))
        subprocess.run(["nvim", "--headless", "-u", "NONE", "-i", "NONE",
                        "-n", "-c", "source " + str(script)], env=env,
                       timeout=120, check=True, stdin=subprocess.DEVNULL,
                       capture_output=True)
        res = json.loads(out.read_text())
        assert "failure" not in res, res
        assert res["hello"]["server"] == "mtpd"
        assert len(res["session"]["session"]) == 32
        ids, text, _ = offline("def add(a, b):", 16)
        assert res["generate"]["ids"] == ids
        assert res["generate"]["text"] == text
        # an error reaches Neovim as an exception (Neovim 0.7 prints the
        # message only of [type, message] errors; ours are maps, so it says
        # "unknown error")
        assert "Error invoking 'generate'" in res["error"]
    finally:
        assert d.stop() == 0
