"""`mtpd serve`: cancel and disconnect mid-stream, graceful shutdown."""
import signal
import time

from serve_helpers import Daemon, served_ok

LONG = {"prompt": "def f(x):", "max_tokens": 3500, "ignore_eos": True,
        "stream": True}


def first_chunk(c, msgid):
    while True:
        m = c.recv()
        assert m is not None
        if m[0] == 2 and m[1] == "generate.chunk":
            assert m[2][0]["msgid"] == msgid
            return m


def test_cancel_mid_stream(tmp_path):
    d = Daemon(tmp_path)
    try:
        c = d.client()
        sess = c.call("session.open")[1]["session"]
        gid = c.send("generate", dict(LONG, session=sess))
        first_chunk(c, gid)
        cid = c.send("cancel", {"msgid": gid})
        err, res = c.wait(cid)[:2]
        assert err is None and res == {"cancelled": True}
        err, res, chunks = c.wait(gid)
        assert err is None
        assert res["finish_reason"] == "cancelled"
        assert 0 < len(res["ids"]) < 3500
        # the session holds what was generated and can go on
        err, info = c.call("session.info", {"session": sess})
        assert err is None and not info["busy"]
        assert info["tokens"] > len(res["ids"])
        err, _ = c.call("cancel", {"msgid": 12345})
        assert err is None and _ == {"cancelled": False}
        c.close()
        assert served_ok(d)
    finally:
        assert d.stop() == 0


def test_disconnect_mid_stream_cancels_keeps_session(tmp_path):
    d = Daemon(tmp_path)
    try:
        c = d.client()
        sess = c.call("session.open")[1]["session"]
        gid = c.send("generate", dict(LONG, session=sess))
        first_chunk(c, gid)
        c.close()
        c2 = d.client()
        deadline = time.time() + 30
        while True:
            err, info = c2.call("session.info", {"session": sess})
            assert err is None, err  # the session outlives its connection
            if not info["busy"]:
                break
            assert time.time() < deadline, "generation not cancelled"
            time.sleep(0.05)
        assert 0 < info["tokens"] < 3500
        _, st = c2.call("stats")
        assert st["requests_active"] == 0
        c2.close()
        assert served_ok(d)
    finally:
        assert d.stop() == 0


def test_shutdown_ends_generation_with_shutdown(tmp_path):
    d = Daemon(tmp_path, "--shutdown-grace", "0.5")
    c = d.client()
    gid = c.send("generate", dict(LONG, max_tokens=4000 - 10))
    first_chunk(c, gid)
    d.send_signal(signal.SIGTERM)
    err, res, _ = c.wait(gid)
    assert err is None and res["finish_reason"] == "shutdown"
    assert d.stop() == 0
    assert "shutdown complete" in d.log_text()


def test_long_prompt_prefills_in_chunks_while_streams_flow(tmp_path):
    d = Daemon(tmp_path, "--step-rows", "128")
    try:
        a = d.client()
        gid = a.send("generate", dict(LONG, max_tokens=3000))
        first_chunk(a, gid)
        b = d.client()
        long_ids = [(i * 7919) % 8000 + 5 for i in range(2000)]
        bid = b.send("generate", {"ids": long_ids, "max_tokens": 4,
                                  "stream": True})
        first_chunk(b, bid)  # B's prefill is over
        # A's stream went on while B's 2000-token prompt was prefilled in
        # chunks of 128 rows: a dozen passes or more, each with A's tokens
        a.sock.setblocking(False)
        got = 0
        try:
            while True:
                data = a.sock.recv(1 << 20)
                if not data:
                    break
                a.unpacker.feed(data)
        except BlockingIOError:
            pass
        a.sock.setblocking(True)
        for m in a.unpacker:
            if m[0] == 2 and m[1] == "generate.chunk":
                got += 1
        assert got >= 8, got
        b.close()
        a.close()
    finally:
        assert d.stop() == 0


def test_cancel_and_shutdown_during_prefill(tmp_path):
    d = Daemon(tmp_path, "--step-rows", "64", "--shutdown-grace", "0")
    try:
        c = d.client()
        long_ids = [(i * 7919) % 8000 + 5 for i in range(1500)]
        gid = c.send("generate", {"ids": long_ids, "max_tokens": 4,
                                  "stream": True})
        cid = c.send("cancel", {"msgid": gid})
        assert c.wait(cid)[:2] == (None, {"cancelled": True})
        err, res, chunks = c.wait(gid)
        if err is not None:  # cancelled before its first pass
            assert err["code"] == "cancelled"
        else:
            assert res["finish_reason"] == "cancelled"
            assert res["ids"] == [] and chunks == []
        assert served_ok(d)
        # a shutdown while a prompt is being prefilled (or, on a fast
        # machine, while it generates: it cannot finish 3000 tokens first)
        gid = c.send("generate", {"ids": long_ids, "max_tokens": 2500,
                                  "ignore_eos": True})
        c.send("session.open")  # a round trip: the request was read
        c.recv()
    finally:
        assert d.stop() == 0
    err, res, _ = c.wait(gid)
    assert (err and err["code"] == "shutting_down") or \
        res["finish_reason"] == "shutdown"
