"""Where events go: the ``Transport`` protocol, in-memory and file transports, flush and exit.

A transport's ``send`` is called on the user's code path, so it only appends to a bounded queue;
a background daemon thread (one per process: a forked child starts its own) writes batches.
At interpreter exit every live transport is flushed within ``configure(exit_timeout=...)``
seconds in total, and whatever is still pending then is abandoned: an exit never hangs.
"""

from __future__ import annotations

import atexit
import collections
import os
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import msgspec

from pipelens import _internal
from pipelens._capture import scrub_event
from pipelens._config import settings
from pipelens._errors import ConfigurationError, TransportError
from pipelens.events import Batch, Event, decode_json, decode_msgpack, encode_json, encode_msgpack

_live: weakref.WeakSet[Transport] = weakref.WeakSet()


@runtime_checkable
class Transport(Protocol):
    """Receives every event of the runs that use it.

    ``send`` must return quickly and never raise; it returns ``False`` when the event was dropped
    (the run then counts it in ``dropped_events``).
    """

    def send(self, event: Event) -> bool: ...

    def flush(self, timeout: float | None = None) -> bool: ...

    def close(self, timeout: float | None = None) -> None: ...


class MemoryTransport:
    """Keeps every event in a list: for tests (see :mod:`pipelens.testing`) and notebooks."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def send(self, event: Event) -> bool:
        self.events.append(event)
        return True

    def flush(self, timeout: float | None = None) -> bool:
        return True

    def close(self, timeout: float | None = None) -> None:
        return None

    def clear(self) -> None:
        """Forget the events received so far."""
        self.events.clear()

    def batch(self) -> Batch:
        """The events received so far as one wire batch."""
        return Batch(events=list(self.events))


class BatchingTransport:
    """A bounded queue drained in batches by one background thread; subclasses write batches.

    Args:
        max_queue: events held before new ones are dropped (and counted in ``dropped``).
        max_batch: events written at once.
        interval: seconds between writes when the queue is not full.
    """

    #: Secrets are scrubbed on the background thread, off the user's code path.
    scrubs_events = True

    def __init__(
        self, *, max_queue: int = 100_000, max_batch: int = 1000, interval: float = 0.5
    ) -> None:
        for name, value in (("max_queue", max_queue), ("max_batch", max_batch)):
            if not isinstance(value, int) or value < 1:
                raise ConfigurationError(
                    f"{type(self).__name__}({name}={value!r}): expected a positive integer"
                )
        if not interval > 0:
            raise ConfigurationError(
                f"{type(self).__name__}(interval={interval!r}): expected seconds > 0"
            )
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.interval = interval
        self.sent = 0
        self.dropped = 0
        self.failed_batches = 0
        self._queue: collections.deque[Event] = collections.deque()
        self._closed = False
        self._reset_after_fork()
        _live.add(self)

    def _reset_after_fork(self) -> None:
        # A forked child inherits the parent's queue (the parent sends those events) and maybe
        # locks held by the parent's thread, which does not exist here: start afresh.
        self._queue.clear()
        self._wake = threading.Event()
        self._write_lock = threading.Lock()
        self._thread_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def send(self, event: Event) -> bool:
        queue = self._queue
        if self._closed or len(queue) >= self.max_queue:
            if not self._closed:
                _internal.warn_once(
                    f"queue-full {id(self)}",
                    f"{type(self).__name__}: {self.max_queue} events are waiting to be written; "
                    "new events are dropped and counted until it catches up",
                )
            self.dropped += 1
            return False
        queue.append(event)
        if self._thread is None:
            self._start_thread()
        elif len(queue) >= self.max_batch:
            self._wake.set()
        return True

    def _start_thread(self) -> None:
        with self._thread_lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name=f"pipelens-{type(self).__name__}", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.interval)
            self._wake.clear()
            self._drain(deadline=None)

    def _drain(self, deadline: float | None) -> bool:
        """Write queued events until the queue is empty (True) or ``deadline`` passes (False)."""
        queue = self._queue
        with self._write_lock:
            while queue:
                if deadline is not None and time.monotonic() > deadline:
                    return False
                batch: list[Event] = []
                try:
                    while queue and len(batch) < self.max_batch:
                        batch.append(queue.popleft())
                except IndexError:  # another thread emptied it; nothing lost
                    pass
                if not batch:
                    break
                try:
                    self.write(Batch(events=[scrub_event(e) for e in batch]))
                    self.sent += len(batch)
                except Exception as exc:
                    self.failed_batches += 1
                    _internal.internal_error(f"{type(self).__name__}.write", exc)
        return True

    def write(self, batch: Batch) -> None:
        """Write one batch (runs on the background thread, or in ``flush``)."""
        raise NotImplementedError

    def flush(self, timeout: float | None = None) -> bool:
        """Write everything queued now; ``False`` when ``timeout`` seconds were not enough."""
        deadline = None if timeout is None else time.monotonic() + timeout
        return self._drain(deadline)

    def close(self, timeout: float | None = None) -> None:
        """Flush, then stop the background thread; later events are dropped."""
        self.flush(timeout)
        self._closed = True
        self._wake.set()


FileFormat = Literal["jsonl", "msgpack"]


class FileTransport(BatchingTransport):
    """Appends batches to a file: JSON lines (one :class:`~pipelens.events.Batch` per line) or
    msgpack frames (each a 4-byte big-endian length, then the batch). Read it back with
    :func:`read_event_file`; the server's import takes the same files.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, format: FileFormat | None = None, **options: float
    ) -> None:
        self.path = Path(path)
        if format is None:
            format = "msgpack" if self.path.suffix in (".msgpack", ".mpk") else "jsonl"
        if format not in ("jsonl", "msgpack"):
            raise ConfigurationError(
                f"FileTransport(format={format!r}): expected 'jsonl' or 'msgpack'"
            )
        self.format: FileFormat = format
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch()
        except OSError as exc:
            raise TransportError(
                f"FileTransport: cannot write to {str(self.path)!r}: {exc.strerror}"
            ) from None
        super().__init__(**options)  # type: ignore[arg-type]

    def write(self, batch: Batch) -> None:
        if self.format == "jsonl":
            data = encode_json(batch) + b"\n"
        else:
            body = encode_msgpack(batch)
            data = len(body).to_bytes(4, "big") + body
        # One write per batch on an O_APPEND file keeps batches whole even across processes.
        with self.path.open("ab") as f:
            f.write(data)


