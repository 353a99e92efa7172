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
        self.sock.sendall(msgpack.packb([0, msgid, method, [params]]))
        while True:
            for m in self.unpacker:
                return m
            data = self.sock.recv(65536)
            if not data:
                return None
            self.unpacker.feed(data)


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
    port = free_port()
    d = Daemon(tmp_path, "--listen", "tcp:127.0.0.1:%d" % port)
    try:
        c = TcpClient(port)
        m = c.call(1, "tokenize", {"text": "x"})
        assert m[2] is None and m[3]["ids"]
    finally:
        assert d.stop() == 0
