"""The embedded PostgreSQL's watchdog: a postmaster that dies is restarted in the same data dir.

Without it, a killed postmaster (the OOM killer, a stray ``kill``) left every request waiting for
a connection that never came and answering 429 "busy", while ``/healthz`` said all was well. The
watchdog looks at the postmaster's pid (``postmaster.pid`` and ``/proc``, no connection) every
:data:`INTERVAL_S`. Once it is gone, :class:`DatabaseHealth` says so and :func:`require_database`
(a guard on every route, ``/healthz`` and ``/readyz`` included) answers 503 "the database is
restarting" with ``Retry-After`` at once; our client retries and spools, so nothing is lost. The
server is started again in the same data dir (retried for up to :data:`RESTART_TIMEOUT_S`), the
pool's broken connections are replaced, and requests flow again. If it cannot be restarted in
that time the process exits with status :data:`EXIT_DATABASE_LOST`, so that a supervisor
(systemd, a container runtime) starts a fresh server rather than one that can only answer 503.
An external database (``--database-url``) is not ours to restart, but it is watched too
(:func:`watch_external`): one connection of its own asks it ``SELECT 1`` every
:data:`INTERVAL_S`. While it does not answer, the same guard answers 503 "the database ... does
not answer" on every route (``/healthz`` too), and once it answers again the pool's broken
connections are replaced and requests flow by themselves, with no restart of ours. A read
database (``--read-database-url``) is watched the same way, with its own :class:`DatabaseHealth`:
while it does not answer (from start-up on, too), reads go to the primary
(``_lifespan.provide_pool``) rather than fail.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import psycopg
import structlog
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from psycopg_pool import AsyncConnectionPool

from pipelens_server._db._embedded import EmbeddedPostgres
from pipelens_server._errors import DatabaseUnavailableError, EmbeddedPostgresError
from pipelens_server._settings import Settings

log = structlog.get_logger("pipelens_server.watchdog")

#: Seconds between two looks at the postmaster.
INTERVAL_S = 0.5
#: Longest a restart is tried before the process gives up and exits.
RESTART_TIMEOUT_S = 60.0
#: Longest a look at an external database may take before it counts as not answering.
PROBE_TIMEOUT_S = 2.0
#: The exit status when the embedded PostgreSQL cannot be brought back (EX_UNAVAILABLE).
EXIT_DATABASE_LOST = 69


@dataclass(slots=True)
class DatabaseHealth:
    """Whether the database is known to be down, and why (``app.state.database_health``)."""

    down: str | None = None


async def watch(
    embedded: EmbeddedPostgres, pool: AsyncConnectionPool[Any], health: DatabaseHealth
) -> None:
    """Restart ``embedded`` whenever its postmaster dies, until cancelled."""
    while True:
        await asyncio.sleep(INTERVAL_S)
        if embedded.running_pid() is not None:
            continue
        health.down = "the embedded PostgreSQL stopped and is restarting: retry shortly"
        log.error("the embedded PostgreSQL died; restarting it", data_dir=str(embedded.data_dir))
        try:
            await anyio.to_thread.run_sync(embedded.restart, RESTART_TIMEOUT_S)
        except EmbeddedPostgresError as exc:
            log.critical(
                "the embedded PostgreSQL cannot be restarted; exiting so that a supervisor "
                "starts the server afresh",
                error=str(exc),
                exit_status=EXIT_DATABASE_LOST,
            )
            os._exit(EXIT_DATABASE_LOST)  # the lifespan's clean-up would only wait on a dead server
        await pool.check()  # replace the connections to the dead server
        health.down = None
        log.info("the embedded PostgreSQL is back")


@dataclass(frozen=True, slots=True)
class Watched:
    """What :func:`watch_external` says of the database it watches: while it is down (the
    ``DatabaseHealth.down`` text, ``{where}`` its redacted URL), and in the log."""

    down: str
    log_down: str
    log_up: str


#: The primary ``--database-url``: every route answers 503 while it is down.
PRIMARY = Watched(
    down="the database at {where} does not answer: retry shortly",
    log_down="the external database does not answer",
    log_up="the external database answers again",
)
#: The read database ``--read-database-url``: reads go to the primary while it is down.
READ_REPLICA = Watched(
    down="the read database at {where} does not answer: reads go to the primary meanwhile",
    log_down="the read database does not answer; reading from the primary meanwhile",
    log_up="the read database answers again; reading from it",
)


async def watch_external(
    conninfo: str,
    where: str,
    pool: AsyncConnectionPool[Any],
    health: DatabaseHealth,
    watched: Watched = PRIMARY,
) -> None:
    """Tell ``health`` whether the external database at ``conninfo`` (``where``: the same
    without its password) answers, until cancelled; log once when it stops answering and once
    when it answers again."""
    probe: psycopg.AsyncConnection[Any] | None = None
    try:
        while True:
            await asyncio.sleep(INTERVAL_S)
            try:
                if probe is None:
                    probe = await psycopg.AsyncConnection.connect(
                        conninfo, autocommit=True, connect_timeout=int(PROBE_TIMEOUT_S)
                    )
                await asyncio.wait_for(probe.execute("SELECT 1"), PROBE_TIMEOUT_S)
            except (psycopg.Error, OSError, TimeoutError) as exc:
                if probe is not None:
                    await probe.close()
                    probe = None
                if health.down is None:
                    health.down = watched.down.format(where=where)
                    # Its message says why; a traceback of a refused connection would not.
                    log.error(watched.log_down, error=str(exc).strip())  # noqa: TRY400
                continue
            if health.down is not None:
                await pool.check()  # replace the connections to the server that went away
                health.down = None
                log.info(watched.log_up)
    finally:
        if probe is not None:
            await probe.close()


async def require_database(
    connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler
) -> None:
    """The guard on every route: 503 with ``Retry-After`` while the database is known down.

    A coroutine, though it never waits: Litestar runs a plain function guard in a thread pool,
    a hop on every request (1.6 % of the server's samples under the ingest benchmark).
    """
    health: DatabaseHealth | None = connection.app.state.get("database_health")
    if health is not None and health.down is not None:
        settings: Settings = connection.app.state.settings
        raise DatabaseUnavailableError(health.down, settings.retry_after_s)
