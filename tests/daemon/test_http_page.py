"""GET / in headless Chromium (DevTools protocol over a pipe): the page
loads from the daemon, runs a completion (URL parameter autorun=1),
streams it into coloured token spans (accepted MTP drafts vs the main
model's own tokens), and the DOM holds exactly the text the API returns
for the same greedy request. A screenshot is kept in the test's tmp
dir (printed with -s)."""
import base64
import json
import os
import shutil
import subprocess
import time
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


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe
    (--remote-debugging-pipe: NUL-separated JSON on fds 3 and 4), so the
    test waits in real time for the page, with nothing but the stdlib."""

    def __init__(self, url, tmp_path):
        r1, self.w = os.pipe()
        self.r, w2 = os.pipe()

        def fds():
            os.dup2(r1, 3)
            os.dup2(w2, 4)
        self.proc = subprocess.Popen(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu",
             "--no-first-run", "--remote-debugging-pipe",
             "--user-data-dir=%s" % (tmp_path / "profile"),
             "--window-size=1100,900", url],
            preexec_fn=fds, close_fds=False, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        os.close(r1)
        os.close(w2)
        self.buf, self.next_id, self.session = b"", 0, None
        targets = self.call("Target.getTargets")["targetInfos"]
        page = [t for t in targets if t["type"] == "page"][0]
        self.session = self.call("Target.attachToTarget", {
            "targetId": page["targetId"], "flatten": True})["sessionId"]

    def call(self, method, params=None):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if self.session:
            msg["sessionId"] = self.session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        while True:
            while b"\0" not in self.buf:
                data = os.read(self.r, 1 << 20)
                assert data, "chromium closed the DevTools pipe"
                self.buf += data
            raw, self.buf = self.buf.split(b"\0", 1)
            m = json.loads(raw)
            if m.get("id") == self.next_id:
                assert "error" not in m, m
                return m["result"]

    def eval(self, expr):
        r = self.call("Runtime.evaluate", {"expression": expr,
                                           "returnByValue": True})
        return r.get("result", {}).get("value")

    def close(self):
        try:
            self.session = None
            self.call("Browser.close")
        except (AssertionError, OSError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self.w)
        os.close(self.r)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = HttpDaemon(tmp_path_factory.mktemp("page"))
    yield d
    assert d.stop() == 0


def test_page_streams_coloured_tokens(daemon, tmp_path):
    chromium()
    st, _, body = daemon.get("/")
    assert st == 200 and b"<canvas" in body
    assert b'src="http' not in body and b'href="http' not in body  # no CDN
    url = daemon.url + "/?" + urllib.parse.urlencode(
        {"prompt": PROMPT, "max_tokens": N, "autorun": 1})
    b = Browser(url, tmp_path)
    try:
        deadline = time.time() + 60
        state = None
        while time.time() < deadline:
            state = b.eval("document.getElementById('status') && "
                           "document.getElementById('status').dataset.state")
            if state in ("done", "error"):
                break
            time.sleep(0.1)
        assert state == "done", b.eval("document.body.innerText")
        spans = b.eval("JSON.stringify([...document.querySelectorAll("
                       "'#out span')].map(s => [s.className, "
                       "s.textContent]))")
        spans = json.loads(spans)
        shot = tmp_path / "page.png"
        png = b.call("Page.captureScreenshot", {"format": "png"})["data"]
        shot.write_bytes(base64.b64decode(png))
    finally:
        b.close()
    st, _, res = daemon.post("/v1/completions", {"prompt": PROMPT,
                                                 "max_tokens": N})
    want = json.loads(res)["choices"][0]["text"]
    assert "".join(t for _, t in spans) == want
    classes = {c for c, _ in spans}
    assert any(c.startswith("s-d") for c in classes), classes  # drafts
    assert classes & {"s-corr", "s-bonus", "s-plain"}, classes  # main
    assert len(spans) == N  # one span per generated token
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 10000
    print("screenshot:", shot)
