"""Scores on the pages, on a real PostgreSQL: the run page's list and form (CSRF, htmx), the
runs page's column and ``score=`` filter, and a pipeline's score charts."""

from __future__ import annotations

import re
import time
from datetime import UTC
from typing import Any

import msgspec
import pytest
from _dashboard_kit import SECOND, form_token, ingest, recent_run, table_rows
from litestar import Litestar
from litestar.testing import TestClient
from test_server_llm_pages import llm_run

from pipelens.events import ScoreAdded
from pipelens_server._pages._chart import SCORE_CHART
from pipelens_server._pages._score_chart import layout
from pipelens_server._read._scores import Bar, MeanPoint, ScoreSummary

Client = TestClient[Litestar]
HTMX = {"HX-Request": "true", "HX-Target": "run_scores"}


def _score(run_id: str, score_id: str, name: str, value: Any, **fields: Any) -> ScoreAdded:
    return ScoreAdded(
        run_id=run_id, score_id=score_id, name=name, value=value, at_ns=time.time_ns(), **fields
    )


def _api_scores(client: Client, run_id: str) -> list[tuple[str, Any, str]]:
    return [
        (s["name"], s["value"], s["source"])
        for s in client.get(f"/api/v1/runs/{run_id}/scores").json()
    ]


def test_the_run_page_lists_scores_and_its_form_adds_one(client: Client) -> None:
    """The run page shows the run's scores; its form (htmx) adds one and answers the list."""
    ingest(client, recent_run("r"))
    ingest(client, [_score("r", "s1", "relevance", 0.875, comment="cites sources")])
    page = client.get("/runs/r").text
    assert 'id="run_scores"' in page
    assert table_rows(page)[-1][:5] == ["relevance", "0.875", "", "cites sources", "code"]
    token = form_token(client, "/runs/r")
    form = {"csrf_token": token, "name": "helpful", "value": "true", "comment": "thanks"}
    answer = client.post("/runs/r/scores", data=form, headers=HTMX)
    assert answer.status_code == 200, answer.text
    assert "<html" not in answer.text  # the block only
    assert [row[:2] for row in table_rows(answer.text)] == [
        ["relevance", "0.875"],
        ["helpful", "true"],
    ]
    assert _api_scores(client, "r")[-1] == ("helpful", True, "ui")


def test_the_form_without_htmx_redirects_and_refuses_bad_input(client: Client) -> None:
    """Without htmx a score redirects back to the run; an empty value is a 400 naming it."""
    ingest(client, recent_run("r"))
    token = form_token(client, "/runs/r")
    saved = client.post(
        "/runs/r/scores",
        data={"csrf_token": token, "name": "verdict", "value": "good"},
        follow_redirects=False,
    )
    assert saved.status_code == 303
    assert saved.headers["location"] == "/runs/r#run_scores"
    refused = client.post("/runs/r/scores", data={"csrf_token": token, "name": "x", "value": ""})
    assert refused.status_code == 400
    assert "value must not be empty" in refused.text
    shown = client.post(
        "/runs/r/scores", data={"csrf_token": token, "name": "", "value": "1"}, headers=HTMX
    )
    assert shown.status_code == 200  # htmx swaps only a success: the form shows why
    assert "name must not be empty" in shown.text
    assert _api_scores(client, "r") == [("verdict", "good", "ui")]


def test_the_form_needs_its_csrf_token(client: Client) -> None:
    """A post without the page's token is refused and stores nothing."""
    ingest(client, recent_run("r"))
    form_token(client, "/runs/r")  # the cookie, but not the field
    answer = client.post("/runs/r/scores", data={"name": "x", "value": "1"}, headers=HTMX)
    assert answer.status_code == 403
    assert _api_scores(client, "r") == []


def test_the_runs_page_shows_and_filters_by_scores(client: Client) -> None:
    """A compact Scores column; ``score=`` keeps the runs it names, a bad one says why."""
    for run_id, value, ago in (("low", 0.2, 30), ("high", 0.9, 20), ("none", None, 10)):
        ingest(client, recent_run(run_id, ago_s=ago))
        if value is not None:
            ingest(client, [_score(run_id, "s", "relevance", value)])
    ingest(client, [_score("high", "p", "passed", True)])
    rows = table_rows(client.get("/pipelines/rag/runs").text)
    scores = {row[0]: row[7] for row in rows}
    assert scores == {"none": "", "high": "relevance 0.9 · passed true", "low": "relevance 0.2"}
    page = client.get("/pipelines/rag/runs", params={"score": "relevance>=0.5"})
    assert [row[0] for row in table_rows(page.text)] == ["high"]
    bad = client.get("/pipelines/rag/runs", params={"score": "relevance>=high"})
    assert bad.status_code == 400
    assert "compares with a number" in bad.text


def test_the_runs_page_draws_each_scores_distribution_and_mean(client: Client) -> None:
    """Numeric, boolean and categorical scores each get a distribution; numbers and booleans a
    mean over time too; the polls of the table carry no chart."""
    for i in range(6):
        ingest(client, recent_run(f"r{i}", ago_s=60 * (i + 1)))
        ingest(
            client,
            [
                _score(f"r{i}", "a", "relevance", i / 5),
                _score(f"r{i}", "b", "passed", i % 2 == 0),
                _score(f"r{i}", "c", "verdict", "good" if i < 4 else "bad"),
            ],
        )
    page = client.get("/pipelines/rag/runs").text
    # The runs' mean duration over the same buckets, then each score.
    assert page.count('class="score-chart"') == 4
    assert "run duration (ms)" in page
    assert "6 finished runs · mean 300.0 ms" in page
    assert page.count('class="score-distribution"') == 3
    assert page.count('class="score-means"') == 3  # a category has no mean
    assert "6 numeric scores relevance" in page
    assert "good: 4, bad: 2" in page
    assert "50% true" in page
    poll = client.get(
        "/pipelines/rag/runs", headers={"HX-Request": "true", "HX-Target": "runs_table"}
    )
    assert "score-chart" not in poll.text


