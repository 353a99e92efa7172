"""`mtpd serve --listen tcp:...`: loopback needs no token; any other
address needs --auth-token-file, and then hello with the token first."""
import socket
import subprocess

import msgpack

from serve_helpers import MODEL, Daemon, mtpd_bin, served_ok


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class TcpClient:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.unpacker = msgpack.Unpacker(raw=False)

    def call(self, msgid, method, params):
        """The reply, or None when the server closed the connection (EOF;
        or a reset: writing to a socket the server has closed makes its
        kernel answer with RST, which recv may report before the EOF)."""
        try:
            self.sock.sendall(msgpack.packb([0, msgid, method, [params]]))
            while True:
                for m in self.unpacker:
                    return m
                data = self.sock.recv(65536)
                if not data:
                    return None
                self.unpacker.feed(data)
        except (ConnectionResetError, BrokenPipeError):
            return None


def test_non_loopback_needs_token_file(tmp_path):
    r = subprocess.run([mtpd_bin(), "serve", "--model", MODEL, "--listen",
                        "tcp:0.0.0.0:%d" % free_port()],
                       capture_output=True, timeout=120)
    assert r.returncode != 0
    assert b"--auth-token-file" in r.stderr


def test_token_required_first(tmp_path):
    tok = tmp_path / "token"
    tok.write_text("s3cret\n")
    port = free_port()
    d = Daemon(tmp_path, "--listen", "tcp:0.0.0.0:%d" % port,
               "--auth-token-file", str(tok))
    try:
        c = TcpClient(port)  # anything but hello: unauthorized, closed
        m = c.call(1, "tokenize", {"text": "x"})
        assert m[2]["code"] == "unauthorized"
        assert c.call(2, "stats", {}) is None
        c = TcpClient(port)  # wrong token
        m = c.call(1, "hello", {"token": "s3cret!"})
        assert m[2]["code"] == "unauthorized"
        c = TcpClient(port)
        m = c.call(1, "hello", {"token": "s3cret"})
        assert m[2] is None and m[3]["server"] == "mtpd"
        m = c.call(2, "tokenize", {"text": "x"})
        assert m[2] is None and m[3]["ids"]
        assert served_ok(d)  # the unix socket needs no token
    finally:
        assert d.stop() == 0


def test_loopback_tcp_needs_no_token(tmp_path):
    port, port2 = free_port(), free_port()
    d = Daemon(tmp_path, "--listen", "tcp:127.0.0.1:%d" % port,
               "--listen", "tcp:%d" % port2)  # no host: loopback
    try:
        for p in (port, port2):
            c = TcpClient(p)
            m = c.call(1, "tokenize", {"text": "x"})
            assert m[2] is None and m[3]["ids"]
    finally:
        assert d.stop() == 0


def test_default_socket_modes_and_sighup(tmp_path):
    import os
    import signal
    import stat
    import time

    from serve_helpers import Client
    env = dict(os.environ, XDG_RUNTIME_DIR=str(tmp_path))
    p = subprocess.Popen([mtpd_bin(), "serve", "--model", MODEL,
                          "--threads", "1"], env=env,
                         stderr=subprocess.PIPE)
    path = tmp_path / "mtpd" / "mtpd.sock"
    try:
        for _ in range(600):
            if path.exists():
                break
            time.sleep(0.05)
        assert stat.S_IMODE(os.stat(tmp_path / "mtpd").st_mode) == 0o700
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        p.send_signal(signal.SIGHUP)  # harmless
        time.sleep(0.2)
        c = Client(str(path))
        assert c.call("tokenize", {"text": "x"})[0] is None
        c.close()
    finally:
        p.send_signal(signal.SIGTERM)
        _, err = p.communicate(timeout=60)
    assert p.returncode == 0
    assert b"SIGHUP" in err and b"shutdown complete" in err
    first = err.decode().splitlines()[0]
    for word in ("serving", "MTP modules", "unix:", "KV budget"):
        assert word in first, first
    assert not path.exists()  # removed at exit
