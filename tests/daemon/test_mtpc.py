"""mtpc (clients/c) against the real `mtpd serve`: generate streams what a
plain msgpack-rpc request gets, fim and the tokenizer agree with it, chat
reuses the session's prefix, bench's acceptance numbers equal the daemon's
own `stats`, errors exit 1 with the protocol's code.

Skips only when build/mtpd has no `serve` command; a missing mtpc fails."""
import json
import os
import shutil
import subprocess

import pytest

from serve_helpers import ROOT, Daemon, mtpd_bin
from daemon_fixture import serve_missing

PROMPTS = ["def fib(n):", "import os\\nimport sys", "class Stack:",
           "for i in range(10):"]


def mtpc_bin():
    return os.environ.get("MTPC_BIN",
                          os.path.join(ROOT, "build", "clients", "c", "mtpc"))


_NO_SERVE = serve_missing(mtpd_bin())
# skips only when the binary is absent or has no `serve` command; a serve
# that is there but broken fails the tests
pytestmark = pytest.mark.skipif(_NO_SERVE is not None,
                                reason=_NO_SERVE or "")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    assert os.path.exists(mtpc_bin()), f"mtpc not built at {mtpc_bin()}"
    d = Daemon(tmp_path_factory.mktemp("mtpc"))
    yield d
    d.stop()


def mtpc(d, *args, stdin=None, timeout=300):
    cmd = [mtpc_bin(), "--address", "unix:" + d.path] + list(args)
    return subprocess.run(cmd, input=stdin, capture_output=True,
                          timeout=timeout)


def call(d, method, params=None):
    c = d.client()
    try:
        err, res = c.call(method, params)
        return err, res, c.chunks
    finally:
        c.close()


def test_generate_streams_the_daemons_text(daemon):
    prompt = "def fib(n):"
    err, res, chunks = call(daemon, "generate", {
        "prompt": prompt, "max_tokens": 24, "stream": True})
    assert err is None, err
    assert "".join(c["text"] for c in chunks) == res["text"]
    r = mtpc(daemon, "generate", "--max-tokens", "24", prompt)
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode() == res["text"]
    # the prompt from stdin, and --json carrying the same ids
    r = mtpc(daemon, "--json", "generate", "--max-tokens", "24",
             stdin=prompt.encode())
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)
    assert j["ids"] == res["ids"] and j["text"] == res["text"]
    assert j["stats"]["generated_tokens"] == len(res["ids"])


def test_fim_tokenize_detokenize_agree(daemon, tmp_path):
    pre, suf = "def add(a, b):\n    ", "\n\nprint(add(1, 2))\n"
    (tmp_path / "p").write_text(pre)
    (tmp_path / "s").write_text(suf)
    err, res, _ = call(daemon, "fim", {"prefix": pre, "suffix": suf,
                                       "max_tokens": 16})
    assert err is None, err
    r = mtpc(daemon, "fim", "--prefix-file", str(tmp_path / "p"),
             "--suffix-file", str(tmp_path / "s"), "--max-tokens", "16")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode() == res["text"]

    err, tok, _ = call(daemon, "tokenize", {"text": "def f(x):"})
    r = mtpc(daemon, "tokenize", "def f(x):")
    assert r.returncode == 0, r.stderr
    ids = [int(x) for x in r.stdout.split()]
    assert ids == tok["ids"]
    r = mtpc(daemon, "detokenize", *[str(i) for i in ids])
    err, det, _ = call(daemon, "detokenize", {"ids": ids})
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode() == det["text"] + "\n"


def test_chat_reuses_the_session_prefix(daemon):
    r = mtpc(daemon, "chat", "--json", "--max-tokens", "12",
             stdin=b"Write a function that adds two numbers.\n"
                   b"Now make it multiply.\n")
    assert r.returncode == 0, r.stderr
    turns = [json.loads(l) for l in r.stdout.decode().splitlines()]
    assert [t["turn"] for t in turns] == [1, 2]
    assert turns[0]["generated_tokens"] >= 1
    assert turns[1]["prompt_tokens"] > turns[0]["prompt_tokens"]
    assert turns[1]["prompt_tokens_reused"] > 0, turns
    # the human form says it on stderr too
    r = mtpc(daemon, "chat", "--max-tokens", "4", stdin=b"hi\nagain\n")
    assert r.returncode == 0, r.stderr
    lines = [l for l in r.stderr.decode().splitlines() if "reused" in l]
    assert len(lines) == 2 and "first token" in lines[1]
    assert "(0 reused)" not in lines[1], lines


