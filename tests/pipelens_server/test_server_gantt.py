"""The Gantt chart's layout: rows in tree order, bars placed on the run's time span."""

from __future__ import annotations

import pytest

from pipelens_server._pages import _gantt
from pipelens_server._pages._gantt import layout, tree_order
from pipelens_server._read._shapes import RunRow, StepRow

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
    chart = layout(_run(), [_step("a", 0, 100), _step("a.b", 25, 75, parent="a")], T0)
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
    early = layout(run, steps, T0 + 20 * MS)
    late = layout(run, steps, T0 + 40 * MS)
    assert [(bar.width, bar.growing) for bar in early.bars] == [(100.0, True), (50.0, False)]
    assert [bar.width for bar in late.bars] == [100.0, 25.0]
    assert "20.0 ms so far" in early.bars[0].title


def test_a_step_whose_end_was_lost_stops_at_the_runs_end() -> None:
    """When the run ended, a step still marked running is drawn to the run's end, not to now."""
    steps = [_step("a", 0, None, status="running")]
    chart = layout(_run(end_ms=100), steps, T0 + 10_000 * MS)
    assert [(bar.x, bar.width) for bar in chart.bars] == [(0.0, 100.0)]


def test_an_instant_step_stays_visible() -> None:
    """A step of zero duration still gets a sliver of a bar."""
    chart = layout(_run(), [_step("a", 0, 100), _step("a.now", 50, 50, parent="a")], T0)
    assert chart.bars[1].width > 0


def _fan(parent: str, count: int, start_ms: int = 0, status: str = "completed") -> list[StepRow]:
    """``count`` one-millisecond children of ``parent``, keys ``parent.c0`` ..."""
    return [
        _step(f"{parent}.c{i}", start_ms + i, start_ms + i + 1, parent=parent, status=status)
        for i in range(count)
    ]


def test_a_small_run_is_drawn_whole() -> None:
    """A run whose steps fit in the row budget shows every step, every subtree open."""
    steps = [_step("a", 0, 100), *_fan("a", 3)]
    chart = layout(_run(), steps, T0, budget=10)
    assert [(bar.key, bar.children, bar.open, bar.hidden) for bar in chart.bars] == [
        ("a", 3, True, 0),
        ("a.c0", 0, False, 0),
        ("a.c1", 0, False, 0),
        ("a.c2", 0, False, 0),
    ]
    assert chart.total == 4


def test_subtrees_open_breadth_first_until_the_budget_is_spent() -> None:
    """Children open level by level while they fit; a subtree that does not fit starts collapsed
    and counts the steps it hides."""
    steps = [_step("a", 0, 100), _step("a.b1", 0, 50, parent="a"), _step("a.b2", 50, 100, "a")]
    steps += _fan("a.b1", 3) + _fan("a.b2", 3, start_ms=50)
    chart = layout(_run(), steps, T0, budget=6)
    assert [(bar.key, bar.open, bar.hidden) for bar in chart.bars] == [
        ("a", True, 0),
        ("a.b1", True, 0),
        ("a.b1.c0", False, 0),
        ("a.b1.c1", False, 0),
        ("a.b1.c2", False, 0),
        ("a.b2", False, 3),
    ]
    assert (chart.total, chart.height) == (9, 24 + 6 * 22)


def test_running_and_failed_subtrees_get_the_budget_first() -> None:
    """When not every subtree fits, the running one opens before the finished ones beside it."""
    steps = [_step("a", 0, None, status="running")]
    steps += [_step("a.done", 0, 10, parent="a"), _step("a.live", 10, None, "a", "running")]
    steps += _fan("a.done", 3) + _fan("a.live", 3, start_ms=10)
    chart = layout(_run(status="running", end_ms=None), steps, T0 + 20 * MS, budget=6)
    assert [(bar.key, bar.open) for bar in chart.bars if bar.children] == [
        ("a", True),
        ("a.done", False),
        ("a.live", True),
    ]


def test_the_users_choices_and_the_selected_step_override_the_budget() -> None:
    """``expand`` opens a subtree past the budget, ``collapse`` closes one that fits, and the
    selected step's ancestors open so that it is in sight."""
    steps = [_step("a", 0, 100), _step("a.b", 0, 50, parent="a"), *_fan("a.b", 5)]
    shut = layout(_run(), steps, T0, budget=2)
    opened = layout(_run(), steps, T0, budget=2, expand={"a.b"})
    closed = layout(_run(), steps, T0, collapse={"a"})
    revealed = layout(_run(), steps, T0, budget=1, reveal="a.b.c4")
    assert [bar.key for bar in shut.bars] == ["a", "a.b"]
    assert [bar.key for bar in opened.bars] == ["a", "a.b", *(f"a.b.c{i}" for i in range(5))]
    assert [(bar.key, bar.hidden) for bar in closed.bars] == [("a", 6)]
    assert "a.b.c4" in [bar.key for bar in revealed.bars]


def test_past_the_child_cap_a_gap_row_stands_for_the_middle_children(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A step with more children than CHILD_CAP shows the first and last CHILD_CAP // 2 and one
    gap row counting the others; ``show_all`` shows them all; a revealed child stays in sight."""
    monkeypatch.setattr(_gantt, "CHILD_CAP", 4)
    steps = [_step("a", 0, 100), *_fan("a", 7)]
    capped = layout(_run(), steps, T0)
    whole = layout(_run(), steps, T0, show_all={"a"})
    revealed = layout(_run(), steps, T0, reveal="a.c3")
    assert [(bar.key, bar.gap) for bar in capped.bars] == [
        ("a", 0),
        ("a.c0", 0),
        ("a.c1", 0),
        ("a", 3),
        ("a.c5", 0),
        ("a.c6", 0),
    ]
    assert (capped.total, capped.shown) == (8, 5)
    assert [bar.key for bar in whole.bars] == ["a", *(f"a.c{i}" for i in range(7))]
    assert [(bar.key, bar.gap) for bar in revealed.bars][2:6] == [
        ("a.c1", 0),
        ("a", 1),
        ("a.c3", 0),
        ("a", 1),
    ]


def test_the_critical_path_follows_the_child_that_ends_last() -> None:
    """From the root, each time the child whose end is latest: a → a.y (ends at 90, a.q at 80)
    → a.y.z (ends at 90, a.y.w at 50); only those bars are marked, and the chart lists them
    from the root down with their durations."""
    steps = [
        _step("a", 0, 100),
        _step("a.x", 0, 40, parent="a"),
        _step("a.y", 10, 90, parent="a"),
        _step("a.y.w", 20, 50, parent="a.y"),
        _step("a.y.z", 20, 90, parent="a.y"),
        _step("a.q", 50, 80, parent="a"),
    ]
    chart = layout(_run(), steps, T0)
    assert chart.critical == [("a", "100.0 ms"), ("a.y", "80.0 ms"), ("a.y.z", "70.0 ms")]
    assert {bar.key for bar in chart.bars if bar.critical} == {"a", "a.y", "a.y.z"}


def test_a_running_step_is_on_the_critical_path() -> None:
    """A step still running ends latest of all: the path goes through it, not through a
    sibling that has ended."""
    steps = [
        _step("a", 0, None, status="running"),
        _step("a.done", 0, 90, parent="a"),
        _step("a.busy", 10, None, parent="a", status="running"),
    ]
    chart = layout(_run("running", None), steps, T0 + 100 * MS)
    assert chart.critical == [("a", "running"), ("a.busy", "running")]
