"""Retention: the settings page and the purge of old runs, on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import html
import time
from collections.abc import Iterator

import psycopg
import pytest
from _dashboard_kit import form_token, ingest, recent_run, table_rows
from _pg_testkit import LOCAL, read_rows
from litestar import Litestar
from litestar.testing import TestClient
from psycopg_pool import AsyncConnectionPool

from pipelens.events import ScoreAdded, StepFinished
from pipelens_server import Settings, create_app
from pipelens_server._db._retention import purge

Client = TestClient[Litestar]
DAY_S = 86_400
#: How long a purge round may take on a busy machine before the test gives up.
WAIT_S = 30


@pytest.fixture
def client(database_url: str) -> Iterator[Client]:
    """A test client of an app that never purges by itself: the tests purge by hand."""
    app = create_app(Settings(database_url=database_url))
    app.state.purge_interval_s = None
    with TestClient(app, base_url=LOCAL) as test_client:
        yield test_client


def _purge(database_url: str, chunk: int = 100, now_ns: int | None = None) -> int:
    # A pool of one connection: the purge must not need a second one while it holds its lock.
    async def run() -> int:
        async with AsyncConnectionPool(
            database_url, min_size=1, max_size=1, open=False, timeout=5
        ) as pool:
            return await purge(pool, chunk=chunk, now_ns=now_ns)

    return asyncio.run(run())


def _run_ids(database_url: str) -> list[str]:
    return [r["run_id"] for r in read_rows(database_url)["runs"]]


def _step_run_ids(database_url: str) -> set[str]:
    return {s["run_id"] for s in read_rows(database_url)["steps"]}


def _save(client: Client, days: str, pipeline: str | None = None) -> tuple[int, str]:
    form = {"days": days} if pipeline is None else {"days": days, "pipeline": pipeline}
    form["csrf_token"] = form_token(client)
    response = client.post("/settings", data=form, follow_redirects=False)
    return response.status_code, html.unescape(response.text)


def _retentions(client: Client) -> list[list[str]]:
    """The settings table: pipeline and its retention."""
    return [row[:2] for row in table_rows(client.get("/settings").text)]


def test_purge_deletes_runs_older_than_the_default_with_their_steps(
    client: Client, database_url: str
) -> None:
    """Runs started before the 14-day default go with every step; recent runs stay whole."""
    ingest(client, recent_run("old", ago_s=15 * DAY_S))
    ingest(client, recent_run("new", ago_s=13 * DAY_S))
    assert _step_run_ids(database_url) == {"old", "new"}
    assert _purge(database_url) == 1
    assert _run_ids(database_url) == ["new"]
    assert _step_run_ids(database_url) == {"new"}
    assert len(read_rows(database_url, "new")["steps"]) == 3


def test_a_pipeline_retention_set_on_the_page_applies_to_that_pipeline_only(
    client: Client, database_url: str
) -> None:
    """A 1-day retention for one pipeline purges its 2-day-old run, not another pipeline's."""
    ingest(client, recent_run("a-old", "alpha", ago_s=2 * DAY_S))
    ingest(client, recent_run("a-new", "alpha", ago_s=3600))
    ingest(client, recent_run("b-old", "beta", ago_s=2 * DAY_S))
    assert _save(client, "1", "alpha")[0] == 303
    assert _purge(database_url) == 1
    assert _run_ids(database_url) == ["a-new", "b-old"]


def test_purge_works_through_many_chunks(client: Client, database_url: str) -> None:
    """With chunks of 2 runs, all 5 old runs are purged in one call."""
    ingest(client, [e for i in range(5) for e in recent_run(f"o{i}", ago_s=20 * DAY_S + i)])
    ingest(client, recent_run("keep", ago_s=60))
    assert _purge(database_url, chunk=2) == 5
    assert _run_ids(database_url) == ["keep"]
    assert _step_run_ids(database_url) == {"keep"}


def test_old_runs_known_only_by_their_steps_follow_the_default(
    client: Client, database_url: str
) -> None:
    """A run whose run event never came (no pipeline) is purged by the default's age."""
    events = recent_run("orphan", ago_s=30 * DAY_S)
    ingest(client, [e for e in events if isinstance(e, StepFinished)])
    assert read_rows(database_url, "orphan")["runs"][0]["pipeline"] is None
    assert _purge(database_url) == 1
    assert read_rows(database_url) == {"runs": [], "steps": [], "pipelines": []}