def read_event_file(path: str | os.PathLike[str]) -> Iterator[Batch]:
    """The batches of a :class:`FileTransport` file, in order.

    Raises:
        msgspec.ValidationError / msgspec.DecodeError: a batch is malformed (the message names
            the field's path); batches before it have been yielded.
    """
    data = Path(path).read_bytes()
    if data[:1] in (b"{", b"\n", b" ", b""):
        for line in data.splitlines():
            if line.strip():
                yield decode_json(line)
        return
    offset = 0
    while offset < len(data):
        size = int.from_bytes(data[offset : offset + 4], "big")
        frame = data[offset + 4 : offset + 4 + size]
        if len(frame) != size:
            raise msgspec.DecodeError(f"truncated msgpack frame at byte {offset} of {str(path)!r}")
        yield decode_msgpack(frame)
        offset += 4 + size


def set_transport(transport: Transport | None) -> None:
    """Make ``transport`` the default for new runs, flushing and closing the previous one."""
    previous = settings.transport
    settings.transport = transport
    if transport is not None:
        _live.add(transport)
    if previous is not None and previous is not transport:
        previous.close(settings.exit_timeout)


def flush(timeout: float | None = None) -> bool:
    """Write every pending event of every transport; ``False`` if ``timeout`` seconds ran out."""
    deadline = None if timeout is None else time.monotonic() + timeout
    done = True
    for transport in list(_live):
        remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        try:
            done = transport.flush(remaining) and done
        except Exception as exc:
            _internal.internal_error("flush", exc)
            done = False
    return done


def shutdown(timeout: float | None = None) -> bool:
    """Flush and close every transport and stop sending; ``False`` if time ran out."""
    done = flush(timeout)
    for transport in list(_live):
        try:
            transport.close(0)
        except Exception as exc:
            _internal.internal_error("shutdown", exc)
    settings.transport = None
    return done


@atexit.register
def _flush_at_exit() -> None:
    flush(settings.exit_timeout)


def _after_fork_in_child() -> None:
    for transport in list(_live):
        if isinstance(transport, BatchingTransport):
            transport._reset_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
