"""What the mtpd command takes from its terminal and environment and passes
to the library (which reads neither): the load progress line on a terminal,
the library's log lines, MTPD_ISA."""
import os
import pty
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.path.join(ROOT, "models", "mtpd-code-small")


def run_tty_stderr(cmd, env=None):
    """Runs cmd with stderr on a pseudo-terminal; -> (rc, stdout, stderr)."""
    master, slave = pty.openpty()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    err = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        err += chunk
    out = p.stdout.read()
    rc = p.wait(timeout=60)
    os.close(master)
    return rc, out.decode(), err.decode()


@pytest.mark.parametrize("sub", ["info", "generate"])
def test_progress_line_on_a_terminal(mtpd, sub):
    cmd = [mtpd, sub, "--model", MODEL]
    if sub == "generate":
        cmd += ["--ids", "5,6,7", "--max-tokens", "2", "--json"]
    rc, out, err = run_tty_stderr(cmd)
    assert rc == 0, err
    # redrawn in place, ends at 100% with a newline
    assert "\rmtpd: loading weights 100% (" in err, repr(err)
    last = err.split("\rmtpd: loading weights")[-1]
    assert "tensors)" in last and last.split("tensors)")[1].startswith("\r\n"), repr(err)
    assert out.strip().startswith("{")


def test_quantize_progress_line(mtpd, tmp_path):
    """mtpd quantize: the same line, "quantizing", on a terminal only."""
    rc, _, err = run_tty_stderr([mtpd, "quantize", "--model", MODEL, "--out",
                                 str(tmp_path / "a"), "--format", "q4"])
    assert rc == 0, err
    assert "\rmtpd: quantizing 100% (" in err, repr(err)
    assert "tensors)\r\nmtpd: " in err, repr(err)  # ended, then the summary
    r = subprocess.run([mtpd, "quantize", "--model", MODEL, "--out",
                        str(tmp_path / "b"), "--format", "q4"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "quantizing" not in r.stderr, r.stderr


def test_no_progress_line_when_not_a_terminal(mtpd):
    r = subprocess.run([mtpd, "info", "--model", MODEL], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "loading weights" not in r.stderr
    # info shows the library's log lines (what the load found, its time)
    lines = r.stderr.splitlines()
    assert lines[0].startswith("mtpd: loading ") and "8 layers" in lines[0]
    assert lines[-1].startswith("mtpd: loaded ")


def test_generate_is_quiet(mtpd):
    r = subprocess.run([mtpd, "generate", "--model", MODEL, "--ids", "5,6,7",
                        "--max-tokens", "2", "--json"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "loading" not in r.stderr and "loaded" not in r.stderr


@pytest.mark.parametrize("value,needle", [
    ("sse9", "ignoring unknown MTPD_ISA=sse9"),
    ("bad\x1b[2J", "ignoring unknown MTPD_ISA=bad\\x1B[2J"),
])
def test_bad_isa_warns(mtpd, value, needle):
    env = dict(os.environ, MTPD_ISA=value)
    r = subprocess.run([mtpd, "logits", "--model", MODEL, "--ids", "5,6"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stderr.startswith("mtpd: warning: ") and needle in r.stderr, r.stderr
    assert "\x1b" not in r.stderr


def test_isa_scalar_runs(mtpd):
    env = dict(os.environ, MTPD_ISA="scalar")
    r = subprocess.run([mtpd, "logits", "--model", MODEL, "--ids", "5,6"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr
