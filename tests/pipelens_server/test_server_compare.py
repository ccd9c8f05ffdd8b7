"""Comparing two runs (``GET /api/v1/compare``): steps aligned by key, what changed, the deltas,
and a read that stays bounded for big runs, on a real PostgreSQL."""

from __future__ import annotations

from typing import Any

import msgspec
from _dashboard_kit import MS, ingest, recent_run, table_rows
from _pg_testkit import T0
from litestar import Litestar
from litestar.testing import TestClient

from pipelens.events import Event, RunFinished, RunStarted, StepFinished, StepStarted

Client = TestClient[Litestar]


def _slower_with_extra(run_id: str) -> list[Event]:
    """``recent_run`` whose rerank takes 400 ms and fails, with one more step ``answer.cite``."""
    events = recent_run(run_id, fail=True)
    out: list[Event] = []
    for event in events:
        if isinstance(event, StepFinished) and event.key == "answer.rerank":
            event = msgspec.structs.replace(
                event, end_ns=event.start_ns + 400 * MS, duration_ns=400 * MS
            )
        out.append(event)
    root = next(e for e in events if isinstance(e, StepStarted) and e.key == "answer")
    start = root.start_ns + 250 * MS
    fields: dict[str, Any] = {"run_id": run_id, "step_id": f"{run_id}-c", "parent_id": root.step_id}
    out.insert(-1, StepStarted(**fields, key="answer.cite", name="cite", start_ns=start))
    out.insert(
        -1,
        StepFinished(
            **fields, key="answer.cite", name="cite", start_ns=start, end_ns=start + MS,
            duration_ns=MS, status="completed",
        ),
    )  # fmt: skip
    return out


