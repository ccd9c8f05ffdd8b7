"""One process at a time: the periodic jobs' advisory locks, for several servers on one database.

``pipelens serve --workers N``, or several ``pipelens serve`` on one ``--database-url``, each run
the lifespan's periodic jobs. The purge of old runs and the check for abandoned runs are each
done by one process at a time: a round starts by trying a session-level advisory lock on one
pooled connection, and a process that finds it taken skips its round (the other is doing the
work). The round's transactions run on that same connection, so the lock is held from the first
to the last. The lock goes with the session, so a process that dies mid-round frees it at once.
(The rollup job, one transaction per round, takes a transaction-level lock of its own.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

# Arbitrary constants, like the migrations' and the rollups': "purge" and "abandon" in ASCII.
PURGE_LOCK = 0x7075726765
ABANDON_LOCK = 0x6162616E646F6E


@asynccontextmanager
async def exclusive(
    pool: AsyncConnectionPool[Any], key: int
) -> AsyncIterator[psycopg.AsyncConnection[Any] | None]:
    """Hold the advisory lock ``key`` for the block, on a connection of ``pool`` given to it;
    ``None`` when another session holds the lock (the block should do nothing then)."""
    async with pool.connection() as conn:
        row = await (await conn.execute("SELECT pg_try_advisory_lock(%s)", [key])).fetchone()
        await conn.commit()  # the lock is the session's: the block's transactions are its own
        if not row or not row[0]:
            yield None
            return
        try:
            yield conn
        except BaseException:
            # The connection's state is unknown (a cancelled query): closing it ends the session,
            # which frees the lock, and the pool replaces a closed connection.
            await conn.close()
            raise
        await conn.execute("SELECT pg_advisory_unlock(%s)", [key])
        await conn.commit()
