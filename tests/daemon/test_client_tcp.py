"""The Python clients over TCP against a daemon that requires a token
(non-loopback bind + --auth-token-file): `token=` sends hello first; without
it the first call raises UnauthorizedError."""
import asyncio
import socket

import pytest

from daemon_fixture import Daemon, mtpd_serve  # noqa: F401 (fixtures)
import mtpd_client


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_tcp_with_token(mtpd_serve, tmp_path):
    tok = tmp_path / "token"
    tok.write_text("s3cret\n")
    port = free_port()
    with Daemon(mtpd_serve, "--listen", f"tcp:0.0.0.0:{port}",
                "--auth-token-file", str(tok)) as d:
        addr = f"tcp:127.0.0.1:{port}"
        with mtpd_client.Client(addr, timeout=60) as c:
            with pytest.raises(mtpd_client.UnauthorizedError):
                c.tokenize("x")
        with pytest.raises(mtpd_client.UnauthorizedError):
            mtpd_client.Client(addr, token="wrong", timeout=60)
        with mtpd_client.Client(addr, token="s3cret", timeout=60) as c:
            assert c.hello_info is not None and c.hello_info["server"] == "mtpd"
            want = c.generate("def f(x):\n", max_tokens=8)
        # the Unix socket of the same daemon needs no token
        with mtpd_client.Client(d.address, timeout=60) as c:
            assert c.generate("def f(x):\n", max_tokens=8).ids == want.ids

        async def main():
            async with mtpd_client.AsyncClient(addr, token="s3cret") as c:
                rs = await asyncio.gather(*[c.generate("def f(x):\n", max_tokens=8)
                                            for _ in range(3)])
                return [r.ids for r in rs]

        assert asyncio.run(main()) == [want.ids] * 3
        assert d.stop() == 0
