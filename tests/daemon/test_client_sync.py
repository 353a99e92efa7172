"""mtpd_client.Client against the real daemon (mtpd serve with the default
model on a temporary socket): every method, streams, sessions, errors, and
greedy output equal to `mtpd generate` offline."""
import pytest

from daemon_fixture import daemon, mtpd_serve, offline  # noqa: F401 (fixtures)
import mtpd_client

PROMPTS = ["def fibonacci(n):\n", "import os\nimport sys\n\n\ndef main(argv):\n"]


@pytest.fixture
def client(daemon):
    with mtpd_client.Client(daemon.address, timeout=120) as c:
        yield c


def test_hello(client):
    h = client.hello()
    assert h["server"] == "mtpd" and h["protocol"] == mtpd_client.PROTOCOL_VERSION
    m = h["model"]
    assert (m["vocab_size"], m["context_length"], m["mtp_modules"]) == (8192, 4096, 1)
    assert m["kv_bytes_per_token"] > 0
    assert set(h["limits"]) >= {"max_frame", "max_sessions", "max_tokens",
                                "kv_budget_bytes"}


def test_tokenize_detokenize(client, mtpd_serve):
    text = "def f(x):\n    return x * 2  # é\n"
    ids = client.tokenize(text)
    plain = client.tokenize(text, add_special=False)
    # add_special applies tokenizer.json's post-processor (docs/tokenizer.md:
    # ByteLevel for this model, so no BOS); the ids equal what generate uses
    assert ids[len(ids) - len(plain):] == plain and len(ids) - len(plain) <= 1
    assert client.detokenize(plain) == text
    assert offline(mtpd_serve, prompt=text, max_tokens=1)["stats"]["prompt_tokens"] == len(ids)
    assert client.generate(text, max_tokens=1).stats["prompt_tokens"] == len(ids)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_generate_equals_offline(client, mtpd_serve, prompt):
    want = offline(mtpd_serve, prompt=prompt, max_tokens=40)
    r = client.generate(prompt, max_tokens=40)
    assert isinstance(r, mtpd_client.Result)
    assert (r.ids, r.text, r.finish_reason) == (want["ids"], want["text"],
                                                want["finish_reason"])
    assert r.stats["generated_tokens"] == len(r.ids)
    assert r.stats["prompt_tokens"] == want["stats"]["prompt_tokens"]
    # ids in, same answer
    r2 = client.generate(ids=client.tokenize(prompt), max_tokens=40, draft_tokens=2)
    assert r2.ids == want["ids"]


def test_stream(client, mtpd_serve):
    prompt = PROMPTS[1]
    want = offline(mtpd_serve, prompt=prompt, max_tokens=48)
    s = client.generate(prompt, max_tokens=48, stream=True)
    chunks = list(s)
    r = s.result()
    assert len(chunks) >= 2, "streamed in one piece"
    assert [i for ch in chunks for i in ch.ids] == r.ids == want["ids"]
    assert "".join(ch.text for ch in chunks) == r.text == want["text"]
    assert all(isinstance(ch.text, str) for ch in chunks)


def test_session_prefix_reuse(client, mtpd_serve):
    p_ids = client.tokenize(PROMPTS[0])
    with client.session() as s:
        r1 = s.generate(ids=p_ids, max_tokens=16)
        ids2 = p_ids + r1.ids + client.tokenize("\n\nclass", add_special=False)
        r2 = s.generate(ids=ids2, max_tokens=16)
        assert r2.stats["prompt_tokens_reused"] >= len(p_ids)
        info = s.info()
        assert info["session"] == s.id and info["tokens"] == len(ids2) + len(r2.ids)
        assert info["requests"] == 2 and info["kv_bytes"] > 0
        sid = s.id
    with pytest.raises(mtpd_client.UnknownSessionError):
        client.session_info(sid)
    fresh = client.generate(ids=ids2, max_tokens=16)
    assert fresh.ids == r2.ids == offline(mtpd_serve, ids=ids2, max_tokens=16)["ids"]
    assert fresh.stats["prompt_tokens_reused"] == 0


