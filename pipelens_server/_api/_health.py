"""The health probes ``/healthz`` (the process is up and its database not known to be down) and
``/readyz`` (the database answers): outside ``/api``, so that no token is needed. While the
embedded database restarts both answer 503 (the app's ``require_database`` guard)."""

from __future__ import annotations

import msgspec
from litestar import get

from pipelens_server._db._lifespan import PoolDep, SettingsDep
from pipelens_server._errors import DatabaseUnavailableError


class Health(msgspec.Struct, kw_only=True, frozen=True):
    """The answer of the health probes."""

    status: str


@get("/healthz")
async def healthz() -> Health:
    """The process is up, and its database is not known to be down."""
    return Health(status="ok")


@get("/readyz")
async def readyz(pool: PoolDep, settings: SettingsDep) -> Health:
    """The database answers."""
    try:
        async with pool.connection(timeout=settings.pool_timeout_s) as conn:
            await conn.execute("SELECT 1")
    except Exception as exc:
        raise DatabaseUnavailableError(f"the database does not answer: {exc}") from exc
    return Health(status="ready")


route_handlers = [healthz, readyz]
