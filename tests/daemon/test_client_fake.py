"""The Python client's own logic (framing, msgid multiplexing, streams,
cancel, error classes, sessions) against tests/daemon/fakeserver.py, a toy
server that follows docs/protocol.md. The same calls against the real
daemon are in test_client_sync.py / test_client_async.py."""
import asyncio
import os
import shutil
import tempfile
import threading

import pytest

import daemon_fixture  # noqa: F401  (puts clients/python/src on sys.path)
import mtpd_client
from fakeserver import FakeServer, decode, encode
from mtpd_client import errors as E


@pytest.fixture
def fake():
    d = tempfile.mkdtemp(prefix="mtpd-fake-", dir="/tmp")
    s = FakeServer(os.path.join(d, "s.sock"))
    yield s
    s.close()
    shutil.rmtree(d, ignore_errors=True)


def expected(prompt, n):
    ctx = encode(prompt)
    out = []
    for _ in range(n):
        out.append(10 + ord("a") + len(ctx) % 26)
        ctx.append(out[-1])
    return out


def test_addresses(monkeypatch):
    p = mtpd_client.parse_address
    assert p("unix:/a/b.sock") == ("unix", "/a/b.sock")
    assert p("tcp:127.0.0.1:7000") == ("tcp", ("127.0.0.1", 7000))
    assert p("tcp:[::1]:7000") == ("tcp", ("::1", 7000))
    for bad in ("tcp:host", "tcp::12", "http://x", "tcp:h:port"):
        with pytest.raises(ValueError):
            p(bad)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/7")
    assert mtpd_client.default_address() == "unix:/run/user/7/mtpd/mtpd.sock"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setenv("TMPDIR", "/var/tmp")
    assert mtpd_client.default_address() == f"unix:/var/tmp/mtpd-{os.getuid()}/mtpd.sock"
    monkeypatch.delenv("TMPDIR")
    assert mtpd_client.default_address() == f"unix:/tmp/mtpd-{os.getuid()}/mtpd.sock"


def test_error_classes():
    codes = ["unknown_method", "bad_params", "unknown_session", "over_limit", "kv_budget",
             "overloaded", "busy", "cancelled", "shutting_down", "unauthorized",
             "protocol", "internal"]
    assert sorted(E.ERRORS) == sorted(codes)
    assert len(set(E.ERRORS.values())) == len(codes)
    for c in codes:
        e = E.error_from_wire({"code": c, "message": "m", "field": "f", "limit": "l"})
        assert type(e) is E.ERRORS[c] and isinstance(e, mtpd_client.MtpdError)
        assert (e.code, e.message, e.field, e.limit) == (c, "m", "f", "l")
    e = E.error_from_wire({"code": "new_code", "message": "x"})
    assert type(e) is mtpd_client.MtpdError and e.code == "new_code"


def test_sync_calls(fake):
    with mtpd_client.Client(fake.address) as c:
        assert c.hello()["protocol"] == 1
        assert c.tokenize("hé") == encode("hé")
        assert c.tokenize("x", add_special=False) == encode("x", False)
        assert c.detokenize(encode("hé")) == "hé"
        r = c.generate("abc", max_tokens=5)
        assert r.ids == expected("abc", 5) and r.text == decode(r.ids)
        assert r.finish_reason == "length" and r.stats["generated_tokens"] == 5
        r = c.fim("pre", "suf", max_tokens=3)
        assert len(r.ids) == 3
        assert c.stats()["requests"] >= 5


def test_sync_errors(fake):
    with mtpd_client.Client(fake.address) as c:
        with pytest.raises(mtpd_client.UnknownMethodError):
            c.call("no.such.method")
        with pytest.raises(mtpd_client.BadParamsError) as ei:
            c.generate("x", max_tokens=0)
        assert ei.value.field == "max_tokens"
        with pytest.raises(mtpd_client.OverLimitError) as ei:
            c.generate("x", max_tokens=10 ** 6)
        assert ei.value.limit == "max_tokens"
        with pytest.raises(mtpd_client.UnknownSessionError):
            c.session_info("0" * 32)
        for code, cls in E.ERRORS.items():
            if code == "protocol":
                continue
            with pytest.raises(cls):
                c.call("stats", fake_error=code)
        assert c.generate("still", max_tokens=2).ids == expected("still", 2)
        with pytest.raises(ValueError):
            c.generate("x", ids=[1, 2])


def test_sync_protocol_error_closes(fake):
    c = mtpd_client.Client(fake.address)
    with pytest.raises(mtpd_client.ProtocolError):
        c.call("stats", fake_protocol_error=True)
    with pytest.raises(mtpd_client.ProtocolError):
        c.stats()
    assert c.closed


