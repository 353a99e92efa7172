"""mtpd_client.AsyncClient against the real daemon: many requests in flight
on one connection, each equal to its offline greedy result; async streams,
sessions and cancel."""
import asyncio

import pytest

from daemon_fixture import daemon, mtpd_serve, offline  # noqa: F401 (fixtures)
import mtpd_client

PROMPTS = ["def fibonacci(n):\n", "class Stack:\n", "import os\n\n",
           "for i in range(10):\n", "def read_file(path):\n", "x = [",
           "# sort a list\n", "try:\n"]


def test_multiplexed_equals_offline(daemon, mtpd_serve):
    want = [offline(mtpd_serve, prompt=p, max_tokens=24)["ids"] for p in PROMPTS]

    async def main():
        async with mtpd_client.AsyncClient(daemon.address) as c:
            plain = [c.generate(p, max_tokens=24) for p in PROMPTS[:4]]
            streams = [await c.generate(p, max_tokens=24, stream=True) for p in PROMPTS[4:]]

            async def drain(s):
                chunks = [ch async for ch in s]
                r = await s.result()
                assert [i for ch in chunks for i in ch.ids] == r.ids
                assert "".join(ch.text for ch in chunks) == r.text
                return r

            rs = await asyncio.gather(*plain, *[drain(s) for s in streams],
                                      c.tokenize("x"), c.stats())
            return [r.ids for r in rs[:len(PROMPTS)]]

    assert asyncio.run(main()) == want


def test_sessions_and_cancel(daemon, mtpd_serve):
    async def main():
        async with mtpd_client.AsyncClient(daemon.address) as c:
            async with c.session() as s1, c.session() as s2:
                assert s1.id != s2.id
                r1, r2 = await asyncio.gather(s1.generate(PROMPTS[0], max_tokens=12),
                                              s2.generate(PROMPTS[1], max_tokens=12))
                again = await s1.generate(PROMPTS[0], max_tokens=12)
                assert again.ids == r1.ids
                assert again.stats["prompt_tokens_reused"] > 0
                with pytest.raises(mtpd_client.BusyError):
                    st = await s2.generate("def f():\n", max_tokens=2000, ignore_eos=True,
                                           stream=True)
                    await st.__anext__()
                    try:
                        await s2.generate("y", max_tokens=2)
                    finally:
                        assert await st.cancel() is True
                        assert (await st.result()).finish_reason == "cancelled"
                sid = s1.id
            with pytest.raises(mtpd_client.UnknownSessionError):
                await c.session_info(sid)
            return r1.ids, r2.ids

    a, b = asyncio.run(main())
    assert a == offline(mtpd_serve, prompt=PROMPTS[0], max_tokens=12)["ids"]
    assert b == offline(mtpd_serve, prompt=PROMPTS[1], max_tokens=12)["ids"]


def test_disconnect_mid_stream_keeps_daemon(daemon):
    async def main():
        c = await mtpd_client.AsyncClient.connect(daemon.address)
        st = await c.generate("def g():\n", max_tokens=3000, ignore_eos=True, stream=True)
        await st.__anext__()
        await c.close()
        with pytest.raises(mtpd_client.ConnectionClosedError):
            await st.result()
        async with mtpd_client.AsyncClient(daemon.address) as c2:
            r = await c2.generate("z = ", max_tokens=3)
            assert len(r.ids) >= 1
            st = await c2.stats()
            assert st["requests_active"] <= 1

    asyncio.run(main())
