"""The run page's Gantt chart, laid out on the server: one row per step in tree order.

The template draws the SVG from this layout; here are only numbers and strings, so the layout is
tested without a browser. A step still running is drawn up to now, so each refresh shows it
growing; a run that ended with steps still marked running (their end was lost) draws them to the
run's end.

A run may have 10,000 steps: drawing them all makes a page of megabytes that a browser lays out
slowly and a poll re-sends every 2 s. So subtrees are collapsible, and at first only about
:data:`ROW_BUDGET` rows are shown: subtrees open breadth first (running, then failed steps first
at each level) while their children fit in the budget; the others start collapsed. The user's
choices (keys to expand, keys to collapse) override that, and the selected step's ancestors open.
A step with more than :data:`CHILD_CAP` children (a loop) shows its first and last ones and a gap
row counting the others, until the user asks for all of them. Hover titles give times from the
run's start, like the axis (the step panel has the wall-clock times).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from pipelens_server._pages._templating import format_ms
from pipelens_server._read._shapes import RunRow, StepRow

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
#: About how many rows are shown before the user opens more (a run this small is drawn whole).
ROW_BUDGET = 300
#: An open step shows its first and last CHILD_CAP // 2 children and a gap row for the others
#: (a loop of 10,000 calls), until the user asks for all of them.
CHILD_CAP = 200
#: Which children open first when they compete for the budget: the ones worth a look.
_PRIORITY = {"running": 0, "failed": 1}


@dataclass(frozen=True, slots=True)
class Bar:
    """One step's row: its place in the tree and its bar."""

    key: str
    #: The key as a query string value (quoted once here, used by two links).
    query: str
    name: str
    status: str
    depth: int
    y: float
    x: float
    width: float
    growing: bool
    title: str
    #: Direct children, and whether they are shown (a leaf has none and is not ``open``).
    children: int = 0
    open: bool = False
    #: Steps under this one that are not shown (0 when open or a leaf).
    hidden: int = 0
    #: A gap row (no bar): this many children of the step ``key`` are not shown here.
    gap: int = 0


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
    #: All the run's steps, shown or not; the steps shown (rows without the gap rows).
    total: int = 0
    shown: int = 0


def _children(steps: Sequence[StepRow]) -> dict[str | None, list[StepRow]]:
    """Each step's children in start order, keyed by parent id (``None``: the roots, orphans
    included)."""
    by_id = {step.step_id: step for step in steps}
    children: dict[str | None, list[StepRow]] = {}
    for step in steps:
        parent = step.parent_id if step.parent_id in by_id else None
        children.setdefault(parent, []).append(step)
    for siblings in children.values():
        siblings.sort(key=_start_order)
    _break_cycles(steps, children)
    return children


def _start_order(step: StepRow) -> tuple[bool, int, str]:
    return step.start_ns is None, step.start_ns or 0, step.key


def _break_cycles(steps: Sequence[StepRow], children: dict[str | None, list[StepRow]]) -> None:
    """Make steps that no root reaches (a parent-id cycle in bad data) reachable: the first of
    each cycle becomes a root, so every step is shown once and no walk loops."""
    reached: set[str] = set()

    def reach(start: list[StepRow]) -> None:
        stack = list(start)
        while stack:
            step = stack.pop()
            reached.add(step.step_id)
            stack.extend(children.get(step.step_id, []))

    reach(children.get(None, []))
    if len(reached) == len(steps):
        return
    roots = children.setdefault(None, [])
    for step in sorted(steps, key=_start_order):
        if step.step_id not in reached:
            children[step.parent_id].remove(step)
            roots.append(step)
            reach([step])
    roots.sort(key=_start_order)


def tree_order(
    steps: Sequence[StepRow], is_open: Collection[str] | None = None
) -> list[tuple[StepRow, int]]:
    """Steps depth first, children in start order, each with its depth (roots have 0); with
    ``is_open``, only the children of steps whose id it holds."""
    return [(step, depth) for step, depth, _ in _walk(_children(steps), is_open)]


