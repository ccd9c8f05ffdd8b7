"""Helpers for testing code instrumented with PipeLens (and for PipeLens's own tests).

``capture_runs()`` collects every event in memory and restores the previous transport after::

    from pipelens.testing import capture_runs

    def test_pipeline():
        with capture_runs() as captured:
            my_pipeline("q")
        # steps() lists finished steps in the order they finished: children first
        assert [s.key for s in captured.steps()] == ["my_pipeline.retrieve", "my_pipeline"]

The pytest fixture ``pipelens_events`` (registered by ``pytest -p pipelens.testing`` or by
importing it in a ``conftest.py``) does the same for one test.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from pipelens._core.settings import settings
from pipelens._transports import MemoryTransport
from pipelens.events import RunFinished, RunStarted, ScoreAdded, StepFinished, StepStarted

__all__ = ["CapturedEvents", "MemoryTransport", "capture_runs", "pipelens_events"]


class CapturedEvents(MemoryTransport):
    """A :class:`MemoryTransport` with views by event type."""

    def runs(self) -> list[RunFinished]:
        """Finished runs, in the order they finished."""
        return [e for e in self.events if isinstance(e, RunFinished)]

    def runs_started(self) -> list[RunStarted]:
        """Started runs, in the order they started."""
        return [e for e in self.events if isinstance(e, RunStarted)]

    def steps(self, run_id: str | None = None) -> list[StepFinished]:
        """Finished steps (of one run when ``run_id`` is given), in the order they finished."""
        return [
            e for e in self.events if isinstance(e, StepFinished) and run_id in (None, e.run_id)
        ]

    def steps_started(self, run_id: str | None = None) -> list[StepStarted]:
        """Started steps (of one run when ``run_id`` is given), in the order they started."""
        return [e for e in self.events if isinstance(e, StepStarted) and run_id in (None, e.run_id)]

    def scores(self, run_id: str | None = None) -> list[ScoreAdded]:
        """Scores given (to one run when ``run_id`` is given), in the order they were given."""
        return [e for e in self.events if isinstance(e, ScoreAdded) and run_id in (None, e.run_id)]

    def step(self, key: str) -> StepFinished:
        """The finished step with ``key``; ``KeyError`` lists the keys there are."""
        for e in self.steps():
            if e.key == key:
                return e
        raise KeyError(f"no finished step {key!r}; keys: {[e.key for e in self.steps()]}")


@contextmanager
def capture_runs() -> Iterator[CapturedEvents]:
    """Send every run started inside the block to a fresh in-memory transport.

    The previous default transport is restored (not closed) when the block ends.
    """
    previous = settings.transport
    captured = CapturedEvents()
    settings.transport = captured
    try:
        yield captured
    finally:
        settings.transport = previous


try:
    import pytest
except ImportError:  # pragma: no cover - pytest is optional for users
    pass
else:

    @pytest.fixture
    def pipelens_events() -> Iterator[CapturedEvents]:
        """Every PipeLens event emitted during the test, in a :class:`CapturedEvents`."""
        with capture_runs() as captured:
            yield captured
