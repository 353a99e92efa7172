"""Helpers of the `mtpd serve` tests (tests/daemon/test_serve_*.py): start
the real daemon on a temporary Unix socket with the committed default
model, a minimal msgpack-rpc client, and the offline `mtpd generate`
reference the daemon must reproduce."""
import functools
import json
import os
import signal
import socket
import subprocess
import time

import msgpack

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
MODEL = os.path.join(ROOT, "models", "mtpd-code-small")


def mtpd_bin():
    return os.environ.get("MTPD_BIN", os.path.join(ROOT, "build", "mtpd"))


class Client:
    """One connection. call() sends a request and returns (error, result),
    keeping the generate.chunk notifications of that msgid in chunks."""

    def __init__(self, path, timeout=60.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        self.next_id = 1
        self.pending = []  # messages read but not yet asked for

    def close(self):
        self.sock.close()

    def send_raw(self, data):
        self.sock.sendall(data)

    def send(self, method, params=None, msgid=None):
        if msgid is None:
            msgid = self.next_id
            self.next_id += 1
        self.sock.sendall(msgpack.packb([0, msgid, method, [params or {}]]))
        return msgid

    def recv(self):
        """The next message (list), or None when the daemon closed."""
        if self.pending:
            return self.pending.pop(0)
        while True:
            for msg in self.unpacker:
                return msg
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                # closed by the daemon while our bytes were unread
                return None
            if not data:
                return None
            self.unpacker.feed(data)

    def wait(self, msgid):
        """(error, result, chunks) of request msgid; other messages are
        kept for later."""
        chunks, keep = [], []
        while True:
            m = self.recv()
            if m is None:
                self.pending = keep + self.pending
                raise ConnectionError("daemon closed the connection")
            if m[0] == 2 and m[1] == "generate.chunk" and \
                    m[2][0]["msgid"] == msgid:
                chunks.append(m[2][0])
            elif m[0] == 1 and m[1] == msgid:
                self.pending = keep + self.pending
                return m[2], m[3], chunks
            else:
                keep.append(m)

    def call(self, method, params=None):
        err, res, self.chunks = self.wait(self.send(method, params))
        return err, res


class Daemon:
    def __init__(self, tmpdir, *args, model=MODEL, sock_name="mtpd.sock"):
        self.dir = str(tmpdir)
        self.path = os.path.join(self.dir, sock_name)
        self.log_path = os.path.join(self.dir, "mtpd.log")
        self.args = list(args)
        self.model = model
        self.proc = None
        self.start()

    def start(self):
        self.log = open(self.log_path, "ab")
        cmd = [mtpd_bin(), "serve", "--model", self.model, "--listen",
               "unix:" + self.path, "--threads", "1"] + self.args
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("mtpd serve exited: " + self.log_text())
            try:
                c = Client(self.path)
                c.close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mtpd serve did not start: " + self.log_text())

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def client(self, timeout=60.0):
        return Client(self.path, timeout)

    def send_signal(self, sig):
        """Sends sig to the daemon; stop() then sends no second one (a
        second SIGTERM would cut a graceful shutdown short)."""
        self.signalled = True
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Signals the daemon (unless send_signal() did already, or sig is None)
        and waits for its exit."""
        if self.proc is None:
            return None
        if (sig is not None and not getattr(self, "signalled", False) and
                self.proc.poll() is None):
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.proc = None
        self.log.close()
        return rc

    def alive(self):
        return self.proc is not None and self.proc.poll() is None


@functools.lru_cache(maxsize=None)
def offline(prompt, max_tokens, stop=()):
    """`mtpd generate --json` for a greedy request: (ids, text, finish)."""
    cmd = [mtpd_bin(), "generate", "--model", MODEL, "--prompt", prompt,
           "--max-tokens", str(max_tokens), "--json", "--threads", "1"]
    for s in stop:
        cmd += ["--stop", s]
    out = subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    j = json.loads(out.stdout)
    return j["ids"], j["text"], j["finish_reason"]


def served_ok(d):
    """A fresh client gets a correct answer: the daemon still serves."""
    c = d.client()
    try:
        err, res = c.call("tokenize", {"text": "def f(x):"})
        assert err is None and res["ids"], (err, res)
        err, res = c.call("generate", {"prompt": "def add(a, b):",
                                       "max_tokens": 4})
        assert err is None and len(res["ids"]) >= 1, (err, res)
    finally:
        c.close()
    return True
