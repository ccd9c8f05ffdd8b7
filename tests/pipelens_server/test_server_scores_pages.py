"""Scores on the pages, on a real PostgreSQL: the run page's list and form (CSRF, htmx), the
runs page's column and ``score=`` filter, and a pipeline's score charts."""

from __future__ import annotations

import time
from typing import Any

from _dashboard_kit import form_token, ingest, recent_run, table_rows
from litestar import Litestar
from litestar.testing import TestClient

from pipelens.events import ScoreAdded

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
    assert page.count('class="score-chart"') == 3
    assert page.count('class="score-distribution"') == 3
    assert page.count('class="score-means"') == 2  # a category has no mean
    assert "6 numeric scores relevance" in page
    assert "good: 4, bad: 2" in page
    assert "50% true" in page
    poll = client.get(
        "/pipelines/rag/runs", headers={"HX-Request": "true", "HX-Target": "runs_table"}
    )
    assert "score-chart" not in poll.text
