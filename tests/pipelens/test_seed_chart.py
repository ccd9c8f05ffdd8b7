"""The seed's ``pipelens.chart`` module: its models and calls, drawn locally."""

from __future__ import annotations

import socket
from urllib.parse import unquote

import pytest

from pipelens.chart import (
    GanttChartArgs,
    GraphItem,
    TimeSpan,
    generate_execution_graph_quickchart,
    generate_gantt_chart_google,
    generate_gantt_chart_quickchart,
)

SPANS = [
    TimeSpan(key="load", startTs=1_000, endTs=2_000),
    TimeSpan(key="parse", startTs=1_500, endTs=3_000),
    TimeSpan(key="still <running>", startTs=2_000, endTs=0),
]


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection attempt fails the test: the charts are drawn locally."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a chart tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def test_models_take_the_seeds_fields_and_defaults() -> None:
    """``TimeSpan``, ``GraphItem``, ``GanttChartArgs`` construct and dump as the seed's did."""
    assert TimeSpan(key="a", startTs=1).endTs is None
    assert TimeSpan(key="a", startTs="1", endTs=2).model_dump() == {
        "key": "a",
        "startTs": 1,
        "endTs": 2,
    }
    assert GraphItem(descriptor="A -> B").label is None
    args = GanttChartArgs()
    assert (args.unit, args.min_height, args.min_width) == ("ms", 300, 500)


def test_execution_graph_is_a_data_url_of_the_dot_text() -> None:
    """The graph is the seed's DOT text, labels escaped, in a ``data:`` URL."""
    url = generate_execution_graph_quickchart(
        [GraphItem(descriptor="A -> B", label='say "hi"'), GraphItem(descriptor="B -> C")]
    )
    prefix = "data:text/vnd.graphviz;charset=utf-8,"
    assert url.startswith(prefix)
    assert unquote(url[len(prefix) :]) == 'digraph G {A -> B [label="say \\"hi\\""];B -> C}'


def test_google_page_is_self_contained_with_the_seeds_height() -> None:
    """The page has every span, the box of the seed's height, and loads nothing."""
    page = generate_gantt_chart_google(SPANS, GanttChartArgs(min_height=600))
    assert page.startswith("<!DOCTYPE html>")
    assert "height: 600px" in page
    assert "load" in page
    assert "parse" in page
    assert "still &lt;running&gt;" in page
    assert 'data-status="running"' in page
    assert "<script" not in page
    assert "http" not in page.replace("http://www.w3.org/2000/svg", "")


async def test_quickchart_gantt_is_an_svg_buffer_of_the_least_size() -> None:
    """The buffer holds our SVG, at least ``min_width`` by ``min_height``, in seconds."""
    buffer = await generate_gantt_chart_quickchart(
        SPANS, GanttChartArgs(unit="s", min_height=400, min_width=800)
    )
    svg = buffer.getvalue().decode()
    assert svg.startswith("<svg")
    assert 'width="800" height="400"' in svg
    assert "1.5 s" in svg  # parse took 1.5 s
    assert svg.count('class="row"') == 3