def test_session_outlives_connection(daemon):
    with mtpd_client.Client(daemon.address, timeout=120) as c:
        sid = c.session_open()
        c.generate("x = 1\n", session=sid, max_tokens=4)
    with mtpd_client.Client(daemon.address, timeout=120) as c:
        with c.session(sid, close=True) as s:
            assert s.info()["requests"] == 1
            r = s.generate("x = 1\n", max_tokens=4)
            assert r.stats["prompt_tokens_reused"] > 0
        with pytest.raises(mtpd_client.UnknownSessionError):
            c.session_info(sid)


def test_fim(client):
    prefix, suffix = "def add(a, b):\n    ", "\n\n\nprint(add(1, 2))\n"
    r = client.fim(prefix, suffix, max_tokens=24)
    assert r.text == client.detokenize(r.ids)
    assert r.finish_reason in ("stop", "length")
    # the FIM prompt of docs/protocol.md, with BOS as every training document
    ids = ([0, 3] + client.tokenize(prefix, add_special=False) + [2]
           + client.tokenize(suffix, add_special=False) + [4])
    assert client.generate(ids=ids, max_tokens=24).ids == r.ids
    s = client.fim(prefix, suffix, max_tokens=24, stream=True)
    assert "".join(ch.text for ch in s) == s.result().text == r.text


def test_errors_keep_the_connection(client):
    with pytest.raises(mtpd_client.UnknownMethodError):
        client.call("no.such.method")
    with pytest.raises(mtpd_client.BadParamsError) as ei:
        client.generate("x", extra={"max_tokens": "many"})
    assert ei.value.field == "max_tokens" and "max_tokens" in ei.value.message
    with pytest.raises(mtpd_client.BadParamsError) as ei:
        client.call("tokenize", text=17)
    assert ei.value.field == "text"
    with pytest.raises(mtpd_client.UnknownSessionError):
        client.generate("x", session="0" * 32, max_tokens=2)
    with pytest.raises(mtpd_client.OverLimitError) as ei:
        client.generate(ids=[65] * 5000, max_tokens=2)
    assert ei.value.limit == "prompt_tokens"
    with pytest.raises(mtpd_client.MtpdError):
        client.generate("x", max_tokens=10 ** 9)
    assert client.generate("x = ", max_tokens=2).finish_reason in ("length", "stop")


def test_cancel_stream(client):
    s = client.generate("def main():\n", max_tokens=3000, ignore_eos=True, stream=True)
    next(s)
    assert s.cancel() is True
    r = s.result()
    assert r.finish_reason == "cancelled" and 1 <= len(r.ids) < 3000
    assert client.cancel(99999) is False
    assert client.generate("y = ", max_tokens=2).ids


def test_protocol_error_closes_only_that_connection(daemon):
    c = mtpd_client.Client(daemon.address, timeout=60)
    c._sock.sendall(b"\xc1")  # never valid msgpack
    with pytest.raises(mtpd_client.ProtocolError):
        c.stats()
    assert c.closed
    with mtpd_client.Client(daemon.address, timeout=60) as c2:
        assert c2.hello()["server"] == "mtpd"


def test_stats(client):
    client.generate("a = 1\n", max_tokens=4)
    st = client.stats()
    for k in ("uptime_seconds", "requests", "queue_depth", "tokens_generated", "sessions",
              "kv_bytes_in_use", "kv_budget_bytes", "spec", "jemalloc", "per_session"):
        assert k in st, k
    assert st["requests"] >= 1 and st["tokens_generated"] >= 4
    # jemalloc's numbers themselves are the daemon's tests' job (a sanitizer
    # build has no jemalloc and reports 0)
    assert all(isinstance(st["jemalloc"][k], int) for k in ("allocated", "resident"))


def test_messages_and_stop_equal_offline(client, mtpd_serve):
    q = "Write a function that adds two numbers."
    want = offline(mtpd_serve, prompt=q, max_tokens=24, extra=["--chat"])
    r = client.generate(messages=[{"role": "user", "content": q}], max_tokens=24)
    assert (r.ids, r.text) == (want["ids"], want["text"])
    prompt = PROMPTS[1]
    want = offline(mtpd_serve, prompt=prompt, max_tokens=48, extra=["--stop", "\n\n"])
    r = client.generate(prompt, max_tokens=48, stop=["\n\n"])
    assert (r.text, r.finish_reason) == (want["text"], want["finish_reason"])
    s = client.generate(prompt, max_tokens=48, stop=["\n\n"], stream=True)
    assert "".join(ch.text for ch in s) == s.result().text == want["text"]
