"""Local visuals: the SVG Gantt chart, its HTML page, the Mermaid and DOT graphs, the text tree."""

from __future__ import annotations

import contextlib
import re
import time
import xml.etree.ElementTree as ET
from io import BytesIO

import pytest

import pipelens
from pipelens import Pipeline, Run, Step

SVG = "{http://www.w3.org/2000/svg}"
ODD_NAME = "a<b&\"c'd"


@pipelens.step
def fetch(i: int) -> int:
    # A millisecond each: a bar is at least 1 px wide, so a step of a few µs in a run that a busy
    # machine stretched could be drawn wider than it ran and seem to overlap the next one.
    time.sleep(0.001)
    if i == 2:
        raise ValueError("no page <2> & more")
    return i


@pipelens.step
def pipeline_run(runs: list[Run]) -> None:
    runs.append(pipelens.current_run())  # type: ignore[arg-type]
    for i in range(3):
        with contextlib.suppress(ValueError):
            fetch(i)
    with pipelens.span("rank"), pipelens.span("score"):
        pass


def finished_run() -> Run:
    runs: list[Run] = []
    pipeline_run(runs)
    return runs[0]


def rows(svg: str) -> list[ET.Element]:
    """The row groups of a Gantt SVG, in drawing order."""
    return ET.fromstring(svg).findall(f"./{SVG}g[@class='row']")


def bar(row: ET.Element) -> ET.Element:
    found = row.find(f"{SVG}rect")
    assert found is not None
    return found


KEYS = [
    "pipeline_run",
    "pipeline_run.fetch",
    "pipeline_run.fetch___1",
    "pipeline_run.fetch___2",
    "pipeline_run.rank",
    "pipeline_run.rank.score",
]


# -- Gantt SVG ----------------------------------------------------------------------------------


def test_gantt_has_one_bar_per_step_in_depth_first_order() -> None:
    """Each step of the subtree is one row with one bar, in walk order."""
    svg = finished_run().root.gantt_svg()
    drawn = rows(svg)
    assert [r.get("data-key") for r in drawn] == KEYS
    assert len(KEYS) == len(ET.fromstring(svg).findall(f".//{SVG}rect[@class]")) - 1  # background


def test_gantt_is_a_standalone_svg_document() -> None:
    """The root element is an <svg> in the SVG namespace, with a size and a viewBox."""
    root = ET.fromstring(finished_run().root.gantt_svg(width=640))
    assert f"{SVG}svg" == root.tag
    assert (root.get("width"), root.get("viewBox", "")[:7]) == ("640", "0 0 640")


def test_failed_step_bar_has_the_failed_class_and_colour() -> None:
    """The failed step's bar is red with class bar-failed; the others are completed and green."""
    drawn = {r.get("data-key"): bar(r) for r in rows(finished_run().root.gantt_svg())}
    failed = drawn.pop("pipeline_run.fetch___2")
    assert (failed.get("class"), failed.get("fill")) == ("bar bar-failed", "#e53935")
    assert {"bar bar-completed"} == {b.get("class") for b in drawn.values()}
    assert {"#43a047"} == {b.get("fill") for b in drawn.values()}


def test_bar_tooltip_names_key_status_duration_times_and_error() -> None:
    """A bar's <title> holds its key, status, duration, start, end and the error message."""
    run = finished_run()
    failed = run.step("pipeline_run.fetch___2")
    drawn = {r.get("data-key"): bar(r) for r in rows(run.root.gantt_svg())}
    title = drawn["pipeline_run.fetch___2"].findtext(f"{SVG}title") or ""
    lines = title.split("\n")
    assert lines[:2] == ["pipeline_run.fetch___2", "status: failed"]
    assert [(line.split(":")[0], " ms" in line) for line in lines[2:5]] == [
        ("duration", True),
        ("start", True),
        ("end", True),
    ]
    assert f"error: ValueError: {failed.error.message}" == lines[5]  # type: ignore[union-attr]


