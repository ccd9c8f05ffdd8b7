"""The health probes ``/healthz`` (the process is up and its database not known to be down) and
``/readyz`` (the database that reads go to answers): outside ``/api``, so that no token is
needed. While the embedded database restarts both answer 503 (the app's ``require_database``
guard); while the read database is away, reads go to the primary and ``/readyz`` says so."""

from __future__ import annotations

import msgspec
from litestar import get
from litestar.datastructures import State

from pipelens_server._db._lifespan import PoolDep, SettingsDep, read_database_down
from pipelens_server._errors import DatabaseUnavailableError


class Health(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """The answer of the health probes."""

    status: str
    #: Why reads go to the primary, while the read database (``--read-database-url``) is away.
    reads: str | None = None


@get("/healthz")
async def healthz() -> Health:
    """The process is up, and its database is not known to be down."""
    return Health(status="ok")


@get("/readyz")
async def readyz(pool: PoolDep, settings: SettingsDep, state: State) -> Health:
    """The database that reads go to answers (the primary, while the read database is away:
    then ``reads`` says so)."""
    try:
        async with pool.connection(timeout=settings.pool_timeout_s) as conn:
            await conn.execute("SELECT 1")
    except Exception as exc:
        raise DatabaseUnavailableError(f"the database does not answer: {exc}") from exc
    return Health(status="ready", reads=read_database_down(state))


route_handlers = [healthz, readyz]
