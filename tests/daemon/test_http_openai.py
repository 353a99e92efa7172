"""`mtpd serve --http`: the official `openai` client, unmodified, against
the daemon. Greedy chat, completions and FIM (`suffix`), streamed or
not, equal `mtpd generate` offline for the same tokens; usage counts,
finish_reason, sessions (explicit and a chat continuing its cached
prefix), errors in OpenAI's shape, and /metrics counters that grow by
exactly the tokens generated."""
import http.client
import json
import time

import pytest

from http_helpers import (HttpDaemon, offline_chat, offline_fim,
                          offline_ids)
from serve_helpers import offline

openai = pytest.importorskip("openai", reason="pip install openai "
                             "(tools/setup.sh)")

PROMPT = "def add(a, b):"
MSGS = [{"role": "user", "content": "Write a function that adds two "
         "numbers."}]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = HttpDaemon(tmp_path_factory.mktemp("http"))
    yield d
    assert d.stop() == 0
    assert "ERROR" not in d.log_text().upper().replace("ERRORS", "")


def test_models_and_health(daemon):
    cl = daemon.openai()
    models = cl.models.list()
    assert [m.id for m in models.data] == ["mtpd-code-small"]
    st, _, body = daemon.get("/health")
    assert st == 200 and b'"ok"' in body
    st, h, body = daemon.request("HEAD", "/health")
    assert st == 200 and body == b"" and h["Content-Length"] == "15"


def test_completion_equals_offline(daemon):
    ids, text, finish = offline(PROMPT, 24)
    r = daemon.openai().completions.create(model="mtpd-code-small",
                                           prompt=PROMPT, max_tokens=24,
                                           temperature=0)
    assert r.choices[0].text == text
    assert r.choices[0].finish_reason == ("length" if finish == "length"
                                          else "stop")
    assert r.usage.completion_tokens == len(ids)
    assert r.usage.prompt_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + len(ids)
    ext = r.model_extra["mtpd"]
    assert ext["stats"]["generated_tokens"] == len(ids)
    assert "acceptance_by_position" in ext["stats"]


def test_completion_stream_equals_offline(daemon):
    ids, text, _ = offline(PROMPT, 24)
    chunks = list(daemon.openai().completions.create(
        model="m", prompt=PROMPT, max_tokens=24, stream=True,
        stream_options={"include_usage": True}))
    body = [c for c in chunks if c.choices]
    assert len(body) > 2  # streamed in pieces, not one blob
    assert "".join(c.choices[0].text for c in body) == text
    assert body[-1].choices[0].finish_reason == "length"
    assert chunks[-1].usage.completion_tokens == len(ids)


def test_chat_equals_offline(daemon):
    ids, text, _ = offline_chat(MSGS, 20)
    cl = daemon.openai()
    r = cl.chat.completions.create(model="m", messages=MSGS, max_tokens=20)
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == text
    assert r.usage.completion_tokens == len(ids)
    parts = list(cl.chat.completions.create(model="m", messages=MSGS,
                                            max_tokens=20, stream=True))
    assert parts[0].choices[0].delta.role == "assistant"
    assert "".join(p.choices[0].delta.content or "" for p in parts) == text
    assert parts[-1].choices[0].finish_reason in ("length", "stop")


def test_fim_suffix_equals_offline(daemon):
    prefix, suffix = "def area(r):\n    return ", "\n\nprint(area(2))\n"
    ids, text, _ = offline_fim(prefix, suffix, 16)
    r = daemon.openai().completions.create(model="m", prompt=prefix,
                                           suffix=suffix, max_tokens=16)
    assert r.choices[0].text == text
    assert r.usage.completion_tokens == len(ids)


def test_token_id_prompt(daemon):
    ids, text, _ = offline_ids((1, 200, 300, 400), 8)
    r = daemon.openai().completions.create(model="m", prompt=[1, 200, 300,
                                                             400],
                                           max_tokens=8)
    assert r.choices[0].text == text


def test_sessions(daemon):
    c = daemon.client()
    err, res = c.call("session.open", {})
    assert err is None
    sid = res["session"]
    cl = daemon.openai()
    r1 = cl.completions.create(model="m", prompt=PROMPT, max_tokens=8,
                               extra_body={"session": sid})
    assert r1.model_extra["mtpd"]["session"] == sid
    longer = PROMPT + r1.choices[0].text + "\n"
    r2 = cl.completions.create(model="m", prompt=longer, max_tokens=8,
                               extra_headers={"X-Mtpd-Session": sid})
    assert r2.usage.prompt_tokens_details.cached_tokens > 0
    assert r2.choices[0].text == offline(longer, 8)[1]
    err, info = c.call("session.info", {"session": sid})
    assert err is None and info["requests"] == 2
    with pytest.raises(openai.NotFoundError) as ei:
        cl.completions.create(model="m", prompt=PROMPT, max_tokens=2,
                              extra_body={"session": "0" * 32})
    assert ei.value.body["param"] == "session"
    c.close()


def test_chat_continues_cached_conversation(daemon):
    cl = daemon.openai()
    turn1 = [{"role": "user", "content": "Sort a list in Python."}]
    r1 = cl.chat.completions.create(model="m", messages=turn1,
                                    max_tokens=16)
    turn2 = turn1 + [
        {"role": "assistant", "content": r1.choices[0].message.content},
        {"role": "user", "content": "Now in reverse order."}]
    r2 = cl.chat.completions.create(model="m", messages=turn2,
                                    max_tokens=16)
    # no session named, yet the second turn reuses the first one's cache
    assert r2.usage.prompt_tokens_details.cached_tokens > 0
    assert r2.model_extra["mtpd"]["session"] == \
        r1.model_extra["mtpd"]["session"]
    assert r2.choices[0].message.content == offline_chat(turn2, 16)[1]


