"""`mtpd serve`: generation over the socket equals `mtpd generate`
offline, streamed or not, one client or 32 at once."""
import threading

import pytest

from serve_helpers import Daemon, mtpd_bin, offline

PROMPTS = [
    "def add(a, b):",
    "import os\n\ndef main():",
    "class Stack:\n    def __init__(self):",
    "for i in range(10):",
    "def fib(n):\n    if n < 2:",
    "# read a file\nwith open(path) as f:",
    "def is_prime(n):",
    "x = [i * i for i in",
]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("gen"))
    yield d
    assert d.stop() == 0
    assert "ERROR" not in d.log_text().upper().replace("ERRORS", "")


def test_hello_and_tokenize(daemon):
    c = daemon.client()
    err, res = c.call("hello")
    assert err is None
    assert res["server"] == "mtpd" and res["protocol"] == 1
    assert res["model"]["vocab_size"] == 8192
    assert res["model"]["mtp_modules"] == 1
    assert res["limits"]["max_frame"] == 16 << 20
    err, res = c.call("tokenize", {"text": "def f(x):"})
    assert err is None and res["ids"]
    err, back = c.call("detokenize", {"ids": res["ids"]})
    assert err is None and "def f(x):" in back["text"]
    c.close()


def test_streamed_greedy_equals_offline(daemon):
    c = daemon.client()
    for prompt in PROMPTS[:3]:
        ids, text, finish = offline(prompt, 40)
        err, res = c.call("generate", {"prompt": prompt, "max_tokens": 40,
                                       "stream": True})
        assert err is None, err
        assert res["ids"] == ids
        assert res["text"] == text
        assert res["finish_reason"] == finish
        assert c.chunks, "no generate.chunk notifications"
        assert "".join(ch["text"] for ch in c.chunks) == res["text"]
        assert sum((ch["ids"] for ch in c.chunks), []) == res["ids"]
        st = res["stats"]
        assert st["generated_tokens"] == len(ids)
        assert st["prompt_tokens_reused"] == 0
        for key in ("acceptance_by_position", "mean_accepted_length",
                    "decode_tokens_per_s", "queue_seconds"):
            assert key in st
    c.close()


def test_unstreamed_and_ids_prompt(daemon):
    c = daemon.client()
    ids, text, _ = offline(PROMPTS[0], 20)
    err, res = c.call("generate", {"prompt": PROMPTS[0], "max_tokens": 20})
    assert err is None and res["ids"] == ids and res["text"] == text
    assert c.chunks == []
    err, tok = c.call("tokenize", {"text": PROMPTS[0]})
    err, res2 = c.call("generate", {"ids": tok["ids"], "max_tokens": 20})
    assert err is None and res2["ids"] == ids
    c.close()


def test_stop_string(daemon):
    c = daemon.client()
    ids, text, finish = offline(PROMPTS[0], 40, ("assert",))
    err, res = c.call("generate", {"prompt": PROMPTS[0], "max_tokens": 40,
                                   "stop": ["assert"], "stream": True})
    assert err is None
    assert (res["ids"], res["text"], res["finish_reason"]) == \
        (ids, text, finish)
    assert "".join(ch["text"] for ch in c.chunks) == res["text"]
    assert "assert" not in res["text"]
    c.close()


def test_messages_and_fim(daemon):
    c = daemon.client()
    err, res = c.call("generate", {"messages": [
        {"role": "user", "content": "write a function"}], "max_tokens": 8})
    assert err is None and res["finish_reason"] in ("stop", "length")
    err, res = c.call("fim", {"prefix": "def f(x):\n    return ",
                              "suffix": "\n", "max_tokens": 8})
    assert err is None and res["finish_reason"] in ("stop", "length")
    c.close()


def test_32_concurrent_clients(daemon):
    n = 32
    want = [offline(PROMPTS[i % len(PROMPTS)], 24) for i in range(n)]
    got = [None] * n
    errors = []
    barrier = threading.Barrier(n)

    def run(i):
        try:
            c = daemon.client(timeout=300)
            err, res = c.call("session.open")
            sess = res["session"]
            barrier.wait()
            err, res = c.call("generate", {
                "session": sess, "prompt": PROMPTS[i % len(PROMPTS)],
                "max_tokens": 24, "stream": True})
            assert err is None, err
            # every chunk on this connection carried this request's msgid:
            # nothing else arrived
            assert c.pending == [], c.pending
            streamed = sum((ch["ids"] for ch in c.chunks), [])
            got[i] = (res["ids"], res["text"], streamed,
                      "".join(ch["text"] for ch in c.chunks))
            c.call("session.close", {"session": sess})
            c.close()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append((i, repr(e)))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    for i in range(n):
        ids, text, _ = want[i]
        assert got[i] == (ids, text, ids, text), i


def test_stats(daemon):
    c = daemon.client()
    err, res = c.call("stats")
    assert err is None
    for key in ("uptime_seconds", "requests", "queue_depth",
                "tokens_generated", "sessions", "kv_bytes_in_use",
                "kv_budget_bytes", "tokens_per_s", "spec", "jemalloc",
                "per_session", "act_dtype"):
        assert key in res, key
    assert res["act_dtype"] == "f32"  # the default: exact products
    assert res["tokens_generated"] > 0
    assert res["spec"]["generated_tokens"] == res["tokens_generated"]
    if "asan" not in mtpd_bin():  # sanitizer builds do not link jemalloc
        assert res["jemalloc"]["allocated"] > 0
        assert res["jemalloc"]["resident"] >= res["jemalloc"]["allocated"]
    c.close()
