"""`pip install ./clients/python` works: the package installs (into a
temporary --target, from a copy of the source tree so the repository stays
clean), carries py.typed and its msgpack dependency, and the installed copy
talks to a server (the fake one: no daemon needed)."""
import importlib.util
import os
import shutil
import subprocess
import sys

from daemon_fixture import ROOT
from fakeserver import FakeServer

SRC = os.path.join(ROOT, "clients", "python")


def test_pip_install(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(SRC, src, ignore=shutil.ignore_patterns("build", "*.egg-info",
                                                            "__pycache__"))
    target = tmp_path / "site"
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-input",
           "--disable-pip-version-check", "--target", str(target), str(src)]
    if importlib.util.find_spec("wheel") is not None:
        cmd.insert(4, "--no-build-isolation")  # offline: setuptools + wheel are here
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    pkg = target / "mtpd_client"
    assert (pkg / "py.typed").exists()
    meta = next(target.glob("mtpd_client-*.dist-info")) / "METADATA"
    text = meta.read_text()
    assert "Name: mtpd-client" in text
    assert [line for line in text.splitlines() if line.startswith("Requires-Dist")] \
        == ["Requires-Dist: msgpack>=1.0"]

    server = FakeServer(str(tmp_path / "s.sock"))
    try:
        script = ("import mtpd_client, sys\n"
                  f"assert mtpd_client.__file__.startswith({str(target)!r}), "
                  "mtpd_client.__file__\n"
                  "with mtpd_client.Client(sys.argv[1]) as c:\n"
                  "    r = c.generate('ab', max_tokens=3)\n"
                  "    print(len(r.ids), r.finish_reason)\n")
        env = dict(os.environ, PYTHONPATH=str(target))
        r = subprocess.run([sys.executable, "-c", script, server.address], cwd=tmp_path,
                           env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["3", "length"]
    finally:
        server.close()
