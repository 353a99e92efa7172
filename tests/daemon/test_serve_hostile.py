"""`mtpd serve` against hostile input. After each case another client must
still be served (served_ok), and the daemon must not have died."""
import os
import random
import socket
import struct
import time

import msgpack
import pytest

from serve_helpers import Daemon, served_ok


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("hostile"), "--max-queue", "3",
               "--max-outbuf", "65536")
    yield d
    assert d.alive(), d.log_text()
    assert d.stop() == 0


def expect_protocol_close(c):
    """One error notification with code protocol, then EOF."""
    m = c.recv()
    assert m is not None and m[0] == 2 and m[1] == "error", m
    assert m[2][0]["code"] == "protocol"
    assert c.recv() is None


def test_truncated_frames(daemon):
    frame = msgpack.packb([0, 1, "generate", [{"prompt": "def f(x):"}]])
    for cut in (1, 5, len(frame) - 1):
        c = daemon.client()
        c.send_raw(frame[:cut])
        c.close()  # gone half-way: nothing to answer
        # still open, half a frame pending: others are not blocked
        c = daemon.client()
        c.send_raw(frame[:cut])
        assert served_ok(daemon)
        c.close()


def test_random_bytes(daemon):
    rnd = random.Random(1)
    for _ in range(5):
        data = bytes([0xc1]) + bytes(rnd.getrandbits(8) for _ in range(2000))
        c = daemon.client()
        c.send_raw(data)
        expect_protocol_close(c)
        c.close()
    c = daemon.client()
    c.send_raw(b"GET / HTTP/1.0\r\n\r\n")
    expect_protocol_close(c)
    assert served_ok(daemon)


def test_frame_claiming_4gib(daemon):
    for body in (b"\xdb\xff\xff\xff\xff",      # str32 of 4 GiB
                 b"\xc6\xff\xff\xff\xff",      # bin32
                 b"\xdd\xff\xff\xff\xff",      # array32 of 2^32-1
                 b"\xdf\xff\xff\xff\xff"):     # map32
        c = daemon.client()
        c.send_raw(b"\x94\x00\x01\xa8generate\x91" + body)
        expect_protocol_close(c)
        c.close()
    # over --max-frame with real bytes
    c = daemon.client()
    big = msgpack.packb([0, 1, "tokenize", [{"text": "x" * (17 << 20)}]])
    try:
        c.send_raw(big)
    except OSError:
        pass  # closed while we were still sending
    expect_protocol_close(c)
    assert served_ok(daemon)


def test_not_rpc_frames(daemon):
    for obj in ([1, 2], [5, 1, "hello", []], [0, -1, "hello", []],
                [0, 1, 7, []], [0, 2 ** 40, "hello", []], "hello"):
        c = daemon.client()
        c.send_raw(msgpack.packb(obj))
        expect_protocol_close(c)
        c.close()
    assert served_ok(daemon)


WRONG_TYPES = [
    ("generate", "prompt", 5),
    ("generate", "ids", "1,2"),
    ("generate", "ids", [1, "x"]),
    ("generate", "ids", [-1]),
    ("generate", "ids", [10 ** 9]),
    ("generate", "messages", "hi"),
    ("generate", "messages", [{"role": 1, "content": "x"}]),
    ("generate", "max_tokens", "8"),
    ("generate", "max_tokens", 0),
    ("generate", "max_tokens", 1.5),
    ("generate", "stop", 7),
    ("generate", "stop", [1]),
    ("generate", "temperature", "hot"),
    ("generate", "temperature", -1.0),
    ("generate", "top_p", 0.0),
    ("generate", "top_p", 2),
    ("generate", "top_k", -3),
    ("generate", "top_k", "x"),
    ("generate", "seed", -1),
    ("generate", "seed", "x"),
    ("generate", "draft_tokens", 17),
    ("generate", "draft_tokens", "many"),
    ("generate", "stream", 1),
    ("generate", "ignore_eos", "yes"),
    ("generate", "session", 5),
    ("fim", "prefix", 5),
    ("fim", "suffix", []),
    ("cancel", "msgid", "x"),
    ("cancel", "msgid", -1),
    ("tokenize", "text", 5),
    ("tokenize", "add_special", "no"),
    ("detokenize", "ids", {"a": 1}),
    ("session.close", "session", 5),
    ("session.info", "session", []),
    ("hello", "token", 5),
]


