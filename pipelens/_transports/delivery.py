"""Getting encoded batches to the server: an outbox, a sender thread, retries and the disk spool.

The transport's batching thread hands over msgpack bodies with :meth:`Delivery.put`, which never
waits for the network: a body goes into a bounded in-memory outbox, or to the spool when the
outbox is full (the server is down or slower than the program). One sender thread per process
posts the outbox in order over a keep-alive connection, backing off exponentially with jitter
after a failure (or as long as ``Retry-After`` says), and replays spooled bodies when the
outbox is empty. A batch that keeps failing is moved to the spool after ``max_attempts`` tries
so that it cannot hold up the ones behind it; spooled bodies are retried (with the same backoff)
until delivered or rejected. ``wait`` is the flush: it returns when the outbox
is empty, or at its deadline moves what is left to the spool, so nothing queued is lost at exit.
"""

from __future__ import annotations

import collections
import http.client
import logging
import random
import threading
import time

import msgspec

from pipelens._core import containment
from pipelens._transports.endpoint import CLOSED_EARLY, Endpoint, Response
from pipelens._transports.spool import Claim, Spool

#: How often the spool directory is looked at again for batches other processes left there.
RESCAN_SECONDS = 60.0
#: Statuses that say the token is wrong: not the batch's fault, so it is kept, not rejected.
DENIED = (401, 403)
#: The longest ``Retry-After`` obeyed as given.
MAX_RETRY_AFTER = 600.0
#: In an accepted batch's answer, the runs the server did not store (their id names another run).
_REFUSED_MARK = b'"refused":[{'


class _Refused(msgspec.Struct):
    run_id: str
    events: int
    detail: str


class _Answer(msgspec.Struct):
    refused: list[_Refused] = []


def _refused_runs(body: bytes) -> list[_Refused]:
    """The runs an accepted batch's answer says were not stored (most answers: none, at the cost
    of one ``in``)."""
    if _REFUSED_MARK not in body:
        return []
    try:
        return msgspec.json.decode(body, type=_Answer).refused
    except msgspec.DecodeError:
        return []


class TransportStats(msgspec.Struct, kw_only=True, frozen=True):
    """Counters of one transport's events since it was created (or since ``fork``).

    Attributes:
        sent: events the server accepted (``replayed`` ones included).
        retried: events sent again after an attempt failed.
        spooled: events written to the disk spool to be sent later.
        replayed: events sent from the spool (also by a process other than the one that wrote them).
        dropped: events lost: the queue or the spool was full, or the spool could not be written.
        rejected: events the server refused with a 4xx status other than 408 and 429.
        pending: events waiting in memory right now.
    """

    sent: int = 0
    retried: int = 0
    spooled: int = 0
    replayed: int = 0
    dropped: int = 0
    rejected: int = 0
    pending: int = 0


class _Item:
    """One request body and how often it was tried; ``claim`` when it came from the spool.

    A body a flush spooled while it was being posted has two copies: ``spooled`` names the file
    and ``settled`` says the post was answered for good, so whichever comes second, the answer
    or the file, deletes the file instead of sending the body again.
    """

    __slots__ = ("attempts", "body", "claim", "events", "settled", "spooled")

    def __init__(self, body: bytes, events: int, claim: Claim | None = None) -> None:
        self.body = body
        self.events = events
        self.attempts = 0
        self.claim = claim
        self.spooled: str | None = None
        self.settled = False


