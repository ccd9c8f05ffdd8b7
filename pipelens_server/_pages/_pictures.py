"""The small pictures beside the dashboard's tables, laid out on the server: the overview's
sparklines, the runs page's timeline, the run page's time strip, the step statistics page's
histogram.

Only numbers and strings here (``templates/_pictures.html`` draws the SVG), so layouts are
tested without a browser. One visual language with the other charts (``_chart``): its frames,
ticks and status-stacked bars, durations as ``format_ms``, times as ``time_label``, a
``<title>`` on every mark and a ``<desc>`` with the figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import tzinfo

from pipelens_server._pages._chart import (
    HISTOGRAM,
    SPARKLINE,
    TIMELINE,
    Bar,
    Tick,
    format_ms,
    span_label,
    status_stack,
    time_label,
)
from pipelens_server._pages._templating import format_time
from pipelens_server._read._pictures import Points, RunBucket, RunBuckets, TimeSplit

#: Bars of a sparkline (time buckets of the overview's range).
SPARK_BARS = 24
SPARK_WIDTH, SPARK_HEIGHT = SPARKLINE.width, SPARKLINE.height


@dataclass(frozen=True, slots=True)
class Mark:
    """A point of a line, with its hover text."""

    x: float
    y: float
    title: str


@dataclass(frozen=True, slots=True)
class Sparkline:
    """Runs per bucket (failures stacked in red on top) and the p95 line of one pipeline."""

    width: int
    height: int
    bars: list[Bar]
    line: str
    marks: list[Mark]
    runs_desc: str
    p95_desc: str


def _bucket_titles(grid: RunBuckets, hi_ns: int, zone: tzinfo) -> list[str]:
    span = hi_ns - grid.lo_ns
    return [
        f"from {time_label(grid.lo_ns + i * grid.width_ns, span, zone)}" for i in range(grid.count)
    ]


def sparklines(grid: RunBuckets, hi_ns: int, zone: tzinfo) -> dict[str, Sparkline]:
    """Each pipeline's sparkline over the buckets of ``grid`` (up to ``hi_ns``), a bar each:
    one scale for the runs of all pipelines (so bars compare across rows), one per pipeline for
    its p95."""
    rows = grid.rows
    buckets = grid.count
    by_pipeline: dict[str, dict[int, RunBucket]] = {}
    for row in rows:
        by_pipeline.setdefault(row.pipeline, {})[row.index] = row
    most = max((row.runs for row in rows), default=0) or 1
    slot = SPARK_WIDTH / buckets
    titles = _bucket_titles(grid, hi_ns, zone)
    lines = {}
    for name, cells in by_pipeline.items():
        bars: list[Bar] = []
        for index, cell in sorted(cells.items()):
            bars += status_stack(
                round(index * slot + slot * 0.1, 2),
                round(slot * 0.8, 2),
                SPARK_HEIGHT,
                SPARK_HEIGHT / most,
                cell.runs,
                cell.failed,
                f"{titles[index]}: {cell.runs:,} runs, {cell.failed:,} failed",
            )
        timed = [(i, c.p95_ns) for i, c in sorted(cells.items()) if c.p95_ns is not None]
        slowest = max((p for _, p in timed), default=0.0) or 1.0
        marks = [
            Mark(
                x=round((i + 0.5) * slot, 2),
                y=round(SPARK_HEIGHT - 2 - p / slowest * (SPARK_HEIGHT - 4), 2),
                title=f"{titles[i]}: p95 {format_ms(p)}",
            )
            for i, p in timed
        ]
        runs = sum(c.runs for c in cells.values())
        failed = sum(c.failed for c in cells.values())
        lines[name] = Sparkline(
            width=SPARK_WIDTH,
            height=SPARK_HEIGHT,
            bars=bars,
            line=" ".join(f"{m.x},{m.y}" for m in marks),
            marks=marks,
            runs_desc=(
                f"{runs:,} runs, {failed:,} failed, in {buckets} intervals; busiest "
                f"{max(c.runs for c in cells.values()):,} runs"
            ),
            p95_desc=(
                f"p95 per interval from {format_ms(min(p for _, p in timed))} to "
                f"{format_ms(slowest)}"
                if timed
                else "no finished run"
            ),
        )
    return lines


@dataclass(frozen=True, slots=True)
class Dot:
    """One run on the timeline: where, its status, its hover text and its run id."""

    x: float
    y: float
    status: str
    title: str
    run_id: str


@dataclass(frozen=True, slots=True)
class Timeline:
    """The runs page's scatter: x start, y duration. ``lo_ns``/``hi_ns`` and the plot's left and
    width (viewBox units) let the brush turn a dragged span into a time range."""

    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int
    dots: list[Dot]
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    lo_ns: int
    hi_ns: int
    desc: str


def timeline(found: Points, lo_ns: int | None, hi_ns: int, zone: tzinfo) -> Timeline | None:
    """The scatter of ``found`` across ``[lo_ns, hi_ns]`` (``lo_ns`` ``None``: from the first
    run); ``None`` without a run."""
    if not found.points or found.first_ns is None:
        return None
    lo = found.first_ns if lo_ns is None else lo_ns
    hi = max(hi_ns, (found.last_ns or lo) + 1)
    span = max(hi - lo, 1)
    slowest = max(p.duration_ns for p in found.points) or 1
    frame = TIMELINE
    plot_w, plot_h = frame.plot_width, frame.plot_height

    def x(ns: float) -> float:
        return round(frame.left + (ns - lo) / span * plot_w, 1)

    def y(ns: float) -> float:
        return round(frame.top + plot_h - ns / slowest * plot_h, 1)

    dots = [
        Dot(
            x=x(p.start_ns),
            y=y(p.duration_ns),
            status=p.status,
            title=f"{p.run_id} · {p.status} · {format_ms(p.duration_ns)} · "
            f"{format_time(p.start_ns, zone)}",
            run_id=p.run_id,
        )
        for p in found.points
    ]
    x_ticks = [
        Tick(at=x(lo + span * i / 4), label=time_label(lo + span * i // 4, span, zone))
        for i in range(5)
    ]
    y_ticks = [Tick(at=y(slowest * f), label=format_ms(slowest * f)) for f in (0, 0.5, 1)]
    failed = sum(1 for p in found.points if p.status == "failed")
    shown = (
        f"{len(found.points):,} of {found.total:,} runs (the slowest of each "
        f"{span_label(max(1, span // 400))})"
        if found.sampled
        else f"{found.total:,} runs"
    )
    desc = (
        f"{shown} from {format_time(lo, zone)} to {format_time(hi, zone)}, {failed:,} failed; "
        f"slowest {format_ms(slowest)}."
    )
    return Timeline(
        width=frame.width,
        height=frame.height,
        left=frame.left,
        right=frame.right,
        top=frame.top,
        bottom=frame.bottom,
        dots=dots,
        x_ticks=x_ticks,
        y_ticks=y_ticks,
        lo_ns=lo,
        hi_ns=hi,
        desc=desc,
    )


@dataclass(frozen=True, slots=True)
class Part:
    """One kind of the run's time: its share in % of the strip, its label and figure."""

    kind: str
    label: str
    share: float
    ns: int