def test_bars_are_placed_on_the_time_axis() -> None:
    """The root spans the whole plot; siblings that ran one after the other do not overlap."""
    drawn = [bar(r) for r in rows(finished_run().root.gantt_svg(width=800))]
    x = [float(b.get("x", "nan")) for b in drawn]
    w = [float(b.get("width", "nan")) for b in drawn]
    plot_end = 800 - 90  # the width minus the duration column
    assert plot_end == pytest.approx(x[0] + w[0], abs=0.2)
    assert all(x[i + 1] >= x[i] + w[i] - 0.2 for i in (1, 2))  # fetch, fetch___1, fetch___2


def test_running_subtree_is_drawn_up_to_now_with_the_running_style() -> None:
    """Inside a running step, the chart draws the running steps dashed and finished ones solid."""
    charts: list[str] = []

    @pipelens.step
    def live() -> None:
        fetch(0)
        with pipelens.span("busy"):
            root = pipelens.current_step().run.root  # type: ignore[union-attr]
            charts.append(root.gantt_svg())

    live()
    drawn = rows(charts[0])
    assert [(r.get("data-key"), r.get("data-status")) for r in drawn] == [
        ("live", "running"),
        ("live.fetch", "completed"),
        ("live.busy", "running"),
    ]
    running = bar(drawn[2])
    assert (running.get("class"), running.get("stroke-dasharray")) == ("bar bar-running", "4 2")
    assert float(running.get("width", "0")) >= 1.0
    duration = drawn[0].find(f"{SVG}text[@class='duration']")
    assert duration is not None
    assert (duration.text or "").endswith("\u2026")


def test_names_with_markup_are_escaped_and_the_svg_still_parses() -> None:
    """A name holding <, &, and quotes comes back intact from the parsed SVG."""
    runs: list[Run] = []

    @pipelens.step
    def odd() -> None:
        runs.append(pipelens.current_run())  # type: ignore[arg-type]
        with pipelens.span(ODD_NAME):
            pass

    odd()
    svg = runs[0].root.gantt_svg()
    assert ODD_NAME not in svg
    row = rows(svg)[1]
    label = row.find(f"{SVG}text[@class='label']")
    assert label is not None
    assert (row.get("data-key"), label.text) == (f"odd.{ODD_NAME}", f"  {ODD_NAME}")


async def test_characters_xml_cannot_hold_are_replaced() -> None:
    """Control characters and lone surrogates in a name become U+FFFD; the bytes still parse."""
    with Pipeline("bell\x07\ud800").run() as run:
        pass
    buffer = await run.root.gantt_quickchart()
    label = ET.fromstring(buffer.getvalue()).find(f".//{SVG}text[@class='label']")
    assert label is not None
    assert label.text == "bell\ufffd\ufffd"


def test_filter_by_regex_keeps_the_keys_it_matches() -> None:
    """A string filter is a regular expression searched in each key."""
    svg = finished_run().root.gantt_svg(filter=r"fetch___\d")
    assert [r.get("data-key") for r in rows(svg)] == [
        "pipeline_run.fetch___1",
        "pipeline_run.fetch___2",
    ]


def test_filter_by_list_keeps_the_listed_keys() -> None:
    """A list filter keeps exactly the steps whose keys are listed, still in walk order."""
    wanted = ["pipeline_run.rank.score", "pipeline_run"]
    svg = finished_run().root.gantt_svg(filter=wanted)
    assert [r.get("data-key") for r in rows(svg)] == ["pipeline_run", "pipeline_run.rank.score"]


def test_filter_matching_nothing_draws_an_empty_chart() -> None:
    """No matching step gives a valid SVG with no bar and a note saying so."""
    svg = finished_run().root.gantt_svg(filter=["nope"])
    assert (rows(svg), "no step matches" in svg) == ([], True)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"filter": "fetch("}, "filter='fetch('"),
        ({"filter": 5}, "filter=5"),
        ({"width": 10}, "width=10"),
        ({"row_height": "big"}, "row_height='big'"),
        ({"unit": "min"}, "unit='min'"),
    ],
)
def test_bad_options_raise_an_error_naming_the_option(
    options: dict[str, object], named: str
) -> None:
    """A wrong option value raises ConfigurationError whose message names it."""
    root = finished_run().root
    with pytest.raises(pipelens.ConfigurationError, match=re.escape(named)):
        root.gantt_svg(**options)


