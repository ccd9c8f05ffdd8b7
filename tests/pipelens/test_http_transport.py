"""HttpTransport against a real HTTP ingest server on 127.0.0.1: delivery, retries, spool, fork."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _ingest_server import (
    KILL,
    KILL_AFTER_STORE,
    BlackHole,
    IngestServer,
    Reply,
    event_key,
    wait_until,
)

import pipelens
from pipelens import HttpTransport, Run, TransportStats
from pipelens._core.settings import settings as pipelens_settings
from pipelens.events import RunFinished, StepFinished, StepStarted

#: An interval so long that only flush() hands events over: one request per flush.
HOLD = 60.0

Key = tuple[str, str, str | None]
MakeTransport = Callable[..., HttpTransport]

fork_with_threads = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded, use of fork:DeprecationWarning"
)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's PIPELENS_* settings or writes to their cache directory."""
    monkeypatch.setenv("PIPELENS_SPOOL_DIR", str(tmp_path / "spool-root"))
    monkeypatch.delenv("PIPELENS_URL", raising=False)
    monkeypatch.delenv("PIPELENS_TOKEN", raising=False)


@pytest.fixture
def server() -> Iterator[IngestServer]:
    with IngestServer() as running:
        yield running


@pytest.fixture
def make_transport(tmp_path: Path) -> Iterator[MakeTransport]:
    made: list[HttpTransport] = []

    def make(url: str, **options: Any) -> HttpTransport:
        defaults: dict[str, Any] = {
            "spool_dir": tmp_path / "spool",
            "interval": HOLD,
            "backoff": 0.02,
            "max_backoff": 0.1,
            "timeout": 5.0,
        }
        transport = HttpTransport(url, **{**defaults, **options})
        made.append(transport)
        return transport

    yield make
    for transport in made:
        transport.close(0)


@pipelens.step
def child(i: int) -> int:
    return i


def run_pipeline(transport: HttpTransport | None = None, children: int = 3) -> set[Key]:
    """Run a pipeline of ``children`` steps; the keys of every event it emits."""
    with pipelens.Pipeline("p", transport=transport).run() as run:
        for i in range(children):
            child(i)
    return expected_keys(run)


def expected_keys(run: Run) -> set[Key]:
    keys: set[Key] = {("RunStarted", run.id, None), ("RunFinished", run.id, None)}
    for step in run.steps():
        keys |= {("StepStarted", run.id, step.id), ("StepFinished", run.id, step.id)}
    return keys


def arrived(server: IngestServer) -> Counter[Key]:
    return Counter(event_key(e) for e in server.events())


# -- delivery ---------------------------------------------------------------------------------


def test_configure_url_sends_msgpack_with_bearer_token(server: IngestServer) -> None:
    """configure(url, token) posts msgpack to /api/v1/events with the token as a bearer."""
    pipelens.configure(url=server.url, token="s3cret-token")
    expected = run_pipeline()
    assert pipelens.flush(10)
    assert Counter(expected) == arrived(server)
    request = server.requests[0]
    assert (request.path, request.content_type) == ("/api/v1/events", "application/msgpack")
    assert {"Bearer s3cret-token"} == {r.authorization for r in server.requests}
    assert len(expected) == pipelens.transport_stats().sent


def test_a_step_whose_start_and_finish_share_a_batch_is_sent_as_one_event(
    server: IngestServer, make_transport: MakeTransport
) -> None:
    """Start and finish of a step in one batch go as one finish carrying the start's inputs;
    the counts stay in the program's events."""
    transport = make_transport(server.url)
    expected = run_pipeline(transport)
    assert transport.flush(10)
    wire = server.wire_events()
    finished = [e for e in wire if isinstance(e, StepFinished)]
    assert [e for e in wire if isinstance(e, StepStarted)] == []
    assert {None, '{"i":0}', '{"i":1}', '{"i":2}'} == {e.inputs for e in finished}  # root: none
    assert len(expected) - len(finished) == len(wire)
    assert len(expected) == transport.stats().sent
    assert Counter(expected) == arrived(server)


