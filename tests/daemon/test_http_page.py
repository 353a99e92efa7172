"""GET / in headless Chromium: the page loads from the daemon, runs a
completion (URL parameter autorun=1), streams it into coloured token
spans (accepted MTP drafts vs the main model's own tokens), and the DOM
holds exactly the text the API returns for the same greedy request. A
screenshot is kept in the test's tmp dir."""
import html.parser
import json
import shutil
import subprocess
import urllib.parse

import pytest

from http_helpers import HttpDaemon

PROMPT = "def add(a, b):"
N = 40


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    pytest.skip("chromium is not installed (Debian package `chromium`, "
                "installed by tools/setup.sh)")


class Tokens(html.parser.HTMLParser):
    """The spans of #out (class, text) and #status's data-state."""

    def __init__(self):
        super().__init__()
        self.spans, self.state = [], None
        self._in_out = False
        self._span = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id") == "out":
            self._in_out = True
        elif a.get("id") == "status":
            self.state = a.get("data-state")
        elif tag == "span" and self._in_out:
            self._span = [a.get("class", ""), ""]

    def handle_endtag(self, tag):
        if tag == "span" and self._span is not None:
            self.spans.append(tuple(self._span))
            self._span = None
        elif tag == "div" and self._in_out:
            self._in_out = False

    def handle_data(self, data):
        if self._span is not None:
            self._span[1] += data


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = HttpDaemon(tmp_path_factory.mktemp("page"))
    yield d
    assert d.stop() == 0


def run_chromium(args, tmp_path):
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu",
           "--no-first-run", "--user-data-dir=%s" % (tmp_path / "profile"),
           "--virtual-time-budget=20000"] + args
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90)


def test_page_streams_coloured_tokens(daemon, tmp_path):
    st, _, body = daemon.get("/")
    assert st == 200 and b"<canvas" in body
    assert b'src="http' not in body and b'href="http' not in body  # no CDN
    url = daemon.url + "/?" + urllib.parse.urlencode(
        {"prompt": PROMPT, "max_tokens": N, "autorun": 1})
    p = Tokens()
    for _ in range(3):  # the budget is virtual time; retry if not done
        out = run_chromium(["--dump-dom", url], tmp_path)
        p = Tokens()
        p.feed(out.stdout)
        if p.state == "done":
            break
    assert p.state == "done", out.stdout[-2000:] + out.stderr[-2000:]
    st, _, res = daemon.post("/v1/completions", {"prompt": PROMPT,
                                                 "max_tokens": N})
    want = json.loads(res)["choices"][0]["text"]
    assert "".join(t for _, t in p.spans) == want
    classes = {c for c, _ in p.spans}
    assert any(c.startswith("s-d") for c in classes), classes  # drafts
    assert classes & {"s-corr", "s-bonus", "s-plain"}, classes  # main
    assert len(p.spans) == N  # one span per generated token

    shot = tmp_path / "page.png"
    run_chromium(["--window-size=1100,900", "--screenshot=%s" % shot, url],
                 tmp_path)
    assert shot.exists() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 10000
    print("screenshot:", shot)
