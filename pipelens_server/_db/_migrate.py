"""Numbered SQL migrations (``migrations/NNNN_name.sql``) applied at start-up.

All pending files run in one transaction under a transaction-level advisory lock, so two server
processes starting at once apply each file exactly once (the second waits, then finds nothing to
do), and a failing file leaves the schema as it was. ``schema_migrations`` remembers what ran and
a checksum of each file: changing a file that already ran is an error, not a silent no-op.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg
import structlog

from pipelens_server._errors import MigrationError

log = structlog.get_logger("pipelens_server.migrate")

# An arbitrary constant shared by every PipeLens server: "pipelens" in ASCII.
_LOCK_KEY = 0x706970656C656E73 - (1 << 63)
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """sha256 of the file's text."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations() -> list[Migration]:
    """Every migration shipped with the server, in order."""
    found = []
    for entry in resources.files("pipelens_server._db").joinpath("migrations").iterdir():
        match = _FILE_NAME.match(entry.name)
        if match is None:
            continue
        found.append(Migration(int(match.group(1)), match.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a number: {versions}")
    return found


async def migrate(conn: psycopg.AsyncConnection[Any]) -> list[int]:
    """Apply the pending migrations; return the versions applied (empty when up to date)."""
    applied: list[int] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version     integer PRIMARY KEY,
                name        text NOT NULL,
                checksum    text NOT NULL,
                applied_at  timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        cursor = await conn.execute("SELECT version, checksum FROM schema_migrations")
        done: dict[int, str] = {row[0]: row[1] for row in await cursor.fetchall()}
        for migration in migrations():
            if migration.version in done:
                if done[migration.version] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{migration.name}.sql changed after it "
                        "was applied: add a new numbered file instead of editing an old one"
                    )
                continue
            try:
                # A whole file in one call: psycopg sends it with the simple query protocol.
                await conn.execute(migration.sql.encode())
            except psycopg.Error as exc:
                raise MigrationError(
                    f"migration {migration.version:04d}_{migration.name}.sql failed: {exc}"
                ) from exc
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                (migration.version, migration.name, migration.checksum),
            )
            applied.append(migration.version)
    if applied:
        log.info("applied migrations", versions=applied)
    return applied
