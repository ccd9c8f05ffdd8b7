"""Migrations: applied once, safely twice and from two connections at once."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from pipelens_server import MigrationError, migrate
from pipelens_server._db._migrate import migrations


async def _migrate(conninfo: str) -> list[int]:
    async with await psycopg.AsyncConnection.connect(conninfo) as conn:
        return await migrate(conn)


def _tables(conninfo: str) -> list[str]:
    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
        ).fetchall()
    return [row[0] for row in rows]


def test_migrations_create_the_schema_then_do_nothing(empty_database_url: str) -> None:
    """The first run applies every file, the second applies none and changes nothing."""
    every = [m.version for m in migrations()]
    assert asyncio.run(_migrate(empty_database_url)) == every
    tables = _tables(empty_database_url)
    assert tables == [
        "pipelines",
        "retention",  # 0005
        "retention_default",  # 0005
        "rollup_dirty",  # 0013
        "rollup_state",  # 0013
        "rollups",  # 0013
        "runs",
        "schema_migrations",
        "scores",  # 0011
        "sessions",  # 0008
        "steps",
    ]
    assert asyncio.run(_migrate(empty_database_url)) == []
    assert _tables(empty_database_url) == tables


def test_two_processes_migrating_at_once_apply_each_file_once(empty_database_url: str) -> None:
    """Concurrent start-ups serialise on the advisory lock: one applies, the other finds it done."""

    async def both() -> list[list[int]]:
        return list(await asyncio.gather(*(_migrate(empty_database_url) for _ in range(2))))

    results = sorted(asyncio.run(both()))
    assert results == [[], [m.version for m in migrations()]]


def test_an_edited_migration_is_refused(empty_database_url: str) -> None:
    """A migration file whose text changed after it ran stops start-up with a clear message."""
    asyncio.run(_migrate(empty_database_url))
    with psycopg.connect(empty_database_url) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'x' WHERE version = 1")
    with pytest.raises(MigrationError, match=r"0001_init\.sql changed after it was applied"):
        asyncio.run(_migrate(empty_database_url))


def test_migration_files_are_numbered_without_gaps() -> None:
    """Files are 0001, 0002, ... so that their order is obvious."""
    versions = [m.version for m in migrations()]
    assert versions == list(range(1, len(versions) + 1))
