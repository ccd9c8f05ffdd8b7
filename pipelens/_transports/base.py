"""Where events go: the ``Transport`` protocol, the in-memory and batching transports, flush and
exit (the file transport, built on the batching one, is in :mod:`pipelens._transports.file`).

A transport's ``send`` is called on the user's code path, so it only appends to a bounded queue;
it never blocks on I/O and never raises. A full queue is back-pressure, not loss: ``send`` waits
until the thread takes a batch off it, at most ``max_wait`` seconds. Where waiting could never
end or could deadlock (on the transport's own thread, with that thread dead or stuck, after
``close``, at interpreter exit) the event is written by the caller instead (:meth:`write_now`:
the file itself, the HTTP transport's disk spool); only a transport with nowhere to write counts
it as dropped, and says so once. One background daemon thread per transport and process
(a forked child starts its own and forgets the parent's queue) scrubs and writes batches, and is
the only thread that writes while it is alive: ``flush`` waits for it with a deadline instead of
writing itself, so a write that hangs delays a flush by its timeout at most. At interpreter exit
every live transport is flushed within ``configure(exit_timeout=...)`` seconds in total (a
``multiprocessing`` worker, which skips ``atexit``, flushes when it ends); whatever is still
pending then is abandoned, so an exit never hangs because of PipeLens.
"""

from __future__ import annotations

import atexit
import collections
import os
import threading
import time
import weakref

from pipelens._core import containment
from pipelens._core.capture import scrub_event
from pipelens._core.errors import ConfigurationError
from pipelens._core.settings import settings
from pipelens._core.sink import Transport
from pipelens._transports.fanout import parts_of
from pipelens._transports.heartbeat import Heartbeat
from pipelens._transports.sizing import event_bytes
from pipelens.events import Batch, Event, RunFinished

__all__ = [
    "BatchingTransport",
    "Transport",
    "check_options",
    "flush",
    "set_transport",
    "shutdown",
]

_live: weakref.WeakSet[Transport] = weakref.WeakSet()
#: Set at interpreter exit: ``send`` no longer waits for a full queue (the exit flush does).
_exiting = False


