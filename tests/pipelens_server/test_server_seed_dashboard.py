"""The seed dashboard's JSON read API (``/api/dashboard/...``) answers in the seed's shapes, on
runs ingested through the seed's own endpoints."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

Client = TestClient[Litestar]
NOW = int(time.time() * 1000) - 60_000  # epoch ms, a minute ago: inside every default range


def _step(key: str, start: int, end: int | None, **extra: Any) -> dict[str, Any]:
    time_ = {"startTs": start, "endTs": end, "timeUsageMs": None if end is None else end - start}
    return {"name": key.rsplit(".", 1)[-1], "key": key, "time": time_, "records": {},
            "result": None, "error": None, **extra}  # fmt: skip


def _meta(run_id: str, root: dict[str, Any], steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {**root, "logVersion": 1, "runId": run_id, "steps": steps}


ROOT = _step("p", NOW, NOW + 30, records={"n": 2})
A = _step("p.a", NOW + 1, NOW + 11, records={"k": "v"}, result="out")
B = _step("p.b", NOW + 12, NOW + 20, error="boom")


def _ingest(client: Client) -> None:
    """Run r1 of p (completed, with a failed step), r2 of p (still running, a second later) and
    r3 of q (a second earlier), each sent as a seed client sends them."""
    started = _step("p", NOW, None)
    posts: list[tuple[str, Any]] = [
        ("pipeline/start", _meta("r1", started, [started])),
        ("step/start", {"runId": "r1", "step": {**A, "records": {}}}),
        ("step/finish", {"runId": "r1", "step": A}),
        ("step/finish", {"runId": "r1", "step": B}),
        (
            "pipeline/finish",
            {"pipelineMeta": _meta("r1", ROOT, [ROOT, A, B]), "status": "completed"},
        ),
        ("pipeline/start", _meta("r2", _step("p", NOW + 1000, None), [])),
        ("pipeline/start", _meta("r3", {**_step("q", NOW - 1000, None), "name": "q"}, [])),
    ]
    for path, body in posts:
        assert client.post(f"/api/ingestion/{path}", json=body).status_code in (200, 201)


@pytest.fixture
def seeded(client: Client) -> Client:
    _ingest(client)
    return client


def test_pipelines_are_names_most_recently_run_first(seeded: Client) -> None:
    """``/pipelines``: a list of names, the latest run's pipeline first."""
    assert seeded.get("/api/dashboard/pipelines").json() == ["p", "q"]


R1 = {"runId": "r1", "pipeline": "p", "startTime": NOW, "endTime": NOW + 30, "duration": 30,
      "status": "completed"}  # fmt: skip
R2 = {"runId": "r2", "pipeline": "p", "startTime": NOW + 1000, "endTime": None, "duration": None,
      "status": "running"}  # fmt: skip


def test_runs_are_a_page_of_run_metas_newest_first(seeded: Client) -> None:
    """``/pipelines/:p/runs``: ``{items, pagination}``, ``page`` and ``pageSize`` page it."""
    first = seeded.get("/api/dashboard/pipelines/p/runs", params={"pageSize": 1}).json()
    second = seeded.get("/api/dashboard/pipelines/p/runs?page=2&pageSize=1").json()
    assert first == {
        "items": [R2],
        "pagination": {"page": 1, "pageSize": 1, "totalItems": 2, "totalPages": 2},
    }
    assert second["items"] == [R1]


@pytest.mark.parametrize(
    ("params", "run_ids"),
    [
        ({"status": "completed"}, ["r1"]),
        ({"runId": "r2"}, ["r2"]),
        ({"startDate": "2000-01-01T00:00:00.000Z"}, ["r2", "r1"]),
        ({"endDate": "2000-01-01T00:00:00.000Z"}, []),
    ],
)
def test_runs_take_the_seeds_filters(
    seeded: Client, params: dict[str, str], run_ids: list[str]
) -> None:
    """``status``, ``runId``, ``startDate`` and ``endDate`` (ISO, as the seed's page sends)."""
    answer = seeded.get("/api/dashboard/pipelines/p/runs", params=params).json()
    assert [r["runId"] for r in answer["items"]] == run_ids
    assert answer["pagination"]["totalItems"] == len(run_ids)