def test_errors_exit_1_with_the_code(daemon, tmp_path):
    r = mtpc(daemon, "generate", "--session", "0" * 32, "x")
    assert r.returncode == 1
    assert b"unknown_session" in r.stderr, r.stderr
    r = mtpc(daemon, "session", "info", "nope")
    assert r.returncode == 1 and b"unknown_session" in r.stderr
    r = subprocess.run([mtpc_bin(), "--address",
                        "unix:" + str(tmp_path / "none.sock"), "stats"],
                       capture_output=True, timeout=60)
    assert r.returncode == 1 and b"cannot connect" in r.stderr
    r = mtpc(daemon, "generate", "--draft-tokens", "99", "x")
    assert r.returncode == 2 and b"--draft-tokens" in r.stderr
    r = mtpc(daemon, "generate", "--top-k", "-1", "x")
    assert r.returncode == 2


def test_sessions_and_stats(daemon):
    r = mtpc(daemon, "session", "open")
    assert r.returncode == 0, r.stderr
    sid = r.stdout.decode().strip()
    assert len(sid) == 32
    reused = []
    for _ in range(2):
        r = mtpc(daemon, "--json", "generate", "--session", sid,
                 "--max-tokens", "4", "def f(x):")
        assert r.returncode == 0, r.stderr
        reused.append(json.loads(r.stdout)["stats"]["prompt_tokens_reused"])
    assert reused[0] == 0 and reused[1] > 0, reused
    r = mtpc(daemon, "--json", "session", "info", sid)
    info = json.loads(r.stdout)
    assert info["session"] == sid and info["requests"] == 2
    assert mtpc(daemon, "session", "close", sid).returncode == 0
    r = mtpc(daemon, "--json", "stats")
    assert r.returncode == 0
    assert json.loads(r.stdout)["requests"] >= 2
    r = mtpc(daemon, "stats")
    assert r.returncode == 0 and b"acceptance rate" in r.stdout
    err, hello, _ = call(daemon, "hello")
    r = mtpc(daemon, "--json", "info")
    assert r.returncode == 0 and json.loads(r.stdout) == hello
    r = mtpc(daemon, "info")
    assert hello["model"]["name"].encode() in r.stdout


def close(a, b):
    return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))


def test_bench_numbers_equal_daemon_stats(tmp_path):
    """A fresh daemon, so that its `stats` covers exactly the bench."""
    assert os.path.exists(mtpc_bin()), f"mtpc not built at {mtpc_bin()}"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    out = tmp_path / "out"
    (tmp_path / "d").mkdir()
    d = Daemon(tmp_path / "d")
    try:
        r = mtpc(d, "bench", "--prompts", str(prompts), "--concurrency",
                 "1,2", "--max-tokens", "24", "--draft-tokens", "3",
                 "--out", str(out))
        assert r.returncode == 0, r.stderr
        err, st, _ = call(d, "stats")
        assert err is None, err
    finally:
        d.stop()
    table = r.stdout.decode()
    assert "acceptance by draft position" in table and "TTFT" in table
    res = json.loads((out / "results.json").read_text())
    assert len(res["runs"]) == 2 and len(res["requests"]) == 8
    assert all("error" not in q for q in res["requests"])
    assert [run["concurrency"] for run in res["runs"]] == [1, 2]

    # every per-request number adds up to the daemon's own totals
    reqs = res["requests"]
    spec = st["spec"]
    assert sum(q["generated_tokens"] for q in reqs) == st["tokens_generated"]
    assert sum(q["stats"]["drafts"] for q in reqs) == spec["drafts"]
    tot = res["total"]
    for k in ("prompt_tokens", "generated_tokens", "verify_passes",
              "drafts", "drafted_tokens", "accepted_tokens", "k_histogram"):
        assert tot[k] == spec[k], (k, tot[k], spec[k])
    assert spec["drafts"] > 0
    for k in ("acceptance_rate", "mean_accepted_length", "tokens_per_pass"):
        assert close(tot[k], spec[k]), (k, tot[k], spec[k])
    assert len(tot["acceptance_by_position"]) == \
        len(spec["acceptance_by_position"])
    for a, b in zip(tot["acceptance_by_position"],
                    spec["acceptance_by_position"]):
        assert close(a, b), (tot, spec)
    # position 1 is always exact; deeper conditional ones are when the
    # per-request STATS pin them down (see clients/c/mtpc/bench.h)
    assert close(tot["acceptance_by_position_conditional"][0],
                 spec["acceptance_by_position_conditional"][0])
    if tot["conditional_exact"]:
        for a, b in zip(tot["acceptance_by_position_conditional"],
                        spec["acceptance_by_position_conditional"]):
            assert close(a, b), (tot, spec)
    # the accepted-length histogram counts every draft once
    assert sum(tot["accepted_length_histogram"]) == spec["drafts"]

    if shutil.which("gnuplot"):
        for png in ("acceptance_by_position.png",
                    "accepted_length_histogram.png",
                    "tokens_per_s_vs_concurrency.png"):
            p = out / png
            assert p.exists() and p.stat().st_size > 1000, png
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_compare_reports_speedup(daemon, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS[:2]) + "\n")
    r = mtpc(daemon, "--json", "bench", "--prompts", str(prompts),
             "--max-tokens", "8", "--draft-tokens", "2", "--compare")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    base, spec = res["runs"]
    assert base["mode"] == "baseline" and spec["mode"] == "spec"
    assert base["spec"]["drafts"] == 0 and spec["spec"]["drafts"] > 0
    want = spec["tokens_per_s"] / base["tokens_per_s"]
    assert abs(spec["speedup"] - want) <= 1e-5 * want
    # greedy: the same text with speculation off and on
    texts = {}
    for q in res["requests"]:
        texts.setdefault(q["prompt"], set()).add(q["generated_tokens"])
    assert all(len(v) == 1 for v in texts.values())


