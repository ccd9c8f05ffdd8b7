"""Downloading a run (our event file, the seed's JSON) and importing it back into a fresh
database gives the same run, on a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from _dashboard_kit import form_token, ingest, recent_run, table_rows, with_who
from _pg_testkit import LOCAL
from litestar import Litestar
from litestar.testing import TestClient

from pipelens.events import Event, StepFinished
from pipelens_server import Settings, create_app

Client = TestClient[Litestar]
_LLM = (
    '{"provider":"openai","operation":"chat","request_model":"gpt-4o-mini",'
    '"usage":{"input_tokens":12,"output_tokens":5},"output":{"text":"d1"}}'
)


@pytest.fixture
def fresh(module_database_url: str) -> Iterator[Client]:
    """A second server on a database of its own, to import into."""
    app = create_app(Settings(database_url=module_database_url))
    with TestClient(app, base_url=LOCAL) as test_client:
        yield test_client


def _rich_run(run_id: str) -> list[Event]:
    """A failed run with who and why, inputs, records, an error and an LLM call."""
    events = with_who(
        recent_run(run_id, fail=True),
        tags=["nightly"],
        user_id="ana",
        session_id="s-1",
        attributes={"env": "test"},
    )
    return [
        msgspec.structs.replace(e, llm=_LLM)
        if isinstance(e, StepFinished) and e.key == "answer.rerank"
        else e
        for e in events
    ]


def _import(client: Client, name: str, data: bytes) -> list[list[str]]:
    response = client.post(
        "/import",
        files=[("files", (name, data, "application/octet-stream"))],
        data={"csrf_token": form_token(client, "/import")},
    )
    assert response.status_code == 200, response.text
    return table_rows(response.text)


def _run(client: Client, run_id: str) -> dict[str, Any]:
    response = client.get(f"/api/v1/runs/{run_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    del body["run"]["updated_at"]  # the server's clock
    return body


def test_a_run_downloaded_as_events_imports_back_the_same(client: Client, fresh: Client) -> None:
    """The event file carries every stored field: imported elsewhere, the run reads back the
    same (steps, ids, inputs, results, errors, the LLM call, tags, user, session, metadata)."""
    ingest(client, _rich_run("rt-events"))
    download = client.get("/api/v1/runs/rt-events/export", params={"format": "events"})
    assert download.status_code == 200, download.text
    assert 'filename="run-rt-events.events.jsonl"' in download.headers["content-disposition"]
    rows = _import(fresh, "run.events.jsonl", download.content)
    assert rows[0][1:4] == ["event batches (JSON lines)", "1", "3"]
    assert _run(fresh, "rt-events") == _run(client, "rt-events")


def test_a_run_downloaded_as_seed_json_imports_back_the_same(client: Client, fresh: Client) -> None:
    """The seed's PipelineMeta carries what the seed's steps have: imported elsewhere, the
    seed's view of the run (times in ms, keys, names, records, results, errors) is the same."""
    ingest(client, _rich_run("rt-seed"))
    download = client.get("/runs/rt-seed/download", params={"format": "seed"})
    assert download.status_code == 200, download.text
    assert download.json()["logVersion"] == 1
    rows = _import(fresh, "run.seed.json", download.content)
    assert rows[0][1:4] == ["seed PipelineMeta", "1", "3"]
    before = client.get("/api/dashboard/runs/rt-seed").json()
    after = fresh.get("/api/dashboard/runs/rt-seed").json()
    assert (after, len(after["steps"])) == (before, 3)


def test_the_run_page_links_both_downloads(client: Client) -> None:
    """The run page offers both files; an unknown run's download is a 404 naming it."""
    ingest(client, _rich_run("linked"))
    page = client.get("/runs/linked").text
    assert 'href="/runs/linked/download?format=events"' in page
    assert 'href="/runs/linked/download?format=seed"' in page
    missing = client.get("/api/v1/runs/nope/export")
    assert (missing.status_code, "nope" in missing.text) == (404, True)
    bad = client.get("/api/v1/runs/linked/export", params={"format": "zip"})
    assert bad.status_code == 400


def test_a_run_id_beyond_latin_1_downloads_under_a_safe_name(client: Client) -> None:
    """A header is latin-1: a run id such as 运行-1 once made both downloads answer 500. The file
    name keeps ASCII letters, digits and -_. (the rest become _), and ``filename*`` carries the
    whole name in UTF-8."""
    ingest(client, recent_run("运行-1"))
    for url in ("/api/v1/runs/运行-1/export", "/runs/运行-1/download"):
        response = client.get(url, params={"format": "events"})
        assert response.status_code == 200, (url, response.text)
        disposition = response.headers["content-disposition"]
        assert 'filename="run-__-1.events.jsonl"' in disposition
        assert "filename*=UTF-8''run-%E8%BF%90%E8%A1%8C-1.events.jsonl" in disposition


@pytest.mark.parametrize("format_", ["events", "seed"])
def test_the_page_download_and_the_api_export_answer_the_same_file(
    client: Client, format_: str
) -> None:
    """The run page's link and ``GET /api/v1/runs/{id}/export`` give the same bytes, media type
    and file name."""
    ingest(client, _rich_run("same"))
    answers = [
        client.get(url, params={"format": format_})
        for url in ("/runs/same/download", "/api/v1/runs/same/export")
    ]
    page, api = (
        (r.status_code, r.content, r.headers["content-type"], r.headers["content-disposition"])
        for r in answers
    )
    assert page == api
    assert page[0] == 200
