"""Shared pytest setup: repo root on sys.path (so tests import tools.*) and
the location of the mtpd binary (env MTPD_BIN, default build/mtpd)."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

os.environ.setdefault("MTPD_BIN", os.path.join(ROOT, "build", "mtpd"))
