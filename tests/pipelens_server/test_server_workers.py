"""Several server processes on one database: ``--workers N``, and several ``pipelens serve`` on
one ``--database-url``, with real processes."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import psycopg
import pytest
from _dashboard_kit import ingest, recent_run, running_run
from _pg_testkit import (
    LOCAL,
    MSGPACK,
    data_dir,
    free_port,
    log_events,
    msgpack_body,
    read_rows,
    serve,
    serve_at_once,
)
from litestar import Litestar
from litestar.testing import TestClient
from psycopg_pool import AsyncConnectionPool

from pipelens.events import Batch, Event, RunFinished, RunStarted, StepFinished, StepStarted
from pipelens_server import EmbeddedPostgres, Settings, cli, create_app
from pipelens_server._db._abandon import abandon
from pipelens_server._db._jobs import ABANDON_LOCK, PURGE_LOCK
from pipelens_server._db._migrate import migrations
from pipelens_server._db._retention import CHUNK_RUNS, purge
from pipelens_server._ingest._decode import batch_rows
from pipelens_server._ingest._store import create_staging_tables, store

DAY_S = 86_400
SECOND = 1_000_000_000


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient[Litestar]]:
    """An app whose periodic jobs are off: the tests run them by hand."""
    app = create_app(Settings(database_url=database_url))
    app.state.purge_interval_s = None
    app.state.abandon_check = False
    with TestClient(app, base_url=LOCAL) as test_client:
        yield test_client


def _with_pool(database_url: str, job: Any) -> int:
    async def run() -> int:
        async with AsyncConnectionPool(database_url, min_size=1, max_size=3, open=False) as pool:
            result: int = await job(pool)
            return result

    return asyncio.run(run())


def _run_ids(database_url: str) -> list[str]:
    return [r["run_id"] for r in read_rows(database_url)["runs"]]


def test_a_purge_leaves_the_work_to_the_process_already_purging(
    client: TestClient[Litestar], database_url: str
) -> None:
    """While another session holds the purge lock a purge deletes nothing; once it is free the
    next purge deletes the old run."""
    ingest(client, recent_run("old", ago_s=15 * DAY_S))
    with psycopg.connect(database_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [PURGE_LOCK])
        assert _with_pool(database_url, purge) == 0
        assert _run_ids(database_url) == ["old"]
        other.execute("SELECT pg_advisory_unlock(%s)", [PURGE_LOCK])
    assert _with_pool(database_url, purge) == 1
    assert _run_ids(database_url) == []


def test_an_abandon_check_leaves_the_work_to_the_process_already_checking(
    client: TestClient[Litestar], database_url: str
) -> None:
    """While another session holds the abandon lock a check closes nothing; once it is free the
    next check marks the silent run abandoned."""
    ingest(client, running_run("silent")[0])
    later = time.time_ns() + 3600 * SECOND

    def check(pool: AsyncConnectionPool[Any]) -> Any:
        return abandon(pool, 60.0, now_ns=later)

    with psycopg.connect(database_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [ABANDON_LOCK])
        assert _with_pool(database_url, check) == 0
        assert read_rows(database_url, "silent")["runs"][0]["status"] == "running"
    # The lock went with the other session's end.
    assert _with_pool(database_url, check) == 1
    assert read_rows(database_url, "silent")["runs"][0]["status"] == "abandoned"


@pytest.mark.timeout(300)  # three servers starting at once
def test_processes_starting_at_once_on_an_empty_database_migrate_it_once(
    empty_database_url: str,
) -> None:
    """Three servers started together on a database without a schema all start, and each
    migration file is recorded once."""
    with serve_at_once(3, "--database-url", empty_database_url) as servers:
        for _, url, _ in servers:
            assert httpx.get(f"{url}/readyz").status_code == 200
        with psycopg.connect(empty_database_url) as conn:
            versions = [
                row[0]
                for row in conn.execute("SELECT version FROM schema_migrations ORDER BY version")
            ]
    assert versions == [m.version for m in migrations()]


@pytest.mark.timeout(300)  # three servers starting at once
def test_processes_starting_at_once_purge_the_old_runs_once(
    client: TestClient[Litestar], database_url: str
) -> None:
    """Three servers started together on one database: one of them purges the old runs (more
    than one chunk of them), the others find the work taken or done, and recent runs stay."""
    old = 2 * CHUNK_RUNS + 10
    ingest(client, [e for i in range(old) for e in recent_run(f"old-{i:04d}", ago_s=20 * DAY_S)])
    ingest(client, recent_run("new"))
    with serve_at_once(3, "--database-url", database_url) as servers:
        purged = [
            event["runs"]
            for _, _, log in servers
            for event in log_events(log)
            if event.get("event") == "purged old runs"
        ]
    assert purged == [old]
    assert _run_ids(database_url) == ["new"]


def _long_run(run_id: str, children: int, t0: int) -> list[Event]:
    """A finished run started at ``t0``: a root step and ``children`` steps under it."""
    root = f"{run_id}-root"
    events: list[Event] = [
        RunStarted(run_id=run_id, pipeline="busy", start_ns=t0),
        StepStarted(run_id=run_id, step_id=root, key="main", name="main", start_ns=t0),
    ]
    for i in range(children):
        step_id, start = f"{run_id}-{i}", t0 + (i + 1) * 1000
        common: dict[str, Any] = {
            "run_id": run_id,
            "step_id": step_id,
            "parent_id": root,
            "key": f"main.work___{i}",
            "name": "work",
            "start_ns": start,
        }
        events.append(StepStarted(**common, inputs=f'{{"i":{i}}}'))
        events.append(
            StepFinished(
                **common, end_ns=start + 500, duration_ns=500, status="completed", result=str(i)
            )
        )
    end = t0 + (children + 2) * 1000
    events.append(
        StepFinished(
            run_id=run_id,
            step_id=root,
            key="main",
            name="main",
            start_ns=t0,
            end_ns=end,
            duration_ns=end - t0,
            status="completed",
        )
    )
    events.append(
        RunFinished(
            run_id=run_id,
            pipeline="busy",
            start_ns=t0,
            end_ns=end,
            duration_ns=end - t0,
            status="completed",
            step_count=children + 1,
        )
    )
    return events


def _rows_of(database_url: str, run_id: str) -> dict[str, list[dict[str, Any]]]:
    rows = read_rows(database_url, run_id)
    for table in ("runs", "steps"):
        for row in rows[table]:
            del row["run_id"]
            for column in ("step_id", "parent_id"):  # they name the run too
                if isinstance(row.get(column), str):
                    row[column] = row[column].removeprefix(run_id)
    del rows["pipelines"]
    return rows


@pytest.mark.timeout(400)  # two servers, 80 requests of 40 events: minutes on two shared cores
def test_two_processes_ingesting_the_same_runs_at_once_converge(database_url: str) -> None:
    """Two ``pipelens serve`` on one database each get every batch of the same runs at the same
    time (a client retrying against the other process), in opposite orders, each batch mixing
    runs: every request is stored (202, no deadlock surfacing), and each run's rows are those of
    one in-order delivery, nothing lost or doubled."""
    runs, children = 12, 30
    with serve_at_once(2, "--database-url", database_url) as servers:
        (_, first, first_log), (_, second, second_log) = servers
        t0 = time.time_ns() - 60 * SECOND
        events = [e for n in range(runs) for e in _long_run(f"ref-{n:02d}", children, t0)]
        reference = httpx.post(
            f"{first}/api/v1/events", content=msgpack_body(events), headers=MSGPACK
        )
        assert reference.status_code == 202
        shuffled = [e for n in range(runs) for e in _long_run(f"con-{n:02d}", children, t0)]
        random.Random(13).shuffle(shuffled)
        batches = [shuffled[i : i + 40] for i in range(0, len(shuffled), 40)]
        answers: list[int] = []

        def deliver(url: str, order: list[list[Event]]) -> None:
            with httpx.Client(timeout=60) as http:
                for batch in order:
                    response = http.post(
                        f"{url}/api/v1/events", content=msgpack_body(batch), headers=MSGPACK
                    )
                    answers.append(response.status_code)

        senders = [
            threading.Thread(target=deliver, args=(first, batches)),
            threading.Thread(target=deliver, args=(second, batches[::-1])),
            threading.Thread(target=deliver, args=(first, batches[1::2] + batches[::2])),
            threading.Thread(target=deliver, args=(second, batches[::2] + batches[1::2])),
        ]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        retried = [
            event
            for log in (first_log, second_log)
            for event in log_events(log)
            if event.get("event") == "ingest transaction retried"
        ]
    assert answers == [202] * (4 * len(batches))
    for n in range(runs):
        expected = _rows_of(database_url, f"ref-{n:02d}")
        assert len(expected["steps"]) == children + 1
        assert _rows_of(database_url, f"con-{n:02d}") == expected
    print(f"transactions retried on deadlock or serialization failure: {len(retried)}")


@pytest.mark.timeout(400)
def test_two_processes_given_the_same_new_steps_at_once_store_each_once(database_url: str) -> None:
    """Two ``pipelens serve`` on one database each get the same batches, in emit order as a
    client sends them (batches of new steps, the first ones of a run split from its root's
    finish), at the same time: one process COPYs a batch's new steps, the other waits for the
    run and merges; every request is stored and each run's rows are those of one delivery."""
    runs, children = 6, 40
    with serve_at_once(2, "--database-url", database_url) as servers:
        (_, first, _), (_, second, _) = servers
        t0 = time.time_ns() - 60 * SECOND
        events = [e for n in range(runs) for e in _long_run(f"ref-{n:02d}", children, t0)]
        reference = httpx.post(
            f"{first}/api/v1/events", content=msgpack_body(events), headers=MSGPACK
        )
        assert reference.status_code == 202
        twins = [e for n in range(runs) for e in _long_run(f"con-{n:02d}", children, t0)]
        batches = [twins[i : i + 50] for i in range(0, len(twins), 50)]
        answers: list[int] = []
        ready = threading.Barrier(2)

        def deliver(url: str) -> None:
            with httpx.Client(timeout=60) as http:
                for batch in batches:
                    ready.wait(60)  # both processes get each batch at once
                    response = http.post(
                        f"{url}/api/v1/events", content=msgpack_body(batch), headers=MSGPACK
                    )
                    answers.append(response.status_code)

        senders = [threading.Thread(target=deliver, args=(url,)) for url in (first, second)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
    assert answers == [202] * (2 * len(batches))
    for n in range(runs):
        expected = _rows_of(database_url, f"ref-{n:02d}")
        assert len(expected["steps"]) == children + 1
        assert _rows_of(database_url, f"con-{n:02d}") == expected


def _children_of(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(c) for c in (task / "children").read_text().split())
    return found


@pytest.fixture
def embedded_dir() -> Iterator[Path]:
    """A data dir for an embedded PostgreSQL, whose postmaster a failed test may leave behind."""
    with data_dir() as directory:
        yield directory
        if (pid := EmbeddedPostgres(directory).running_pid()) is not None:
            os.kill(pid, signal.SIGQUIT)


@pytest.mark.timeout(400)  # spawned workers and an initdb: minutes on two shared cores
def test_serve_workers_share_one_port_and_the_embedded_postgres(embedded_dir: Path) -> None:
    """``--workers 2`` runs two worker processes under the serve process, both users of one
    embedded PostgreSQL (the second says it shares it, not that it took over an orphan); a run
    stored through the port reads back, and SIGTERM stops the workers and then PostgreSQL, with
    status 0."""
    directory = embedded_dir
    # Spawned workers each import the server afresh: slow on a busy machine.
    with (
        tempfile.TemporaryFile() as log,
        serve("--workers", "2", "--data-dir", str(directory), stderr=log, ready_s=180) as (
            process,
            url,
        ),
    ):
        embedded = EmbeddedPostgres(directory)
        users: set[int] = set()
        deadline = time.monotonic() + 180  # the first worker ready answers; wait for the other
        while len(users) < 2 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
            users = {int(p) for p in (directory / "embedded-users.txt").read_text().split()}
        workers = _children_of(process.pid)
        assert len(users) == 2
        assert users <= workers
        for n in range(4):  # keep-alive off: any worker may answer each
            posted = httpx.post(
                f"{url}/api/v1/events", content=msgpack_body(recent_run(f"w{n}")), headers=MSGPACK
            )
            assert posted.status_code == 202
        for n in range(4):
            assert httpx.get(f"{url}/api/v1/runs/w{n}").json()["run"]["status"] == "completed"
        assert embedded.running_pid() is not None
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
        assert embedded.running_pid() is None
        said = [event["event"] for event in log_events(log)]
    assert "sharing the embedded PostgreSQL with other server processes" in said
    assert "taking over a PostgreSQL server left running" not in said


@pytest.mark.timeout(300)  # spawned workers each import the server
def test_serve_workers_exits_1_when_the_workers_cannot_start(free_port_url: str) -> None:
    """With an unreachable database no worker starts: the supervisor stops and serve exits 1."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIPELENS_")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelens",
            "serve",
            "--workers",
            "2",
            "--database-url",
            free_port_url,
        ],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr.decode(errors="replace")[-2000:]
    assert b"cannot connect to PostgreSQL" in done.stderr


@pytest.fixture
def free_port_url() -> str:
    """The URL of a PostgreSQL that is not there: a free port on 127.0.0.1."""
    return f"postgresql://nobody@127.0.0.1:{free_port()}/none"


def test_an_ingest_chosen_as_a_deadlock_victim_is_retried_and_stored(database_url: str) -> None:
    """Another transaction holds run b and then asks for run a while an ingest holds a and
    waits for b: PostgreSQL aborts the ingest (the other session waits longer before it looks
    for deadlocks), and the ingest's retry stores the batch once the other commits."""
    started, finished = running_run("a")
    started_b, finished_b = running_run("b")

    async def scenario() -> tuple[str, list[str]]:
        async with AsyncConnectionPool(
            database_url, min_size=1, max_size=2, open=False, configure=create_staging_tables
        ) as pool:
            await store(pool, batch_rows(Batch(events=[*started, *started_b])), timeout=30)
            other = await psycopg.AsyncConnection.connect(database_url)
            try:
                await other.execute("SET deadlock_timeout = '60s'")
                await other.execute("SELECT 1 FROM runs WHERE run_id = 'b' FOR UPDATE")
                rows = batch_rows(Batch(events=[*finished, *finished_b]))
                ingest_task = asyncio.create_task(store(pool, rows, timeout=30))
                while not await _a_backend_waits_for_a_lock(database_url):
                    await asyncio.sleep(0.05)
                # Blocks until PostgreSQL has aborted the ingest's first attempt, which held a.
                await other.execute("UPDATE runs SET attributes = '{\"by\": \"other\"}' "
                                    "WHERE run_id = 'a'")  # fmt: skip
                await other.commit()
            finally:
                await other.close()
            await ingest_task
        with psycopg.connect(database_url) as conn:
            by = conn.execute("SELECT attributes->>'by' FROM runs WHERE run_id = 'a'").fetchone()
            statuses = [r[0] for r in conn.execute("SELECT status FROM runs ORDER BY run_id")]
        assert by is not None
        return by[0], statuses

    assert asyncio.run(scenario()) == ("other", ["completed", "completed"])


async def _a_backend_waits_for_a_lock(database_url: str) -> bool:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        row = await (
            await conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            )
        ).fetchone()
    return row is not None and row[0] > 0


def test_a_worker_takes_its_settings_out_of_the_environment(
    monkeypatch: pytest.MonkeyPatch, database_url: str
) -> None:
    """The token and database URL handed to a worker leave its environment before it starts
    anything (the embedded PostgreSQL, running as another OS user, would inherit them)."""
    settings = Settings(database_url=database_url, token="s3cret-worker-token")
    monkeypatch.setenv(
        "PIPELENS_WORKER_SETTINGS", msgspec.json.encode(settings, enc_hook=str).decode()
    )
    app = cli.worker_app()
    assert app.state.settings.token == "s3cret-worker-token"
    assert "PIPELENS_WORKER_SETTINGS" not in os.environ
    assert not any("s3cret-worker-token" in value for value in os.environ.values())