def _compare(client: Client, **params: Any) -> dict[str, Any]:
    response = client.get("/api/v1/compare", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_compare_aligns_steps_by_key_and_flags_what_changed(client: Client) -> None:
    """Each key is one row with both statuses and durations and the delta; the changed view
    holds the changed steps and their ancestors, in tree order."""
    ingest(client, recent_run("base"))
    ingest(client, _slower_with_extra("new"))
    body = _compare(client, a="base", b="new")
    rows = {row["key"]: row for row in body["rows"]}
    assert [row["key"] for row in body["rows"]] == ["answer", "answer.rerank", "answer.cite"]
    assert (rows["answer.rerank"]["a_status"], rows["answer.rerank"]["b_status"]) == (
        "completed",
        "failed",
    )
    assert rows["answer.rerank"]["delta_ns"] == 300 * MS
    assert (rows["answer.cite"]["a_status"], rows["answer.cite"]["b_status"]) == (None, "completed")
    assert rows["answer"]["changed_under"] == 2
    assert body["counts"] == {
        "a_steps": 3,
        "b_steps": 4,
        "matched": 3,
        "only_a": 0,
        "only_b": 1,
        "status_changed": 2,
        "values_changed": 2,
        "changed": 3,
    }


def test_the_all_view_shows_unchanged_steps_too(client: Client) -> None:
    """``view=all`` holds every key of both runs, the unchanged retrieve included."""
    ingest(client, recent_run("base"))
    ingest(client, _slower_with_extra("new"))
    body = _compare(client, a="base", b="new", view="all")
    assert [row["key"] for row in body["rows"]] == [
        "answer",
        "answer.retrieve",
        "answer.rerank",
        "answer.cite",
    ]
    retrieve = body["rows"][1]
    assert (retrieve["changed"], retrieve["delta_ns"]) == (False, 0)


def test_compare_answers_the_run_time_delta(client: Client) -> None:
    """The run time delta is b's minus a's."""
    ingest(client, recent_run("base"))
    slow = [
        msgspec.structs.replace(e, end_ns=e.start_ns + 500 * MS, duration_ns=500 * MS)
        if isinstance(e, RunFinished)
        else e
        for e in recent_run("slow")
    ]
    ingest(client, slow)
    body = _compare(client, a="base", b="slow")
    assert body["duration_delta_ns"] == 200 * MS
    assert body["a"]["run"]["duration_ns"] == 300 * MS


def test_an_unknown_run_is_a_404_naming_it(client: Client) -> None:
    """An unknown id is a 404 that names it; a missing id is a 400 naming the parameter."""
    ingest(client, recent_run("base"))
    unknown = client.get("/api/v1/compare", params={"a": "base", "b": "nope"})
    assert (unknown.status_code, "nope" in unknown.text) == (404, True)
    missing = client.get("/api/v1/compare", params={"a": "base"})
    assert missing.status_code == 400
    assert "b" in missing.text, missing.text


def _big_run(run_id: str, children: int, slow: set[int], base: int) -> list[Event]:
    """A root with ``children`` children of 1 ms each, ``slow`` ones 5 ms."""
    events: list[Event] = [
        RunStarted(run_id=run_id, pipeline="etl", start_ns=base),
        StepStarted(run_id=run_id, step_id="root", key="loop", name="loop", start_ns=base),
    ]
    for i in range(children):
        took = 5 * MS if i in slow else MS
        begin = base + i * MS
        events.append(
            StepFinished(
                run_id=run_id, step_id=f"s{i}", parent_id="root", key=f"loop.item___{i}",
                name="item", start_ns=begin, end_ns=begin + took, duration_ns=took,
                status="completed",
            )
        )  # fmt: skip
    end = base + (children + 5) * MS
    events.append(
        StepFinished(
            run_id=run_id, step_id="root", key="loop", name="loop", start_ns=base, end_ns=end,
            duration_ns=end - base, status="completed",
        )
    )  # fmt: skip
    events.append(
        RunFinished(
            run_id=run_id, pipeline="etl", start_ns=base, end_ns=end, duration_ns=end - base,
            status="completed", step_count=children + 1,
        )
    )  # fmt: skip
    return events


def test_a_comparison_of_10000_step_runs_reads_a_bounded_number_of_rows(client: Client) -> None:
    """Two runs of 10,001 steps: the changed view answers the three slow items and their root,
    the all view at most ``limit`` rows with the count of the others."""
    steps = 10_000
    ingest(client, _big_run("big-a", steps, set(), T0))
    ingest(client, _big_run("big-b", steps, {17, 5000, 9998}, T0 + 10**12))
    changed = _compare(client, a="big-a", b="big-b")
    assert [row["key"] for row in changed["rows"]] == [
        "loop",
        "loop.item___17",
        "loop.item___5000",
        "loop.item___9998",
    ]
    assert changed["counts"]["changed"] == 3
    every = _compare(client, a="big-a", b="big-b", view="all", limit=100)
    assert (len(every["rows"]), every["more"]) == (100, steps + 1 - 100)
    closed = _compare(client, a="big-a", b="big-b", view="all", collapse="loop")
    assert [(row["key"], row["under"]) for row in closed["rows"]] == [("loop", steps)]


def test_the_compare_page_shows_the_changed_steps_with_both_durations(client: Client) -> None:
    """The page lists the changed rows (status change, only in B) with A, B and the delta,
    the run time delta, and links to every step; "Show all steps" adds the unchanged one."""
    ingest(client, recent_run("base"))
    ingest(client, _slower_with_extra("new"))
    response = client.get("/compare", params={"a": "base", "b": "new"})
    assert response.status_code == 200, response.text
    rows = table_rows(response.text)
    assert rows[2][3] == "+0.0 ms"  # the run time: both took 300 ms
    steps = rows[3:]
    assert [row[0] for row in steps] == [
        "▾ answer values differ",
        "rerank values differ",
        "cite only in B",
    ]
    rerank = next(row for row in steps if row[0].startswith("rerank"))
    assert rerank[1:5] == ["completed → failed", "100.0 ms", "400.0 ms", "+300.0 ms"]
    assert "retrieve" not in response.text.split("compare-layout")[1].split("compare_panel")[0]
    every = client.get("/compare", params={"a": "base", "b": "new", "view": "all"}).text
    assert 'data-key="answer.retrieve"' in every
    assert "Show only changed steps" in every


def test_the_compare_panel_diffs_a_steps_values(client: Client) -> None:
    """A step's panel shows the lines of its result that differ, removed and added."""
    ingest(client, recent_run("base"))
    ingest(client, _slower_with_extra("new"))
    panel = client.get(
        "/compare",
        params={"a": "base", "b": "new", "step": "answer.rerank"},
        headers={"HX-Request": "true", "HX-Target": "compare_panel"},
    )
    assert (panel.status_code, "<html" in panel.text) == (200, False)
    assert '<span class="del">- &#34;d1&#34;</span>' in panel.text
    assert "ValueError: bad doc" in panel.text


def test_the_compare_page_refuses_missing_and_unknown_runs(client: Client) -> None:
    """No b is a 400 saying what to give; an unknown run a 404 naming it; two picked runs
    redirect to the comparison of the older (first picked second) with the newer."""
    ingest(client, recent_run("base"))
    missing = client.get("/compare", params={"a": "base"})
    assert (missing.status_code, "missing: b" in missing.text) == (400, True)
    unknown = client.get("/compare", params={"a": "base", "b": "nope"})
    assert (unknown.status_code, "nope" in unknown.text) == (404, True)
    picked = client.get(
        "/compare", params=[("run", "new"), ("run", "base")], follow_redirects=False
    )
    assert (picked.status_code, picked.headers["location"]) == (302, "/compare?a=base&b=new")


def test_the_run_and_runs_pages_offer_a_comparison(client: Client) -> None:
    """The run page's "compare with" form defaults to the previous run of its pipeline; the
    runs page's to the two newest runs (the older the baseline)."""
    ingest(client, recent_run("older", ago_s=120))
    ingest(client, recent_run("newer", ago_s=60))
    ingest(client, recent_run("other", "etl", ago_s=90))
    run_page = client.get("/runs/newer").text
    assert '<input type="hidden" name="b" value="newer">' in run_page
    assert 'id="compare_a" name="a" value="older"' in run_page
    first = client.get("/runs/older").text
    assert 'id="compare_a" name="a" value=""' in first
    runs_page = client.get("/pipelines/rag/runs").text
    assert 'id="pick_a" name="a" value="older"' in runs_page
    assert 'id="pick_b" name="b" value="newer"' in runs_page
