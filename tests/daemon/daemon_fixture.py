"""Running `mtpd serve` in tests: one module that every tests/daemon file
can import (pytest puts this directory on sys.path).

    from daemon_fixture import daemon, mtpd_serve  # noqa: F401 (fixtures)

- `mtpd_serve` (session fixture): the mtpd binary (env MTPD_BIN, default
  build/mtpd). Skips when the binary is absent or has no `serve` command,
  and only then: a serve that exists but fails to start fails the test.
- `daemon` (module fixture): a Daemon with the default model on a private
  Unix socket, stopped with SIGTERM at the end (exit code checked).
- `Daemon(binary, *args)`: start one yourself (extra `mtpd serve` options,
  e.g. "--kv-budget", "1M"), `.address`, `.client()`, `.stop()`, `.log()`.
- `offline(binary, ...)`: `mtpd generate --json` for the same request.

It also puts clients/python/src on sys.path, so `import mtpd_client` works
without installing the package.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
CLIENT_SRC = os.path.join(ROOT, "clients", "python", "src")
if CLIENT_SRC not in sys.path:
    sys.path.insert(0, CLIENT_SRC)

DEFAULT_MODEL = os.path.join(ROOT, "models", "mtpd-code-small")
START_TIMEOUT = 120.0


def mtpd_bin():
    return os.environ.get("MTPD_BIN", os.path.join(ROOT, "build", "mtpd"))


def serve_missing(binary):
    """Why `binary serve` cannot be tested (a str), or None when it can."""
    if not os.path.exists(binary):
        return f"mtpd binary not found at {binary} (set MTPD_BIN)"
    r = subprocess.run([binary, "serve", "--help"], capture_output=True, text=True,
                       timeout=60)
    if r.returncode != 0 and "unknown command" in (r.stderr + r.stdout):
        return f"{binary} has no serve command"
    return None


class Daemon:
    """`mtpd serve` on a Unix socket in a fresh private directory (short
    path: sun_path holds 108 bytes). Started on construction; waits until
    the socket accepts a connection."""

    def __init__(self, binary, *args, model=DEFAULT_MODEL, socket_dir=None,
                 env=None, start=True):
        self.binary = binary
        self.model = model
        self.args = [str(a) for a in args]
        self.dir = socket_dir or tempfile.mkdtemp(prefix="mtpd-t-", dir="/tmp")
        self._own_dir = socket_dir is None
        self.path = os.path.join(self.dir, "mtpd.sock")
        self.address = "unix:" + self.path
        self.env = dict(os.environ, **(env or {}))
        self.proc = None
        self.logfile = os.path.join(self.dir, "mtpd.log")
        self.returncode = None
        if start:
            self.start()

    def command(self):
        cmd = [self.binary, "serve", "--listen", self.address] + self.args
        if self.model is not None:
            cmd[2:2] = ["--model", self.model]
        return cmd

    def start(self, timeout=START_TIMEOUT):
        if os.path.exists(self.path):
            os.unlink(self.path)
        self._log = open(self.logfile, "ab")
        self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=self._log, env=self.env)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mtpd serve exited with {self.proc.returncode} "
                                   f"before listening:\n{self.log()}")
            if os.path.exists(self.path):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    s.connect(self.path)
                    return self
                except OSError:
                    pass
                finally:
                    s.close()
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"mtpd serve did not listen within {timeout} s:\n"
                                   f"{self.log()}")
            time.sleep(0.05)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Signals the daemon and waits; -> its exit code (killed after
        timeout: then -9)."""
        if self.proc is None:
            return self.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.returncode = self.proc.returncode
        self.proc = None
        self._log.close()
        return self.returncode

    def kill(self):
        return self.stop(signal.SIGKILL, 10)

    def restart(self, *args):
        """Stops (SIGTERM) and starts again, with new args if given."""
        self.stop()
        if args:
            self.args = [str(a) for a in args]
        return self.start()

    def log(self):
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def rss_bytes(self):
        """Resident set size of the daemon process (from /proc)."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def client(self, **kw):
        import mtpd_client
        return mtpd_client.Client(self.address, **kw)

    def raw_socket(self, timeout=30):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(self.path)
        return s

    def cleanup(self):
        if self.proc is not None:
            self.kill()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cleanup()


def offline(binary, prompt=None, ids=None, max_tokens=32, model=DEFAULT_MODEL,
            extra=(), timeout=300):
    """`mtpd generate --json` for a prompt (text) or ids; -> parsed JSON
    (ids, text, stats ...)."""
    cmd = [binary, "generate", "--model", model, "--max-tokens", str(max_tokens), "--json"]
    if prompt is not None:
        cmd += ["--prompt", prompt]
    else:
        cmd += ["--ids", ",".join(str(int(i)) for i in ids)]
    cmd += [str(a) for a in extra]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(cmd)}: rc {r.returncode}\n{r.stderr}"
    return json.loads(r.stdout)


@pytest.fixture(scope="session")
def mtpd_serve():
    b = mtpd_bin()
    why = serve_missing(b)
    if why:
        pytest.skip(why)
    return b


@pytest.fixture(scope="module")
def daemon(mtpd_serve):
    d = Daemon(mtpd_serve)
    try:
        yield d
        assert d.alive(), f"the daemon died during the tests:\n{d.log()}"
        rc = d.stop()
        assert rc == 0, f"mtpd serve exited {rc} after SIGTERM:\n{d.log()}"
    finally:
        d.cleanup()