def test_wrong_types_for_every_field(daemon):
    c = daemon.client()
    base = {"generate": {"prompt": "x"}, "fim": {"prefix": "a", "suffix": "b"},
            "cancel": {}, "tokenize": {"text": "x"}, "detokenize": {},
            "session.close": {}, "session.info": {}, "hello": {}}
    for method, field, value in WRONG_TYPES:
        params = dict(base[method])
        params[field] = value
        if method == "generate" and field in ("ids", "messages"):
            del params["prompt"]
        err, res = c.call(method, params)
        assert err is not None, (method, field, value, res)
        assert err["code"] == "bad_params", (method, field, err)
        assert err["field"] == field, (method, field, err)
        assert field in err["message"]
    # missing required fields, two prompts, a params that is not a map
    for method, params, field in (("generate", {}, "prompt"),
                                  ("generate", {"prompt": "a", "ids": [1]},
                                   "prompt"),
                                  ("fim", {"prefix": "a"}, "suffix"),
                                  ("tokenize", {}, "text"),
                                  ("cancel", {}, "msgid")):
        err, _ = c.call(method, params)
        assert err["code"] == "bad_params" and err["field"] == field
    c.send_raw(msgpack.packb([0, 99, "hello", "notalist"]))
    err, _, _ = c.wait(99)
    assert err["code"] == "bad_params" and err["field"] == "params"
    c.send_raw(msgpack.packb([0, 98, "hello", [1, 2]]))
    assert c.wait(98)[0]["field"] == "params"
    # the connection keeps working after every bad request
    err, res = c.call("tokenize", {"text": "ok"})
    assert err is None and res["ids"]
    c.close()
    assert served_ok(daemon)


def test_unknown_method_and_session(daemon):
    c = daemon.client()
    err, _ = c.call("rm -rf", {})
    assert err["code"] == "unknown_method"
    for sid in ("0" * 32, "not-an-id", "A" * 32):
        for method in ("session.info", "session.close"):
            err, _ = c.call(method, {"session": sid})
            assert err["code"] == "unknown_session"
        err, _ = c.call("generate", {"session": sid, "prompt": "x"})
        assert err["code"] == "unknown_session"
    c.close()
    assert served_ok(daemon)


def test_flood_beyond_queue_gets_overloaded(daemon):
    c = daemon.client(timeout=120)
    # all in one write, so they arrive together
    ids = list(range(100, 112))
    c.send_raw(b"".join(msgpack.packb(
        [0, i, "generate", [{"prompt": "def f(x):", "max_tokens": 40,
                             "ignore_eos": True}]]) for i in ids))
    codes = []
    for i in ids:
        err, res, _ = c.wait(i)
        codes.append(err["code"] if err else res["finish_reason"])
    assert "overloaded" in codes, codes
    assert codes.count("length") >= 3, codes
    assert set(codes) <= {"overloaded", "length"}, codes
    c.close()
    assert served_ok(daemon)


def test_prompt_over_context(daemon):
    c = daemon.client()
    err, _ = c.call("generate", {"ids": [5] * 4097})
    assert err["code"] == "over_limit" and err["limit"] == "prompt_tokens"
    err, _ = c.call("generate", {"ids": [5] * 4096})
    assert err["code"] == "over_limit" and err["limit"] == "prompt_tokens"
    err, _ = c.call("generate", {"prompt": "x = 1\n" * 3000})
    assert err["code"] == "over_limit" and err["limit"] == "prompt_tokens"
    err, _ = c.call("generate", {"prompt": "x", "max_tokens": 5000})
    assert err["code"] == "over_limit" and err["limit"] == "max_tokens"
    err, _ = c.call("generate", {"prompt": "x", "stop": ["s"] * 17})
    assert err["code"] == "over_limit" and err["limit"] == "stop_strings"
    c.close()
    assert served_ok(daemon)


def test_client_that_never_reads(daemon):
    c = daemon.client()
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    text = "def f(x):\n    return x\n" * 400
    req = msgpack.packb([0, 1, "tokenize", [{"text": text}]])
    dropped = False
    try:
        for _ in range(400):
            c.send_raw(req)
    except OSError:
        dropped = True  # the daemon hung up on us
    time.sleep(0.5)
    assert served_ok(daemon)
    assert dropped or "max-outbuf" in daemon.log_text()
    c.close()
    assert "max-outbuf" in daemon.log_text()


def test_connection_limit(tmp_path):
    d = Daemon(tmp_path, "--max-conns", "3")
    try:
        time.sleep(0.3)  # the start-up probe connection is gone
        held = [d.client() for _ in range(3)]
        for c in held:  # all three are served
            assert c.call("tokenize", {"text": "x"})[0] is None
        extra = d.client()
        assert extra.recv() is None  # closed at once
        held.pop().close()
        time.sleep(0.2)
        assert served_ok(d)
        assert "--max-conns" in d.log_text()
    finally:
        assert d.stop() == 0