def _walk(
    children: dict[str | None, list[StepRow]],
    is_open: Collection[str] | None,
    cap: int | None = None,
    show_all: Collection[str] = (),
    pinned: Collection[str] = (),
) -> list[tuple[StepRow, int, int]]:
    """Rows depth first: (step, depth, 0), or (parent, depth, n) for a gap of n children of
    ``parent`` not shown: past ``cap`` children only the first and last ``cap // 2`` are shown
    (and the ``pinned`` ids), unless the parent's key is in ``show_all``."""
    ordered: list[tuple[StepRow, int, int]] = []
    # An explicit stack: a deep recursion of steps must not hit Python's recursion limit.
    # The roots are capped as children are (a million top-level steps must not make a page of
    # hundreds of MiB): their gap row names the key ``ROOTS.key``.
    stack = _shown(ROOTS, children.get(None, []), 0, cap, show_all, pinned)
    while stack:
        step, depth, gap = stack.pop()
        ordered.append((step, depth, gap))
        if gap or (is_open is not None and step.step_id not in is_open):
            continue
        kids = children.get(step.step_id, [])
        stack.extend(_shown(step, kids, depth + 1, cap, show_all, pinned))
    return ordered


#: The parent the roots' gap row names: ``all=`` (its empty key) shows every root.
ROOTS = StepRow(
    key="",
    step_id="",
    parent_id=None,
    name="",
    kind="",
    status="",
    start_ns=None,
    end_ns=None,
    duration_ns=None,
)


def _shown(
    parent: StepRow,
    kids: list[StepRow],
    depth: int,
    cap: int | None,
    show_all: Collection[str],
    pinned: Collection[str],
) -> list[tuple[StepRow, int, int]]:
    """The rows of ``parent``'s children at ``depth``, reversed for the walk's stack."""
    rows: list[tuple[StepRow, int, int]] = [(child, depth, 0) for child in kids]
    if cap is not None and len(kids) > cap and parent.key not in show_all:
        rows, hidden, half = [], 0, cap // 2
        for i, child in enumerate(kids):
            if i < half or i >= len(kids) - half or child.step_id in pinned:
                if hidden:
                    rows.append((parent, depth, hidden))
                    hidden = 0
                rows.append((child, depth, 0))
            else:
                hidden += 1
    rows.reverse()
    return rows


def open_steps(
    steps: Sequence[StepRow],
    *,
    expand: Collection[str] = (),
    collapse: Collection[str] = (),
    reveal: str | None = None,
    budget: int | None = None,
) -> set[str]:
    """Ids of the steps whose children are shown.

    Args:
        steps: The run's steps.
        expand: Keys the user opened: open whatever the budget.
        collapse: Keys the user closed: closed whatever the budget.
        reveal: A key whose ancestors open (the selected step stays in sight) unless collapsed.
        budget: Rows to fill, breadth first, with the children of the other steps
            (default :data:`ROW_BUDGET`).
    """
    return _open(steps, _children(steps), expand, collapse, reveal, budget)


def _open(
    steps: Sequence[StepRow],
    children: dict[str | None, list[StepRow]],
    expand: Collection[str],
    collapse: Collection[str],
    reveal: str | None,
    budget: int | None,
) -> set[str]:
    budget = ROW_BUDGET if budget is None else budget
    wanted = set(expand) | {step.key for step in _chain(steps, reveal)[1:]}
    opened: set[str] = set()
    level = children.get(None, [])
    shown = min(len(level), CHILD_CAP + 1)  # the roots are capped as children are
    while level:
        following = []
        for step in sorted(level, key=lambda s: _PRIORITY.get(s.status, 2)):
            kids = children.get(step.step_id, [])
            if not kids or step.key in collapse:
                continue
            rows = min(len(kids), CHILD_CAP + 1)  # a gap row stands for the others
            if step.key in wanted or shown + rows <= budget:
                opened.add(step.step_id)
                shown += rows
                following.extend(kids)
        level = following
    return opened


