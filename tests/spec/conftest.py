"""Fixtures for the speculative-decoding tests: the mtpd binary (skips only
when absent; a binary whose `generate --help` fails is an error, not a
reason to skip), random checkpoints made once per session, their numpy
references, and a tiny-vocabulary checkpoint for the distribution
tests."""
import os
import subprocess

import pytest

from spec_helpers import make_tiny_vocab
from tools.ref import dsv3_ref
from tools.ref.testutil import mtpd_bin


@pytest.fixture(scope="session")
def mtpd():
    """Overrides tests/conftest.py's: also needs the generate subcommand."""
    b = mtpd_bin()
    if not os.path.exists(b):
        pytest.skip(f"mtpd binary not found at {b} (set MTPD_BIN)")
    r = subprocess.run([b, "generate", "--help"], capture_output=True, text=True)
    assert r.returncode == 0, f"{b} generate --help failed:\n{r.stderr}"
    return b


# the presets fixture comes from tests/conftest.py


@pytest.fixture(scope="session")
def tiny_vocab(tmp_path_factory):
    d = make_tiny_vocab(str(tmp_path_factory.mktemp("tiny-vocab")))
    return d, dsv3_ref.load(d)