def test_tcp_with_token_file(tmp_path):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    tok = tmp_path / "token"
    tok.write_text("s3cret\n")
    bad = tmp_path / "bad"
    bad.write_text("nope\n")
    (tmp_path / "d").mkdir()
    d = Daemon(tmp_path / "d", "--listen", "tcp:0.0.0.0:%d" % port,
               "--auth-token-file", str(tok))
    addr = ["--address", "tcp:127.0.0.1:%d" % port]
    try:
        r = subprocess.run([mtpc_bin()] + addr + ["--token-file", str(tok),
                           "tokenize", "def f(x):"], capture_output=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split()
        for extra in (["--token-file", str(bad)], []):
            r = subprocess.run([mtpc_bin()] + addr + extra +
                               ["tokenize", "x"], capture_output=True,
                               timeout=60)
            assert r.returncode == 1 and b"unauthorized" in r.stderr, \
                r.stderr
    finally:
        assert d.stop() == 0


def test_sigint_cancels_and_keeps_the_text(daemon):
    import signal
    import time
    cmd = [mtpc_bin(), "--address", "unix:" + daemon.path, "--json",
           "generate", "--max-tokens", "3000", "--ignore-eos", "def f(x):"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:  # until the generation runs
            err, st, _ = call(daemon, "stats")
            if st["requests_active"] >= 1 or p.poll() is not None:
                break
            time.sleep(0.01)
        p.send_signal(signal.SIGINT)
        out, errout = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, errout
    res = json.loads(out)
    assert res["finish_reason"] == "cancelled"
    assert len(res["ids"]) < 3000


def test_bench_reads_jsonl_prompts(daemon, tmp_path):
    texts = ["def f(x):\n    return \u00e9 + \"q\"", "import os\tx \U0001F600"]
    lines = [json.dumps({"id": 1, "meta": {"a": [1, "}"]}, "prompt": texts[0]}),
             json.dumps({"prompt": texts[1], "n": None}),
             "plain\\nline"]
    texts.append("plain\nline")
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("\n".join(lines) + "\n")
    r = mtpc(daemon, "--json", "bench", "--prompts", str(prompts),
             "--max-tokens", "2")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert len(res["requests"]) == 3
    for q in res["requests"]:
        err, tok, _ = call(daemon, "tokenize", {"text": texts[q["prompt"]]})
        assert q["stats"]["prompt_tokens"] == len(tok["ids"]), q
    prompts.write_text('{"text": "no prompt member"}\n')
    r = mtpc(daemon, "bench", "--prompts", str(prompts))
    assert r.returncode == 1 and b"prompt" in r.stderr
