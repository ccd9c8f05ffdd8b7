"""Shared fixtures: every test starts from default settings and an in-memory transport."""

from __future__ import annotations

import os

# A bug in PipeLens must fail the test that hit it, not be logged and swallowed.
os.environ["PIPELENS_RAISE_INTERNAL_ERRORS"] = "1"
# litellm reads its bundled price map instead of downloading one (there is no network in tests).
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

from collections.abc import Iterator

import pytest

import pipelens
from pipelens._core import propagation, settings
from pipelens.testing import CapturedEvents, capture_runs


@pytest.fixture(autouse=True)
def _default_settings() -> Iterator[None]:
    """Restore PipeLens's settings after each test, whatever the test configured."""
    yield
    previous = settings.settings.transport
    # Modules hold the settings object by reference: reset its fields in place.
    fresh = settings.Settings()
    for name in settings.Settings.__slots__:
        setattr(settings.settings, name, getattr(fresh, name))
    if previous is not None:
        previous.close(0)
    propagation.install()


@pytest.fixture
def events() -> Iterator[CapturedEvents]:
    """Every event emitted during the test."""
    with capture_runs() as captured:
        yield captured


__all__ = ["pipelens"]