class Delivery:
    """Posts request bodies from a bounded outbox on one background thread.

    Args:
        endpoint: the connection to post to.
        spool: where bodies go when they cannot be held in memory; ``None`` drops them instead.
        max_buffer_bytes: request bodies held in memory before new ones go to the spool.
        max_attempts: tries of one batch before it moves to the spool.
        backoff: seconds before the first retry; doubled after each failure, with jitter.
        max_backoff: the longest wait between tries (a ``Retry-After`` may ask for longer).
        owner: how log messages name the transport.
        debug: log every request's outcome at INFO instead of DEBUG.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        spool: Spool | None,
        *,
        max_buffer_bytes: int,
        max_attempts: int,
        backoff: float,
        max_backoff: float,
        owner: str,
        debug: bool = False,
    ) -> None:
        self.endpoint = endpoint
        self.spool = spool
        self.max_buffer_bytes = max_buffer_bytes
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.owner = owner
        self._log_level = logging.INFO if debug else logging.DEBUG
        self._warn = containment.WarnOnce()
        self.reset()
        # A spool left by an earlier process is replayed as soon as this one starts.
        if spool is not None and spool.pending():
            self._start()

    def reset(self) -> None:
        """Start empty, with new locks and no thread (at creation and in a forked child, where
        the parent's outbox is the parent's to send and its thread and locks do not exist).
        """
        self._cond = threading.Condition(threading.Lock())
        self._outbox: collections.deque[_Item] = collections.deque()
        self._outbox_bytes = 0
        self._outbox_events = 0
        #: The most bytes the outbox held at once (never above ``max_buffer_bytes``, unless one
        #: body alone is larger).
        self.peak_bytes = 0
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._failures = 0  # consecutive failed attempts; drives the backoff
        self._retry_at = 0.0  # monotonic time before which nothing is sent
        self._backlog: collections.deque[str] = collections.deque()  # spooled names to replay
        self._rescan_at = 0.0
        self._own_spooled: set[str] = set()  # spooled by this process, not yet replayed
        self._denied = False  # the server refused our token: flush() cannot succeed
        self._spooling = 0  # bodies taken off the outbox on their way to the spool
        self.sent = self.retried = self.spooled = self.replayed = 0
        self.dropped = self.rejected = 0
        self.endpoint.forget()

    @property
    def buffered_bytes(self) -> int:
        """Bytes of request bodies in the outbox now, the one being posted included (read
        without the lock: a moment's view)."""
        return self._outbox_bytes

    # -- the batching thread's side -------------------------------------------------------------

    def put(self, body: bytes, events: int) -> None:
        """Queue one request body; to the spool instead when the outbox is full."""
        with self._cond:
            if self._stopping:
                self.dropped += events
                full = False
            else:
                full = bool(self._outbox) and (
                    self._outbox_bytes + len(body) > self.max_buffer_bytes
                )
                if not full:
                    self._outbox.append(_Item(body, events))
                    self._outbox_bytes += len(body)
                    self._outbox_events += events
                    self.peak_bytes = max(self.peak_bytes, self._outbox_bytes)
                    self._cond.notify_all()
        if full:
            self._to_spool([_Item(body, events)], "the server is not keeping up")
        if self._thread is None:
            self._start()

    def spool_now(self, body: bytes, events: int) -> bool:
        """Write one body to the spool on the caller's thread, past the outbox (whose sender
        may be stopped or behind); ``False`` without a spool or room, for the caller to count."""
        if self.spool is None:
            return False
        return self._to_spool([_Item(body, events)], "its queue could not take them", count=False)

    def wait(self, deadline: float | None) -> bool:
        """Wait until every body queued, and every body this process spooled, is delivered
        (``True``) or ``deadline`` (monotonic) comes.

        At the deadline, or as soon as the next try is due only after it, the bodies still
        queued go to the spool (or stay queued without one) and the result is ``False``.
        """
        with self._cond:
            while self._outbox or self._own_spooled or self._spooling:
                now = time.monotonic()
                # A body on its way to the spool is waited for (a short write), so the counts
                # are settled when flush() returns.
                settled = not self._spooling
                if settled and (self._stopping or self._denied):  # a later sender sends it
                    break
                if deadline is not None and (
                    now >= deadline or (settled and self._retry_at > deadline)
                ):
                    break
                self._cond.wait(None if deadline is None else deadline - now)
            else:
                return not self._denied
            if self.spool is None or not self._outbox:
                return False
            # The body in flight goes too (it may never be answered); if it does get through,
            # its spooled copy is deleted rather than sent again.
            left = list(self._outbox)
            self._outbox.clear()
            self._outbox_bytes = self._outbox_events = 0
        self._to_spool(left, "a flush ran out of time")
        return False

    def stop(self) -> None:
        """Stop the sender after its current request; what is left is dropped and counted."""
        with self._cond:
            self._stopping = True
            self.dropped += self._outbox_events
            self._outbox.clear()
            self._outbox_bytes = self._outbox_events = 0
            self._cond.notify_all()

    def stats(self, queued: int = 0, dropped: int = 0) -> TransportStats:
        """The counters now; ``queued``/``dropped`` add the transport's own queue's."""
        with self._cond:
            return TransportStats(
                sent=self.sent,
                retried=self.retried,
                spooled=self.spooled,
                replayed=self.replayed,
                dropped=self.dropped + dropped,
                rejected=self.rejected,
                pending=self._outbox_events + queued,
            )

    def _to_spool(self, items: list[_Item], why: str, *, count: bool = True) -> bool:
        """Spool ``items``; ``False`` if any was dropped (warned once, and counted here unless
        ``count`` is false: the caller counts it then)."""
        spool = self.spool
        kept = True
        for item in items:
            written = None
            if spool is not None:
                try:
                    written = spool.write(item.body, item.events)
                except OSError as exc:
                    self._warn("spool-error", f"cannot write to {spool!r}: {exc}")
            with self._cond:
                item.spooled = written
                # The post it was taken from got through meanwhile: nothing to keep or lose.
                answered = item.settled
                if answered:
                    pass
                elif written is not None:
                    self._own_spooled.add(written)
                    self.spooled += item.events
                    self._rescan_at = 0.0  # replay it once the server is back
                    self._cond.notify_all()
                elif count:
                    self.dropped += item.events
            if answered:
                if written is not None:
                    self._unspool(written)
                continue
            if written is None:
                kept = False
                self._warn(
                    "dropped",
                    f"{self.owner}: events were dropped ({why}, and "
                    + ("no spool is configured" if spool is None else f"{spool!r} is full")
                    + "); pipelens.transport_stats() counts them",
                )
        return kept

    # -- the sender thread ----------------------------------------------------------------------

    def _start(self) -> None:
        with self._cond:
            if self._thread is not None or self._stopping:
                return
            thread = threading.Thread(target=self._run, name="pipelens-http-sender", daemon=True)
            self._thread = thread
        try:
            thread.start()
        except RuntimeError as exc:  # the interpreter is shutting down; flush() spools
            self._warn("thread", f"{self.owner}: cannot start its sender thread: {exc}")

    def _run(self) -> None:
        while True:
            try:
                item = self._next()
                if item is None:
                    self.endpoint.close()
                    return
                self._settle(item, self._attempt(item))
            except Exception as exc:  # a bug of ours; the thread must outlive it
                self._warn("thread-error", f"{self.owner}: error in its sender thread: {exc!r}")
                time.sleep(self.backoff)

    def _next(self) -> _Item | None:
        """The next body to send once it is due: the outbox first, then the spool."""
        while True:
            with self._cond:
                while True:
                    if self._stopping:
                        return None
                    now = time.monotonic()
                    if now < self._retry_at:
                        self._cond.wait(self._retry_at - now)
                    elif self._outbox:
                        return self._outbox[0]
                    elif self.spool is not None and (self._backlog or now >= self._rescan_at):
                        break
                    else:
                        timeout = None if self.spool is None else self._rescan_at - now
                        self._cond.wait(timeout)
            item = self._from_spool()
            if item is not None:
                return item

    def _from_spool(self) -> _Item | None:
        spool = self.spool
        assert spool is not None
        if not self._backlog:
            self._rescan_at = time.monotonic() + RESCAN_SECONDS
            with self._cond:
                before = set(self._own_spooled)
            names = spool.pending()
            self._backlog.extend(names)
            with self._cond:  # what another process replayed (or claimed) is its business now
                self._own_spooled -= before - set(names)
                self._cond.notify_all()
        while self._backlog:
            claim = spool.claim(self._backlog.popleft())
            if claim is not None:
                return _Item(claim.body, claim.events, claim)
        return None

    def _attempt(self, item: _Item) -> Response | BaseException:
        for stale_retry in (False, True):
            if item.attempts:
                with self._cond:
                    self.retried += item.events
            item.attempts += 1
            try:
                return self.endpoint.post(item.body)
            except CLOSED_EARLY as exc:
                # Closed before answering a reused connection: most often the server had dropped
                # it while idle, so resend at once on a new one (it may have been a crash mid-
                # request too; the server's idempotency makes a resend safe either way).
                if stale_retry or not self.endpoint.reused:
                    return exc
            except (OSError, http.client.HTTPException) as exc:
                return exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _settle(self, item: _Item, outcome: Response | BaseException) -> None:
        claim = item.claim
        spool = self.spool
        verdict = "retry" if isinstance(outcome, BaseException) else outcome.verdict
        denied = isinstance(outcome, Response) and outcome.status in DENIED
        if denied:
            # A wrong or missing token is fixed by the user, not by the server: keep the events
            # (in the spool, for a process with the right token) rather than drop them.
            verdict = "retry"
        self._log(item, outcome)
        done = False  # with this spooled body: only once delivered or rejected
        if claim is not None and spool is not None:
            if verdict == "retry":
                # Released, and due again after the backoff: an outage longer than any number of
                # tries still ends in delivery by this process, and flush() waits for it.
                spool.release(claim)
            else:
                spool.remove(claim)
                done = True
        refused = (
            _refused_runs(outcome.body)
            if isinstance(outcome, Response) and verdict == "delivered"
            else []
        )
        refused_events = min(sum(r.events for r in refused), item.events)
        give_up: list[_Item] = []
        with self._cond:
            if done and claim is not None:
                self._own_spooled.discard(claim.name)
            queued = claim is None and item in self._outbox  # not moved to the spool by a flush
            item.settled = verdict != "retry"
            copy = item.spooled if item.settled and not queued else None
            if verdict == "delivered":
                self.sent += item.events - refused_events
                self.rejected += refused_events
                if claim is not None:
                    self.replayed += item.events
                if self._failures:  # the server is back: look for spooled batches
                    self._rescan_at = 0.0
                self._failures = 0
                self._retry_at = 0.0
            elif verdict == "rejected":
                self.rejected += item.events
            else:
                self._failures += 1
                self._retry_at = time.monotonic() + (
                    self.max_backoff if denied else self._delay(outcome)
                )
                if claim is not None:
                    self._rescan_at = 0.0  # the released file is tried again after the wait
            if verdict == "delivered":
                self._denied = False
            elif denied:
                self._denied = True
            if queued and (verdict != "retry" or denied or item.attempts >= self.max_attempts):
                self._outbox.remove(item)
                self._outbox_bytes -= len(item.body)
                self._outbox_events -= item.events
                if verdict == "retry":
                    give_up.append(item)
                    self._spooling += 1  # flush() waits for it to reach the spool
            self._cond.notify_all()
        if copy is not None:
            self._unspool(copy)
        if denied:
            assert isinstance(outcome, Response)
            self._warn(
                "denied",
                f"{self.owner}: the server refused the token with HTTP {outcome.status}; events "
                "are kept in the spool"
                + ("" if spool is not None else " (none is configured: they are dropped)")
                + " and flush() returns False. Set PIPELENS_TOKEN or "
                "pipelens.configure(token=...) to the token the server was started with; "
                "a process with the right token sends the spooled events",
            )
        if give_up:
            why = "the token was refused" if denied else f"it failed {self.max_attempts} times"
            try:
                self._to_spool(give_up, why)
            finally:
                with self._cond:
                    self._spooling -= len(give_up)
                    self._cond.notify_all()
        if refused:
            self._warn(
                "refused-runs",
                f"{self.owner}: the server stored a batch but refused {refused_events} events of "
                f"{len(refused)} run(s) (counted in pipelens.transport_stats().rejected): "
                + "; ".join(r.detail for r in refused[:3]),
            )
        if verdict == "rejected":
            assert isinstance(outcome, Response)
            detail = outcome.body[:300].decode("utf-8", "replace")
            self._warn(
                f"rejected-{outcome.status}",
                f"{self.owner}: the server refused a batch of {item.events} events with HTTP "
                f"{outcome.status} (not retried; further refusals are counted in "
                f"pipelens.transport_stats().rejected): {detail}",
            )

    def _unspool(self, name: str) -> None:
        """Delete the spooled copy of a body the server has answered (unless another process
        has claimed it already: then it is sent twice, which the server's idempotency allows)."""
        assert self.spool is not None
        claim = self.spool.claim(name)
        if claim is not None:
            self.spool.remove(claim)
        with self._cond:
            self._own_spooled.discard(name)
            self._cond.notify_all()

    def _delay(self, outcome: Response | BaseException) -> float:
        if isinstance(outcome, Response) and outcome.retry_after is not None:
            # Honoured, up to a bound: a misconfigured proxy must not silence us for a day.
            return min(outcome.retry_after, max(self.max_backoff, MAX_RETRY_AFTER))
        ceiling = min(self.max_backoff, self.backoff * 2 ** min(self._failures - 1, 30))
        return random.uniform(ceiling / 2, ceiling)

    def _log(self, item: _Item, outcome: Response | BaseException) -> None:
        logger = containment.logger
        if logger.isEnabledFor(self._log_level):
            what = (
                f"{type(outcome).__name__}: {outcome}"
                if isinstance(outcome, BaseException)
                else f"HTTP {outcome.status}"
            )
            source = "spooled batch" if item.claim else "batch"
            logger.log(
                self._log_level,
                "pipelens: %s: %s of %d events, try %d: %s",
                self.owner,
                source,
                item.events,
                item.attempts,
                what,
            )