def strip(split: TimeSplit) -> list[Part]:
    """The run page's strip: LLM calls, other steps, and time in parents while no child ran,
    each as a share of the three; empty when no step has finished."""
    total = split.total_ns
    if not total:
        return []
    parts = [
        ("llm", "LLM calls", split.llm_ns),
        ("steps", "other steps", split.steps_ns),
        ("idle", "in parents, no child running", split.idle_ns),
    ]
    return [
        Part(kind=kind, label=label, share=round(ns / total * 100, 2), ns=ns)
        for kind, label, ns in parts
    ]


@dataclass(frozen=True, slots=True)
class Histogram:
    """Durations in bins (bars, failures stacked in red), with the p50 and p95 marked."""

    width: int
    height: int
    left: int
    bottom: int
    bars: list[Bar]
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    p50_x: float | None
    p95_x: float | None
    desc: str


def histogram(
    counts: Sequence[tuple[int, int]],
    lo_ns: int,
    hi_ns: int,
    p50_ns: float | None,
    p95_ns: float | None,
) -> Histogram | None:
    """The histogram of ``counts`` (per bin: steps, failed) over durations ``[lo_ns, hi_ns]``;
    ``None`` without a step."""
    most = max((c for c, _ in counts), default=0)
    if not most:
        return None
    frame = HISTOGRAM
    width, height, left, top = frame.width, frame.height, frame.left, frame.top
    plot_w, plot_h = frame.plot_width, frame.plot_height
    slot = plot_w / len(counts)
    span = max(hi_ns - lo_ns, 1)
    bars: list[Bar] = []
    for i, (count, failed) in enumerate(counts):
        if not count:
            continue
        start = lo_ns + span * i / len(counts)
        end = lo_ns + span * (i + 1) / len(counts)
        title = f"{format_ms(start)} to {format_ms(end)}: {count:,} steps, {failed:,} failed"
        x = round(left + i * slot + 0.5, 2)
        bars += status_stack(x, round(slot - 1, 2), frame.base, plot_h / most, count, failed, title)

    def at(ns: float | None) -> float | None:
        return None if ns is None else round(left + (ns - lo_ns) / span * plot_w, 1)

    x_ticks = [Tick(at=left + plot_w * f, label=format_ms(lo_ns + span * f)) for f in (0, 0.5, 1)]
    y_ticks = [
        Tick(at=round(top + plot_h - plot_h * f, 1), label=f"{round(most * f):,}") for f in (0, 1)
    ]
    busiest = max(range(len(counts)), key=lambda i: counts[i][0])
    desc = (
        f"{sum(c for c, _ in counts):,} finished steps from {format_ms(lo_ns)} to "
        f"{format_ms(hi_ns)} in {len(counts)} bins; the fullest, {counts[busiest][0]:,} steps, "
        f"from {format_ms(lo_ns + span * busiest / len(counts))}; p50 {format_ms(p50_ns)}, "
        f"p95 {format_ms(p95_ns)}."
    )
    return Histogram(
        width=width,
        height=height,
        left=left,
        bottom=top + plot_h,
        bars=bars,
        x_ticks=x_ticks,
        y_ticks=y_ticks,
        p50_x=at(p50_ns),
        p95_x=at(p95_ns),
        desc=desc,
    )


@dataclass(frozen=True, slots=True)
class Change:
    """One figure this period against the previous one: the ratio, and whether it is worse."""

    label: str
    now_ns: float | None
    before_ns: float | None

    @property
    def ratio(self) -> float | None:
        """This period over the previous; ``None`` when either is unknown."""
        if self.now_ns is None or not self.before_ns:
            return None
        return self.now_ns / self.before_ns

    @property
    def text(self) -> str:
        """``+12.5 %`` slower, ``-3.0 %`` faster, ``—`` unknown."""
        ratio = self.ratio
        return "—" if ratio is None else f"{(ratio - 1) * 100:+.1f} %"

    @property
    def worse(self) -> bool:
        """Slower by a tenth or more: a regression worth the reader's eye."""
        ratio = self.ratio
        return ratio is not None and ratio >= 1.1