def test_sync_stream_and_interleaving(fake):
    with mtpd_client.Client(fake.address) as c:
        s1 = c.generate("one", max_tokens=20, stream=True)
        s2 = c.generate("second", max_tokens=10, stream=True)
        # a plain call while both streams are in flight
        assert c.tokenize("z") == encode("z")
        chunks2 = list(s2)
        chunks1 = list(s1)
        for s, chunks, p, n in ((s1, chunks1, "one", 20), (s2, chunks2, "second", 10)):
            r = s.result()
            assert [i for ch in chunks for i in ch.ids] == r.ids == expected(p, n)
            assert "".join(ch.text for ch in chunks) == r.text == s.text


def test_sync_cancel(fake):
    fake.delay = 0.02
    with mtpd_client.Client(fake.address) as c:
        s = c.generate("long", max_tokens=1000, stream=True)
        next(s)
        assert s.cancel() is True
        r = s.result()
        assert r.finish_reason == "cancelled" and 1 <= len(r.ids) < 1000
        assert c.cancel(12345) is False
        # leaving a with block early cancels too
        with c.generate("long", max_tokens=1000, stream=True) as s:
            next(s)
        assert s.final is not None and s.final.finish_reason == "cancelled"


def test_sync_threads_share_a_client(fake):
    with mtpd_client.Client(fake.address) as c:
        out = {}

        def work(i):
            out[i] = c.generate(f"p{i}", max_tokens=8 + i).ids

        ts = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
        assert out == {i: expected(f"p{i}", 8 + i) for i in range(8)}


def test_sync_sessions(fake):
    with mtpd_client.Client(fake.address) as c:
        with c.session() as s:
            assert len(s.id) == 32
            r1 = s.generate("hello", max_tokens=4)
            r2 = s.generate(ids=encode("hello") + r1.ids + encode("x", False), max_tokens=2)
            assert r2.stats["prompt_tokens_reused"] == len(encode("hello")) + 4
            assert s.info()["tokens"] == len(encode("hello")) + 4 + 1 + 2
            sid = s.id
        with pytest.raises(mtpd_client.UnknownSessionError):
            c.session_info(sid)
        # attaching to an existing session does not close it
        sid = c.session_open()
        with c.session(sid) as s:
            s.generate("a", max_tokens=1)
        assert c.session_info(sid)["tokens"] == 3
        # a session gone meanwhile: leaving the block does not raise
        with c.session() as s:
            c.session_close(s.id)


def test_connection_closed(fake):
    c = mtpd_client.Client(fake.address)
    c.close()
    with pytest.raises(mtpd_client.ConnectionClosedError):
        c.stats()


def test_async_multiplexed(fake):
    fake.delay = 0.005

    async def main():
        async with mtpd_client.AsyncClient(fake.address) as c:
            order = []

            async def gen(p, n):
                r = await c.generate(p, max_tokens=n)
                order.append(p)
                return r

            slow = asyncio.ensure_future(gen("slow", 60))
            fast = asyncio.ensure_future(gen("fast", 2))
            rs = await asyncio.gather(*[c.generate(f"q{i}", max_tokens=5) for i in range(10)])
            assert [r.ids for r in rs] == [expected(f"q{i}", 5) for i in range(10)]
            await asyncio.gather(slow, fast)
            assert order == ["fast", "slow"]  # out-of-order responses
            assert slow.result().ids == expected("slow", 60)

            st = await c.generate("stream", max_tokens=12, stream=True)
            st2 = await c.fim("a", "b", max_tokens=4, stream=True)
            chunks = [ch async for ch in st]
            r = await st.result()
            assert [i for ch in chunks for i in ch.ids] == r.ids == expected("stream", 12)
            assert "".join(ch.text for ch in chunks) == r.text
            assert len((await st2.result()).ids) == 4

            fake.delay = 0.02
            st = await c.generate("long", max_tokens=1000, stream=True)
            await st.__anext__()
            assert await st.cancel() is True
            r = await st.result()
            assert r.finish_reason == "cancelled"

            with pytest.raises(mtpd_client.BadParamsError) as ei:
                await c.generate("x", max_tokens=0)
            assert ei.value.field == "max_tokens"
            with pytest.raises(mtpd_client.OverloadedError):
                await c.call("stats", fake_error="overloaded")

            async with c.session() as s:
                await s.generate("abc", max_tokens=2)
                assert (await s.info())["tokens"] == len(encode("abc")) + 2
                sid = s.id
            with pytest.raises(mtpd_client.UnknownSessionError):
                await c.session_info(sid)

    asyncio.run(main())


def test_async_protocol_error_fails_pending(fake):
    fake.delay = 0.02

    async def main():
        c = await mtpd_client.AsyncClient.connect(fake.address)
        st = await c.generate("long", max_tokens=1000, stream=True)
        pending = asyncio.ensure_future(c.generate("other", max_tokens=1000))
        await st.__anext__()
        with pytest.raises(mtpd_client.ProtocolError):
            await c.call("stats", fake_protocol_error=True)
        with pytest.raises(mtpd_client.ProtocolError):
            await pending
        with pytest.raises(mtpd_client.ProtocolError):
            await st.result()
        await c.close()

    asyncio.run(main())
