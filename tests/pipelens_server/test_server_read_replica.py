"""``--read-database-url``: GET requests read from a second database (a read replica), writes go
to the primary."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import pytest
from _dashboard_kit import form_token, ingest, recent_run
from _pg_testkit import LOCAL, MSGPACK, data_dir, free_port, log_events, msgpack_body, serve
from litestar.testing import TestClient

from pipelens_server import EmbeddedPostgres, Settings, create_app, migrate
from pipelens_server._db._lifespan import _open_read_pool
from pipelens_server._db._watchdog import READ_REPLICA


def _migrate(conninfo: str) -> None:
    async def run() -> None:
        async with await psycopg.AsyncConnection.connect(conninfo) as conn:
            await migrate(conn)

    asyncio.run(run())


def test_reads_pointed_at_the_same_database_see_what_ingest_wrote(database_url: str) -> None:
    """With the read URL naming the primary itself, a stored run reads back on the API and the
    pages, and a form still writes (the settings page)."""
    settings = Settings(database_url=database_url, read_database_url=database_url)
    with TestClient(create_app(settings), base_url=LOCAL) as client:
        ingest(client, recent_run("r1"))
        assert client.get("/api/v1/runs/r1").json()["run"]["status"] == "completed"
        assert client.get("/api/v1/runs").json()["runs"][0]["run_id"] == "r1"
        assert "r1" in client.get("/pipelines/rag/runs").text
        assert client.get("/runs/r1").status_code == 200
        form = {"days": "7", "csrf_token": form_token(client)}
        assert client.post("/settings", data=form, follow_redirects=False).status_code == 303
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT days FROM retention_default").fetchone() == (7,)


def test_gets_read_the_read_database_and_writes_go_to_the_primary(
    database_url: str, empty_database_url: str
) -> None:
    """A run stored only in the read database is what GET answers; a run posted to the server
    is stored in the primary, and not read back until the replica has it."""
    replica = empty_database_url
    _migrate(replica)
    with TestClient(create_app(Settings(database_url=replica)), base_url=LOCAL) as only_replica:
        ingest(only_replica, recent_run("on-replica"))
    settings = Settings(database_url=database_url, read_database_url=replica)
    with TestClient(create_app(settings), base_url=LOCAL) as client:
        ingest(client, recent_run("posted"))
        assert client.get("/api/v1/runs/on-replica").status_code == 200
        assert client.get("/api/v1/runs/posted").status_code == 404
    with psycopg.connect(database_url) as conn:
        stored = [row[0] for row in conn.execute("SELECT run_id FROM runs ORDER BY run_id")]
    assert stored == ["posted"]


def test_the_read_pool_refuses_writes(database_url: str) -> None:
    """The read pool's sessions are read-only even on the primary: a GET that wrote would fail
    there as it would on a replica."""

    async def write_through_read_pool() -> str:
        pool = await _open_read_pool(Settings(read_database_url=database_url))
        assert pool is not None
        try:
            async with pool.connection() as conn:
                await conn.execute("INSERT INTO pipelines (name) VALUES ('x')")
        except psycopg.errors.ReadOnlySqlTransaction as exc:
            return type(exc).__name__
        finally:
            await pool.close()
        return "written"

    assert asyncio.run(write_through_read_pool()) == "ReadOnlySqlTransaction"


def _poll(what: str, probe: Callable[[], Any], deadline_s: float = 30) -> Any:
    """``probe()``'s first truthy answer, or a failure naming ``what`` at the deadline."""
    deadline = time.monotonic() + deadline_s
    while not (answer := probe()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return answer


def _status(url: str) -> int:
    return httpx.get(url, timeout=30).status_code


@pytest.mark.timeout(180)
def test_reads_go_to_the_primary_while_the_read_database_is_away(database_url: str) -> None:
    """A real ``pipelens serve`` reading from a second PostgreSQL: stopped, the server's reads
    go to the primary (a run only there reads back, pages too; ``/readyz`` answers 200 and says
    so; the log says so once); started again, reads go back to it by themselves."""
    with data_dir() as directory, tempfile.TemporaryFile() as log:
        replica = EmbeddedPostgres(directory / "replica")
        read_url = replica.start()
        try:
            _migrate(read_url)
            with TestClient(create_app(Settings(database_url=read_url)), base_url=LOCAL) as only:
                ingest(only, recent_run("on-replica"))
            args = ("--database-url", database_url, "--read-database-url", read_url)
            with serve(*args, stderr=log) as (_, url):
                posted = httpx.post(
                    f"{url}/api/v1/events",
                    content=msgpack_body(recent_run("posted")),
                    headers=MSGPACK,
                    timeout=30,
                )
                assert posted.status_code == 202, posted.text
                assert _status(f"{url}/api/v1/runs/on-replica") == 200
                assert _status(f"{url}/api/v1/runs/posted") == 404  # not on the replica
                assert httpx.get(f"{url}/readyz").json() == {"status": "ready"}

                replica.stop()
                _poll("reads from the primary", lambda: _status(f"{url}/api/v1/runs/posted") == 200)
                assert _status(f"{url}/runs/posted") == 200
                assert _status(f"{url}/api/v1/runs/on-replica") == 404
                ready = httpx.get(f"{url}/readyz")
                assert ready.status_code == 200
                assert ready.json()["reads"].endswith("reads go to the primary meanwhile")

                assert replica.start() == read_url
                _poll("reads from the replica", lambda: _status(f"{url}/api/v1/runs/posted") == 404)
                assert _status(f"{url}/api/v1/runs/on-replica") == 200
                assert httpx.get(f"{url}/readyz").json() == {"status": "ready"}
            events = [event["event"] for event in log_events(log)]
            assert events.count(READ_REPLICA.log_down) == 1, events
            assert events.count(READ_REPLICA.log_up) == 1, events
        finally:
            replica.stop()


def test_the_server_starts_with_the_read_database_unreachable(database_url: str) -> None:
    """A read URL at a closed port does not stop start-up: GET requests read the primary and
    ``/readyz`` answers 200 and says reads go to the primary."""
    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/pipelens"
    settings = Settings(database_url=database_url, read_database_url=unreachable)
    with TestClient(create_app(settings), base_url=LOCAL) as client:
        ingest(client, recent_run("posted"))
        assert client.get("/api/v1/runs/posted").json()["run"]["status"] == "completed"
        assert client.get("/runs/posted").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["reads"].endswith("reads go to the primary meanwhile")


@pytest.mark.timeout(180)
def test_a_read_database_that_comes_after_start_up_is_read(database_url: str) -> None:
    """A real ``pipelens serve`` whose read database is down when it starts: it starts and
    reads from the primary, and once the read database comes up, reads go to it by themselves
    (the log says each once)."""
    with data_dir() as directory, tempfile.TemporaryFile() as log:
        replica = EmbeddedPostgres(directory / "replica")
        read_url = replica.start()
        try:
            _migrate(read_url)
            with TestClient(create_app(Settings(database_url=read_url)), base_url=LOCAL) as only:
                ingest(only, recent_run("on-replica"))
            replica.stop()
            args = ("--database-url", database_url, "--read-database-url", read_url)
            with serve(*args, stderr=log) as (_, url):
                posted = httpx.post(
                    f"{url}/api/v1/events",
                    content=msgpack_body(recent_run("posted")),
                    headers=MSGPACK,
                    timeout=30,
                )
                assert posted.status_code == 202, posted.text
                assert _status(f"{url}/api/v1/runs/posted") == 200  # from the primary
                ready = httpx.get(f"{url}/readyz")
                assert ready.json()["reads"].endswith("reads go to the primary meanwhile")

                assert replica.start() == read_url
                _poll("reads from the replica", lambda: _status(f"{url}/api/v1/runs/posted") == 404)
                assert _status(f"{url}/api/v1/runs/on-replica") == 200
                assert httpx.get(f"{url}/readyz").json() == {"status": "ready"}
            events = [event["event"] for event in log_events(log)]
            assert events.count(READ_REPLICA.log_down) == 1, events
            assert events.count(READ_REPLICA.log_up) == 1, events
        finally:
            replica.stop()
