"""Names holding ``/`` (a run id ``2026/12/01-nightly``, a pipeline ``etl/daily``, a step
``load/parse``) are reached by their pages and API routes with ``%2F`` in the URL."""

from __future__ import annotations

import html
import time
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from _dashboard_kit import ingest
from _pg_testkit import MSGPACK, live_server, msgpack_body
from litestar import Litestar
from litestar.testing import TestClient

from pipelens.events import Event, RunFinished, RunStarted, StepFinished, StepStarted
from pipelens_server import Settings, create_app

RUN, PIPELINE, STEP = "2026/12/01-nightly", "etl/daily", "load/parse"
ODD_RUN = "100%/a%2Fb"  # a literal "%2F" and "%" in a name are not separators either
Client = TestClient[Litestar]


def _q(name: str) -> str:
    return quote(name, safe="")


def _run(run_id: str) -> list[Event]:
    start = time.time_ns() - 1_000_000_000
    end = start + 5_000_000
    return [
        RunStarted(run_id=run_id, pipeline=PIPELINE, start_ns=start),
        StepStarted(run_id=run_id, step_id="s1", key=STEP, name=STEP, start_ns=start),
        StepFinished(
            run_id=run_id,
            step_id="s1",
            key=STEP,
            name=STEP,
            start_ns=start,
            end_ns=end,
            duration_ns=5_000_000,
            status="completed",
        ),
        RunFinished(
            run_id=run_id,
            pipeline=PIPELINE,
            start_ns=start,
            end_ns=end,
            duration_ns=5_000_000,
            status="completed",
            step_count=1,
        ),
    ]


@pytest.fixture
def slashed(client: Client) -> Client:
    """A client of a server holding runs whose run id, pipeline and step hold a ``/``."""
    ingest(client, _run(RUN))
    ingest(client, _run(ODD_RUN))
    return client


@pytest.mark.parametrize("run_id", [RUN, ODD_RUN])
def test_the_run_page_and_api_of_a_run_id_with_a_slash(slashed: Client, run_id: str) -> None:
    """``/runs/2026%2F12%2F01-nightly`` and ``/api/v1/runs/...`` answer that run."""
    page = slashed.get(f"/runs/{_q(run_id)}")
    slashed.get(f"/api/v1/runs/{_q(run_id)}")  # twice: the router caches a path's parameters
    api = slashed.get(f"/api/v1/runs/{_q(run_id)}")
    assert (page.status_code, api.status_code) == (200, 200)
    assert run_id in html.unescape(page.text)
    assert api.json()["run"]["run_id"] == run_id
    assert [s["name"] for s in api.json()["steps"]] == [STEP]


def test_the_pages_of_a_pipeline_with_a_slash_link_to_its_runs(slashed: Client) -> None:
    """The pipeline's runs page answers and links to each run with the id encoded."""
    page = slashed.get(f"/pipelines/{_q(PIPELINE)}/runs")
    assert page.status_code == 200
    assert f'href="/runs/{_q(RUN)}"' in page.text
    overview = slashed.get("/")
    assert f"/pipelines/{_q(PIPELINE)}/runs" in html.unescape(overview.text)


def test_the_stats_page_and_api_of_a_step_with_a_slash(slashed: Client) -> None:
    """A step ``load/parse`` of pipeline ``etl/daily``: its page and its API stats."""
    keys = slashed.get(f"/pipelines/{_q(PIPELINE)}/steps")
    page = slashed.get(f"/pipelines/{_q(PIPELINE)}/steps/{_q(STEP)}")
    api = slashed.get(f"/api/v1/pipelines/{_q(PIPELINE)}/steps/{_q(STEP)}/stats")
    series = slashed.get(f"/api/v1/pipelines/{_q(PIPELINE)}/steps/{_q(STEP)}/timeseries")
    assert (keys.status_code, page.status_code, api.status_code, series.status_code) == (
        200,
        200,
        200,
        200,
    )
    assert f"/steps/{_q(STEP)}" in html.unescape(keys.text)
    assert api.json()["stats"]["count"] == 2


def test_from_a_step_of_such_a_run_to_its_stats(slashed: Client) -> None:
    """The step panel's link to the stats of its key redirects to the encoded stats page."""
    response = slashed.get(
        f"/runs/{_q(RUN)}/step-stats", params={"key": STEP}, follow_redirects=False
    )
    assert response.status_code == 302
    assert response.headers["location"].startswith(f"/pipelines/{_q(PIPELINE)}/steps/{_q(STEP)}")


@pytest.fixture
def served(database_url: str) -> Iterator[str]:
    """A real server (uvicorn decodes the path itself: the raw path must win)."""
    with live_server(create_app(Settings(database_url=database_url))) as url:
        yield url


def test_a_real_server_answers_names_with_slashes(served: str) -> None:
    """Over real HTTP the run page, the run API and the step stats API answer."""
    posted = httpx.post(f"{served}/api/v1/events", content=msgpack_body(_run(RUN)), headers=MSGPACK)
    assert posted.status_code == 202
    urls = [
        f"/runs/{_q(RUN)}",
        f"/api/v1/runs/{_q(RUN)}",
        f"/pipelines/{_q(PIPELINE)}/runs",
        f"/pipelines/{_q(PIPELINE)}/steps/{_q(STEP)}",
        f"/api/v1/pipelines/{_q(PIPELINE)}/steps/{_q(STEP)}/stats",
    ]
    assert [httpx.get(served + url).status_code for url in urls] == [200] * len(urls)


def test_a_plain_slash_is_still_a_separator(client: Client) -> None:
    """``/runs/2026/12/01-nightly`` (unencoded) is not the run: 404."""
    ingest(client, _run(RUN))
    assert client.get(f"/api/v1/runs/{RUN}").status_code == 404
