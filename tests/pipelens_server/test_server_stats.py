"""Step statistics (page and API), the pipelines API, the run list's filters and pages, and the
OpenAPI schema, through the Litestar test client on a real PostgreSQL."""

from __future__ import annotations

import re
import time
from datetime import UTC

import psycopg
import pytest
from _dashboard_kit import MS, SECOND, at, ingest, recent_run, table_rows
from _pg_testkit import LOCAL, T0, run_events
from litestar import Litestar
from litestar.testing import TestClient
from psycopg import sql

from pipelens_server import Settings, create_app
from pipelens_server._pages import _stats_chart
from pipelens_server._read._stats import _STATS, Bucket, Point, Series, _where

Client = TestClient[Litestar]
RETRIEVE = "/pipelines/rag/steps/answer.retrieve"
API = "/api/v1/pipelines/rag/steps"


def _five_runs(client: Client) -> None:
    """Runs r1..r5, a minute apart; their retrieve step took 100, 200, ... 500 ms and r2's and
    r4's rerank failed."""
    now = time.time_ns()
    for i in range(1, 6):
        events = run_events(f"r{i}", fail=i in (2, 4))
        ingest(client, at(events, now - (10 - i) * 60 * SECOND, scale=i * MS))


def _bulk(database_url: str, n: int, keys: tuple[str, ...] = ("work",)) -> None:
    """``n`` runs of pipeline ``bulk``, one a second up to now, each with one step per key whose
    duration is 1..97 ms; every 50th run's steps failed."""
    now = time.time_ns()
    with psycopg.connect(database_url) as conn:
        conn.execute("INSERT INTO pipelines (name) VALUES ('bulk')")
        conn.execute(
            "INSERT INTO runs (run_id, pipeline, status, start_ns) "
            "SELECT 'b' || i, 'bulk', 'completed', %s - (%s - i) * 1000000000::bigint "
            "FROM generate_series(1, %s) i",
            [now, n, n],
        )
        for key in keys:
            conn.execute(
                "INSERT INTO steps (run_id, key, pipeline, step_id, name, status, start_ns, "
                "duration_ns) "
                "SELECT 'b' || i, %s, 'bulk', %s || i, %s, "
                "CASE WHEN i %% 50 = 0 THEN 'failed' ELSE 'completed' END, "
                "%s - (%s - i) * 1000000000::bigint, (i %% 97 + 1) * 1000000::bigint "
                "FROM generate_series(1, %s) i",
                [key, key, key, now, n, n],
            )
        conn.execute("ANALYZE steps")


def test_step_stats_api_has_count_error_rate_and_duration_percentiles(client: Client) -> None:
    """Count, error rate and min/avg/p50/p95/p99/max (percentile_cont) of one step key."""
    _five_runs(client)
    body = client.get(f"{API}/answer.retrieve/stats", params={"range": "1h"}).json()
    stats = body["stats"]
    assert {k: stats[k] for k in ("key", "count", "failed", "error_rate", "finished")} == {
        "key": "answer.retrieve",
        "count": 5,
        "failed": 0,
        "error_rate": 0.0,
        "finished": 5,
    }
    figures = [stats[k] for k in ("min_ns", "avg_ns", "p50_ns", "p95_ns", "p99_ns", "max_ns")]
    assert figures == [100 * MS, 300 * MS, 300 * MS, 480 * MS, 496 * MS, 500 * MS]
    rerank = client.get(f"{API}/answer.rerank/stats", params={"range": "1h"}).json()["stats"]
    assert (rerank["count"], rerank["failed"], rerank["error_rate"]) == (5, 2, 0.4)


def test_step_stats_are_per_key_pipeline_and_range(client: Client) -> None:
    """Another key, another pipeline or a run outside the range is not counted."""
    _five_runs(client)
    ingest(client, recent_run("other", "beta"))
    ingest(client, at(run_events("old"), time.time_ns() - 3 * 3600 * SECOND, scale=MS))

    def count(pipeline: str, key: str, range_: str) -> int:
        url = f"/api/v1/pipelines/{pipeline}/steps/{key}/stats"
        return int(client.get(url, params={"range": range_}).json()["stats"]["count"])

    assert [count("rag", "answer.retrieve", r) for r in ("1h", "6h")] == [5, 6]
    assert count("rag", "answer", "1h") == 5
    assert count("rag", "retrieve", "1h") == 0  # a name is not a key
    assert count("beta", "answer.retrieve", "1h") == 1


def test_stats_page_shows_the_figures_a_point_per_step_and_linked_runs(client: Client) -> None:
    """The page's table has the figures, the SVG one point per step, and the slowest and the
    failed runs link to the step in their run."""
    _five_runs(client)
    html = client.get("/pipelines/rag/steps/answer.rerank", params={"range": "1h"}).text
    figures, *runs = table_rows(html)
    assert figures == ["5", "40.0 %", "100.0 ms", "300.0 ms", "300.0 ms", "480.0 ms", "496.0 ms",
                       "500.0 ms"]  # fmt: skip
    assert len(re.findall(r'<circle class="point completed"', html)) == 3
    assert len(re.findall(r'<circle class="point failed"', html)) == 2
    assert 'data-downsampled="false"' in html
    slowest, failed = runs[:5], runs[5:]
    assert [r[0] for r in slowest] == ["r5", "r4", "r3", "r2", "r1"]
    assert [(r[0], r[3]) for r in failed] == [
        ("r4", "ValueError: bad doc"),
        ("r2", "ValueError: bad doc"),
    ]
    assert 'href="/runs/r4?step=answer.rerank"' in html


