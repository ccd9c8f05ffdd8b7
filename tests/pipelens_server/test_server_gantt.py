"""The Gantt chart's layout: rows in tree order, bars placed on the run's time span."""

from __future__ import annotations

from datetime import UTC

from pipelens_server._gantt import layout, tree_order
from pipelens_server._pages_read import RunRow, StepRow

MS = 1_000_000
T0 = 1_700_000_000_000_000_000


def _run(status: str = "completed", end_ms: int | None = 100) -> RunRow:
    end = None if end_ms is None else T0 + end_ms * MS
    return RunRow(
        run_id="r1",
        pipeline="rag",
        status=status,
        start_ns=T0,
        end_ns=end,
        duration_ns=None if end is None else end - T0,
        step_count=None,
        error_type=None,
        error_message=None,
    )


def _step(
    key: str,
    start_ms: int,
    end_ms: int | None,
    parent: str | None = None,
    status: str = "completed",
) -> StepRow:
    end = None if end_ms is None else T0 + end_ms * MS
    return StepRow(
        key=key,
        step_id=key,
        parent_id=parent,
        name=key.rsplit(".", 1)[-1],
        kind="step",
        status=status,
        start_ns=T0 + start_ms * MS,
        end_ns=end,
        duration_ns=None if end is None else (end_ms - start_ms) * MS if end_ms else None,
    )


def test_steps_are_ordered_depth_first_children_by_start() -> None:
    """Children follow their parent, in start order, one level deeper; orphans are roots."""
    steps = [
        _step("a.late", 50, 60, parent="a"),
        _step("a", 0, 100),
        _step("a.early", 10, 20, parent="a"),
        _step("a.early.leaf", 11, 12, parent="a.early"),
        _step("orphan", 5, 6, parent="missing-parent"),
    ]
    order = [(step.key, depth) for step, depth in tree_order(steps)]
    assert order == [
        ("a", 0),
        ("a.early", 1),
        ("a.early.leaf", 2),
        ("a.late", 1),
        ("orphan", 0),
    ]


def test_bars_are_placed_in_percent_of_the_runs_span() -> None:
    """A step from 25 ms to 75 ms of a 100 ms run starts at 25 % and is 50 % wide."""
    chart = layout(_run(), [_step("a", 0, 100), _step("a.b", 25, 75, parent="a")], T0, UTC)
    assert [(bar.key, bar.x, bar.width, bar.growing) for bar in chart.bars] == [
        ("a", 0.0, 100.0, False),
        ("a.b", 25.0, 50.0, False),
    ]
    assert [tick.label for tick in chart.ticks] == [
        "+0.0 ms",
        "+25.0 ms",
        "+50.0 ms",
        "+75.0 ms",
        "+100.0 ms",
    ]


def test_a_running_step_reaches_now_and_grows() -> None:
    """In a running run, an unfinished step ends at now: later, it is drawn longer."""
    run = _run(status="running", end_ms=None)
    steps = [_step("a", 0, None, status="running"), _step("a.done", 0, 10, parent="a")]
    early = layout(run, steps, T0 + 20 * MS, UTC)
    late = layout(run, steps, T0 + 40 * MS, UTC)
    assert [(bar.width, bar.growing) for bar in early.bars] == [(100.0, True), (50.0, False)]
    assert [bar.width for bar in late.bars] == [100.0, 25.0]
    assert "20.0 ms so far" in early.bars[0].title


def test_a_step_whose_end_was_lost_stops_at_the_runs_end() -> None:
    """When the run ended, a step still marked running is drawn to the run's end, not to now."""
    steps = [_step("a", 0, None, status="running")]
    chart = layout(_run(end_ms=100), steps, T0 + 10_000 * MS, UTC)
    assert [(bar.x, bar.width) for bar in chart.bars] == [(0.0, 100.0)]


def test_an_instant_step_stays_visible() -> None:
    """A step of zero duration still gets a sliver of a bar."""
    chart = layout(_run(), [_step("a", 0, 100), _step("a.now", 50, 50, parent="a")], T0, UTC)
    assert chart.bars[1].width > 0