def _chain(steps: Sequence[StepRow], key: str | None) -> list[StepRow]:
    """The step ``key`` and its ancestors, nearest first (nothing when there is no such step)."""
    by_id = {step.step_id: step for step in steps}
    chain = [step for step in steps if step.key == key][:1]
    while chain and (parent := by_id.get(chain[-1].parent_id or "")) is not None:
        if parent in chain:  # a parent cycle in bad data
            break
        chain.append(parent)
    return chain


def _count_under(children: dict[str | None, list[StepRow]], step_id: str) -> int:
    """How many steps are under ``step_id`` (only asked of shown, collapsed steps, whose
    subtrees do not overlap: all of them together cost one pass over the run at most)."""
    count, stack, seen = 0, [step_id], {step_id}
    while stack:
        for child in children.get(stack.pop(), []):
            if child.step_id not in seen:  # a parent cycle in bad data must not loop forever
                seen.add(child.step_id)
                count += 1
                stack.append(child.step_id)
    return count


def layout(
    run: RunRow,
    steps: Sequence[StepRow],
    now_ns: int,
    *,
    expand: Collection[str] = (),
    collapse: Collection[str] = (),
    reveal: str | None = None,
    show_all: Collection[str] = (),
    budget: int | None = None,
) -> Chart:
    """The chart of ``run``'s ``steps`` as of ``now_ns`` (times from the run's start); which
    subtrees are open: see :func:`open_steps`; a step with more than :data:`CHILD_CAP`
    children shows all of them only when its key is in ``show_all`` (else a gap row stands for
    those in the middle, except the ``reveal``-ed step)."""
    starts = [s.start_ns for s in steps if s.start_ns is not None]
    ends = [s.end_ns for s in steps if s.end_ns is not None]
    t0 = min([*starts, *([run.start_ns] if run.start_ns is not None else [])], default=now_ns)
    if run.status == "running":
        t1 = max([now_ns, *ends])
    else:
        t1 = max([*ends, *starts, *([run.end_ns] if run.end_ns is not None else [])], default=t0)
    span = max(t1 - t0, 1)
    scale = WIDTH / span
    children = _children(steps)
    opened = _open(steps, children, expand, collapse, reveal, budget)
    pinned = {step.step_id for step in _chain(steps, reveal)}
    bars = []
    for row, (step, depth, gap) in enumerate(_walk(children, opened, CHILD_CAP, show_all, pinned)):
        y = AXIS_HEIGHT + row * ROW_HEIGHT + 3
        if gap:
            bars.append(
                Bar(
                    key=step.key,
                    query=quote(step.key, safe=""),
                    name="",
                    status="",
                    depth=depth,
                    y=y,
                    x=0,
                    width=0,
                    growing=False,
                    title="",
                    gap=gap,
                )
            )
            continue
        start = step.start_ns if step.start_ns is not None else t0
        growing = step.end_ns is None
        end = step.end_ns if step.end_ns is not None else t1
        duration = step.duration_ns if step.duration_ns is not None else end - start
        # Times from the run's start, like the axis: formatting 20,000 wall-clock times in the
        # user's zone took most of a 10,000-step page's layout (the step panel has them).
        title = (
            f"{step.key}\n{step.status} · {format_ms(duration)}"
            f"{' so far' if growing else ''}\n"
            f"+{format_ms(start - t0)} → "
            f"{'+' + format_ms(end - t0) if step.end_ns is not None else '…'}"
        )
        is_open = step.step_id in opened
        kids = len(children.get(step.step_id, []))
        bars.append(
            Bar(
                key=step.key,
                query=quote(step.key, safe=""),
                name=step.name,
                status=step.status,
                depth=depth,
                y=y,
                x=round((start - t0) * scale, 3),
                width=round(max((end - start) * scale, _MIN_WIDTH), 3),
                growing=growing,
                title=title,
                children=kids,
                open=is_open,
                hidden=_count_under(children, step.step_id) if kids and not is_open else 0,
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
        total=len(steps),
        shown=sum(1 for bar in bars if not bar.gap),
    )
