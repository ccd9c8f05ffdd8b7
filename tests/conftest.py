"""Shared fixtures: every test starts from default settings and an in-memory transport."""

from __future__ import annotations

import os

# A bug in PipeLens must fail the test that hit it, not be logged and swallowed.
os.environ["PIPELENS_RAISE_INTERNAL_ERRORS"] = "1"

from collections.abc import Iterator

import pytest

import pipelens
from pipelens import _config, _propagation
from pipelens.testing import CapturedEvents, capture_runs


@pytest.fixture(autouse=True)
def _default_settings() -> Iterator[None]:
    """Restore PipeLens's settings after each test, whatever the test configured."""
    yield
    previous = _config.settings.transport
    # Modules hold the settings object by reference: reset its fields in place.
    fresh = _config.Settings()
    for name in _config.Settings.__slots__:
        setattr(_config.settings, name, getattr(fresh, name))
    if previous is not None:
        previous.close(0)
    _propagation.install()


@pytest.fixture
def events() -> Iterator[CapturedEvents]:
    """Every event emitted during the test."""
    with capture_runs() as captured:
        yield captured


__all__ = ["pipelens"]
