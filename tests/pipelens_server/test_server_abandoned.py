"""Abandoned runs: a client that stops reporting leaves its run ``abandoned``, not ``running``.

A real ``pipelens serve`` with a two-second ``--abandon-after``, real client processes killed with
SIGKILL, the seed's JSON endpoints; every wait polls with a deadline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import msgspec
import psycopg
import pytest
from _pg_testkit import MSGPACK, msgpack_body, serve
from litestar import Litestar
from litestar.testing import TestClient

from pipelens.events import (
    Batch,
    Event,
    RunFinished,
    RunHeartbeat,
    RunStarted,
    StepFinished,
    StepStarted,
)
from pipelens_server._ingest._rows import STATUS_RANK

ABANDON_AFTER_S = 2.0
#: Longer than the timeout plus the check's interval plus a slow machine's delays.
DEADLINE_S = 30.0
MS = 1_000_000


@pytest.fixture
def server(database_url: str) -> Iterator[str]:
    """A real ``pipelens serve`` abandoning runs silent for two seconds; its URL."""
    with serve("--database-url", database_url, "--abandon-after", str(ABANDON_AFTER_S)) as (
        _,
        url,
    ):
        yield url


def _poll(what: str, probe: Callable[[], Any], deadline_s: float = DEADLINE_S) -> Any:
    """``probe()``'s first truthy answer, or a failure naming ``what`` at the deadline."""
    deadline = time.monotonic() + deadline_s
    while True:
        if answer := probe():
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _run(url: str, run_id: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/api/v1/runs/{run_id}")
    return response.json() if response.status_code == 200 else {}


def _status(url: str, run_id: str) -> str | None:
    run = _run(url, run_id)
    return run["run"]["status"] if run else None


def _post(url: str, events: list[Event]) -> None:
    response = httpx.post(f"{url}/api/v1/events", content=msgpack_body(events), headers=MSGPACK)
    assert response.status_code == 202, response.text


def _client(url: str, pipeline: str, body: str, heartbeat: float) -> subprocess.Popen[str]:
    """A client process reporting one run of ``pipeline`` through our ``HttpTransport``; it
    prints ``ready`` once the run's first events reached the server, then runs ``body`` (one
    statement) inside a child step."""
    script = "\n".join(
        [
            "import time",
            "import pipelens",
            "from pipelens import HttpTransport",
            f"pipelens.configure(transport=HttpTransport({url!r}, spool=False, interval=0.05,"
            f" heartbeat={heartbeat!r}))",
            "@pipelens.step",
            "def work():",
            "    pipelens.flush(10)",
            "    print('ready', flush=True)",
            f"    {body}",
            f"@pipelens.step(name={pipeline!r})",
            "def root():",
            "    work()",
            "root()",
            "pipelens.flush(10)",
        ]
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELENS_")}
    return subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True
    )


def _run_id_of(url: str, pipeline: str) -> str:
    def probe() -> str | None:
        runs = httpx.get(f"{url}/api/v1/runs", params={"pipeline": pipeline}).json()["runs"]
        return runs[0]["run_id"] if runs else None

    run_id: str = _poll(f"a run of {pipeline}", probe)
    return run_id


def test_a_sigkilled_client_leaves_its_run_and_open_steps_abandoned(server: str) -> None:
    """A client killed mid-step: its run and both open steps turn ``abandoned``, with an end,
    in the API, the API's status filter and the runs page's filter."""
    client = _client(server, "killed", "time.sleep(3600)", heartbeat=0.2)
    try:
        assert client.stdout is not None
        assert client.stdout.readline().strip() == "ready"
        run_id = _run_id_of(server, "killed")
        assert _status(server, run_id) == "running"
        client.send_signal(signal.SIGKILL)
        client.wait(30)
    finally:
        if client.poll() is None:
            client.kill()
        client.wait(30)
        if client.stdout is not None:
            client.stdout.close()
    _poll("the run to be abandoned", lambda: _status(server, run_id) == "abandoned")
    detail = _run(server, run_id)
    steps = {step["name"]: step for step in detail["steps"]}
    assert {name: step["status"] for name, step in steps.items()} == {
        "killed": "abandoned",
        "work": "abandoned",
    }
    assert detail["run"]["end_ns"] >= detail["run"]["start_ns"]
    assert all(step["end_ns"] >= step["start_ns"] for step in steps.values())
    listed = httpx.get(f"{server}/api/v1/runs", params={"status": "abandoned"}).json()["runs"]
    assert [r["run_id"] for r in listed] == [run_id]
    running = httpx.get(f"{server}/api/v1/runs", params={"status": "running"}).json()["runs"]
    assert running == []
    page = httpx.get(f"{server}/pipelines/killed/runs", params={"status": "abandoned"})
    assert page.status_code == 200
    assert run_id in page.text
    assert '<option value="abandoned" selected>' in page.text
    overview = httpx.get(f"{server}/api/v1/pipelines").json()["pipelines"]
    assert [(p["name"], p["running"], p["abandoned"]) for p in overview] == [("killed", 0, 1)]
    # The run page stops polling an abandoned run.
    live = httpx.get(
        f"{server}/runs/{run_id}", headers={"HX-Request": "true", "HX-Target": "run_live"}
    )
    assert live.status_code == 286


def test_heartbeats_keep_a_long_silent_step_running(server: str) -> None:
    """A step that works three timeouts long without an event stays ``running`` throughout
    (the client's heartbeats), then its run completes."""
    silence_s = 3 * ABANDON_AFTER_S
    client = _client(server, "patient", f"time.sleep({silence_s})", heartbeat=0.3)
    try:
        assert client.stdout is not None
        assert client.stdout.readline().strip() == "ready"
        run_id = _run_id_of(server, "patient")
        seen: list[str | None] = []
        running_at: list[float] = []  # when each "running" was seen (monotonic seconds)
        while client.poll() is None:
            status = _status(server, run_id)
            seen.append(status)
            if status == "running":
                running_at.append(time.monotonic())
            time.sleep(0.2)
        assert client.returncode == 0
    finally:
        if client.poll() is None:
            client.kill()
        client.wait(30)
        if client.stdout is not None:
            client.stdout.close()
    final = _poll("the run to complete", lambda: _status(server, run_id) == "completed")
    assert final
    # Watched through the whole silence (running), and never abandoned on the way: "running"
    # was still seen well past the time a run without heartbeats is abandoned (however few
    # polls a loaded machine managed).
    assert "abandoned" not in seen, seen
    assert running_at, seen
    assert running_at[-1] - running_at[0] >= 2 * ABANDON_AFTER_S, seen


def test_a_late_finish_converges_and_a_late_start_never_reopens(server: str) -> None:
    """An abandoned run's late finish makes it ``completed``; a start arriving after that
    changes nothing, and a new step started late in an abandoned run is closed too."""
    now = time.time_ns()
    start = RunStarted(run_id="late", pipeline="late", start_ns=now)
    step = StepStarted(run_id="late", step_id="s1", key="late", name="late", start_ns=now)
    _post(server, [start, step])
    _poll("the run to be abandoned", lambda: _status(server, "late") == "abandoned")
    assert _run(server, "late")["steps"][0]["status"] == "abandoned"
    # A step the killed client started after all: the run stays abandoned, the step is closed.
    child = StepStarted(
        run_id="late", step_id="s2", parent_id="s1", key="late.child", name="child", start_ns=now
    )
    _post(server, [child])
    assert _status(server, "late") == "abandoned"
    _poll(
        "the late step to be closed",
        lambda: (
            {s["key"]: s["status"] for s in _run(server, "late")["steps"]}
            == {"late": "abandoned", "late.child": "abandoned"}
        ),
    )
    end = now + 50 * MS
    finished = StepFinished(
        run_id="late", step_id="s1", key="late", name="late", start_ns=now, end_ns=end,
        duration_ns=end - now, status="completed",
    )  # fmt: skip
    run_end = RunFinished(
        run_id="late", pipeline="late", start_ns=now, end_ns=end, duration_ns=end - now,
        status="completed", step_count=1,
    )  # fmt: skip
    _post(server, [finished, run_end])
    detail = _run(server, "late")
    assert (detail["run"]["status"], detail["run"]["end_ns"]) == ("completed", end)
    assert {s["key"]: s["status"] for s in detail["steps"]}["late"] == "completed"
    _post(server, [start, step])  # resent starts
    assert _status(server, "late") == "completed"
    assert {s["key"]: s["status"] for s in _run(server, "late")["steps"]}["late"] == "completed"


def test_a_seed_run_that_stops_sending_turns_abandoned(server: str) -> None:
    """The seed's protocol has no heartbeat: a run whose client stops after its first step's
    start is abandoned after the timeout, with that step."""
    ms = time.time_ns() // MS
    root = {"name": "seedy", "key": "seedy", "time": {"startTs": ms}, "records": {}}
    pipeline = {**root, "logVersion": 1, "runId": "seed-1", "steps": [root]}
    for path, body in [
        ("/api/ingestion/pipeline/start", pipeline),
        ("/api/ingestion/step/start", {"runId": "seed-1", "step": root}),
    ]:
        assert httpx.post(f"{server}{path}", json=body).status_code == 201
    assert _status(server, "seed-1") == "running"
    _poll("the seed run to be abandoned", lambda: _status(server, "seed-1") == "abandoned")
    assert [s["status"] for s in _run(server, "seed-1")["steps"]] == ["abandoned"]


def test_the_sql_status_rank_agrees_with_the_python_merge_rule(database_url: str) -> None:
    """``pipelens_status_rank`` (migration 0009) orders statuses as ``STATUS_RANK`` does, with
    ``abandoned`` between running and the final statuses."""
    with psycopg.connect(database_url) as conn:
        ranks = {
            status: conn.execute("SELECT pipelens_status_rank(%s)", (status,)).fetchone()[0]
            for status in STATUS_RANK
        }
    assert ranks == STATUS_RANK
    assert sorted(STATUS_RANK, key=STATUS_RANK.__getitem__) == [
        "running", "abandoned", "completed", "cancelled", "failed",
    ]  # fmt: skip


def _last_seen(database_url: str, run_id: str) -> int:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT last_seen_ns FROM runs WHERE run_id = %s", (run_id,)).fetchone()
    assert row is not None
    return int(row[0])


def _seen_ago(database_url: str, run_id: str, seconds: int) -> int:
    """Set the run last seen ``seconds`` before the database's now; that time."""
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "UPDATE runs SET last_seen_ns = (extract(epoch FROM clock_timestamp()) * 1e9)::bigint"
            " - %s * 1000000000::bigint WHERE run_id = %s",
            (seconds, run_id),
        )
    return _last_seen(database_url, run_id)