def test_errors_in_openai_shape(daemon):
    cl = daemon.openai()
    with pytest.raises(openai.BadRequestError) as ei:
        cl.completions.create(model="m", prompt=PROMPT,
                              max_tokens="many")
    assert ei.value.status_code == 400
    assert ei.value.body["param"] == "max_tokens"
    assert ei.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as ei:
        cl.chat.completions.create(model="m", messages="hi")
    assert ei.value.body["param"] == "messages"
    with pytest.raises(openai.BadRequestError) as ei:
        cl.completions.create(model="m", prompt=PROMPT, n=2)
    assert ei.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError) as ei:
        cl.completions.create(model="m", prompt=PROMPT, temperature=-1)
    assert ei.value.body["param"] == "temperature"
    st, _, body = daemon.post("/v1/completions", b'{"prompt": "x", ')
    assert st == 400 and b'"error"' in body and b"JSON" in body
    st, _, body = daemon.get("/v1/nothing")
    assert st == 404 and b'"error"' in body
    st, h, _ = daemon.get("/v1/completions")
    assert st == 405


def _counter(m, name):
    return m.get(name, 0.0)


def test_metrics_count_exactly(daemon):
    before = daemon.metrics()
    cl = daemon.openai()
    n = 0
    for p, k in (("import os\n", 5), ("class A:", 7)):
        r = cl.completions.create(model="m", prompt=p, max_tokens=k)
        n += r.usage.completion_tokens
    parts = list(cl.completions.create(model="m", prompt="x = 1", stream=True,
                                       max_tokens=6,
                                       stream_options={"include_usage":
                                                       True}))
    n += parts[-1].usage.completion_tokens
    after = daemon.metrics()
    key = "mtpd_generated_tokens_total"
    assert after[key] - before[key] == n
    ok = "mtpd_http_requests_total|code=200|path=/v1/completions"
    assert after[ok] - before.get(ok, 0) == 3
    assert after["mtpd_spec_draft_tokens_total"] >= \
        before["mtpd_spec_draft_tokens_total"]
    assert after["mtpd_kv_cache_budget_bytes"] > 0
    assert "mtpd_spec_acceptance_by_position_ratio|position=1" in after
    assert after["mtpd_spec_mean_accepted_length_tokens"] >= 1
    assert after["mtpd_requests_running"] == 0
    for h in ("mtpd_http_time_to_first_token_seconds",
              "mtpd_http_request_duration_seconds"):
        assert after[h + "_count"] - before[h + "_count"] == 3
        assert after[h + "_bucket|le=+Inf"] == after[h + "_count"]
        assert after[h + "_sum"] > before[h + "_sum"]


def test_stream_provenance_matches_stats(daemon):
    """mtpd.provenance: every token says how it was produced; the counts
    agree with the engine's stats and the texts make up the stream."""
    st, _, body = daemon.post("/v1/completions", {
        "prompt": PROMPT, "max_tokens": 60, "stream": True,
        "mtpd": {"provenance": True, "draft_tokens": 3}})
    assert st == 200
    toks, text, stats = [], "", None
    for line in body.decode().split("\n\n"):
        if not line.startswith("data: {"):
            continue
        j = json.loads(line[6:])
        c = j["choices"][0]
        if c["finish_reason"]:
            stats = j["mtpd"]["stats"]
        else:
            text += c["text"]
            toks += j["mtpd"]["tokens"]
    assert len(toks) == stats["generated_tokens"] == 60
    assert "".join(t[2] for t in toks) == text
    assert text == offline(PROMPT, 60)[1]
    drafted = [t for t in toks if t[1] > 0]
    main = [t for t in toks if t[1] <= 0]
    # one main-model token per pass (+ the prefill's); the last pass may
    # be cut by max_tokens, so its drafts may be counted but not emitted
    assert stats["verify_passes"] <= len(main) <= stats["verify_passes"] + 1
    assert len(drafted) <= stats["accepted_tokens"] <= len(drafted) + 3
    assert all(t[1] in (0, -1, -2) or 1 <= t[1] <= 3 for t in toks)
    assert drafted, "the default model accepts some drafts"


def test_stop_strings(daemon):
    ids, text, finish = offline(PROMPT, 40, ("==",))
    r = daemon.openai().completions.create(model="m", prompt=PROMPT,
                                           max_tokens=40, stop=["=="])
    assert finish == "stop" and r.choices[0].finish_reason == "stop"
    assert r.choices[0].text == text and "==" not in text
    parts = list(daemon.openai().completions.create(
        model="m", prompt=PROMPT, max_tokens=40, stop="==", stream=True))
    assert "".join(p.choices[0].text for p in parts) == text


def test_busy_session_is_409(daemon):
    c = daemon.client()
    sid = c.call("session.open", {})[1]["session"]
    h = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=30)
    h.request("POST", "/v1/completions", json.dumps({
        "prompt": PROMPT, "max_tokens": 2000, "ignore_eos": True,
        "stream": True, "session": sid}),
        {"Content-Type": "application/json"})
    r = h.getresponse()
    assert r.status == 200 and r.readline().startswith(b"data: ")
    with pytest.raises(openai.ConflictError) as ei:
        daemon.openai().completions.create(model="m", prompt=PROMPT,
                                           max_tokens=2,
                                           extra_body={"session": sid})
    assert ei.value.body["code"] == "busy"
    assert ei.value.body["message"] == \
        "the session is already running a request"
    h.close()  # the drop cancels it; the session is free again
    for _ in range(100):
        err, info = c.call("session.info", {"session": sid})
        if not info["busy"]:
            break
        time.sleep(0.1)
    assert not info["busy"]
    c.close()
