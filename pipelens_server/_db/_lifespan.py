"""The database behind the app: embedded or external, the connection pool, the schema.

All of it is opened in the app's lifespan and kept on ``app.state``; nothing connects at import.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

import anyio.to_thread
import psycopg
import structlog
from litestar import Litestar, Request
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import SkipValidation
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from pipelens_server._db._embedded import EmbeddedPostgres
from pipelens_server._db._migrate import migrate
from pipelens_server._db._watchdog import (
    INTERVAL_S,
    READ_REPLICA,
    DatabaseHealth,
    watch,
    watch_external,
)
from pipelens_server._errors import DatabaseUnavailableError, ServerError
from pipelens_server._settings import Settings

log = structlog.get_logger("pipelens_server.db")

_CONNECT_TIMEOUT_S = 10

#: A new connection's set-up (the pool's ``configure`` callback).
Configure: TypeAlias = Callable[[psycopg.AsyncConnection[Any]], Awaitable[None]]

#: Handler parameter types of the app's dependencies (see ``create_app``). They are the app's
#: own objects: validating them on every request would only cost time.
PoolDep: TypeAlias = NamedDependency[SkipValidation[AsyncConnectionPool[Any]]]
SettingsDep: TypeAlias = NamedDependency[SkipValidation[Settings]]


def redacted(conninfo: str) -> str:
    """``conninfo`` without its password, for logs and error messages."""
    try:
        params = psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "(an unparsable database URL)"
    if "password" in params:
        params["password"] = "***"  # noqa: S105 - a mask, not a password
    return psycopg.conninfo.make_conninfo("", **params)


async def _check_reachable(conninfo: str) -> None:
    """Connect once, so that a wrong URL fails start-up with PostgreSQL's own message."""
    try:
        conn = await psycopg.AsyncConnection.connect(conninfo, connect_timeout=_CONNECT_TIMEOUT_S)
    except psycopg.Error as exc:
        raise DatabaseUnavailableError(
            f"cannot connect to PostgreSQL at {redacted(conninfo)}: {exc}".rstrip()
        ) from exc
    await conn.close()


@asynccontextmanager
async def database_lifespan(
    app: Litestar, *, configure: Configure | None = None
) -> AsyncIterator[None]:
    """Start the embedded PostgreSQL when no URL is set, open the pool, migrate; undo on exit.
    The embedded one is watched and restarted if it dies, an external one watched until it
    answers again (``_watchdog``).

    ``configure`` prepares each new connection (ingest's staging tables: ``create_app`` passes
    it, so that this room knows nothing of ingest).
    """
    settings: Settings = app.state.settings
    embedded: EmbeddedPostgres | None = None
    conninfo = settings.database_url
    try:
        if conninfo is None:
            embedded = EmbeddedPostgres(settings.resolved_data_dir)
            conninfo = await anyio.to_thread.run_sync(embedded.start)
        await _check_reachable(conninfo)
    except ServerError as exc:
        log.error("the server cannot start", error=str(exc))  # noqa: TRY400 - uvicorn logs the traceback
        if embedded is not None:
            await anyio.to_thread.run_sync(embedded.stop)
        raise
    try:
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            conninfo,
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
            open=False,
            configure=configure,
            timeout=settings.pool_timeout_s,
            name="pipelens",
        )
        await pool.open(wait=True, timeout=_CONNECT_TIMEOUT_S)
        try:
            async with pool.connection() as conn:
                await migrate(conn)
            app.state.pool = pool
            app.state.read_pool = pool
            if settings.read_database_url is not None:
                app.state.read_health = DatabaseHealth()
                try:
                    app.state.read_pool = await _open_read_pool(settings)
                except DatabaseUnavailableError as exc:
                    app.state.read_health.down = READ_REPLICA.down.format(
                        where=redacted(settings.read_database_url)
                    )
                    log.error(READ_REPLICA.log_down, error=str(exc))  # noqa: TRY400 - its message says why
            health = app.state.database_health = DatabaseHealth()
            log.info("database ready", database=redacted(conninfo), embedded=embedded is not None)
            watchdogs = [
                asyncio.create_task(
                    watch_external(conninfo, redacted(conninfo), pool, health)
                    if embedded is None
                    else watch(embedded, pool, health)
                )
            ]
            if settings.read_database_url is not None:
                watchdogs.append(asyncio.create_task(_watch_read(app.state, settings)))
            try:
                yield
            finally:
                for watchdog in watchdogs:
                    watchdog.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await watchdog
        finally:
            if app.state.get("read_pool") not in (None, pool):
                await app.state.read_pool.close()
            await pool.close()
    finally:
        if embedded is not None:
            await anyio.to_thread.run_sync(embedded.stop)


async def _open_read_pool(settings: Settings) -> AsyncConnectionPool[Any]:
    """The pool of ``--read-database-url``, its sessions read-only: a read that would write
    fails there as it would on a replica, even when the URL names the primary.

    Raises:
        DatabaseUnavailableError: the read database does not answer.
    """
    conninfo = settings.read_database_url
    assert conninfo is not None
    await _check_reachable(conninfo)
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        conninfo,
        min_size=settings.pool_min_size,
        max_size=settings.pool_max_size,
        open=False,
        configure=_read_only,
        timeout=settings.pool_timeout_s,
        name="pipelens-read",
    )
    try:
        await pool.open(wait=True, timeout=_CONNECT_TIMEOUT_S)
    except BaseException as exc:  # it went away since, or the lifespan ends meanwhile
        await pool.close()
        if isinstance(exc, PoolTimeout):
            raise DatabaseUnavailableError(f"{redacted(conninfo)}: {exc}") from exc
        raise
    log.info("reads from", database=redacted(conninfo))
    return pool


async def _watch_read(state: State, settings: Settings) -> None:
    """Watch the read database (``watch_external``). One that did not answer at start-up did
    not stop the server: ``state.read_pool`` is the primary's until it answers, then its own
    pool is opened and reads go to it."""
    conninfo = settings.read_database_url
    assert conninfo is not None
    health: DatabaseHealth = state.read_health
    if state.read_pool is state.pool:
        while True:
            await asyncio.sleep(INTERVAL_S)
            with contextlib.suppress(DatabaseUnavailableError):
                state.read_pool = await _open_read_pool(settings)
                break
        health.down = None
        log.info(READ_REPLICA.log_up)
    await watch_external(conninfo, redacted(conninfo), state.read_pool, health, READ_REPLICA)


async def _read_only(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.execute("SET default_transaction_read_only = on")
    await conn.commit()


#: The methods whose requests only read: they may go to the read pool.
_READS = frozenset({"GET", "HEAD"})


def read_database_down(state: State) -> str | None:
    """Why the read database (``--read-database-url``) is not read now, or ``None``: it is
    read, or there is none."""
    health: DatabaseHealth | None = state.get("read_health")
    return None if health is None else health.down


def provide_pool(state: State, request: Request[Any, Any, Any]) -> AsyncConnectionPool[Any]:
    """The pool a request uses: the read pool (``--read-database-url``, else the same) for GET
    and HEAD, the app's pool for every write and for the reads while the read database does
    not answer (its watchdog says so). Login sessions and the periodic jobs use ``state.pool``
    directly: a session just opened must be found, replica lag or not."""
    reads = request.method in _READS and read_database_down(state) is None
    pool: AsyncConnectionPool[Any] = state.read_pool if reads else state.pool
    return pool


def provide_settings(state: State) -> Settings:
    """The app's settings."""
    settings: Settings = state.settings
    return settings