def _seed_step(step: dict[str, Any], records: Any) -> dict[str, Any]:
    """A step as the seed's dashboard answers it: no ``result`` key when there is none."""
    out = {"key": step["key"], "name": step["name"], "time": step["time"], "records": records,
           "error": step["error"]}  # fmt: skip
    if step["result"] is not None:
        out["result"] = step["result"]
    return out


STEPS = [_seed_step(ROOT, {"n": 2}), _seed_step(A, {"k": "v"}), _seed_step(B, {})]


def test_run_data_is_its_meta_and_steps(seeded: Client) -> None:
    """``/runs/:id``: ``{meta, steps}``; an unknown run is a 404 naming it."""
    assert seeded.get("/api/dashboard/runs/r1").json() == {"meta": R1, "steps": STEPS}
    missing = seeded.get("/api/dashboard/runs/nope")
    assert missing.status_code == 404
    assert "nope" in missing.json()["detail"]


def test_run_steps_are_step_metas_in_start_order(seeded: Client) -> None:
    """``/runs/:id/steps``: the run's ``StepMeta`` list; an unknown run has none."""
    assert seeded.get("/api/dashboard/runs/r1/steps").json() == STEPS
    assert seeded.get("/api/dashboard/runs/nope/steps").json() == []


def test_pipeline_steps_are_the_names_of_ended_steps(seeded: Client) -> None:
    """``/pipelines/:p/steps``: sorted names of steps that ended."""
    assert seeded.get("/api/dashboard/pipelines/p/steps").json() == ["a", "b", "p"]
    assert seeded.get("/api/dashboard/pipelines/q/steps").json() == []


def test_a_steps_time_series_has_points_stats_and_pagination(seeded: Client) -> None:
    """``/pipelines/:p/steps/:s/time-series``: the seed's points (ms), figures, pages."""
    answer = seeded.get("/api/dashboard/pipelines/p/steps/a/time-series").json()
    assert answer == {
        "timeSeries": [
            {
                "timestamp": NOW + 11,
                "runId": "r1",
                "value": 10,
                "stepKey": "p.a",
                "stepMeta": _seed_step(A, {"k": "v"}),
                "duration": 10,
            }
        ],
        "stats": {
            "maxDuration": 10,
            "minDuration": 10,
            "avgDuration": 10.0,
            "totalExecutions": 1,
            "errorCount": 0,
            "successCount": 1,
        },
        "pagination": {"page": 1, "pageSize": 10, "totalItems": 1, "totalPages": 1},
    }
    failed = seeded.get("/api/dashboard/pipelines/p/steps/b/time-series").json()["stats"]
    assert (failed["errorCount"], failed["successCount"]) == (1, 0)
    old = {"endDate": "2000-01-01T00:00:00Z"}
    gone = seeded.get("/api/dashboard/pipelines/p/steps/a/time-series", params=old).json()
    assert (gone["timeSeries"], gone["stats"]["totalExecutions"]) == ([], 0)


def test_the_chart_is_the_local_stats_page_of_the_step(seeded: Client) -> None:
    """``.../time-series/chart``: ``{url}`` of our own step stats page, which serves it."""
    url = seeded.get("/api/dashboard/pipelines/p/steps/a/time-series/chart").json()["url"]
    assert url == "http://127.0.0.1/pipelines/p/steps/p.a?range=30d"
    page = seeded.get(url)
    assert page.status_code == 200
    assert "<svg" in page.text
    unknown = seeded.get("/api/dashboard/pipelines/p/steps/zz/time-series/chart").json()
    assert unknown["url"] == "http://127.0.0.1/pipelines/p/steps"