def _figure(page: str, name: str) -> str:
    """The score chart's ``<figure>`` whose caption names ``name``."""
    (figure,) = [
        f for f in re.findall(r'<figure class="score-chart">.*?</figure>', page, re.S) if name in f
    ]
    return figure


def test_the_llm_cost_per_run_is_drawn_beside_duration_and_scores(client: Client) -> None:
    """The cost chart's points are each time bucket's LLM cost per run, priced by the server
    (gpt-4o-mini: $0.15 per 1M input tokens), at heights in proportion from 0, oldest first."""
    runs = [(1_000_000, 60), (2_000_000, 120), (4_000_000, 5 * 3600)]
    for tokens, ago in runs:
        events = llm_run("rag", [("gpt-4o-mini", None, tokens, 0, 0)], ago_s=ago)
        ingest(client, events)
        ingest(client, [_score(events[0].run_id, "s", "relevance", 0.5)])
    page = client.get("/pipelines/rag/runs").text
    names = re.findall(r'<figure class="score-chart">\s*<figcaption><strong>([^<]*)<', page)
    assert names == ["run duration (ms)", "LLM cost per run (USD)", "relevance"]
    cost = _figure(page, "LLM cost per run (USD)")
    assert "3 runs with LLM calls · mean $0.35" in cost  # ($0.15 + $0.30 + $0.60) / 3
    points = [
        (float(x), float(y), title)
        for x, y, title in re.findall(
            r'<circle class="point" cx="([\d.]+)" cy="([\d.]+)" r="2.5"><title>([^<]*)</title>',
            cost,
        )
    ]
    # The run 5 h ago alone in its bucket; the two recent ones share the last: (0.15 + 0.30) / 2.
    assert [title for _, _, title in points] == ["0.6 over 1 run(s)", "0.225 over 2 run(s)"]
    (x_old, y_old, _), (x_new, y_new, _) = points
    assert x_old < x_new
    top, plot_h = SCORE_CHART.top, SCORE_CHART.plot_height
    assert y_old == pytest.approx(top, abs=0.1)  # the highest mean tops the axis
    assert y_new == pytest.approx(top + plot_h - 0.225 / 0.6 * plot_h, abs=0.1)


def test_the_api_answers_the_figures_the_page_draws(client: Client) -> None:
    """``GET /api/v1/pipelines/{name}/scores``: the runs' duration and LLM cost per run over time,
    and each score's distribution and means, as the runs page draws them."""
    for i, (tokens, ago) in enumerate([(1_000_000, 60), (2_000_000, 120)]):
        events = llm_run("rag", [("gpt-4o-mini", None, tokens, 0, 0)], ago_s=ago)
        ingest(client, events)
        ingest(client, [_score(events[0].run_id, "s", "passed", i == 0)])
    answer = client.get("/api/v1/pipelines/rag/scores", params={"range": "24h"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    duration, cost = body["runs"]
    assert (duration["kind"], duration["count"]) == ("duration", 2)
    assert (cost["name"], cost["count"]) == ("LLM cost per run (USD)", 2)
    assert [(p["mean"], p["count"]) for p in cost["means"]] == [(pytest.approx(0.225), 2)]
    (passed,) = body["scores"]
    assert (passed["name"], passed["kind"], passed["mean"]) == ("passed", "boolean", 0.5)
    assert sorted((b["label"], b["count"]) for b in passed["bars"]) == [("false", 1), ("true", 1)]
    assert body["until_ns"] > body["since_ns"]
    refused = client.get("/api/v1/pipelines/rag/scores", params={"since_ns": 10, "until_ns": 5})
    assert refused.status_code == 400
    assert "until_ns=5" in refused.text


def test_the_score_chart_layout_scales_bars_and_means() -> None:
    """The tallest bar fills the plot, the others in proportion; a boolean's mean axis is 0 to 1
    and a duration's starts at 0; a day's range is labelled in hours."""
    summary = ScoreSummary(
        name="passed",
        kind="boolean",
        count=4,
        mean=0.75,
        bars=[Bar(label="true", count=3), Bar(label="false", count=1)],
        means=[MeanPoint(start_ns=0, mean=0.75, count=4)],
        bucket_ns=3600 * SECOND,
    )
    chart = layout(summary, 0, 86_401 * SECOND, UTC)
    tall, short = chart.bars
    assert tall.height == pytest.approx(3 * short.height, abs=0.2)
    assert [t.label for t in chart.y_ticks] == ["0", "1"]
    assert [t.label for t in chart.x_ticks] == ["00:00", "12:00", "00:00"]
    assert chart.mean == "75% true"
    duration = msgspec.structs.replace(
        summary,
        kind="duration",
        mean=300.0,
        bars=[],
        means=[MeanPoint(start_ns=0, mean=300.0, count=2)],
    )
    assert [t.label for t in layout(duration, 0, SECOND, UTC).y_ticks] == ["0", "300"]
