"""Fixtures for the speculative-decoding tests: the mtpd binary (skips when
absent or when it has no `generate`), random checkpoints made once per
session, their numpy references, and a tiny-vocabulary checkpoint for the
distribution tests."""
import os
import subprocess

import pytest

from spec_helpers import make_tiny_vocab
from tools.ref import dsv3_ref, random_ckpt
from tools.ref.testutil import mtpd_bin


@pytest.fixture(scope="session")
def mtpd():
    b = mtpd_bin()
    if not os.path.exists(b):
        pytest.skip(f"mtpd binary not found at {b} (set MTPD_BIN)")
    r = subprocess.run([b, "generate", "--help"], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("this mtpd has no generate subcommand")
    return b


class Presets:
    """Random checkpoints (tools.ref.random_ckpt, seed 0) and their numpy
    reference models, made on first use."""

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
    return Presets(str(tmp_path_factory.mktemp("spec-presets")))


@pytest.fixture(scope="session")
def tiny_vocab(tmp_path_factory):
    d = make_tiny_vocab(str(tmp_path_factory.mktemp("tiny-vocab")))
    return d, dsv3_ref.load(d)