def test_many_points_are_downsampled_per_time_bucket_keeping_min_and_max(
    client: Client, database_url: str
) -> None:
    """Above max_points the series is min/avg/max per time bucket over every step in range."""
    _bulk(database_url, 3000)
    url = "/api/v1/pipelines/bulk/steps/work/timeseries"
    series = client.get(url, params={"range": "24h"}).json()["series"]
    buckets = series["buckets"]
    assert (series["downsampled"], series["total"], series["points"]) == (True, 3000, [])
    assert sum(b["count"] for b in buckets) == 3000
    assert sum(b["failed"] for b in buckets) == 60
    assert (min(b["min_ns"] for b in buckets), max(b["max_ns"] for b in buckets)) == (MS, 97 * MS)
    assert all(b["min_ns"] <= b["avg_ns"] <= b["max_ns"] for b in buckets)
    raw = client.get(url, params={"range": "24h", "max_points": 5000}).json()["series"]
    assert (raw["downsampled"], len(raw["points"])) == (False, 3000)
    html = client.get("/pipelines/bulk/steps/work").text
    assert ('data-downsampled="true"' in html, "<circle" in html) == (True, False)
    assert '<polygon class="band"' in html


def test_stats_query_reads_the_pipeline_path_start_index(client: Client, database_url: str) -> None:
    """On a few thousand steps of a dozen keys, the stats query scans the steps index."""
    _bulk(database_url, 400, keys=(*(f"step{i}" for i in range(11)), "work"))
    where, params = _where("bulk", "work", time.time_ns() - 3600 * SECOND, None)
    with psycopg.connect(database_url) as conn:
        query = sql.SQL("EXPLAIN ") + sql.SQL(_STATS).format(where)
        plan = "\n".join(row[0] for row in conn.execute(query, params).fetchall())
    assert "steps_pipeline_path_start_idx" in plan, plan