def test_a_start_sent_before_its_finish_still_goes_alone(
    server: IngestServer, make_transport: MakeTransport
) -> None:
    """A step still running when its batch is cut keeps its own start (the live view shows
    it); its finish follows alone."""
    transport = make_transport(server.url)

    @pipelens.step
    def slow() -> None:
        assert transport.flush(10)  # the start is on the wire before the step ends

    with pipelens.Pipeline("p", transport=transport).run():
        slow()
    assert transport.flush(10)
    # The pipeline's root step and ``slow``: both started, then both finished.
    assert [
        type(e).__name__ for e in server.wire_events() if isinstance(e, StepStarted | StepFinished)
    ] == ["StepStarted", "StepStarted", "StepFinished", "StepFinished"]


def test_a_run_end_is_sent_without_waiting_for_the_interval(
    server: IngestServer, make_transport: MakeTransport
) -> None:
    """With a minute between writes, a finished run still goes out at once (after ``linger``),
    with no flush: the server shows finished runs soon."""
    transport = make_transport(server.url, interval=HOLD)
    expected = run_pipeline(transport)
    deadline = time.monotonic() + HOLD / 4
    while Counter(expected) != arrived(server) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert Counter(expected) == arrived(server)


def test_a_run_end_goes_at_once_when_the_sender_is_idle(
    server: IngestServer, make_transport: MakeTransport
) -> None:
    """With nothing waiting to be posted, a finished run is cut at once: it does not wait
    ``linger`` (a minute here), nor the interval."""
    transport = make_transport(server.url, interval=HOLD)
    transport.linger = HOLD
    expected = run_pipeline(transport)
    assert wait_until(lambda: Counter(expected) == arrived(server), timeout=HOLD / 4)


def test_run_ends_behind_a_busy_sender_linger_and_share_one_request(
    server: IngestServer, make_transport: MakeTransport
) -> None:
    """While a request is on its way, the runs that end behind it wait ``linger`` and go
    together: batches do not shrink to a request per run under load."""
    server.delay = 1.0
    transport = make_transport(server.url, interval=HOLD)
    transport.linger = 2.0  # the flush below ends it
    first = run_pipeline(transport)
    assert wait_until(lambda: transport._delivery.buffered_bytes > 0)  # posted, not answered
    later = [run_pipeline(transport) for _ in range(3)]
    assert transport.flush(30)
    assert Counter(first.union(*later)) == arrived(server)
    assert [len(r.runs) for r in server.requests] == [1, 3]


def test_a_slow_server_keeps_memory_under_the_bound_and_the_rest_goes_through_the_spool(
    server: IngestServer, make_transport: MakeTransport
) -> None:
    """With the server slower than the program, the bodies held in memory never exceed
    ``configure(max_memory=...)``; the rest is spooled, and every event arrives, none dropped."""
    bound = 16 * 1024
    pipelens.configure(max_memory=bound)
    server.delay = 0.05
    transport = make_transport(server.url, max_batch=20, interval=0.01)
    expected: set[Key] = set()
    for _ in range(30):
        expected |= run_pipeline(transport, children=10)
    assert transport.flush(60)
    stats = transport.stats()
    assert transport._delivery.peak_bytes <= bound
    assert stats.spooled > 0
    assert stats.dropped == 0
    assert Counter(expected) == Counter(set(arrived(server)))  # a replay may resend a body


@pipelens.step
def heavy(text: str) -> int:
    return len(text)


def test_heavy_events_wait_in_memory_by_their_bytes_and_the_rest_goes_through_the_spool(
    server: IngestServer, make_transport: MakeTransport
) -> None:
    """Steps with 4 KB inputs, produced faster than a slow server takes them: the events waiting
    in the queue and the bodies waiting to be sent stay within ``configure(max_memory=...)``
    together, by their bytes rather than their count; the rest goes through the spool and every
    event arrives, none dropped."""
    bound = 128 * 1024
    pipelens.configure(max_memory=bound)
    server.delay = 0.05
    # A minute between writes: only a full queue or a run's end wakes the batching thread.
    transport = make_transport(server.url, max_batch=16)
    peak = 0
    with pipelens.Pipeline("p", transport=transport).run() as run:
        for i in range(100):
            heavy(f"{i:04d}" + "x" * 4096)
            texts = (getattr(e, "inputs", None) or "" for e in list(transport._queue))
            queued = sum(sys.getsizeof(text) for text in texts)
            peak = max(peak, queued + transport._delivery.buffered_bytes)
    assert transport.flush(60)
    stats = transport.stats()
    assert (stats.dropped, stats.rejected) == (0, 0)
    assert stats.spooled > 0
    assert peak <= bound
    assert Counter(expected_keys(run)) == Counter(set(arrived(server)))