def _beat(client: TestClient[Litestar], run_id: str, at_ns: int) -> None:
    body = msgspec.msgpack.encode(
        Batch(events=[], heartbeats=[RunHeartbeat(run_id=run_id, at_ns=at_ns)])
    )
    response = client.post("/api/v1/events", content=body, headers=MSGPACK)
    assert response.status_code == 202, response.text


def test_a_replayed_heartbeat_counts_at_its_own_time(
    client: TestClient[Litestar], database_url: str
) -> None:
    """A heartbeat replayed from the spool by a later process carries its original ``at_ns``:
    the run counts as seen then, not now, so a dead run is not kept alive one more timeout. A
    fresh heartbeat moves the run forward; one from a clock ahead stops at the server's now."""
    start = RunStarted(run_id="beat", pipeline="beat", start_ns=time.time_ns())
    response = client.post("/api/v1/events", content=msgpack_body([start]), headers=MSGPACK)
    assert response.status_code == 202
    old = _seen_ago(database_url, "beat", 300)  # the default timeout is 600 s
    _beat(client, "beat", old - 60 * 10**9)  # sent before the last event the server had
    assert _last_seen(database_url, "beat") == old
    _beat(client, "beat", old + 60 * 10**9)  # replayed: a minute later than that, not now
    assert _last_seen(database_url, "beat") == old + 60 * 10**9
    before = time.time_ns()
    _beat(client, "beat", before)  # a live client's
    assert _last_seen(database_url, "beat") >= before - 10**9
    _seen_ago(database_url, "beat", 300)
    _beat(client, "beat", 2**64 - 1)  # a clock far ahead (or a bad number): now, no 5xx
    assert before - 10**9 <= _last_seen(database_url, "beat") <= time.time_ns() + 10**9
