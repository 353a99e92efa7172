"""Shared pytest setup: repo root on sys.path (so tests import tools.*) and
the location of the mtpd binary (env MTPD_BIN, default build/mtpd)."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

os.environ.setdefault("MTPD_BIN", os.path.join(ROOT, "build", "mtpd"))


import pytest  # noqa: E402

from tools.ref import dsv3_ref, random_ckpt  # noqa: E402
from tools.ref.testutil import mtpd_bin  # noqa: E402


@pytest.fixture(scope="session")
def mtpd():
    """Path of the mtpd binary; tests using it skip only when it is absent."""
    b = mtpd_bin()
    if not os.path.exists(b):
        pytest.skip(f"mtpd binary not found at {b} (set MTPD_BIN)")
    return b


class Presets:
    """Random checkpoints (tools.ref.random_ckpt, seed 0) and their numpy
    reference models, made on first use and shared by every suite."""

    def __init__(self, base):
        self.base = base
        self.dirs = {}
        self.models = {}

    def dir(self, name):
        if name not in self.dirs:
            d = os.path.join(self.base, name)
            random_ckpt.make_preset(name, d, seed=0)
            self.dirs[name] = d
        return self.dirs[name]

    def model(self, name):
        if name not in self.models:
            self.models[name] = dsv3_ref.load(self.dir(name))
        return self.models[name]


@pytest.fixture(scope="session")
def presets(tmp_path_factory):
    return Presets(str(tmp_path_factory.mktemp("presets")))
