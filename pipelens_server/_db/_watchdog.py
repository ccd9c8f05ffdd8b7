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
An external database (``--database-url``) is not ours to restart: queries that find it gone
answer 503 (``app.py``).
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
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


def require_database(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """The guard on every route: 503 with ``Retry-After`` while the database is known down."""
    health: DatabaseHealth | None = connection.app.state.get("database_health")
    if health is not None and health.down is not None:
        settings: Settings = connection.app.state.settings
        raise DatabaseUnavailableError(health.down, settings.retry_after_s)
