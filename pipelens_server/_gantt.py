"""The run page's Gantt chart, laid out on the server: one row per step in tree order.

The template draws the SVG from this layout; here are only numbers and strings, so the layout is
tested without a browser. A step still running is drawn up to now, so each refresh shows it
growing; a run that ended with steps still marked running (their end was lost) draws them to the
run's end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import tzinfo

from pipelens_server._pages_read import RunRow, StepRow
from pipelens_server._templating import format_ms, format_time

#: Bars are placed in percent of the chart's width: the SVG stretches to the page's width while
#: its rows keep their height in pixels, level with the step tree's rows.
WIDTH = 100
#: The narrowest bar (percent), so that an instant step stays visible.
_MIN_WIDTH = 0.2
#: Height of one step's row; the step tree's rows (CSS) are as high.
ROW_HEIGHT = 22
#: Room above the first row for the time axis.
AXIS_HEIGHT = 24
_TICKS = 5


@dataclass(frozen=True, slots=True)
class Bar:
    """One step's row: its place in the tree and its bar."""

    key: str
    name: str
    status: str
    depth: int
    y: float
    x: float
    width: float
    growing: bool
    title: str


@dataclass(frozen=True, slots=True)
class Tick:
    """A label of the time axis, relative to the run's start."""

    x: float
    label: str


@dataclass(frozen=True, slots=True)
class Chart:
    """Everything the template needs to draw the chart and the tree (x and width in percent)."""

    height: int
    row_height: int
    bars: list[Bar]
    ticks: list[Tick]


def tree_order(steps: Sequence[StepRow]) -> list[tuple[StepRow, int]]:
    """Steps depth first, children in start order, each with its depth (roots have 0)."""
    by_id = {step.step_id: step for step in steps}
    children: dict[str | None, list[StepRow]] = {}
    for step in steps:
        parent = step.parent_id if step.parent_id in by_id else None
        children.setdefault(parent, []).append(step)
    for siblings in children.values():
        siblings.sort(key=lambda s: (s.start_ns is None, s.start_ns or 0, s.key))
    ordered: list[tuple[StepRow, int]] = []
    # An explicit stack: a deep recursion of steps must not hit Python's recursion limit.
    stack = [(step, 0) for step in reversed(children.get(None, []))]
    while stack:
        step, depth = stack.pop()
        ordered.append((step, depth))
        stack.extend((child, depth + 1) for child in reversed(children.get(step.step_id, [])))
    return ordered


def layout(run: RunRow, steps: Sequence[StepRow], now_ns: int, zone: tzinfo) -> Chart:
    """The chart of ``run``'s ``steps`` as of ``now_ns``, times shown in ``zone``."""
    starts = [s.start_ns for s in steps if s.start_ns is not None]
    ends = [s.end_ns for s in steps if s.end_ns is not None]
    t0 = min([*starts, *([run.start_ns] if run.start_ns is not None else [])], default=now_ns)
    if run.status == "running":
        t1 = max([now_ns, *ends])
    else:
        t1 = max([*ends, *starts, *([run.end_ns] if run.end_ns is not None else [])], default=t0)
    span = max(t1 - t0, 1)
    scale = WIDTH / span
    bars = []
    for row, (step, depth) in enumerate(tree_order(steps)):
        start = step.start_ns if step.start_ns is not None else t0
        growing = step.end_ns is None
        end = step.end_ns if step.end_ns is not None else t1
        duration = step.duration_ns if step.duration_ns is not None else end - start
        title = (
            f"{step.key}\n{step.status} · {format_ms(duration)}"
            f"{' so far' if growing else ''}\n"
            f"{format_time(step.start_ns, zone)} → "
            f"{format_time(step.end_ns, zone) if step.end_ns is not None else '…'}"
        )
        bars.append(
            Bar(
                key=step.key,
                name=step.name,
                status=step.status,
                depth=depth,
                y=AXIS_HEIGHT + row * ROW_HEIGHT + 3,
                x=round((start - t0) * scale, 3),
                width=round(max((end - start) * scale, _MIN_WIDTH), 3),
                growing=growing,
                title=title,
            )
        )
    ticks = [
        Tick(x=round(WIDTH * i / (_TICKS - 1), 2), label=f"+{format_ms(span * i / (_TICKS - 1))}")
        for i in range(_TICKS)
    ]
    return Chart(
        height=AXIS_HEIGHT + max(len(bars), 1) * ROW_HEIGHT,
        row_height=ROW_HEIGHT,
        bars=bars,
        ticks=ticks,
    )
