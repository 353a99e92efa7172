"""Fixtures for the model tests. The mtpd binary and the random checkpoint
presets (with their numpy references) come from tests/conftest.py."""
