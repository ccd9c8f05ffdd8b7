"""Dashboard sessions kept in PostgreSQL, and the limit on failed logins.

A session is a random id in the ``pipelens_session`` cookie; the ``sessions`` table holds its
SHA-256 and when it expires, so logging out ends it for good (a copied cookie stops working) and
every server process on the database sees the same sessions. A tag of the token is stored with
it: a server started with another token knows none of the old sessions.

Failed logins are counted per client address in this process (``LoginLimiter``): enough to make
guessing a token hopeless (5 a minute), and gone with the process, which a brute force survives
no better than the token's entropy.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import math
import secrets
import time
from datetime import timedelta
from typing import Any

from psycopg_pool import AsyncConnectionPool

MAX_AGE_S = 30 * 24 * 3600
_TAG_MESSAGE = b"pipelens dashboard session v2"


def _id_hash(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


def token_tag(token: str) -> str:
    """Which token a session belongs to, without revealing it."""
    return hmac.new(token.encode(), _TAG_MESSAGE, hashlib.sha256).hexdigest()[:32]


async def open_session(pool: AsyncConnectionPool[Any], token: str) -> str:
    """A new session for a visitor who gave ``token``: its id, for the cookie."""
    session_id = secrets.token_urlsafe(32)
    async with pool.connection() as conn:
        # Expired sessions go when someone logs in: the table stays as small as the live ones.
        await conn.execute("DELETE FROM sessions WHERE expires_at < now()")
        await conn.execute(
            "INSERT INTO sessions (id_hash, token_tag, expires_at) VALUES (%s, %s, now() + %s)",
            (_id_hash(session_id), token_tag(token), timedelta(seconds=MAX_AGE_S)),
        )
    return session_id


async def session_is_open(pool: AsyncConnectionPool[Any], session_id: str, token: str) -> bool:
    """Whether ``session_id`` is a live session opened with ``token``."""
    if not session_id:
        return False
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT 1 FROM sessions WHERE id_hash = %s AND token_tag = %s AND expires_at > now()",
            (_id_hash(session_id), token_tag(token)),
        )
        return await cur.fetchone() is not None


async def close_session(pool: AsyncConnectionPool[Any], session_id: str) -> None:
    """End ``session_id`` (logout): its cookie opens nothing any more."""
    if session_id:
        async with pool.connection() as conn:
            await conn.execute("DELETE FROM sessions WHERE id_hash = %s", (_id_hash(session_id),))


class LoginLimiter:
    """At most ``attempts`` failed logins per client address in any ``window_s`` seconds.

    Args:
        attempts: Failures allowed in the window; the next attempt is refused until the oldest
            leaves it.
        window_s: The window's length in seconds.
        max_clients: Addresses remembered at most (the oldest are forgotten first), so a flood
            of addresses cannot grow the process without bound.
    """

    def __init__(self, attempts: int = 5, window_s: float = 60.0, max_clients: int = 10_000):
        self.attempts = attempts
        self.window_s = window_s
        self.max_clients = max_clients
        self._failures: collections.OrderedDict[str, collections.deque[float]] = (
            collections.OrderedDict()
        )

    def retry_after(self, client: str) -> int | None:
        """Seconds ``client`` must wait before its next attempt, or ``None`` if it may try."""
        failures = self._recent(client)
        if len(failures) < self.attempts:
            return None
        return max(1, math.ceil(failures[0] + self.window_s - time.monotonic()))

    def failed(self, client: str) -> None:
        """Count a failed attempt of ``client``."""
        self._recent(client).append(time.monotonic())
        self._failures.move_to_end(client)
        while len(self._failures) > self.max_clients:
            self._failures.popitem(last=False)

    def succeeded(self, client: str) -> None:
        """Forget ``client``'s failures."""
        self._failures.pop(client, None)

    def _recent(self, client: str) -> collections.deque[float]:
        failures = self._failures.setdefault(client, collections.deque())
        cutoff = time.monotonic() - self.window_s
        while failures and failures[0] <= cutoff:
            failures.popleft()
        return failures