def check_options(owner: str, max_queue: object, max_batch: object, interval: object) -> None:
    """Refuse a batching option that cannot work, naming it: ``owner(max_queue=0): ...``."""
    for name, value in (("max_queue", max_queue), ("max_batch", max_batch)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigurationError(f"{owner}({name}={value!r}): expected a positive integer")
    if not isinstance(interval, int | float) or isinstance(interval, bool) or not interval > 0:
        raise ConfigurationError(f"{owner}(interval={interval!r}): expected seconds > 0")


class BatchingTransport:
    """A bounded queue drained in batches by one background thread; subclasses write batches.

    Args:
        max_queue: events held in memory (a subclass may bound them by bytes too:
            :meth:`_queue_budget`); when it is full, ``send`` waits for the thread to make
            room (at most ``max_wait`` seconds). A run's ``RunFinished``, and events sent on the
            transport's own thread (which cannot wait for itself), may use a small reserve
            above it; beyond that, or when the wait runs out, :meth:`write_now` takes the event.
        max_batch: events written at once; a full batch wakes the thread early.
        interval: seconds between writes when fewer than ``max_batch`` events are waiting and
            no run ended (a run's end is written within ``linger`` seconds).

    Attributes:
        sent: events written. dropped: events lost: no room in the queue and :meth:`write_now`
            had nowhere to put them (the base class has none).
        failed_batches: batches lost because scrubbing, encoding or ``write`` raised.
    """

    #: Secrets are scrubbed on the background thread, off the user's code path.
    scrubs_events = True
    #: Seconds between heartbeats of the open runs (``heartbeat.py``); ``None`` sends none.
    heartbeat_interval: float | None = None
    #: Seconds a run's end waits for the events right behind it before its batch is written,
    #: instead of the whole ``interval``: a finished run shows up soon, and under load a batch
    #: still holds whatever that moment brings (up to ``max_batch``), not a request per run.
    linger: float = 0.05
    #: Seconds ``send`` waits for room in a full queue before it writes the event itself
    #: (:meth:`write_now`): long enough for any healthy writer, short enough that a stuck one
    #: does not hang the program. After one such timeout, ``send`` stops waiting until the
    #: thread takes a batch again.
    max_wait: float = 5.0

    def __init__(
        self, *, max_queue: int = 100_000, max_batch: int = 1000, interval: float = 0.5
    ) -> None:
        check_options(type(self).__name__, max_queue, max_batch, interval)
        self.max_queue = max_queue
        self.max_batch = max_batch
        self.interval = float(interval)
        #: Events the queue holds at most now: ``max_queue``, or fewer when :meth:`_queue_budget`
        #: bounds it by bytes (then recomputed from each batch the thread takes).
        self._limit = max_queue
        self.sent = 0
        self.dropped = 0
        self.failed_batches = 0
        self._queue: collections.deque[Event] = collections.deque()
        self._closed = False
        self._warn_once = containment.WarnOnce()
        self._reset_after_fork()
        _live.add(self)
        import multiprocessing.util  # here, not at import: most programs never use it

        # A multiprocessing worker ends with os._exit() after its finalizers, skipping atexit.
        multiprocessing.util.register_after_fork(self, _flush_when_worker_ends)
        if multiprocessing.parent_process() is not None:  # created inside a (spawned) worker
            _flush_when_worker_ends(self)

    def _reset_after_fork(self) -> None:
        # A forked child inherits the parent's queue (the parent writes those events) and maybe
        # locks held by the parent's thread, which does not exist here: start afresh.
        self._queue.clear()
        self._lock = threading.Lock()  # guards the counters below and thread start
        self._progress = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._taken = 0  # events taken off the queue by a writer
        self._done = 0  # events taken and then written or lost
        self._started = False
        self._run_ended = False  # a RunFinished is queued: write within ``linger``
        self._stalled = False  # a wait for room timed out: do not wait again until a batch moves
        self._thread: threading.Thread | None = None
        self._heartbeat = Heartbeat(self.heartbeat_interval)  # the parent's runs are not ours

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} queued={len(self._queue)} sent={self.sent} "
            f"dropped={self.dropped} failed_batches={self.failed_batches}>"
        )

    def send(self, event: Event) -> bool:
        """Queue ``event``, waiting for room when the queue is full; ``False`` (and counted in
        ``dropped``) only when it could neither be queued nor written by :meth:`write_now`."""
        queue = self._queue
        if len(queue) >= self._limit or self._closed or _exiting:
            return self._overflow(event)
        queue.append(event)
        if not self._started:
            self._start_thread()
        elif len(queue) >= self.max_batch and not self._wake.is_set():
            self._wake.set()
        elif type(event) is RunFinished and not self._run_ended:
            self._run_ended = True
            self._wake.set()
        return True

    def _overflow(self, event: Event) -> bool:
        queue = self._queue
        # The reserve: a run's end (which carries its drop count), or an event of our own
        # thread, which would wait for itself.
        if (
            not (self._closed or _exiting)  # nobody would write the queue then
            and len(queue) < self._limit + max(1, self._limit // 100)
            and (type(event) is RunFinished or threading.current_thread() is self._thread)
        ):
            queue.append(event)
            self._wake.set()
            return True
        if self._wait_for_room():
            queue.append(event)
            return True
        try:
            written = self.write_now(event)
        except Exception as exc:
            self._warn_once("write-now", f"{self!r}: an event could not be written", exc)
            written = False
        if written:
            return True
        with self._lock:
            self.dropped += 1
        if not self._closed:
            self._warn_once(
                "full",
                f"{self!r}: {len(queue)} events are waiting and its thread is not making "
                "room; events it cannot write elsewhere are dropped and counted. Is a write "
                "stuck? A larger max_queue, or a transport with a spool (HttpTransport), keeps "
                "them",
            )
        return False

    def _wait_for_room(self) -> bool:
        """Wait until the thread takes a batch and there is room (True), or give up (False):
        after ``close``, at exit, on our own thread, with no live thread, or after ``max_wait``."""
        if self._closed or _exiting or self._stalled:
            return False
        if not self._started:
            self._start_thread()
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return False
        deadline = time.monotonic() + self.max_wait
        self._wake.set()
        with self._progress:
            while len(self._queue) >= self._limit:
                remaining = deadline - time.monotonic()
                if self._closed or not thread.is_alive() or remaining <= 0:
                    self._stalled = remaining <= 0
                    return False
                # Woken when a batch is taken; the timeout only re-checks the thread's life.
                self._progress.wait(min(remaining, 1.0))
        return True

    def write_now(self, event: Event) -> bool:
        """Write one event on the caller's thread, when it cannot be queued (the queue stays
        full, the transport is closed, the interpreter is exiting); ``False`` if there is
        nowhere to write it. The base class has nowhere: the event is dropped and counted."""
        return False

    def _start_thread(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
            thread = threading.Thread(
                target=self._run, name=f"pipelens-{type(self).__name__}", daemon=True
            )
            try:
                thread.start()
            except Exception as exc:  # no threads left, or the interpreter is shutting down
                self._warn_once("thread", f"{self!r}: cannot start its thread; flush() writes", exc)
                return
            self._thread = thread

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._run_ended and len(self._queue) < self.max_batch:
                self._wake.wait(self.linger)  # a full batch ends it early
                self._wake.clear()
            self._run_ended = False
            try:
                self._drain(None)
                if (beat := self._heartbeat.due()) is not None:
                    self.write(beat)
            except Exception as exc:  # a bug of ours; the thread must outlive it
                self._warn_once("thread-error", f"{self!r}: error in its thread", exc)

    def _drain(self, deadline: float | None) -> bool:
        """Write queued events until none is left (True) or ``deadline`` passes (False)."""
        queue = self._queue
        while True:
            if deadline is not None and time.monotonic() > deadline:
                return not queue
            with self._lock:
                batch = [queue.popleft() for _ in range(min(len(queue), self.max_batch))]
                self._taken += len(batch)
                if batch:  # room: a producer waiting in send() may go on
                    self._stalled = False
                    self._progress.notify_all()
            if not batch:
                return True
            budget = self._queue_budget()
            if budget is not None:
                # Weighed off the lock, and only here: the user's thread pays nothing for it.
                limit = max(1, min(self.max_queue, budget // event_bytes(batch)))
                with self._lock:
                    self._limit = limit
                    self._progress.notify_all()
            self._heartbeat.observe(batch)
            try:
                self.write(Batch(events=[scrub_event(e) for e in batch]))
                self.sent += len(batch)
            except Exception as exc:
                # The disk is full, the directory gone, the server down: lose this batch, count
                # it, and carry on with the next one.
                self.failed_batches += 1
                self._warn_once("write", f"{self!r}: a batch could not be written", exc)
            finally:
                with self._lock:
                    self._done += len(batch)
                    self._progress.notify_all()

    def _queue_budget(self) -> int | None:
        """Bytes the queued events may take in memory now; ``None`` (the base class): the
        queue is bounded by ``max_queue`` alone."""
        return None

    def write(self, batch: Batch) -> None:
        """Write one batch (on the background thread, or in ``flush`` when it has none)."""
        raise NotImplementedError

    def flush(self, timeout: float | None = None) -> bool:
        """Write every event queued now; ``False`` when ``timeout`` seconds were not enough."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:  # _start_thread holds it until the thread runs
            thread = self._thread
            target = self._taken + len(self._queue)
        if thread is None or thread is threading.current_thread():
            return self._drain(deadline)
        self._wake.set()
        with self._progress:
            while self._done < target:
                if not thread.is_alive():  # closed, or killed at shutdown: write here
                    break
                wait = 1.0 if deadline is None else min(deadline - time.monotonic(), 1.0)
                if wait <= 0:
                    return False
                self._progress.wait(wait)
            else:
                return True
        return self._drain(deadline)

    def close(self, timeout: float | None = None) -> None:
        """Flush, then stop the background thread; later events go to :meth:`write_now`."""
        if self._closed:
            return
        self.flush(timeout)
        self._closed = True
        self._wake.set()
        with self._progress:  # a send() waiting for room writes its event itself now
            self._progress.notify_all()
        _live.discard(self)  # nothing left to flush: pipelens.flush() need not wait for it


def set_transport(transport: Transport | None) -> None:
    """Make ``transport`` the default for new runs, flushing and closing the previous one."""
    previous = settings.transport
    settings.transport = transport
    if transport is not None:
        _live.add(transport)
    # A part of the previous Fanout kept in the new one (our server's, when only the OTLP
    # export changes) goes on sending.
    kept = parts_of(transport)
    for part in parts_of(previous):
        if all(part is not k for k in kept):
            part.close(settings.exit_timeout)


def flush(timeout: float | None = None) -> bool:
    """Write every pending event of every transport; ``False`` if ``timeout`` seconds ran out."""
    deadline = None if timeout is None else time.monotonic() + timeout
    done = True
    for transport in list(_live):
        remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        try:
            done = transport.flush(remaining) and done
        except Exception as exc:
            containment.internal_error("flush", exc)
            done = False
    return done


def shutdown(timeout: float | None = None) -> bool:
    """Flush and close every transport; new runs send nothing. ``False`` if time ran out.

    ``configure(transport=...)`` or ``configure(file=...)`` afterwards starts sending again.
    """
    done = flush(timeout)
    for transport in list(_live):
        try:
            transport.close(0)
        except Exception as exc:
            containment.internal_error("shutdown", exc)
    settings.transport = None
    return done


@atexit.register
def _flush_at_exit() -> None:
    global _exiting
    _exiting = True
    try:
        flush(settings.exit_timeout)
    except Exception:  # never turn an exit into a traceback; internal_error logged it
        return


def _flush_when_worker_ends(transport: BatchingTransport) -> None:
    import multiprocessing.util

    multiprocessing.util.Finalize(
        transport, _flush_ref, args=(weakref.ref(transport),), exitpriority=10
    )


def _flush_ref(ref: weakref.ref[BatchingTransport]) -> None:
    transport = ref()
    if transport is not None:
        try:
            transport.flush(settings.exit_timeout)
        except Exception:  # never turn a worker's exit into a traceback
            return


def _after_fork_in_child() -> None:
    for transport in list(_live):
        if isinstance(transport, BatchingTransport):
            transport._reset_after_fork()


if hasattr(os, "register_at_fork"):  # POSIX; Windows has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)
