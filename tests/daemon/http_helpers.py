"""Helpers of the HTTP tests (tests/daemon/test_http_*.py): the real
daemon with `--http` on a free loopback port (serve_helpers.Daemon), the
official `openai` client pointed at it, `/metrics` parsed by
prometheus_client, and offline references from `mtpd tokenize` +
`mtpd generate --ids`."""
import functools
import json
import socket
import subprocess
import time
import urllib.error
import urllib.request

from serve_helpers import MODEL, Daemon, mtpd_bin


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class HttpDaemon(Daemon):
    """mtpd serve with --http HOST:PORT (host None: --http PORT, which is
    loopback) and its Unix socket."""

    def __init__(self, tmpdir, *args, host="127.0.0.1", **kw):
        self.port = free_port()
        addr = "%s:%d" % (host, self.port) if host else str(self.port)
        super().__init__(tmpdir, "--http", addr, *args, **kw)
        self.url = "http://127.0.0.1:%d" % self.port
        deadline = time.time() + 30
        while True:
            try:
                if self.get("/health")[0] == 200:
                    break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError("no /health: " + self.log_text())
            time.sleep(0.05)

    def request(self, method, path, body=None, headers=None, timeout=60):
        """(status, headers, body bytes) of one request."""
        data = body if isinstance(body, (bytes, type(None))) else \
            json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data,
                                     method=method, headers=headers or {})
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body, **kw):
        return self.request("POST", path, body, **kw)

    def openai(self, **kw):
        import openai
        return openai.OpenAI(base_url=self.url + "/v1", api_key="unused",
                             max_retries=0, timeout=60, **kw)

    def metrics(self):
        """{sample name + sorted labels: value} from /metrics, parsed by
        prometheus_client's text parser."""
        from prometheus_client.parser import text_string_to_metric_families
        st, _, body = self.get("/metrics")
        assert st == 200
        out = {}
        for fam in text_string_to_metric_families(body.decode()):
            for s in fam.samples:
                key = s.name + "".join(
                    "|%s=%s" % kv for kv in sorted(s.labels.items()))
                out[key] = s.value
        return out


def _tokenize(args, line):
    out = subprocess.run([mtpd_bin(), "tokenize", "--model", MODEL] + args,
                         input=json.dumps(line) + "\n", capture_output=True,
                         text=True, check=True, timeout=120)
    return json.loads(out.stdout.splitlines()[0])["ids"]


@functools.lru_cache(maxsize=None)
def offline_ids(ids, max_tokens):
    """`mtpd generate --ids ... --json` (greedy): (ids, text, finish)."""
    cmd = [mtpd_bin(), "generate", "--model", MODEL, "--ids",
           ",".join(map(str, ids)), "--max-tokens", str(max_tokens),
           "--json", "--threads", "1"]
    out = subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    j = json.loads(out.stdout)
    return j["ids"], j["text"], j["finish_reason"]


def offline_chat(messages, max_tokens):
    ids = _tokenize(["--chat"], {"messages": messages})
    return offline_ids(tuple(ids), max_tokens)


def offline_fim(prefix, suffix, max_tokens):
    ids = _tokenize(["--fim"], {"prefix": prefix, "suffix": suffix})
    return offline_ids(tuple(ids), max_tokens)