def _score_keys(database_url: str) -> list[tuple[str, str]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT run_id, score_id FROM scores ORDER BY 1, 2").fetchall()
    return [(run_id, score_id) for run_id, score_id in rows]


def test_scores_of_no_run_go_once_older_than_the_default(client: Client, database_url: str) -> None:
    """A score whose run never came is kept while it could still be waiting for its run (even
    given 15 days ago, it arrived now), and purged once both times are past the default; the
    scores of a kept run stay."""
    now, day = time.time_ns(), DAY_S * 10**9
    ingest(client, recent_run("kept", ago_s=60))
    assert _save(client, "30", "rag")[0] == 303
    ingest(
        client,
        [
            ScoreAdded(run_id="kept", score_id="k", name="relevance", value=0.5, at_ns=now),
            ScoreAdded(run_id="never", score_id="a", name="relevance", value=0.1, at_ns=now),
            ScoreAdded(
                run_id="never", score_id="b", name="passed", value=True, at_ns=now - 15 * day
            ),
        ],
    )
    everything = [("kept", "k"), ("never", "a"), ("never", "b")]
    assert _purge(database_url) == 0
    assert _score_keys(database_url) == everything
    assert _purge(database_url, chunk=1, now_ns=now + 13 * day) == 0
    assert _score_keys(database_url) == everything
    assert _purge(database_url, chunk=1, now_ns=now + 15 * day) == 0
    assert _score_keys(database_url) == [("kept", "k")]
    assert _run_ids(database_url) == ["kept"]


def test_the_app_purges_at_start_up_before_serving(database_url: str) -> None:
    """Old runs stored before the server starts are gone by its first request."""
    with TestClient(create_app(Settings(database_url=database_url)), base_url=LOCAL) as first:
        ingest(first, recent_run("old", ago_s=15 * DAY_S))
        ingest(first, recent_run("new", ago_s=60))
    with TestClient(create_app(Settings(database_url=database_url)), base_url=LOCAL) as second:
        assert [row[0] for row in table_rows(second.get("/pipelines/rag/runs?range=all").text)] == [
            "new"
        ]
    assert _run_ids(database_url) == ["new"]
    assert _step_run_ids(database_url) == {"new"}


def test_the_app_purges_again_every_interval(database_url: str) -> None:
    """A run that is old when stored is purged by a later round while the server runs."""
    app = create_app(Settings(database_url=database_url))
    app.state.purge_interval_s = 0.1
    with TestClient(app, base_url=LOCAL) as running:
        ingest(running, recent_run("old", ago_s=15 * DAY_S))
        ingest(running, recent_run("new", ago_s=60))
        deadline = time.monotonic() + WAIT_S
        while "old" in _run_ids(database_url) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _run_ids(database_url) == ["new"]
        assert _step_run_ids(database_url) == {"new"}


def test_settings_page_shows_each_pipeline_with_the_default(client: Client) -> None:
    """Every pipeline shows 14 days, marked as the default, until changed."""
    ingest(client, recent_run("a", "alpha"))
    ingest(client, recent_run("b", "beta"))
    assert _retentions(client) == [["alpha", "14 days (default)"], ["beta", "14 days (default)"]]


def test_settings_page_changes_a_pipeline_and_the_default(client: Client) -> None:
    """A pipeline's own days stay when the default changes; empty days restore the default."""
    ingest(client, recent_run("a", "alpha"))
    ingest(client, recent_run("b", "beta"))
    status, _ = _save(client, "30", "alpha")
    assert status == 303
    assert _save(client, "7")[0] == 303
    assert _retentions(client) == [["alpha", "30 days"], ["beta", "7 days (default)"]]
    _save(client, "", "alpha")
    assert _retentions(client) == [["alpha", "7 days (default)"], ["beta", "7 days (default)"]]
    assert "Saved the retention of alpha." in client.get("/settings?saved=alpha").text


@pytest.mark.parametrize("days", ["0", "3651", "1.5", "abc", "-3", "١٢"])
def test_settings_refuse_days_out_of_range_with_a_clear_message(client: Client, days: str) -> None:
    """Anything but a whole number of days from 1 to 3650 is a 400 naming the value; nothing
    changes."""
    ingest(client, recent_run("a", "alpha"))
    status, page = _save(client, days, "alpha")
    assert status == 400
    assert (
        f"The retention of 'alpha' must be a whole number of days from 1 to 3650, got '{days}'."
        in page
    )
    assert _retentions(client) == [["alpha", "14 days (default)"]]


def test_settings_refuse_an_empty_default_and_an_unknown_pipeline(client: Client) -> None:
    """The default needs a value, and a pipeline must exist."""
    status, page = _save(client, "")
    assert status == 400
    assert "The retention of the server-wide default must be a whole number of days" in page
    status, page = _save(client, "5", "nope")
    assert status == 400
    assert "There is no pipeline named 'nope'." in page


def test_settings_need_a_session_when_the_server_has_a_token(database_url: str) -> None:
    """Without the login cookie, the settings form redirects to the login and changes nothing."""
    settings = Settings(database_url=database_url, token="t0ken")
    with TestClient(create_app(settings), base_url=LOCAL) as locked:
        response = locked.post("/settings", data={"days": "3"}, follow_redirects=False)
        assert (response.status_code, response.headers["location"]) == (
            303,
            "/login?next=%2Fsettings",
        )
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT days FROM retention_default").fetchall() == [(14,)]
