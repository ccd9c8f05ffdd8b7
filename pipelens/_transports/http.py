"""``HttpTransport``: runs to a PipeLens server over HTTP, off the user's code path.

``send`` only appends to the bounded queue of :class:`~pipelens.BatchingTransport`. Its thread
scrubs and batches events (by count and time) and :meth:`HttpTransport.write` folds each step's
start into its finish when both are in the batch (:mod:`pipelens._transports.coalesce`) and cuts
the batch into msgpack request bodies of at most ``max_batch_bytes``; a sender thread
(:mod:`pipelens._transports.delivery`) posts them to ``{url}/api/v1/events``. Two threads rather
than one so that a slow or dead server never stops the queue from draining into memory or the
disk spool, which is what keeps ``send`` from dropping events during an outage.

Both threads belong to the process that started them: after ``fork`` the child starts its own,
with its own connection, and leaves the parent's pending events to the parent.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import msgspec

from pipelens._core import containment
from pipelens._core.capture import scrub_event
from pipelens._core.errors import ConfigurationError
from pipelens._core.settings import settings
from pipelens._transports.base import BatchingTransport, Transport
from pipelens._transports.coalesce import coalesce_steps
from pipelens._transports.delivery import Delivery, TransportStats
from pipelens._transports.endpoint import CONTENT_TYPE, INGEST_PATH, Endpoint
from pipelens._transports.heartbeat import DEFAULT_INTERVAL_S
from pipelens._transports.spool import Spool, default_spool_dir
from pipelens._version import __version__
from pipelens.events import Batch, Event, ScoreAdded, encode_msgpack

_MiB = 1024 * 1024
#: Bytes an event is taken to weigh before the first batch is weighed (``sizing.py``).
_GUESSED_EVENT_BYTES = 1024

_instances: weakref.WeakSet[HttpTransport] = weakref.WeakSet()


class _OptionsType(msgspec.StructMeta):
    """The seed's (pydantic) construction: values checked, ``"3"`` taken for ``3``; keywords we
    do not use (``flush_interval=5000`` of the seed's examples) ignored with a one-time warning.
    A bad value is a ``msgspec.ValidationError`` (a ``ValueError``) naming the field."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if args:
            raise TypeError("HttpTransportOptions() takes keyword arguments only")
        fields = self.__struct_fields__
        unused = sorted(name for name in kwargs if name not in fields)
        if unused:
            containment.warn_once(
                f"HttpTransportOptions.{','.join(unused)}",
                f"HttpTransportOptions: {', '.join(unused)} not used by PipeLens; ignored",
            )
        known = {name: value for name, value in kwargs.items() if name in fields}
        return msgspec.convert(known, self, strict=False)


class HttpTransportOptions(msgspec.Struct, kw_only=True, dict=True, metaclass=_OptionsType):
    """The seed's options object: ``HttpTransport(HttpTransportOptions(base_url=...))``.

    Attributes:
        base_url: the server's URL (``http://localhost:3000``).
        batch_logs: ``True`` sends every ``flush_interval_seconds``; ``False`` (the seed's
            real-time mode) sends within a tenth of a second.
        flush_interval_seconds: seconds between sends in batch mode.
        max_batch_size: events per request at most.
        debug: log every request's outcome at INFO on the ``pipelens`` logger.
        max_retries: retries of one batch before it moves to the disk spool.
        token: sent as ``Authorization: Bearer <token>`` (not in the seed: it had no auth).
    """

    base_url: str
    batch_logs: bool = False
    flush_interval_seconds: float = 3.0
    max_batch_size: int = 100
    debug: bool = False
    max_retries: int = 3
    token: str | None = None


class HttpTransport(BatchingTransport):
    """Sends events to a PipeLens server: batched msgpack over keep-alive HTTP, retried with
    backoff, spooled to disk while the server is unreachable and replayed when it is back.

    Args:
        url: the server's base URL, or the seed's :class:`HttpTransportOptions`.
        token: sent as ``Authorization: Bearer <token>``.
        timeout: seconds one connect, send or receive may block (the sender's, never the user's).
        max_batch_bytes: largest request body; bigger batches are split.
        max_buffer_bytes: memory for the events waiting to be batched and the request bodies
            waiting to be sent, together (default ``configure(max_memory=...)``, 32 MiB): bodies
            take at most three quarters of it (new ones go to the spool), events the rest, by
            their weight (``send`` then waits for the batching thread, which spools what the
            sender cannot keep).
        max_attempts: tries of one batch before it moves to the spool.
        backoff: seconds before the first retry, doubled after each failure (with jitter) up to
            ``max_backoff``; a ``Retry-After`` from the server wins.
        spool: ``False`` keeps nothing on disk (events that do not fit in memory are dropped).
        spool_dir: the spool directory; default ``<user cache dir>/pipelens/spool/<url>``
            (the root can be moved with ``PIPELENS_SPOOL_DIR``). Batches found there are replayed
            when the transport starts.
        max_spool_bytes: the spool's size limit; beyond it events are dropped and counted.
        max_batch: events per request at most (5000; bodies over ``max_batch_bytes`` are split).
        max_queue, interval: see :class:`~pipelens.BatchingTransport`.
        debug: log every request's outcome at INFO.
        heartbeat: seconds between the heartbeats that tell the server which runs are still
            open (15; ``None`` sends none): a run it hears nothing of for its ``--abandon-after``
            timeout is shown ``abandoned``.
        headers: more headers for every request (a proxy's credentials).

    Raises:
        ConfigurationError: an option is invalid (the message names it).
    """

    def __init__(
        self,
        url: str | HttpTransportOptions,
        token: str | None = None,
        *,
        timeout: float = 10.0,
        max_batch_bytes: int = 4 * _MiB,
        max_buffer_bytes: int | None = None,
        max_attempts: int = 10,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        spool: bool = True,
        spool_dir: str | os.PathLike[str] | None = None,
        max_spool_bytes: int = 512 * _MiB,
        max_queue: int = 100_000,
        # Bigger than BatchingTransport's 1000: the server's cost per request (a commit, a few
        # statements) is then spread over more steps; benchmarks/ingest.py measures it.
        max_batch: int = 5000,
        interval: float = 0.5,
        debug: bool = False,
        heartbeat: float | None = DEFAULT_INTERVAL_S,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.options: HttpTransportOptions | None = None
        if isinstance(url, HttpTransportOptions):
            options = self.options = url
            url = options.base_url
            token = token if token is not None else options.token
            interval = options.flush_interval_seconds if options.batch_logs else 0.1
            max_batch = options.max_batch_size
            max_attempts = options.max_retries + 1
            debug = debug or options.debug
        _check_positive(
            timeout=timeout, backoff=backoff, max_backoff=max_backoff, interval=interval
        )
        if heartbeat is not None:
            _check_positive(heartbeat=heartbeat)
            self.heartbeat_interval = float(heartbeat)
        if max_buffer_bytes is None:
            max_buffer_bytes = settings.max_memory_bytes
        _check_counts(
            max_batch_bytes=max_batch_bytes,
            max_buffer_bytes=max_buffer_bytes,
            max_attempts=max_attempts,
            max_spool_bytes=max_spool_bytes,
        )
        if token is not None and (not isinstance(token, str) or not token.isprintable()):
            raise ConfigurationError(
                "HttpTransport(token=...): expected a string of printable characters "
                "(the bearer token the server was started with)"
            )
        owner = type(self).__name__
        _check_headers(owner, headers)
        endpoint = Endpoint(
            url,
            token or None,
            float(timeout),
            f"pipelens-python/{__version__}",
            path=self._path,
            content_type=self._content_type,
            headers=headers,
            owner=owner,
        )
        self.url = endpoint.url
        #: The URL with a trailing ``/``, as the seed's transport kept it.
        self.base_url = self.url if self.url.endswith("/") else f"{self.url}/"
        self.max_batch_bytes = max_batch_bytes
        directory: Path | None = None
        if spool:
            try:
                directory = (
                    Path(spool_dir) if spool_dir is not None else default_spool_dir(endpoint.url)
                )
            except TypeError:
                raise ConfigurationError(
                    f"HttpTransport(spool_dir={spool_dir!r}): expected a directory path"
                ) from None
        self.spool_dir = directory
        super().__init__(max_queue=max_queue, max_batch=max_batch, interval=interval)
        self.max_buffer_bytes = max_buffer_bytes
        # Fixed shares, not what the bodies held leave now: they may grow again while the
        # events wait, and together the two must stay within the bound.
        bodies_bytes = max(1, max_buffer_bytes * 3 // 4)
        self._events_bytes = max(1, max_buffer_bytes - bodies_bytes)
        # Until the first batch is weighed: one batch, of events a guess on the heavy side.
        self._limit = max(1, min(max_queue, max_batch, self._events_bytes // _GUESSED_EVENT_BYTES))
        self._delivery = Delivery(
            endpoint,
            None
            if directory is None
            else Spool(directory, max_bytes=max_spool_bytes, stale_after=max(60.0, 3 * timeout)),
            max_buffer_bytes=bodies_bytes,
            max_attempts=max_attempts,
            backoff=float(backoff),
            max_backoff=float(max_backoff),
            owner=repr(self),
            debug=debug,
        )
        _instances.add(self)
        #: How a worker process builds its own copy (``worker_recipe``): the same server, token,
        #: headers, spool, batching, memory bound and retries, no heartbeats (the parent's run
        #: stays the parent's to keep open). Given options, those they set are theirs again.
        self._recipe: Callable[[], Transport] = functools.partial(
            HttpTransport,
            self.options or self.url,
            token,
            timeout=timeout,
            max_batch_bytes=max_batch_bytes,
            max_buffer_bytes=max_buffer_bytes,
            max_attempts=max_attempts,
            backoff=backoff,
            max_backoff=max_backoff,
            spool=spool,
            spool_dir=spool_dir,
            max_spool_bytes=max_spool_bytes,
            max_queue=max_queue,
            max_batch=max_batch,
            interval=interval,
            debug=debug,
            heartbeat=None,
            headers=dict(headers) if headers is not None else None,
        )

    def worker_recipe(self) -> Callable[[], Transport] | None:
        """A picklable callable that builds this transport again in a worker process (a task
        sent to a ``ProcessPoolExecutor`` or ``multiprocessing``), or ``None`` for a subclass,
        whose arguments we do not know (each class of ours makes its own recipe)."""
        return self._recipe if getattr(self._recipe, "func", None) is type(self) else None

    #: Where bodies are posted under the URL, and their media type (the OTLP export's differ).
    _path = INGEST_PATH
    _content_type = CONTENT_TYPE

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url!r}>"

    def _writer_idle(self) -> bool:
        """No request body waits or is on its way: one cut now is posted at once, so a run's end
        need not linger. A busy sender lingers as before, and its next batch grows meanwhile."""
        return self._delivery.buffered_bytes == 0

    def _queue_budget(self) -> int:
        """The events' share of ``max_buffer_bytes`` (the request bodies have the rest)."""
        return self._events_bytes

    def write(self, batch: Batch) -> None:
        """Encode ``batch`` into request bodies and queue them for the sender (never waits)."""
        if not batch.events:  # heartbeats
            self._delivery.put(encode_msgpack(batch), 0)
            return
        # Scores go in requests of their own: a server older than them refuses a batch that
        # holds one (an unknown event type), and must not lose the steps beside them.
        events: list[Event] = batch.events
        scores: list[Event] = [e for e in events if type(e) is ScoreAdded]
        if scores:
            events = [e for e in events if type(e) is not ScoreAdded]
            for body, count in self._bodies(scores, frozenset()):
                self._delivery.put(body, count)
        # Counts stay in the program's events: a coalesced step is two of them.
        events, doubled = coalesce_steps(events)
        for body, count in self._bodies(events, doubled):
            self._delivery.put(body, count)

    def write_now(self, event: Event) -> bool:
        """Put one event straight into the disk spool, on the caller's thread (it is replayed
        like any spooled body, by this process or the next); ``False`` without a spool."""
        body = encode_msgpack(Batch(events=[scrub_event(event)]))
        return self._delivery.spool_now(body, 1)

    def _bodies(self, events: list[Event], doubled: frozenset[int]) -> Iterator[tuple[bytes, int]]:
        """Request bodies of ``events`` and the events each stands for (``doubled``: the
        positions of coalesced steps)."""
        try:
            body = encode_msgpack(Batch(events=events))
        except Exception:
            # One event that cannot be encoded must not take the batch (other runs' events
            # too) with it: send the others, drop that one and count it.
            events, doubled = self._encodable(events, doubled)
            if not events:
                return
            body = encode_msgpack(Batch(events=events))
        if len(body) <= self.max_batch_bytes or len(events) < 2:
            yield body, len(events) + len(doubled)
            return
        half = len(events) // 2
        yield from self._bodies(events[:half], frozenset(i for i in doubled if i < half))
        yield from self._bodies(events[half:], frozenset(i - half for i in doubled if i >= half))

    def _encodable(
        self, events: list[Event], doubled: frozenset[int]
    ) -> tuple[list[Event], frozenset[int]]:
        kept: list[Event] = []
        kept_doubled: set[int] = set()
        for i, event in enumerate(events):
            try:
                encode_msgpack(Batch(events=[event]))
            except Exception as exc:
                with self._lock:
                    self.dropped += 2 if i in doubled else 1
                self._warn_once(
                    "unencodable",
                    f"{self!r}: an event of run {event.run_id!r} could not be encoded and was "
                    "dropped (the rest of its batch was sent; pipelens.transport_stats() counts "
                    f"it): {type(exc).__name__}: {exc}",
                )
            else:
                if i in doubled:
                    kept_doubled.add(len(kept))
                kept.append(event)
        return kept, frozenset(kept_doubled)

    def flush(self, timeout: float | None = None) -> bool:
        """Send every event queued now; ``False`` when ``timeout`` seconds were not enough.

        Whatever is not sent at the deadline is moved to the disk spool (unless ``spool=False``)
        and replayed later, by this process or the next one sending to the same server.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        handed_over = super().flush(timeout)
        return self._delivery.wait(deadline) and handed_over

    def close(self, timeout: float | None = None) -> None:
        """Flush within ``timeout`` seconds, then stop both threads; later events go to the
        spool (dropped and counted without one)."""
        if self._closed:
            return
        super().close(timeout)
        self._delivery.stop()

    def stats(self) -> TransportStats:
        """Counters of this transport's events (sent, retried, spooled, dropped, ...)."""
        return self._delivery.stats(queued=len(self._queue), dropped=self.dropped)

    async def flush_events(self) -> None:
        """The seed's ``await transport.flush_events()``: send what is queued (up to 5 s)."""
        await asyncio.to_thread(self.flush, _SEED_TIMEOUT)

    async def flush_and_stop(self, timeout: float = 5.0) -> None:
        """The seed's ``await transport.flush_and_stop()``: flush, then close, without blocking
        the event loop; what is not sent within ``timeout`` seconds goes to the spool.
        """
        await asyncio.to_thread(self.close, timeout)


_SEED_TIMEOUT = 5.0


def transport_stats(transport: Transport | None = None) -> TransportStats:
    """Counters of ``transport`` (default: the one ``configure()`` set); zeros when there is none.

    A transport without a ``stats()`` method reports what it counts (``sent``, ``dropped``).
    """
    if transport is None:
        transport = settings.transport
    if transport is None:
        return TransportStats()
    stats = getattr(transport, "stats", None)
    if callable(stats):
        result = stats()
        if isinstance(result, TransportStats):
            return result
    return TransportStats(
        sent=int(getattr(transport, "sent", 0)), dropped=int(getattr(transport, "dropped", 0))
    )


def _check_positive(**values: Any) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ConfigurationError(f"HttpTransport({name}={value!r}): expected seconds > 0")


def _check_counts(**values: Any) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigurationError(
                f"HttpTransport({name}={value!r}): expected a positive integer"
            )


def _check_headers(owner: str, headers: object) -> None:
    if headers is None:
        return
    if not isinstance(headers, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) and k.isprintable() and v.isprintable()
        for k, v in headers.items()
    ):
        raise ConfigurationError(
            f"{owner}(headers=...): expected a mapping of header names to values, all "
            "printable strings"
        )


def _after_fork_in_child() -> None:
    for transport in list(_instances):
        transport._delivery.reset()


if hasattr(os, "register_at_fork"):  # POSIX; Windows has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)