def test_settings_are_the_pipelines_retention(seeded: Client) -> None:
    """``/pipelines/:p/settings``: ``{}`` on the default; a saved ``retentionDays`` (or the
    seed purge's ``dataRetentionDays``) is the pipeline's retention; ``{}`` resets it."""
    path = "/api/dashboard/pipelines/p/settings"
    assert seeded.get(path).json() == {}
    assert seeded.post(path, json={"retentionDays": 30}).json() == {"success": True}
    assert seeded.get(path).json() == {"retentionDays": 30}
    assert seeded.post(path, json={"dataRetentionDays": 7}).status_code == 200
    assert seeded.get(path).json() == {"retentionDays": 7}
    assert seeded.post(path, json={}).status_code == 200
    assert seeded.get(path).json() == {}


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"presetColumns": [], "retentionDays": 3}, "presetColumns"),
        ({"retentionDays": "x"}, "retentionDays"),
        ({"retentionDays": 0}, "retentionDays"),
        ({"retentionDays": True}, "retentionDays"),
        ({"retentionDays": [1]}, "retentionDays"),
        ({"retentionDays": 5, "dataRetentionDays": 6}, "differ"),
        ([1, 2], "JSON object"),
    ],
)
def test_bad_settings_are_a_400_naming_the_field_and_save_nothing(
    seeded: Client, body: Any, named: str
) -> None:
    """An unsupported key or a bad number of days is refused by name; nothing changes."""
    answer = seeded.post("/api/dashboard/pipelines/p/settings", json=body)
    assert answer.status_code == 400
    assert named in json.dumps(answer.json())
    assert seeded.get("/api/dashboard/pipelines/p/settings").json() == {}


def test_import_takes_the_seeds_files_and_answers_per_file(client: Client) -> None:
    """``/import``: multipart ``files``; one result per file in the seed's shape, the good file
    stored (readable through ``/runs/:id``) and the bad one refused by name."""
    export = _meta("imp-1", ROOT, [ROOT, A, B])
    files = [
        ("files", ("run.json", json.dumps(export).encode(), "application/json")),
        ("files", ("bad.json", b'{"logVersion": 1, "runId": "x", "name": 5}', "application/json")),
    ]
    answer = client.post("/api/dashboard/import", files=files).json()
    good, bad = answer["results"]
    assert answer["success"] is True
    assert (good["fileName"], good["status"]) == ("run.json", "success")
    assert good["data"] == {"runId": "imp-1", "startTime": NOW, "endTime": NOW + 30, "stepCount": 3}
    assert (bad["fileName"], bad["status"], "data" in bad) == ("bad.json", "error", False)
    assert "bad.json" in bad["message"]
    assert client.get("/api/dashboard/runs/imp-1").json()["steps"] == STEPS


def test_import_without_files_is_a_400_naming_the_field(client: Client) -> None:
    """No ``files`` part: 400 that says which field to send."""
    answer = client.post("/api/dashboard/import", files=[("other", ("x", b"{}", "text/plain"))])
    assert answer.status_code == 400
    assert "'files'" in answer.json()["detail"]


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("page=0", "page"),
        ("pageSize=x", "pageSize"),
        ("startDate=yesterday", "startDate"),
        # Past what a bigint of nanoseconds holds: the runs list answered a 500 (out of range).
        ("startDate=0001-01-01T00:00", "startDate"),
        ("startDate=9999-12-31T23:59:59", "startDate"),
        ("endDate=0001-01-01T00:00", "endDate"),
        ("endDate=9999-12-31T23:59:59", "endDate"),
    ],
)
def test_bad_query_parameters_are_a_400_naming_them(seeded: Client, query: str, named: str) -> None:
    """A bad ``page``, ``pageSize`` or date is a 400 that names it (never a 5xx)."""
    for path in ("/pipelines/p/runs", "/pipelines/p/steps/a/time-series"):
        answer = seeded.get(f"/api/dashboard{path}?{query}")
        assert answer.status_code == 400
        assert named in json.dumps(answer.json())
