"""`mtpd serve` sessions: prefix reuse, eviction of the least recently
used idle session under a small KV budget, state kept across a restart,
idle expiry."""
import json
import os
import time

from http_helpers import HttpDaemon
from serve_helpers import Daemon, offline, served_ok

PROMPT = "def add(a, b):"
BYTES_PER_TOKEN = 5184  # models/mtpd-code-small, f32 KV, 8 + 1 layers
PAGE = 64 * BYTES_PER_TOKEN


def test_prefix_reuse_gives_fresh_session_ids(tmp_path):
    d = Daemon(tmp_path)
    try:
        c = d.client()
        _, s1 = c.call("session.open")
        sess = s1["session"]
        err, first = c.call("generate", {"session": sess, "prompt": PROMPT,
                                         "max_tokens": 16})
        assert err is None
        err, info = c.call("session.info", {"session": sess})
        _, tok = c.call("tokenize", {"text": PROMPT})
        assert info["tokens"] == len(tok["ids"]) + len(first["ids"])
        # the second request extends the first: prompt + output + more
        _, more = c.call("tokenize", {"text": "\n\ndef sub(a, b):",
                                      "add_special": False})
        ids2 = tok["ids"] + first["ids"] + more["ids"]
        err, second = c.call("generate", {"session": sess, "ids": ids2,
                                          "max_tokens": 16})
        assert err is None
        assert second["stats"]["prompt_tokens_reused"] > 0
        assert second["stats"]["prompt_tokens_reused"] < len(ids2)
        # a fresh session gives the same ids
        _, s2 = c.call("session.open")
        err, fresh = c.call("generate", {"session": s2["session"],
                                         "ids": ids2, "max_tokens": 16})
        assert err is None and fresh["ids"] == second["ids"]
        assert fresh["stats"]["prompt_tokens_reused"] == 0
        # the session's summed stats carry its reuse; the count arrays
        # behind the acceptance ratios add up to them
        err, info = c.call("session.info", {"session": sess})
        assert err is None
        st1, st2 = first["stats"], second["stats"]
        assert info["stats"]["prompt_tokens_reused"] == \
            st1["prompt_tokens_reused"] + st2["prompt_tokens_reused"]
        ist = info["stats"]
        for name in ("drafted_by_position", "reached_by_position",
                     "accepted_by_position"):
            n = max(len(st1[name]), len(st2[name]))
            pad = lambda a: a + [0] * (n - len(a))
            assert ist[name] == [x + y for x, y in
                                 zip(pad(st1[name]), pad(st2[name]))]
        if ist["drafted_by_position"]:
            assert ist["drafted_by_position"][0] == ist["drafts"]
            assert abs(ist["acceptance_by_position"][0] -
                       ist["accepted_by_position"][0] /
                       ist["drafted_by_position"][0]) < 1e-9
        _, st = c.call("stats")
        assert st["prompt_tokens_reused"] >= \
            second["stats"]["prompt_tokens_reused"]
        c.close()
    finally:
        assert d.stop() == 0