def test_run_step_panel_links_to_the_stats_of_its_key(client: Client) -> None:
    """The step panel's stats link leads to the stats page of that step's key."""
    ingest(client, recent_run("r1"))
    panel = client.get("/runs/r1", params={"step": "answer.retrieve"}).text
    assert 'href="/runs/r1/step-stats?key=answer.retrieve"' in panel
    response = client.get("/runs/r1/step-stats?key=answer.retrieve", follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (
        302,
        "/pipelines/rag/steps/answer.retrieve?range=7d",
    )
    missing = client.get("/runs/nope/step-stats?key=answer", follow_redirects=False)
    assert (missing.status_code, "nope" in missing.text) == (404, True)


def test_step_keys_page_links_every_key_to_its_stats(client: Client) -> None:
    """A pipeline's steps page lists each key once with its count, linked to its stats."""
    _five_runs(client)
    html = client.get("/pipelines/rag/steps", params={"range": "1h"}).text
    assert table_rows(html) == [["answer", "5"], ["answer.rerank", "5"], ["answer.retrieve", "5"]]
    assert f'href="{RETRIEVE}?range=1h"' in html


def test_stats_page_without_steps_in_range_says_so(client: Client) -> None:
    """A key with no step in the range shows an empty state, not a chart."""
    html = client.get(RETRIEVE, params={"range": "5m"}).text
    assert "No step answer.retrieve of rag started in this time range." in html
    assert "<svg" not in html.split("<main", 1)[1]


def test_pipelines_api_has_the_overview_figures(client: Client) -> None:
    """``GET /api/v1/pipelines`` answers each pipeline's runs, failures, rate and p50/p95."""
    ingest(client, recent_run("a1", "alpha"))
    ingest(client, recent_run("a2", "alpha", fail=True))
    body = client.get("/api/v1/pipelines", params={"range": "1h"}).json()
    [alpha] = body["pipelines"]
    assert {k: alpha[k] for k in ("name", "runs", "failed", "error_rate", "p50_ns")} == {
        "name": "alpha",
        "runs": 2,
        "failed": 1,
        "error_rate": 0.5,
        "p50_ns": 300 * MS,
    }


def test_run_list_api_pages_through_every_run_once_with_filters(client: Client) -> None:
    """``after`` = the previous ``next`` visits each run once; ``range`` and ``q`` filter."""
    ingest(client, [e for i in range(7) for e in recent_run(f"job_{i}", ago_s=100 - i)])
    ingest(client, recent_run("jobX", ago_s=200))
    ingest(client, recent_run("old_1", ago_s=7200))
    seen: list[str] = []
    params = {"limit": "3", "range": "1h", "q": "job_"}
    while True:
        body = client.get("/api/v1/runs", params=params).json()
        seen += [r["run_id"] for r in body["runs"]]
        if body["next"] is None:
            break
        params["after"] = body["next"]
    assert seen == [f"job_{i}" for i in reversed(range(7))]
    everything = client.get("/api/v1/runs").json()
    assert (len(everything["runs"]), everything["next"]) == (9, None)


def test_run_list_api_refuses_a_bad_cursor_and_range(client: Client) -> None:
    """A malformed ``after`` or an unknown ``range`` is a 400 that names it."""
    bad_cursor = client.get("/api/v1/runs", params={"after": "yesterday"})
    bad_range = client.get("/api/v1/runs", params={"range": "3w"})
    assert (bad_cursor.status_code, "start_ns:run_id" in bad_cursor.json()["detail"]) == (400, True)
    assert (bad_range.status_code, "range" in bad_range.text) == (400, True)


def test_stats_api_refuses_an_end_before_the_start(client: Client) -> None:
    """``until_ns`` at or before ``since_ns`` is a 400 naming both."""
    response = client.get(f"{API}/answer/stats", params={"since_ns": 100, "until_ns": 50})
    assert response.status_code == 400
    assert "until_ns=50" in response.json()["detail"]


@pytest.mark.parametrize("path", ["/schema/openapi.json", "/schema"])
def test_openapi_schema_lists_the_read_api(client: Client, path: str) -> None:
    """The OpenAPI schema documents the read endpoints and their token, not the pages."""
    schema = client.get(path).json()
    paths = set(schema["paths"])
    assert {
        "/api/v1/pipelines",
        "/api/v1/runs",
        "/api/v1/runs/{run_id}",
        "/api/v1/pipelines/{name}/steps/{key}/stats",
        "/api/v1/pipelines/{name}/steps/{key}/timeseries",
    } <= paths
    assert "/pipelines/{name}/steps/{key}" not in paths
    assert schema["paths"]["/api/v1/pipelines"]["get"]["security"] == [{"token": []}]
    run_params = {p["name"] for p in schema["paths"]["/api/v1/runs"]["get"]["parameters"]}
    assert {"limit", "pipeline", "status", "range", "q", "after"} <= run_params


def test_runs_page_links_to_the_step_keys_of_its_pipeline(client: Client) -> None:
    """The runs page links to its pipeline's step keys, each of which has a stats page."""
    ingest(client, recent_run("r1"))
    html = client.get("/pipelines/rag/runs").text
    assert '<a href="/pipelines/rag/steps">Step statistics</a>' in html


def test_stats_need_the_token_when_the_server_has_one(database_url: str) -> None:
    """With a token, the stats API answers 401 without it and the page asks for a login."""
    app = create_app(Settings(database_url=database_url, token="stats-token"))
    with TestClient(app, base_url=LOCAL) as client:
        api = client.get(f"{API}/answer/stats")
        page = client.get(RETRIEVE, follow_redirects=False)
        bearer = {"Authorization": "Bearer stats-token"}
        authorised = client.get(f"{API}/answer/stats", headers=bearer)
    assert (api.status_code, authorised.status_code) == (401, 200)
    assert (page.status_code, page.headers["location"].startswith("/login")) == (303, True)


def test_chart_puts_the_first_step_left_and_the_slowest_at_the_top() -> None:
    """Points are placed by start time (x) and duration (y, up is slower) inside the plot."""
    points = [
        Point(start_ns=T0, duration_ns=50, status="completed", run_id="a"),
        Point(start_ns=T0 + 10, duration_ns=100, status="failed", run_id="b"),
        Point(start_ns=T0 + 20, duration_ns=0, status="completed", run_id="c"),
    ]
    series = Series(downsampled=False, total=3, bucket_ns=None, points=points, buckets=[])
    chart = _stats_chart.layout(series, UTC)
    assert chart is not None
    bottom = chart.height - chart.bottom
    assert [(d.x, d.y, d.status) for d in chart.dots] == [
        (chart.left, chart.top + (bottom - chart.top) / 2, "completed"),
        (chart.left + (chart.width - chart.left - chart.right) / 2, chart.top, "failed"),
        (chart.width - chart.right, bottom, "completed"),
    ]
    assert (
        _stats_chart.layout(
            Series(downsampled=False, total=0, bucket_ns=None, points=[], buckets=[]), UTC
        )
        is None
    )


def test_downsampled_chart_draws_a_min_max_band_and_a_mean_line() -> None:
    """Each bucket gives the band a point at its max and one at its min, the line its mean."""
    buckets = [
        Bucket(start_ns=T0, count=3, failed=0, min_ns=10, avg_ns=20.0, max_ns=40),
        Bucket(start_ns=T0 + 12 * SECOND, count=2, failed=1, min_ns=0, avg_ns=10.0, max_ns=20),
    ]
    series = Series(downsampled=True, total=5, bucket_ns=12 * SECOND, points=[], buckets=buckets)
    chart = _stats_chart.layout(series, UTC)
    assert chart is not None
    assert (len(chart.band.split()), len(chart.mean.split()), len(chart.failed_x)) == (4, 2, 1)
    assert (chart.bucket, chart.dots) == ("12 s", [])