def test_no_token_sends_no_authorization_header(
    server: IngestServer, make_transport: MakeTransport
) -> None:
    """Without a token the request carries no Authorization header."""
    transport = make_transport(server.url)
    run_pipeline(transport)
    assert transport.flush(10)
    assert [r.authorization for r in server.requests] == [None]


def test_environment_chooses_the_transport_on_first_use(
    server: IngestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PIPELENS_URL and PIPELENS_TOKEN, set before the first run, send it to the server."""
    monkeypatch.setenv("PIPELENS_URL", server.url)
    monkeypatch.setenv("PIPELENS_TOKEN", "from-env")
    child(1)
    assert pipelens.flush(10)
    assert len(server.events()) == 4
    assert {"Bearer from-env"} == {r.authorization for r in server.requests}
    assert isinstance(pipelens._core.settings.settings.transport, HttpTransport)


def test_no_configuration_sends_nothing() -> None:
    """With no configure() and no PIPELENS_URL there is no transport at all."""
    child(1)
    assert pipelens._core.settings.settings.transport is None
    assert TransportStats() == pipelens.transport_stats()


def test_bad_environment_url_is_logged_not_raised(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A malformed PIPELENS_URL leaves the program running and says why it was ignored."""
    monkeypatch.setenv("PIPELENS_URL", "localhost:3000")
    assert child(2) == 2
    assert pipelens._core.settings.settings.transport is None
    assert "PIPELENS_URL is ignored" in caplog.text
    assert "http://" in caplog.text


def test_batches_share_one_keep_alive_connection(
    server: IngestServer, make_transport: MakeTransport
) -> None:
    """Successive requests reuse one TCP connection."""
    transport = make_transport(server.url)
    for _ in range(3):
        run_pipeline(transport)
        assert transport.flush(10)
    assert server.statuses() == [202, 202, 202]
    assert len({r.client_port for r in server.requests}) == 1


def test_large_batches_are_split_by_bytes(
    server: IngestServer, make_transport: MakeTransport
) -> None:
    """No request body exceeds max_batch_bytes, and every event arrives once."""
    transport = make_transport(server.url, max_batch_bytes=2000)
    expected = run_pipeline(transport, children=40)
    assert transport.flush(10)
    assert len(server.requests) > 1
    assert all(r.size <= 2000 for r in server.requests)
    assert Counter(expected) == arrived(server)


# -- faults -----------------------------------------------------------------------------------


def test_server_down_then_up_every_event_arrives_once(
    server: IngestServer, make_transport: MakeTransport
) -> None:
    """Events sent while the server is down arrive once it is up, each exactly once."""
    server.stop()
    transport = make_transport(server.url, interval=0.02)
    expected = run_pipeline(transport, children=20)
    assert wait_until(lambda: transport.stats().retried > 0)
    assert not transport.flush(0.2)  # still down: the batch goes to the spool
    server.start()
    expected |= run_pipeline(transport)
    assert transport.flush(10)
    assert Counter(expected) == arrived(server)
    assert len(expected) == transport.stats().sent


def test_a_batch_spooled_by_a_flush_while_on_its_way_is_not_sent_again(
    server: IngestServer, make_transport: MakeTransport
) -> None:
    """A flush that runs out of time spools the batch being posted too (it may never be
    answered); when the server does answer it, the spooled copy is dropped, not replayed."""
    server.delay = 1.0
    transport = make_transport(server.url)
    expected = run_pipeline(transport)
    assert not transport.flush(0.2)  # posted, not answered yet: it goes to the spool
    assert transport.stats().spooled == len(expected)
    assert transport.flush(10)
    assert Counter(expected) == arrived(server)
    assert len(expected) == transport.stats().sent
    assert len(server.requests) == 1
    assert list((transport.spool_dir or Path()).iterdir()) == []


def test_an_outage_longer_than_every_retry_is_still_delivered_by_this_process(
    server: IngestServer, make_transport: MakeTransport
) -> None:
    """A spooled batch whose replays all failed stays due: this process sends it once the
    server is back, and flush waits for it (it is not left for some later process)."""
    server.stop()
    transport = make_transport(server.url, interval=0.02, max_attempts=2)
    expected = run_pipeline(transport, children=5)
    # The batch failed twice in memory and went to the spool; a second later (backoff at most
    # 0.1 s) its replays have failed far more than max_attempts times too.
    assert wait_until(lambda: transport.stats().spooled > 0)
    time.sleep(1.0)
    server.start()
    assert transport.flush(10)
    assert Counter(expected) == arrived(server)


def test_a_closed_transport_does_not_hold_up_flush(
    server: IngestServer, make_transport: MakeTransport
) -> None:
    """Closing hands a dead server's batches to the spool for later; pipelens.flush() no
    longer waits for them."""
    server.stop()
    dead = make_transport(server.url, interval=0.02)
    run_pipeline(dead)
    assert wait_until(lambda: dead.stats().retried > 0)
    dead.close(0)
    assert pipelens.flush(5) is True


def test_server_restart_between_batches_loses_nothing(
    server: IngestServer, make_transport: MakeTransport
) -> None:
    """A keep-alive connection cut by a restart is replaced; nothing is lost or doubled."""
    transport = make_transport(server.url)
    expected = run_pipeline(transport)
    assert transport.flush(10)
    server.stop()
    server.start()
    expected |= run_pipeline(transport)
    assert transport.flush(10)
    assert Counter(expected) == arrived(server)


def test_connection_killed_before_storing_is_resent(
    server: IngestServer, make_transport: MakeTransport
) -> None:
    """A request cut before the server stored it is sent again: every event arrives once."""
    server.plan(KILL)
    transport = make_transport(server.url)
    expected = run_pipeline(transport)
    assert transport.flush(10)
    assert server.statuses() == [0, 202]
    assert Counter(expected) == arrived(server)


def test_connection_killed_after_storing_is_resent_at_least_once(
    server: IngestServer, make_transport: MakeTransport
) -> None:
    """A batch stored but unanswered is resent: every event arrives, only that batch twice
    (the real server's idempotent upsert makes the second copy a no-op).
    """
    server.plan(KILL_AFTER_STORE)
    transport = make_transport(server.url)
    expected = run_pipeline(transport)
    assert transport.flush(10)
    assert server.statuses() == [0, 202]
    assert Counter(dict.fromkeys(expected, 2)) == arrived(server)
    assert (len(expected), len(expected)) == (transport.stats().sent, transport.stats().retried)


def test_server_errors_are_retried(server: IngestServer, make_transport: MakeTransport) -> None:
    """500 and 503 answers are retried until the batch is accepted."""
    server.plan(500, 503)
    transport = make_transport(server.url)
    expected = run_pipeline(transport)
    assert transport.flush(10)
    assert server.statuses() == [500, 503, 202]
    assert Counter(expected) == arrived(server)
    assert 2 * len(expected) == transport.stats().retried


def test_429_is_retried_no_sooner_than_retry_after(
    server: IngestServer, make_transport: MakeTransport
) -> None:
    """A 429 with Retry-After: 1 is retried, and not before that second has passed."""
    server.plan(Reply(429, retry_after="1"))
    transport = make_transport(server.url)
    expected = run_pipeline(transport)
    assert transport.flush(10)
    assert server.statuses() == [429, 202]
    assert Counter(expected) == arrived(server)
    first, second = server.requests
    assert second.at - first.at >= 1.0  # a lower bound: a slow machine cannot break it


def test_400_is_not_retried_and_counted_as_rejected(
    server: IngestServer, make_transport: MakeTransport, caplog: pytest.LogCaptureFixture
) -> None:
    """A 400 drops the batch without a retry, counts it as rejected and logs once."""
    server.plan(400, 400)
    transport = make_transport(server.url)
    events = len(run_pipeline(transport))
    assert transport.flush(10)
    run_pipeline(transport)
    assert transport.flush(10)
    assert server.statuses() == [400, 400]
    stats = transport.stats()
    assert (0, 0, 2 * events) == (stats.sent, stats.retried, stats.rejected)
    refusals = [r for r in caplog.records if "HTTP 400" in r.getMessage()]
    assert len(refusals) == 1


def test_a_small_queue_and_a_slow_server_lose_nothing(
    server: IngestServer, make_transport: MakeTransport
) -> None:
    """Events produced far faster than a slow server takes them, through a queue of 20 and
    4 KiB of bodies in memory: the producer waits for room, the batching thread spools what
    the sender cannot keep, and every event arrives, none dropped, the bounds held."""
    pipelens.configure(max_memory=4 * 1024)
    server.delay = 0.05
    transport = make_transport(server.url, max_queue=20, max_batch=10, interval=0.01)
    expected: set[Key] = set()
    # Five times the queue already fills the memory bound and spools most events; each spooled
    # event costs a slow request to replay, so more runs only make the test longer.
    runs = 5
    for _ in range(runs):
        expected |= run_pipeline(transport, children=8)  # 20 events a run
        assert len(transport._queue) <= 20 + 1  # max_queue and the RunFinished reserve
    assert transport.flush(120)
    stats = transport.stats()
    assert (stats.dropped, stats.rejected) == (0, 0)
    assert stats.spooled > 0
    assert stats.replayed == stats.spooled
    assert transport._delivery.peak_bytes <= 4 * 1024
    assert Counter(expected) == Counter(set(arrived(server)))
    assert len(expected) == runs * 20


def test_a_closed_transport_spools_later_events_for_the_next_sender(
    server: IngestServer, make_transport: MakeTransport, tmp_path: Path
) -> None:
    """A run after close() is written to the spool by the caller, and the next transport on
    that spool delivers it: nothing dropped."""
    transport = make_transport(server.url)
    transport.close(10)
    expected = run_pipeline(transport, children=2)
    assert (transport.stats().dropped, transport.stats().spooled) == (0, 8)
    replayer = make_transport(server.url)
    assert wait_until(lambda: set(arrived(server)) == expected, timeout=30)
    replayer.close(0)


def test_without_spool_overflow_is_dropped_counted_and_logged_once(
    server: IngestServer, make_transport: MakeTransport, caplog: pytest.LogCaptureFixture
) -> None:
    """With spool=False, what does not fit in memory while the server is down is dropped."""
    server.stop()
    transport = make_transport(server.url, spool=False, max_buffer_bytes=1, max_batch=4)
    events = len(run_pipeline(transport, children=6))  # 16 events: several requests
    assert not transport.flush(0.2)
    stats = transport.stats()
    assert stats.pending + stats.dropped == events
    assert stats.dropped > 0
    assert caplog.text.count("events were dropped") == 1


# -- spool ------------------------------------------------------------------------------------

REPLAY = """
import sys, time
from pipelens import HttpTransport

transport = HttpTransport(sys.argv[1], spool_dir=sys.argv[2], interval=60)
deadline = time.monotonic() + 30
while transport.stats().replayed < int(sys.argv[3]) and time.monotonic() < deadline:
    time.sleep(0.01)
print(transport.stats().replayed)
"""


def spooled_events(directory: Path) -> int:
    return sum(int(p.stem.rsplit("-", 1)[1]) for p in directory.glob("*.msgpack"))


def test_overflow_spools_to_disk_and_a_new_process_replays(
    server: IngestServer, make_transport: MakeTransport, tmp_path: Path
) -> None:
    """While the server is down, batches beyond the memory buffer go to disk; another process
    sending to the same spool replays them once the server is up, each event exactly once.
    """
    server.stop()
    spool = tmp_path / "spool"
    transport = make_transport(
        server.url, max_buffer_bytes=1, max_batch=5, backoff=30, max_backoff=30
    )
    expected = run_pipeline(transport, children=20)
    assert transport.flush(0.5) is False
    assert wait_until(lambda: transport.stats().spooled == len(expected))
    transport.close(0)
    assert len(expected) == spooled_events(spool)

    server.start()
    replay = subprocess.run(
        [sys.executable, "-c", REPLAY, server.url, str(spool), str(len(expected))],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert str(len(expected)) == replay.stdout.strip()
    assert Counter(expected) == arrived(server)
    assert list(spool.iterdir()) == []


def test_unwritable_spool_drops_counts_and_logs(
    server: IngestServer,
    make_transport: MakeTransport,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A spool that cannot be written loses the batch, counts it as dropped and says why."""
    server.stop()
    (tmp_path / "a-file").write_text("not a directory")
    transport = make_transport(
        server.url, spool_dir=tmp_path / "a-file" / "spool", backoff=30, max_backoff=30
    )
    events = len(run_pipeline(transport))
    assert not transport.flush(0.5)
    assert (transport.stats().dropped, transport.stats().spooled) == (events, 0)
    assert "cannot write to <Spool" in caplog.text
    assert caplog.text.count("events were dropped") == 1


def test_claim_of_a_process_that_died_is_replayed(
    server: IngestServer, make_transport: MakeTransport, tmp_path: Path
) -> None:
    """A spooled batch claimed by a process that died while sending it is sent by the next."""
    spool = tmp_path / "spool"
    server.stop()
    writer = make_transport(server.url, backoff=30, max_backoff=30)
    expected = run_pipeline(writer)
    assert not writer.flush(0.5)
    writer.close(0)
    (spooled,) = spool.glob("*.msgpack")
    claimed = spooled.with_name(f"{spooled.name}.999999.claim")  # as a sender crashed mid-way
    spooled.rename(claimed)
    os.utime(claimed, (0, 0))
    server.start()
    reader = make_transport(server.url)
    assert wait_until(lambda: reader.stats().replayed == len(expected))
    assert arrived(server) == Counter(expected)


EXIT = """
import sys
import pipelens

pipelens.configure(
    transport=pipelens.HttpTransport(sys.argv[1], spool_dir=sys.argv[2], timeout=300),
    exit_timeout=1.0,
)

@pipelens.step
def work(i):
    return i

@pipelens.step
def main():
    return [work(i) for i in range(10)]

main()
"""


def test_exit_flush_with_an_unresponsive_server_keeps_its_deadline(
    tmp_path: Path, make_transport: MakeTransport
) -> None:
    """A process whose server accepts but never answers exits at its exit_timeout, not the
    socket timeout, with its events spooled; they reach the server once it is there.
    """
    spool = tmp_path / "spool"
    with BlackHole() as hole:
        # Hanging until the 300 s socket timeout would exceed this 120 s limit and fail.
        subprocess.run([sys.executable, "-c", EXIT, hole.url, str(spool)], timeout=120, check=True)
    assert spooled_events(spool) == 24  # 11 steps started and finished, the run's two events

    with IngestServer() as server:
        transport = make_transport(server.url, spool_dir=spool)
        assert wait_until(lambda: transport.stats().replayed == 24)
        assert list(arrived(server).values()) == [1] * 24
        assert [e.pipeline for e in server.events() if isinstance(e, RunFinished)] == ["main"]


# -- processes and event loops ----------------------------------------------------------------


@fork_with_threads
def test_forked_child_sends_its_own_events_not_the_parents(
    server: IngestServer, make_transport: MakeTransport
) -> None:
    """After fork the child sends its own run on its own thread and connection; the parent's
    queued events are sent once, by the parent.
    """
    transport = make_transport(server.url)
    parent_expected = run_pipeline(transport)
    assert transport.flush(10)  # the parent's sender thread and connection are open at the fork
    parent_expected |= run_pipeline(transport)  # queued (HOLD), not sent, when the child forks
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        code = 1
        try:
            keys = run_pipeline(transport)
            flushed = transport.flush(10)
            report = f"{flushed} {transport.stats().sent} {len(keys)} {next(iter(keys))[1]}"
            os.write(write_end, report.encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        flushed, sent, count, child_run = pipe.read().split()
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert transport.flush(10)
    assert ("True", count) == (flushed, sent)  # the child sent exactly its own events
    events = arrived(server)
    assert int(count) == sum(n for key, n in events.items() if key[1] == child_run)
    assert Counter(parent_expected) == Counter(
        {key: n for key, n in events.items() if key[1] != child_run}
    )
    assert len(parent_expected) == transport.stats().sent
    child_ports = {r.client_port for r in server.requests if child_run in r.runs}
    parent_ports = {r.client_port for r in server.requests if child_run not in r.runs}
    assert child_ports.isdisjoint(parent_ports)  # not the parent's inherited socket


def _worker(run_id: str) -> None:
    with pipelens.Pipeline("worker", run_id=run_id).run():
        child(1)


@fork_with_threads
def test_multiprocessing_worker_flushes_when_it_ends(
    server: IngestServer, make_transport: MakeTransport
) -> None:
    """A fork-started multiprocessing worker's events are sent before it exits (no atexit)."""
    pipelens.configure(transport=make_transport(server.url))
    worker = multiprocessing.get_context("fork").Process(target=_worker, args=("worker-run",))
    worker.start()
    worker.join(60)
    assert worker.exitcode == 0
    assert sum(1 for e in server.events() if e.run_id == "worker-run") == 6


async def test_asyncio_app_reports_without_blocking_the_loop(server: IngestServer) -> None:
    """Steps of an asyncio app arrive; flushing from the loop goes through a thread."""

    @pipelens.step
    async def fetch(i: int) -> int:
        await asyncio.sleep(0)
        return i

    @pipelens.step
    async def app() -> list[int]:
        return list(await asyncio.gather(*(fetch(i) for i in range(5))))

    pipelens.configure(url=server.url)
    assert await app() == [0, 1, 2, 3, 4]
    assert await asyncio.to_thread(pipelens.flush, 10)
    assert len(server.events()) == 14
    assert pipelens.transport_stats().sent == 14


async def test_seed_readme_example_runs_unchanged(server: IngestServer) -> None:
    """The seed README's "Using Dashboard" example reports its run (only the URL differs)."""
    from pipelens import Pipeline
    from pipelens.transport import HttpTransport, HttpTransportOptions

    http_transport = HttpTransport(HttpTransportOptions(base_url=server.url, batch_logs=True))

    # Create pipeline with HTTP transport
    pipeline = Pipeline("my-pipeline", auto_save="real_time", transport=http_transport)

    # Run your pipeline
    async def pipeline_logic(st: Any) -> None:
        # Your pipeline steps here
        pass

    await pipeline.track(pipeline_logic)

    # Make sure to flush any pending logs when your application is shutting down
    await http_transport.flush_and_stop()

    run_id = pipeline.get_run_id()
    assert [
        (type(e).__name__, getattr(e, "pipeline", None) or getattr(e, "key", None))
        for e in server.events()
        if e.run_id == run_id
    ] == [
        ("RunStarted", "my-pipeline"),
        ("StepStarted", "my-pipeline"),
        ("StepFinished", "my-pipeline"),
        ("RunFinished", "my-pipeline"),
    ]


# -- bad input --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"url": "localhost:3000"}, "url='localhost:3000'"),
        ({"url": "http://user:pw@host"}, "token="),
        ({"url": "http://h", "max_attempts": 0}, "max_attempts=0"),
        ({"url": "http://h", "backoff": -1}, "backoff=-1"),
        ({"url": "http://h", "token": "a\nb"}, "printable"),
    ],
)
def test_bad_options_name_the_field(options: dict[str, Any], message: str) -> None:
    """A wrong option is a ConfigurationError naming it."""
    with pytest.raises(pipelens.ConfigurationError, match=re.escape(message)):
        HttpTransport(**options)


def test_configure_token_without_url_is_an_error() -> None:
    """configure(token=...) alone says the token goes with url=."""
    with pytest.raises(pipelens.ConfigurationError, match="url="):
        pipelens.configure(token="t")


def test_debug_logs_each_request(
    server: IngestServer, make_transport: MakeTransport, caplog: pytest.LogCaptureFixture
) -> None:
    """debug=True logs every request's outcome at INFO."""
    caplog.set_level(logging.INFO, logger="pipelens")
    transport = make_transport(server.url, debug=True)
    run_pipeline(transport)
    assert transport.flush(10)
    assert sum("HTTP 202" in r.getMessage() for r in caplog.records) == 1


def _heartbeats(server: IngestServer) -> list[str]:
    return [beat.run_id for b in server.batches if b.heartbeats for beat in b.heartbeats]


@pytest.mark.parametrize("source", ["url", "env"])
def test_configure_heartbeat_sets_the_interval(
    server: IngestServer, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    """``configure(heartbeat=s)`` is the interval of the transport ``url=`` or ``PIPELENS_URL``
    makes: a step that waits sees its run's heartbeat arrive."""
    if source == "url":
        pipelens.configure(url=server.url, heartbeat=0.05)
    else:
        monkeypatch.setenv("PIPELENS_URL", server.url)
        pipelens.configure(heartbeat=0.05)
    seen: list[bool] = []

    @pipelens.step
    def waits() -> None:
        run = pipelens.current_run()
        assert run is not None
        seen.append(wait_until(lambda: run.id in _heartbeats(server)))

    waits()
    assert pipelens.flush(10)
    assert seen == [True]


def test_configure_heartbeat_zero_sends_none(server: IngestServer) -> None:
    """``heartbeat=0`` makes a transport that sends no heartbeats; later calls that do not
    name it keep it, as every option is kept."""
    pipelens.configure(url=server.url, heartbeat=0)
    assert pipelens_settings.transport.heartbeat_interval is None  # type: ignore[union-attr]
    pipelens.configure(url=server.url)
    assert pipelens_settings.transport.heartbeat_interval is None  # type: ignore[union-attr]
    pipelens.configure(url=server.url, heartbeat=15)
    assert pipelens_settings.transport.heartbeat_interval == 15.0  # type: ignore[union-attr]
