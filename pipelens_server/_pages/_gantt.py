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

The critical path is marked: the chain of steps that set the run's duration, from the root that
ends last, each time the child that ends last (a step still running ends latest of all). Its
steps are shown wherever they are among their siblings, like the selected step.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote

from pipelens_server._pages._chart import format_ms
from pipelens_server._read._shapes import RunRow, StepRow, StepTree

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
    #: On the critical path.
    critical: bool = False


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
    #: The critical path from the root down, as (key, duration in ms as text) for its text
    #: alternative.
    critical: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Counts:
    """How many children each step has (``""``: the roots) and each step's index among its
    siblings: counted from the steps when they are all there, read when only some are (a
    :class:`StepTree`)."""

    children: Mapping[str, int]
    position: Mapping[str, int]


def _counts(children: dict[str | None, list[StepRow]], tree: StepTree | None) -> _Counts:
    if tree is None:
        return _Counts(
            children={parent or "": len(kids) for parent, kids in children.items()},
            position={s.step_id: i for kids in children.values() for i, s in enumerate(kids)},
        )
    # A root made of a cycle's first step has its index among its old siblings: no index, so
    # it is always shown.
    position = dict(tree.position)
    for root in children.get(None, []):
        if root.parent_id is not None:
            position.pop(root.step_id, None)
    return _Counts(children=tree.children, position=position)


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
    children = _children(steps)
    return [(step, depth) for step, depth, _ in _walk(children, _counts(children, None), is_open)]


def _walk(
    children: dict[str | None, list[StepRow]],
    counts: _Counts,
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
    stack = _shown(ROOTS, children.get(None, []), counts, 0, cap, show_all, pinned)
    while stack:
        step, depth, gap = stack.pop()
        ordered.append((step, depth, gap))
        if gap or (is_open is not None and step.step_id not in is_open):
            continue
        kids = children.get(step.step_id, [])
        stack.extend(_shown(step, kids, counts, depth + 1, cap, show_all, pinned))
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
    counts: _Counts,
    depth: int,
    cap: int | None,
    show_all: Collection[str],
    pinned: Collection[str],
) -> list[tuple[StepRow, int, int]]:
    """The rows of ``parent``'s children at ``depth``, reversed for the walk's stack (``kids``
    may be only those shown: the gaps are counted from the indexes among all of them)."""
    rows: list[tuple[StepRow, int, int]] = [(child, depth, 0) for child in kids]
    total = counts.children.get(parent.step_id, len(kids))
    if cap is not None and total > cap and parent.key not in show_all:
        rows, before, half = [], -1, cap // 2
        for child in kids:
            index = counts.position.get(child.step_id)
            middle = index is not None and half <= index < total - half
            if middle and child.step_id not in pinned:
                continue
            if index is not None:
                if index - before > 1:
                    rows.append((parent, depth, index - before - 1))
                before = index
            rows.append((child, depth, 0))
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
    children = _children(steps)
    return _open(steps, children, _counts(children, None), expand, collapse, reveal, budget)


def _open(
    steps: Sequence[StepRow],
    children: dict[str | None, list[StepRow]],
    counts: _Counts,
    expand: Collection[str],
    collapse: Collection[str],
    reveal: str | None,
    budget: int | None,
) -> set[str]:
    budget = ROW_BUDGET if budget is None else budget
    wanted = set(expand) | {step.key for step in _chain(steps, reveal)[1:]}
    opened: set[str] = set()
    level = children.get(None, [])
    shown = min(counts.children.get("", 0), CHILD_CAP + 1)  # roots are capped as children are
    while level:
        following = []
        for step in sorted(level, key=lambda s: _PRIORITY.get(s.status, 2)):
            kids = children.get(step.step_id, [])
            if not counts.children.get(step.step_id, 0) or step.key in collapse:
                continue
            # A gap row stands for the others.
            rows = min(counts.children[step.step_id], CHILD_CAP + 1)
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


def _ends_last(step: StepRow) -> tuple[bool, int, int, str]:
    """Sort key of ``max``: a step still running ends last of all, then the latest end, the
    latest start, the last key (as ``_read._run``'s query orders them)."""
    return step.end_ns is None, step.end_ns or 0, step.start_ns or 0, step.key


def critical_path(children: dict[str | None, list[StepRow]]) -> list[StepRow]:
    """The chain of steps that set the run's duration: from the root that ends last, each time
    the child that ends last (ties: the later start)."""
    path: list[StepRow] = []
    level = children.get(None, [])
    while level:
        step = max(level, key=_ends_last)
        path.append(step)
        level = children.get(step.step_id, [])
    return path


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


def _hidden(children: dict[str | None, list[StepRow]], tree: StepTree | None, step_id: str) -> int:
    """How many steps are under a collapsed ``step_id``: counted, or read with ``tree``."""
    return _count_under(children, step_id) if tree is None else tree.under.get(step_id, 0)


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
    tree: StepTree | None = None,
) -> Chart:
    """The chart of ``run``'s ``steps`` as of ``now_ns`` (times from the run's start); which
    subtrees are open: see :func:`open_steps`; a step with more than :data:`CHILD_CAP`
    children shows all of them only when its key is in ``show_all`` (else a gap row stands for
    those in the middle, except the ``reveal``-ed step). With ``tree`` (what
    :func:`~pipelens_server._read._run.run_tree` read), ``steps`` are only those it read and
    the counts, indexes and times of all come from it."""
    if tree is None:
        starts = [s.start_ns for s in steps if s.start_ns is not None]
        ends = [s.end_ns for s in steps if s.end_ns is not None]
    else:
        starts = [t for t in (tree.first_start_ns, tree.last_start_ns) if t is not None]
        ends = [tree.last_end_ns] if tree.last_end_ns is not None else []
    t0 = min([*starts, *([run.start_ns] if run.start_ns is not None else [])], default=now_ns)
    if run.status == "running":
        t1 = max([now_ns, *ends])
    else:
        t1 = max([*ends, *starts, *([run.end_ns] if run.end_ns is not None else [])], default=t0)
    span = max(t1 - t0, 1)
    scale = WIDTH / span
    children = _children(steps)
    counts = _counts(children, tree)
    opened = _open(steps, children, counts, expand, collapse, reveal, budget)
    by_id = {step.step_id: step for step in steps}
    if tree is None:
        critical = critical_path(children)
    else:
        critical = [by_id[i] for i in tree.critical if i in by_id]
        critical.sort(key=lambda step: len(_chain(steps, step.key)))
    on_path = {step.step_id for step in critical}
    pinned = {step.step_id for step in _chain(steps, reveal)} | on_path
    bars = []
    rows = _walk(children, counts, opened, CHILD_CAP, show_all, pinned)
    for row, (step, depth, gap) in enumerate(rows):
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
        kids = counts.children.get(step.step_id, 0)
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
                hidden=_hidden(children, tree, step.step_id) if kids and not is_open else 0,
                critical=step.step_id in on_path,
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
        total=len(steps) if tree is None else tree.total,
        shown=sum(1 for bar in bars if not bar.gap),
        critical=[
            (step.key, "running" if step.end_ns is None else format_ms(step.duration_ns))
            for step in critical
        ],
    )