def test_unit_sets_the_axis_and_duration_unit() -> None:
    """unit='s' labels the ticks and the durations in seconds."""
    root = ET.fromstring(finished_run().root.gantt_svg(unit="s"))
    ticks = [t.text or "" for t in root.findall(f"./{SVG}g[@class='axis']/{SVG}text")]
    durations = [t.text or "" for t in root.iter(f"{SVG}text") if t.get("class") == "duration"]
    assert ticks[0] == "0 s"
    assert [True] * (len(ticks) + len(KEYS)) == [t.endswith(" s") for t in ticks + durations]


def test_subtree_chart_starts_at_the_given_step() -> None:
    """The chart of a child step draws that step and its descendants only, unindented."""
    svg = finished_run().step("pipeline_run.rank").gantt_svg()
    labels = [r.find(f"{SVG}text[@class='label']") for r in rows(svg)]
    assert [t.text for t in labels if t is not None] == ["rank", "  score"]


def test_chart_has_no_external_reference() -> None:
    """The only URL in the SVG is its namespace: no link, script, image or web font."""
    svg = finished_run().root.gantt_svg()
    assert re.findall(r"https?://[^\s\"']+", svg) == ["http://www.w3.org/2000/svg"]
    assert not re.search(r"<script|href=|<image|@import|url\(", svg)


# -- HTML page ----------------------------------------------------------------------------------


def test_html_page_is_self_contained_with_svg_and_step_table() -> None:
    """The page has a doctype, a charset, the inline SVG and a row per step with its error."""
    root = finished_run().root
    page = root.gantt_html(title="My <run>")
    assert page.startswith("<!DOCTYPE html>")
    assert '<meta charset="utf-8">' in page
    assert "<title>My &lt;run&gt;</title>" in page
    assert root.gantt_svg() in page
    table = page[page.index("<table") :]
    assert re.findall(r"<tr class=\"status-\w+\"><td>([^<]+)</td>", table) == KEYS
    assert "ValueError: no page &lt;2&gt; &amp; more" in table
    assert re.findall(r"https?://[^\s\"']+", page) == ["http://www.w3.org/2000/svg"]
    assert not re.search(r"<script|<link|src=|href=", page)


def test_html_page_passes_chart_options_through() -> None:
    """Filter and width given to the page reach its chart and its table."""
    page = finished_run().root.gantt_html(filter=iter(["pipeline_run.rank"]), width=500)
    assert [
        re.search(r'width="\d+"', page).group(0),  # type: ignore[union-attr]
        *re.findall(r"<td>(pipeline_run[^<]*)</td>", page),
    ] == ['width="500"', "pipeline_run.rank"]


# -- graphs and text ----------------------------------------------------------------------------


def test_mermaid_has_a_node_per_step_and_every_edge() -> None:
    """flowchart TD: one labelled node a step, one parent --> child edge a non-root step."""
    run = finished_run()
    text = run.root.execution_graph_mermaid()
    lines = text.splitlines()
    assert lines[0] == "flowchart TD"
    nodes = [m.groups() for m in map(re.compile(r'^    (\w+)\["(.*)"\]$').match, lines) if m]
    ids = {s.key: node_id for s, (node_id, _) in zip(run.steps(), nodes, strict=True)}
    assert [s.name for s in run.steps()] == [label.split("<br/>")[0] for _, label in nodes]
    assert all(label.endswith(" ms") for _, label in nodes)
    edges = {line.strip() for line in lines if "-->" in line}
    assert {f"{ids[s.parent.key]} --> {ids[s.key]}" for s in run.steps()[1:] if s.parent} == edges
    assert f"    class {ids['pipeline_run.fetch___2']} failed" in lines