def test_eviction_picks_lru_idle_session(tmp_path):
    # room for two one-page sessions, not three
    d = Daemon(tmp_path, "--kv-budget", str(2 * PAGE + PAGE // 2))
    try:
        c = d.client()
        sess = [c.call("session.open")[1]["session"] for _ in range(3)]
        req = {"prompt": PROMPT, "max_tokens": 8}
        for i in (0, 1, 0):  # session 1 is now the least recently used
            err, _ = c.call("generate", dict(req, session=sess[i]))
            assert err is None, err
        err, _ = c.call("generate", dict(req, session=sess[2]))
        assert err is None, err
        err, _ = c.call("session.info", {"session": sess[1]})
        assert err["code"] == "unknown_session"
        for i in (0, 2):
            err, info = c.call("session.info", {"session": sess[i]})
            assert err is None and info["kv_bytes"] > 0
        _, st = c.call("stats")
        assert st["kv_bytes_in_use"] <= st["kv_budget_bytes"]
        # a request that cannot fit even alone: kv_budget up front
        err, _ = c.call("generate", {"prompt": PROMPT, "max_tokens": 2000})
        assert err["code"] == "kv_budget", err
        assert "evicted" in d.log_text()
        c.close()
        assert served_ok(d)
    finally:
        assert d.stop() == 0


def test_admission_errors_both_protocols(tmp_path):
    # msgpack-rpc and HTTP admit through one function (daemon/admit.c);
    # each words the errors its own way
    budget = 2 * PAGE + PAGE // 2
    d = HttpDaemon(tmp_path, "--kv-budget", str(budget))
    try:
        c = d.client()
        big = {"prompt": PROMPT, "max_tokens": 2000}
        need = 2048 * BYTES_PER_TOKEN  # 2000 + the prompt, in 64-token pages
        err, _ = c.call("generate", big)
        assert err == {"code": "kv_budget", "message":
                       "the request needs %d bytes of KV cache; 0 of %d are "
                       "held by running sessions" % (need, budget)}, err
        st, _, body = d.request("POST", "/v1/completions", big)
        e = json.loads(body)["error"]
        assert st == 400 and e["code"] == "kv_budget", (st, e)
        assert e["param"] == "max_tokens"
        assert e["message"] == ("the request needs %d bytes of KV cache; 0 "
                                "of the budget's %d are held by running "
                                "requests" % (need, budget))
        gone = "no such session (closed, expired, evicted or never opened)"
        err, _ = c.call("generate", {"prompt": PROMPT, "session": "0" * 32})
        assert err == {"code": "unknown_session", "message": gone}, err
        st, _, body = d.request("POST", "/v1/completions",
                                {"prompt": PROMPT, "session": "0" * 32})
        e = json.loads(body)["error"]
        assert (st, e["code"], e["param"], e["message"]) == \
            (404, "unknown_session", "session", gone)
        # what fits still runs, on both
        err, _ = c.call("generate", {"prompt": PROMPT, "max_tokens": 4})
        assert err is None, err
        st, _, body = d.request("POST", "/v1/completions",
                                {"prompt": PROMPT, "max_tokens": 4})
        assert st == 200, body
        _, info = c.call("stats")
        assert info["kv_bytes_in_use"] <= budget, info
        c.close()
        assert served_ok(d)
    finally:
        assert d.stop() == 0


def test_session_survives_restart(tmp_path):
    state = tmp_path / "state"
    d = Daemon(tmp_path, "--state-dir", str(state))
    try:
        c = d.client()
        sess = c.call("session.open")[1]["session"]
        err, first = c.call("generate", {"session": sess, "prompt": PROMPT,
                                         "max_tokens": 12})
        assert err is None
        tokens = c.call("session.info", {"session": sess})[1]["tokens"]
        c.close()
    finally:
        assert d.stop() == 0
    assert (state / (sess + ".session")).exists()
    # a corrupt and a foreign file are skipped, never fatal
    (state / ("0" * 32 + ".session")).write_bytes(b"garbage")
    (state / ("1" * 32 + ".session")).write_bytes(
        (state / (sess + ".session")).read_bytes()[:-3] + b"abc")
    d.start()
    try:
        c = d.client()
        err, info = c.call("session.info", {"session": sess})
        assert err is None and info["tokens"] == tokens
        for bad in ("0" * 32, "1" * 32):
            err, _ = c.call("session.info", {"session": bad})
            assert err["code"] == "unknown_session"
        assert "skipping" in d.log_text()
        _, tok = c.call("tokenize", {"text": PROMPT})
        err, again = c.call("generate", {"session": sess,
                                         "ids": tok["ids"] + first["ids"],
                                         "max_tokens": 8})
        assert err is None
        c.close()
    finally:
        assert d.stop() == 0
    # files of sessions that no longer exist are removed at shutdown
    assert not (state / ("0" * 32 + ".session")).exists()
    assert (state / (sess + ".session")).exists()


def test_close_and_idle_expiry(tmp_path):
    d = Daemon(tmp_path, "--session-idle", "1", "--max-sessions", "2")
    try:
        c = d.client()
        a = c.call("session.open")[1]["session"]
        b = c.call("session.open")[1]["session"]
        assert len(a) == 32 and a != b
        err, _ = c.call("session.open")
        assert err["code"] == "over_limit" and err["limit"] == "sessions"
        assert c.call("session.close", {"session": a})[1] == {"closed": True}
        err, _ = c.call("session.close", {"session": a})
        assert err["code"] == "unknown_session"
        time.sleep(2.5)
        err, _ = c.call("session.info", {"session": b})
        assert err["code"] == "unknown_session"
        c.close()
    finally:
        assert d.stop() == 0
