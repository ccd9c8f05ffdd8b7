"""``--read-database-url``: GET requests read from a second database (a read replica), writes go
to the primary."""

from __future__ import annotations

import asyncio

import psycopg
from _dashboard_kit import form_token, ingest, recent_run
from _pg_testkit import LOCAL
from litestar.testing import TestClient

from pipelens_server import Settings, create_app, migrate
from pipelens_server._db._lifespan import _open_read_pool


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