def test_mermaid_escapes_labels() -> None:
    """Quotes, <, & and # in a name become Mermaid entity codes; ids stay plain words."""
    with Pipeline('say "hi" <#1> & bye').run() as run:
        pass
    node = run.root.execution_graph_mermaid().splitlines()[1]
    assert re.fullmatch(
        r'    \w+\["say #quot;hi#quot; #lt;#35;1#gt; #amp; bye<br/>[\d.]+ ms"\]', node
    ), node


def test_dot_has_every_edge_and_marks_failed_steps() -> None:
    """digraph: nodes quoted by key, an edge per parent/child, failed steps red."""
    run = finished_run()
    dot = run.root.execution_graph_dot()
    assert (dot.splitlines()[0], dot.splitlines()[-1]) == ("digraph pipelens {", "}")
    edges = {line.strip() for line in dot.splitlines() if "->" in line}
    expected = {f'"{s.parent.key}" -> "{s.key}";' for s in run.steps()[1:] if s.parent}
    assert expected == edges
    failed = [line for line in dot.splitlines() if 'color="red"' in line]
    assert [line.split(" [")[0].strip() for line in failed] == ['"pipeline_run.fetch___2"']
    assert re.search(r'"pipeline_run.rank" \[label="rank\\n[\d.]+ ms"\];', dot)


def test_dot_escapes_quotes_and_backslashes() -> None:
    """A quote or backslash in a name cannot end the DOT string early."""
    with Pipeline('x"y\\z').run() as run:
        pass
    node = run.root.execution_graph_dot().splitlines()[3]
    assert node.startswith('    "x\\"y\\\\z" [label="x\\"y\\\\z\\n')


def test_tree_text_draws_branches() -> None:
    """Each step on its own line under box-drawing branches, with status and duration."""
    text = re.sub(r" [\d.]+ ms", "", finished_run().root.tree_text())
    assert text == (
        "pipeline_run [completed]\n"
        "├── fetch [completed]\n"
        "├── fetch [completed]\n"
        "├── fetch [failed]\n"
        "└── rank [completed]\n"
        "    └── score [completed]"
    )


def test_tree_text_continues_the_line_of_a_parent_with_later_siblings() -> None:
    """A grandchild under a parent that is not the last child hangs from a vertical line."""
    with Pipeline("top").run() as run:
        with pipelens.span("a"), pipelens.span("a1"):
            pass
        with pipelens.span("b"):
            pass
    lines = [line.split(" [")[0] for line in run.root.tree_text().splitlines()]
    assert lines == ["top", "├── a", "│   └── a1", "└── b"]


# -- the seed's chart calls, drawn locally ------------------------------------------------------


async def test_seed_gantt_quickchart_returns_svg_bytes() -> None:
    """await step.gantt_quickchart() gives a BytesIO holding the SVG chart."""
    root = finished_run().root
    buffer = await root.gantt_quickchart()
    assert isinstance(buffer, BytesIO)
    assert root.gantt_svg().encode() == buffer.getvalue()
    assert f"{SVG}svg" == ET.fromstring(buffer.getvalue()).tag


async def test_seed_pipeline_chart_calls_work_awaited_and_not() -> None:
    """On a Pipeline, the Google chart page works with and without await; the graph is DOT."""
    pipeline = Pipeline("seed_style")

    async def body(st: Step) -> str:
        await st.step("load", lambda child: "done")
        return "ok"

    assert await pipeline.track(body) == "ok"
    awaited = await pipeline.gantt_google_chart_html()
    plain = pipeline.gantt_google_chart_html()
    assert isinstance(plain, str)
    assert (str, True) == (type(awaited), awaited.startswith("<!DOCTYPE html>"))
    svg = plain[plain.index("<svg") : plain.index("</svg>") + len("</svg>")]
    assert [r.get("data-key") for r in rows(svg)] == ["seed_style", "seed_style.load"]
    assert pipeline.execution_graph_dot() == pipeline.execution_graph_quickchart()
