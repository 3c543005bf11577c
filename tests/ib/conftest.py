"""The IB tests use the simulator's pytest plugin (``backend/ib/simulator/pytest_plugin.py``,
loaded for the whole suite by ``-p`` in pyproject.toml): ``sim``, ``sim2``, ``ib``,
``sim_factory``, ``ib_factory``. Here its decoder guard is on for every test: a test fails on
any ib_async "Error handling fields" record (ib_async drops such a message silently).
"""

from __future__ import annotations

import logging

import pytest


@pytest.fixture(autouse=True)
def _decoder_guard_on(ib_decoder_guard: list[logging.LogRecord]) -> list[logging.LogRecord]:
    return ib_decoder_guard
