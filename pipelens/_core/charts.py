"""Local charts of a step tree: a Gantt chart (SVG, HTML page), the execution graph, a text tree.

Everything is drawn here as text, with no network and no external reference: the seed sent its
runs to quickchart.io and Google's chart CDN, which leaks the data and fails offline. The SVG
carries its colours as attributes (not CSS) so it looks the same as a file, inlined in a page, or
converted by a tool that ignores stylesheets.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from pipelens._core.clock import wall_now_ns
from pipelens._core.errors import ConfigurationError
from pipelens._core.step_like import StepLike
from pipelens.events import Status

_COLOURS = {
    "completed": "#43a047",
    "failed": "#e53935",
    "cancelled": "#9e9e9e",
    "running": "#1e88e5",
}
_UNITS = {"us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
_CHAR_PX = 7  # a generous average glyph width of a 12px sans-serif font
_AXIS_PX = 28
_DURATION_PX = 90
# XML 1.0 forbids these code points even when escaped; a step name may still contain them.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


class _Row(NamedTuple):
    step: StepLike
    depth: int
    end_ns: int  # the real end, or "now" for a step still running


def _esc(value: object) -> str:
    """``value`` as text safe in XML/HTML content and quoted attributes."""
    return html.escape(_NOT_XML.sub("\ufffd", str(value)), quote=True)


def _matcher(filter: Any) -> Callable[[str], object]:
    """What a ``filter`` option keeps: keys a regex finds a match in, or keys in a collection."""
    if filter is None:
        return lambda _key: True
    if isinstance(filter, str):
        try:
            return re.compile(filter).search
        except re.error as exc:
            raise ConfigurationError(
                f"filter={filter!r} is not a valid regular expression ({exc}); "
                "pass a pattern matched against step keys, or a list of keys"
            ) from None
    if isinstance(filter, Iterable):
        return set(filter).__contains__
    raise ConfigurationError(
        f"filter={filter!r}: expected None, a regular expression (str) or a list of step keys"
    )


def _rows(root: StepLike, filter: Any, now_ns: int) -> list[_Row]:
    """The steps to draw, depth first, with their depth below ``root``."""
    keep = _matcher(filter)
    depths: dict[int, int] = {}
    rows = []
    for step in list(root.walk()):
        parent = step.parent
        depth = depths[id(step)] = 0 if parent is None else depths.get(id(parent), -1) + 1
        if keep(step.key):
            end = step.end_ns if step.end_ns is not None else max(now_ns, step.start_ns)
            rows.append(_Row(step, depth, end))
    return rows


def _duration_ns(row: _Row) -> int:
    step = row.step
    return step.duration_ns if step.duration_ns is not None else row.end_ns - step.start_ns


def _fmt(ns: float, unit: str = "ms") -> str:
    value = ns / _UNITS[unit]
    return f"{value:,.0f} {unit}" if abs(value) >= 100 else f"{value:.3g} {unit}"


def _clock(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="milliseconds")


def _tooltip(row: _Row, origin: int) -> str:
    step = row.step
    running = step.end_ns is None
    lines = [
        step.key,
        f"status: {step.status}",
        f"duration: {_fmt(_duration_ns(row))}{' so far' if running else ''}",
        f"start: {_clock(step.start_ns)} (+{_fmt(step.start_ns - origin)})",
        "end: still running"
        if running
        else f"end: {_clock(row.end_ns)} (+{_fmt(row.end_ns - origin)})",
    ]
    if step.error is not None:
        lines.append(f"error: {step.error.type}: {step.error.message[:300]}")
    return "\n".join(lines)


def _tick_step(span: float, target: int) -> float:
    """A 1, 2 or 5 times a power of ten near ``span / target``."""
    raw = max(span / max(target, 1), 1e-9)
    power: float = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 5, 10) if m * power >= raw)


def _check_int(name: str, value: Any, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigurationError(f"{name}={value!r}: expected an int of at least {least} (pixels)")
    return value


def gantt_svg(
    root: StepLike,
    *,
    width: int = 1000,
    row_height: int = 22,
    filter: str | Iterable[str] | None = None,
    unit: str = "ms",
    now_ns: int | None = None,
    min_height: int = 0,
) -> str:
    """A standalone SVG Gantt chart of ``root``'s subtree: one bar a step, depth first.

    Args:
        root: the step whose subtree is drawn (it may still be running).
        width: the chart's width in pixels.
        row_height: the height of one step's row in pixels.
        filter: keep only the steps whose key matches this regular expression, or is in this list.
        unit: the unit of the axis and the durations: ``"us"``, ``"ms"`` or ``"s"``.
        now_ns: where running steps end (default: now, on the steps' clock).
        min_height: the least height in pixels (the rows keep their height; blank below).
    """
    width = _check_int("width", width, 300)
    row_height = _check_int("row_height", row_height, 10)
    if unit not in _UNITS:
        raise ConfigurationError(f"unit={unit!r}: expected one of {sorted(_UNITS)}")
    rows = _rows(root, filter, wall_now_ns() if now_ns is None else now_ns)
    origin = min([root.start_ns, *(r.step.start_ns for r in rows)])
    span = max([1, *(r.end_ns - origin for r in rows)])
    labels = [" " * 2 * r.depth + r.step.name for r in rows]
    label_px = min(max(80, max(map(len, labels), default=0) * _CHAR_PX + 12), width * 35 // 100)
    x0, x1 = label_px, width - _DURATION_PX
    height = max(min_height, _AXIS_PX + row_height * max(len(rows), 1) + 8)
    scale = (x1 - x0) / span
    title = f"Gantt chart of {root.key}"
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12" role="img" '
        f'aria-label="{_esc(title)}">',
        f"<title>{_esc(title)}</title>",
        f'<rect class="background" width="{width}" height="{height}" fill="#ffffff"/>',
        '<g class="axis" fill="#555555">',
    ]
    step_u = _tick_step(span / _UNITS[unit], (x1 - x0) // 90)
    for i in range(int(span / _UNITS[unit] / step_u) + 1):
        x = x0 + i * step_u * _UNITS[unit] * scale
        value = f"{i * step_u:,.{max(0, -math.floor(math.log10(step_u)))}f}" if i else "0"
        out.append(
            f'<line x1="{x:.1f}" y1="{_AXIS_PX - 6}" x2="{x:.1f}" y2="{height - 8}" '
            f'stroke="#e0e0e0"/><text x="{x:.1f}" y="{_AXIS_PX - 10}" '
            f'text-anchor="middle">{value} {unit}</text>'
        )
    out.append("</g>")
    if not rows:
        out.append(f'<text x="{x0}" y="{_AXIS_PX + 15}" fill="#555555">no step matches</text>')
    max_chars = max(1, (label_px - 12) // _CHAR_PX)
    for i, (row, label) in enumerate(zip(rows, labels, strict=True)):
        step = row.step
        y = _AXIS_PX + i * row_height
        colour = _COLOURS.get(step.status, "#757575")
        x = x0 + (step.start_ns - origin) * scale
        bar_w = max(1.0, (row.end_ns - step.start_ns) * scale)
        style = (
            f'fill-opacity="0.5" stroke="{colour}" stroke-dasharray="4 2"'
            if step.end_ns is None
            else 'stroke="none"'
        )
        if len(label) > max_chars:
            label = label[: max_chars - 1] + "\u2026"
        text_y = y + row_height / 2 + 4
        shown = _fmt(_duration_ns(row), unit) + ("\u2026" if step.end_ns is None else "")
        out += [
            f'<g class="row" data-key="{_esc(step.key)}" data-status="{_esc(step.status)}">',
            f'<rect class="bar bar-{_esc(step.status)}" x="{x:.1f}" y="{y + 3}" '
            f'width="{bar_w:.1f}" height="{row_height - 6}" rx="2" fill="{colour}" {style}>'
            f"<title>{_esc(_tooltip(row, origin))}</title></rect>",
            f'<text class="label" x="6" y="{text_y:.1f}" xml:space="preserve">{_esc(label)}</text>',
            f'<text class="duration" x="{width - 6}" y="{text_y:.1f}" '
            f'text-anchor="end">{_esc(shown)}</text>',
            "</g>",
        ]
    out.append("</svg>")
    return "\n".join(out)


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5rem; color: #212121; }} h1 {{ font-size: 1.3rem; }}
svg {{ max-width: 100%; height: auto; border: 1px solid #e0e0e0; }}
table {{ border-collapse: collapse; margin-top: 1.5rem; font-size: 0.9rem; }}
th, td {{ border-bottom: 1px solid #e0e0e0; padding: 0.3rem 0.8rem; text-align: left; }}
.num {{ text-align: right; }} .status-failed {{ color: #c62828; }}
.status-running {{ color: #1565c0; }} .status-cancelled {{ color: #757575; }}
</style></head>
<body><h1>{title}</h1>
{chart}
<table><thead><tr><th>step</th><th>status</th><th>duration</th><th>error</th></tr></thead><tbody>
{rows}
</tbody></table></body></html>
"""


def gantt_html(
    root: StepLike, *, title: str | None = None, height: int | None = None, **svg_options: Any
) -> str:
    """A self-contained HTML page: the Gantt chart and a table of the steps (no script, no CDN).

    ``height`` (pixels) puts the chart in a box of that height, scrolled when the chart is taller.
    """
    now_ns = svg_options.setdefault("now_ns", wall_now_ns())
    chosen = svg_options.get("filter")
    if chosen is not None and not isinstance(chosen, str) and isinstance(chosen, Iterable):
        svg_options["filter"] = list(chosen)  # read twice: by the chart and by the table
    chart = gantt_svg(root, **svg_options)
    if height is not None:
        height = _check_int("height", height, 1)
        chart = f'<div class="chart" style="height: {height}px; overflow: auto;">\n{chart}\n</div>'
    unit = svg_options.get("unit", "ms")
    table = []
    for row in _rows(root, svg_options.get("filter"), now_ns):
        step = row.step
        error = "" if step.error is None else f"{step.error.type}: {step.error.message}"
        table.append(
            f'<tr class="status-{_esc(step.status)}"><td>{_esc(step.key)}</td>'
            f'<td>{_esc(step.status)}</td><td class="num">{_esc(_fmt(_duration_ns(row), unit))}'
            f"</td><td>{_esc(error)}</td></tr>"
        )
    heading = title if title is not None else f"{root.key} \u2014 Gantt chart"
    return _PAGE.format(title=_esc(heading), chart=chart, rows="\n".join(table))


@dataclass(frozen=True, slots=True)
class _Bar:
    """A bare time span drawn as a step; the root of a set of them has them as children."""

    key: str
    start_ns: int
    end_ns: int | None
    children: tuple[_Bar, ...] = ()
    result: None = None
    error: None = None
    parent: None = None
    is_root: bool = False

    @property
    def name(self) -> str:
        return self.key

    @property
    def status(self) -> Status:
        return "running" if self.end_ns is None else "completed"

    @property
    def duration_ns(self) -> int | None:
        return None if self.end_ns is None else self.end_ns - self.start_ns

    @property
    def records(self) -> dict[str, Any]:
        return {}

    def walk(self) -> Iterator[StepLike]:
        """The bar itself or, for the root, its bars only (the root draws no row)."""
        yield from self.children if self.is_root else (self,)

    def record(self, key: str, value: Any) -> Any:
        return value


def spans_root(spans: Iterable[tuple[str, int, int | None]]) -> tuple[StepLike, int]:
    """A chart root for bare ``(key, start_ns, end_ns)`` spans (``end_ns`` ``None`` while open),
    and where the open ones end: the latest end (or start) of all."""
    bars = tuple(_Bar(key, start, end) for key, start, end in spans)
    ends = [b.end_ns if b.end_ns is not None else b.start_ns for b in bars]
    first = min((b.start_ns for b in bars), default=0)
    latest = max(ends, default=first)
    return _Bar("time spans", first, latest, children=bars, is_root=True), latest


def digraph_dot(statements: Iterable[tuple[str, str | None]], *, name: str = "G") -> str:
    """Graphviz DOT text of ``statements``, each a DOT statement (``"A -> B"``) with an optional
    label (escaped here, unlike the statement, which is DOT already)."""
    body = [
        statement if label is None else f'{statement} [label="{_dot_text(label)}"]'
        for statement, label in statements
    ]
    return f"digraph {name} {{{';'.join(body)}}}"


def _graph_label(step: StepLike, now_ns: int) -> tuple[str, str]:
    if step.duration_ns is not None:
        return step.name, _fmt(step.duration_ns)
    return step.name, f"{_fmt(max(0, now_ns - step.start_ns))} (running)"


def _mermaid_text(value: str) -> str:
    # Mermaid's entity codes (#name; / #code;) are the only escape a quoted label has.
    value = _NOT_XML.sub("\ufffd", value).replace("#", "#35;")
    for char, code in (('"', "#quot;"), ("<", "#lt;"), (">", "#gt;"), ("&", "#amp;")):
        value = value.replace(char, code)
    return value.replace("`", "#96;").replace("\r", " ").replace("\n", " ")


def execution_graph_mermaid(root: StepLike) -> str:
    """The execution graph as Mermaid ``flowchart TD`` text: a node a step, an edge a call."""
    steps = list(root.walk())
    now_ns = wall_now_ns()
    # Ids from the key, made safe (Mermaid reserves words like "end") and unique by position.
    ids = {id(s): f"s{i}_{re.sub(r'[^A-Za-z0-9_]', '_', s.key)[:40]}" for i, s in enumerate(steps)}
    lines = ["flowchart TD"]
    for step in steps:
        name, duration = _graph_label(step, now_ns)
        lines.append(f'    {ids[id(step)]}["{_mermaid_text(name)}<br/>{_mermaid_text(duration)}"]')
    lines += [
        f"    {ids[id(s.parent)]} --> {ids[id(s)]}"
        for s in steps
        if s is not root and s.parent is not None
    ]
    lines += [f"    classDef {k} stroke:{c},stroke-width:2px" for k, c in _COLOURS.items()]
    lines += [f"    class {ids[id(s)]} {s.status}" for s in steps if s.status in _COLOURS]
    return "\n".join(lines)


def _dot_text(value: str) -> str:
    value = value.replace("\\", "\\\\").replace('"', '\\"')
    return value.replace("\r", "").replace("\n", "\\n")


def execution_graph_dot(root: StepLike) -> str:
    """The execution graph as Graphviz DOT text; failed steps are red, running ones dashed."""
    steps = list(root.walk())
    now_ns = wall_now_ns()
    lines = [
        "digraph pipelens {",
        "    rankdir=TB;",
        '    node [shape=box, style="rounded,filled", fillcolor="#ffffff", fontname="sans-serif"];',
    ]
    for step in steps:
        name, duration = _graph_label(step, now_ns)
        attrs = f'label="{_dot_text(name)}\\n{_dot_text(duration)}"'
        if step.status == "failed":
            attrs += ', color="red", fillcolor="#ffebee"'
        elif step.status == "cancelled":
            attrs += ', color="gray50", fillcolor="#f5f5f5"'
        elif step.status == "running":
            attrs += ', color="#1e88e5", style="rounded,filled,dashed"'
        lines.append(f'    "{_dot_text(step.key)}" [{attrs}];')
    lines += [
        f'    "{_dot_text(s.parent.key)}" -> "{_dot_text(s.key)}";'
        for s in steps
        if s is not root and s.parent is not None
    ]
    lines.append("}")
    return "\n".join(lines)


def tree_text(root: StepLike) -> str:
    """One line a step, drawn as a tree: name, status, duration in ms."""
    lines: list[str] = []

    def visit(step: StepLike, prefix: str, branch: str, last: bool) -> None:
        ms = "" if step.duration_ns is None else f" {step.duration_ns / 1e6:.1f} ms"
        lines.append(f"{prefix}{branch}{step.name} [{step.status}]{ms}")
        children = list(step.children)
        inner = prefix + ("" if not branch else "    " if last else "\u2502   ")
        for i, child in enumerate(children):
            end = i == len(children) - 1
            visit(child, inner, "\u2514\u2500\u2500 " if end else "\u251c\u2500\u2500 ", end)

    visit(root, "", "", True)
    return "\n".join(lines)
