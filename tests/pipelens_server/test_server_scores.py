"""Scores on a real PostgreSQL: from ``pipelens.score`` through the ingest API and from
``POST /api/v1/runs/{id}/scores``, read back by the run API and filtered by ``score=``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from _dashboard_kit import ingest, recent_run
from _pg_testkit import MSGPACK, live_server, msgpack_body, read_rows
from litestar import Litestar
from litestar.testing import TestClient
from psycopg.rows import dict_row

import pipelens
from pipelens.events import MAX_SCORE_NAME_BYTES, ScoreAdded
from pipelens_server import Settings, create_app
from pipelens_server._ingest._import import file_rows

Client = TestClient[Litestar]


def _score(run_id: str, score_id: str, name: str, value: Any, **fields: Any) -> ScoreAdded:
    return ScoreAdded(
        run_id=run_id, score_id=score_id, name=name, value=value, at_ns=time.time_ns(), **fields
    )


def _api_ids(client: Client, **params: Any) -> list[str]:
    response = client.get("/api/v1/runs", params=params)
    assert response.status_code == 200, response.text
    return sorted(run["run_id"] for run in response.json()["runs"])


def test_scores_of_each_kind_are_stored_and_read_back(client: Client) -> None:
    """Numeric, boolean and categorical scores come back with their kind and value, in the run
    API and in the run list, in the order given."""
    ingest(client, recent_run("a"))
    ingest(
        client,
        [
            _score("a", "s1", "relevance", 0.75),
            _score("a", "s2", "passed", True, comment="ok"),
            _score("a", "s3", "tone", "friendly", step_key="rag.retrieve"),
        ],
    )
    scores = client.get("/api/v1/runs/a").json()["run"]["scores"]
    assert [(s["name"], s["kind"], s["value"], s["comment"], s["step_key"]) for s in scores] == [
        ("relevance", "numeric", 0.75, None, None),
        ("passed", "boolean", True, "ok", None),
        ("tone", "categorical", "friendly", None, "rag.retrieve"),
    ]
    assert client.get("/api/v1/runs/a/scores").json() == scores
    (listed,) = client.get("/api/v1/runs").json()["runs"]
    assert listed["scores"] == scores


def test_a_score_before_its_run_and_a_resent_one_converge(
    client: Client, database_url: str
) -> None:
    """A score may arrive before its run; the same (run, score id) again stores nothing new."""
    ingest(client, [_score("early", "s1", "relevance", 0.5)])
    ingest(client, recent_run("early"))
    ingest(client, [_score("early", "s1", "relevance", 0.9)])
    (row,) = _scores_rows(database_url)
    assert (row["score_id"], row["value_number"]) == ("s1", 0.5)


def _scores_rows(database_url: str) -> list[dict[str, Any]]:
    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        return conn.execute("SELECT * FROM scores ORDER BY run_id, score_id").fetchall()


def test_post_a_score_is_idempotent_by_its_id(client: Client) -> None:
    """The API stores a posted score once per score_id and answers the one stored first."""
    ingest(client, recent_run("r"))
    body = {"score_id": "fb-1", "name": "thumbs", "value": False, "comment": "wrong"}
    first = client.post("/api/v1/runs/r/scores", json=body)
    assert first.status_code == 201, first.text
    again = client.post("/api/v1/runs/r/scores", json=body | {"value": True})
    assert again.status_code == 201
    assert again.json() == first.json()
    assert first.json()["source"] == "api"
    assert [s["value"] for s in client.get("/api/v1/runs/r/scores").json()] == [False]
    # Without an id every post is a score of its own.
    for _ in range(2):
        client.post("/api/v1/runs/r/scores", json={"name": "n", "value": 1})
    assert len(client.get("/api/v1/runs/r/scores").json()) == 3


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"value": 1}, "name"),
        ({"name": "x"}, "value"),
        ({"name": "x", "value": None}, "value"),
        ({"name": "x", "value": [1]}, "value"),
        ({"name": "", "value": 1}, "name"),
        ({"name": "x" * (MAX_SCORE_NAME_BYTES + 1), "value": 1}, "name"),
        ({"name": "x", "value": ""}, "value"),
        ({"name": "x", "value": 1, "comment": 3}, "comment"),
        ({"name": "x", "value": 1, "extra": 3}, "extra"),
    ],
)
def test_a_bad_score_is_a_400_naming_the_field(
    client: Client, database_url: str, body: dict[str, Any], field: str
) -> None:
    """A body that is not a score is refused, naming the field, and nothing is stored."""
    ingest(client, recent_run("r"))
    response = client.post("/api/v1/runs/r/scores", json=body)
    assert response.status_code == 400, response.text
    assert field in response.json()["detail"]
    assert _scores_rows(database_url) == []


def test_a_score_of_an_unknown_run_is_a_404(client: Client) -> None:
    """The API scores only runs it has (the event ingest keeps early scores, converging)."""
    response = client.post("/api/v1/runs/nope/scores", json={"name": "x", "value": 1})
    assert response.status_code == 404
    assert client.get("/api/v1/runs/nope/scores").status_code == 404


def test_a_bad_score_event_refuses_its_batch(client: Client, database_url: str) -> None:
    """A NaN score (msgpack carries it) is a 400 naming its path; the batch writes nothing."""
    events = [*recent_run("r"), _score("r", "s", "x", float("nan"))]
    response = client.post("/api/v1/events", content=msgpack_body(events), headers=MSGPACK)
    assert response.status_code == 400
    assert "$.events[" in response.json()["detail"]
    assert "value" in response.json()["detail"]
    assert read_rows(database_url, "r")["runs"] == []


def test_runs_filter_by_score_name_value_and_range(client: Client) -> None:
    """``score=name``, ``score=name:value`` and ``score=name>=number`` keep the runs they say."""
    for run_id, value in (("a", 0.2), ("b", 0.8), ("c", None)):
        ingest(client, recent_run(run_id))
        if value is not None:
            ingest(client, [_score(run_id, "s", "relevance", value)])
    ingest(client, [_score("a", "v", "verdict", "good"), _score("b", "p", "passed", True)])
    assert _api_ids(client, score="relevance") == ["a", "b"]
    assert _api_ids(client, score="relevance>=0.5") == ["b"]
    assert _api_ids(client, score="relevance<0.5") == ["a"]
    assert _api_ids(client, score="relevance:0.2") == ["a"]
    assert _api_ids(client, score="verdict:good") == ["a"]
    assert _api_ids(client, score="verdict:bad") == []
    assert _api_ids(client, score="passed:true") == ["b"]
    assert _api_ids(client, score="passed>=1") == ["b"]
    response = client.get("/api/v1/runs", params={"score": "relevance>=high"})
    assert response.status_code == 400
    assert "score=" in response.json()["detail"]


def test_the_real_client_scores_through_a_real_server(database_url: str, tmp_path: Path) -> None:
    """``pipelens.score`` inside a run and, later, by run id reach the server over HTTP."""
    app = create_app(Settings(database_url=database_url, token="tok"))
    with live_server(app) as url:
        pipelens.configure(transport=pipelens.HttpTransport(url, token="tok", spool_dir=tmp_path))

        @pipelens.step
        def rag() -> str:
            pipelens.score("relevance", 0.9, comment="cites the source")
            run = pipelens.current_run()
            assert run is not None
            return run.id

        run_id = rag()
        pipelens.score("user_feedback", "helpful", run_id=run_id)
        assert pipelens.flush(10)
        scores_url = f"{url}/api/v1/runs/{run_id}/scores"
        assert httpx.post(scores_url, json={"name": "x", "value": 1}).status_code == 401
        scores = httpx.get(scores_url, headers={"Authorization": "Bearer tok"}).json()
    assert [(s["name"], s["value"], s["source"]) for s in scores] == [
        ("relevance", 0.9, "code"),
        ("user_feedback", "helpful", "code"),
    ]


def test_an_event_file_brings_its_scores(tmp_path: Path) -> None:
    """A ``FileTransport`` file imported on the server keeps the scores it holds."""
    path = tmp_path / "events.jsonl"
    pipelens.configure(file=str(path))

    @pipelens.step
    def scored() -> None:
        pipelens.score("relevance", 0.5)

    scored()
    assert pipelens.flush(10)
    _, rows = file_rows("events.jsonl", path.read_bytes())
    assert [row[2:5] for row in rows.scores.values()] == [["relevance", "numeric", 0.5]]


def test_a_score_beyond_the_numeric_cap_is_a_400(client: Client, database_url: str) -> None:
    """A number past ±1e15 is refused by the API and by the event ingest, naming the value."""
    ingest(client, recent_run("r"))
    response = client.post("/api/v1/runs/r/scores", json={"name": "x", "value": 1e200})
    assert response.status_code == 400, response.text
    assert "value" in response.json()["detail"]
    events = [_score("r", "s", "x", -1e200)]
    response = client.post("/api/v1/events", content=msgpack_body(events), headers=MSGPACK)
    assert response.status_code == 400
    assert "$.events[0].value" in response.json()["detail"]
    assert _scores_rows(database_url) == []


def test_huge_stored_scores_chart_without_a_5xx(client: Client, database_url: str) -> None:
    """Scores at float8's limits stored before the cap (or by hand) still chart: the mean of two
    values near 1.7e308 overflowed ``avg()`` in float8, a 500 on the scores API and runs page."""
    for run_id in ("a", "b"):
        ingest(client, recent_run(run_id))
        ingest(client, [_score(run_id, "s", "quality", 1.0)])
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE scores SET value_number = 1.7e308")
    response = client.get("/api/v1/pipelines/rag/scores")
    assert response.status_code == 200, response.text
    page = client.get("/pipelines/rag/runs")
    assert page.status_code == 200, page.text
