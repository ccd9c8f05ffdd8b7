"""Transports in-process: real runs written to real files, read back; drops and failures counted."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

import pipelens
from pipelens import BatchingTransport, ConfigurationError, FileTransport, TransportError
from pipelens.events import Batch, Event, RunFinished, StepFinished, StepStarted
from pipelens.testing import CapturedEvents, capture_runs

pytest_plugins = ["pytester"]


@pipelens.step
def fetch(i: int) -> int:
    return i * 10


@pipelens.step
def pipeline(n: int) -> list[int]:
    pipelens.record("n", n)
    return [fetch(i) for i in range(n)]


@pipelens.step
def call_llm(prompt: str, api_key: str) -> str:
    return f"echo {prompt} with sk-{'A' * 24}"


class RecordingFileTransport(FileTransport):
    """A FileTransport that also keeps every event handed to ``send``, for comparison."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.accepted: list[Event] = []

    def send(self, event: Event) -> bool:
        ok = super().send(event)
        if ok:
            self.accepted.append(event)
        return ok


class GatedTransport(BatchingTransport):
    """Writes into a list, but only once ``gate`` is open; ``fail_first`` raises on early writes."""

    def __init__(self, fail_first: list[BaseException] | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.gate = threading.Event()
        self.gate.set()
        self.fail_first = list(fail_first or [])
        self.batches: list[Batch] = []
        self.writer_threads: set[int] = set()

    def write(self, batch: Batch) -> None:
        self.writer_threads.add(threading.get_ident())
        self.gate.wait()
        if self.fail_first:
            raise self.fail_first.pop(0)
        self.batches.append(batch)


@pytest.fixture
def gated() -> Iterator[GatedTransport]:
    """A GatedTransport as the default transport, its gate opened again at teardown."""
    transport = GatedTransport(interval=3600)
    pipelens.configure(transport=transport)
    yield transport
    transport.gate.set()


def file_events(path: Path, **kwargs: Any) -> list[Event]:
    return [e for batch in pipelens.read_event_file(path, **kwargs) for e in batch.events]


@pytest.mark.parametrize(
    ("name", "format", "first_byte"),
    [
        ("events.jsonl", None, b"{"),
        ("events.msgpack", None, b"\x00"),
        ("events.mpk", None, b"\x00"),
        ("events.log", "msgpack", b"\x00"),
        ("events.msgpack", "jsonl", b"{"),
    ],
)
def test_file_holds_every_event_once_in_order(
    tmp_path: Path, name: str, format: Any, first_byte: bytes
) -> None:
    """Events of real runs read back from the file equal those sent, in order, none twice."""
    path = tmp_path / "nested" / name
    transport = RecordingFileTransport(path, format=format, max_batch=3, interval=3600)
    pipelens.configure(transport=transport)
    pipeline(2)
    assert pipelens.flush(10)
    pipeline(3)
    assert pipelens.flush(10)
    written = file_events(path)
    assert transport.accepted == written
    assert len(written) == 8 + 10  # per run: 2 run events + 2 per step; steps: 3, then 4
    assert first_byte == path.read_bytes()[:1]
    assert (transport.dropped, transport.failed_batches) == (0, 0)


def test_secrets_are_scrubbed_in_the_file(tmp_path: Path) -> None:
    """An ``api_key`` argument and a key-shaped result never reach the file."""
    path = tmp_path / "events.jsonl"
    pipelens.configure(file=str(path))
    assert call_llm("hi", api_key="my-very-secret-value").endswith("A" * 24)
    assert pipelens.flush(10)
    text = path.read_text()
    assert ("my-very-secret-value" in text, "A" * 24 in text) == (False, False)
    (started,) = [e for e in file_events(path) if isinstance(e, StepStarted)]
    (finished,) = [e for e in file_events(path) if isinstance(e, StepFinished)]
    assert (
        started.inputs,
        finished.result,
    ) == ('{"prompt":"hi","api_key":"[REDACTED]"}', '"echo hi with [REDACTED]"')


def test_unwritable_path_raises_transport_error_naming_it(tmp_path: Path) -> None:
    """A path under a regular file, or a directory, gives TransportError naming the path."""
    (tmp_path / "file").write_text("x")
    for bad in (tmp_path / "file" / "events.jsonl", tmp_path):
        with pytest.raises(TransportError, match=str(bad)):
            FileTransport(bad)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"max_queue": 0}, "max_queue=0"),
        ({"max_batch": -1}, "max_batch=-1"),
        ({"max_queue": True}, "max_queue=True"),
        ({"interval": 0}, "interval=0"),
        ({"interval": "1s"}, "interval='1s'"),
        ({"format": "csv"}, "format='csv'"),
    ],
)
def test_bad_options_raise_configuration_error_naming_them(
    tmp_path: Path, options: dict[str, Any], named: str
) -> None:
    """Every invalid option is refused with its name and value, before the file is created."""
    path = tmp_path / "events.jsonl"
    with pytest.raises(ConfigurationError, match=named):
        FileTransport(path, **options)
    assert not path.exists()


def test_read_event_file_refuses_an_unknown_format(tmp_path: Path) -> None:
    """``read_event_file(format=...)`` names a bad format."""
    with pytest.raises(ConfigurationError, match="format='xml'"):
        pipelens.read_event_file(tmp_path / "x", format="xml")  # type: ignore[arg-type]


def test_read_event_file_errors_name_the_file_the_line_and_the_field(tmp_path: Path) -> None:
    """A bad JSON line or a truncated msgpack frame is reported with where it is."""
    good = b'{"events":[{"type":"run.started","run_id":"r","pipeline":"p","start_ns":1}]}\n'
    jsonl = tmp_path / "bad.jsonl"
    jsonl.write_bytes(good + good.replace(b":1}", b':"x"}'))
    with pytest.raises(msgspec.ValidationError) as info:
        list(pipelens.read_event_file(jsonl))
    assert f"{jsonl}, line 2: Expected `int`, got `str` - at `$.events[0].start_ns`" == str(
        info.value
    )
    frames = tmp_path / "bad.msgpack"
    frames.write_bytes(b"\x00\x00\x00\x09" + b"short")
    with pytest.raises(msgspec.DecodeError, match="byte 0: truncated msgpack frame"):
        list(pipelens.read_event_file(frames))


def test_a_full_queue_makes_send_wait_and_every_event_arrives(tmp_path: Path) -> None:
    """With room for 3 events, a run of 14 waits for the thread instead of dropping: all 14
    arrive, in order, and the run counts no drop."""
    path = tmp_path / "events.jsonl"
    transport = RecordingFileTransport(path, max_queue=3, interval=3600)
    pipelens.configure(transport=transport)
    pipeline(5)  # 14 events: run + root start, 5 x (start + finish), root finish, run finish
    assert pipelens.flush(10)
    written = file_events(path)
    assert transport.accepted == written
    assert len(written) == 14
    run = written[-1]
    assert isinstance(run, RunFinished)
    assert (run.dropped_events, transport.dropped) == (0, 0)


def test_a_producer_blocked_on_a_full_queue_resumes_when_the_writer_does() -> None:
    """A thread sending into a full queue waits while the writer is held, and goes on once it
    writes again: every event arrives, none dropped."""
    events = _events_of_runs(5)  # 20 events
    transport = GatedTransport(interval=3600, max_queue=2)
    transport.max_wait = 600.0  # the held writer must not look stuck
    transport.gate.clear()
    producer = threading.Thread(target=lambda: [transport.send(e) for e in events])
    producer.start()
    # Blocked: the writer holds one batch at the gate and the queue behind it is full.
    assert _eventually(lambda: transport.writer_threads and len(transport._queue) >= 2)
    assert producer.is_alive()
    transport.gate.set()
    producer.join(60)
    assert not producer.is_alive()
    assert transport.flush(10)
    assert events == [e for b in transport.batches for e in b.events]
    assert transport.dropped == 0
    transport.close(0)


def test_a_stuck_writer_does_not_hang_the_program_and_the_queue_stays_bounded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Against a writer that never finishes, send waits ``max_wait`` once, then counts what it
    cannot write elsewhere as dropped (the base class has no spool) and says so once; the queue
    never holds more than max_queue (+ the RunFinished reserve)."""
    transport = GatedTransport(interval=3600, max_queue=10)
    transport.max_wait = 0.05
    transport.gate.clear()
    pipelens.configure(transport=transport)
    for i in range(20):
        fetch(i)  # 4 events per run
        assert len(transport._queue) <= 11
    transport.gate.set()
    assert pipelens.flush(10)
    written = [e for b in transport.batches for e in b.events]
    assert len(written) + transport.dropped == 80
    assert transport.dropped > 0
    assert caplog.text.count("its thread is not making room") == 1


def test_events_sent_on_the_transports_own_thread_do_not_wait_for_it(tmp_path: Path) -> None:
    """An event sent by the writing thread while the queue is full (a write that is itself
    instrumented) is written, not waited for: no deadlock, nothing dropped."""
    path = tmp_path / "events.jsonl"
    extra = _events_of_runs(2)

    class Reentrant(FileTransport):
        def write(self, batch: Batch) -> None:
            super().write(batch)
            while extra:
                self.send(extra.pop(0))

    transport = Reentrant(path, max_queue=1, interval=3600)
    first = _events_of_runs(1)
    for event in first:
        transport.send(event)
    assert transport.flush(10)
    assert (len(file_events(path)), transport.dropped) == (12, 0)
    transport.close(0)


def test_a_closed_file_transport_writes_later_events_straight_to_the_file(
    tmp_path: Path,
) -> None:
    """After close(), a run still reaches the file, written by the caller: nothing dropped."""
    path = tmp_path / "events.jsonl"
    transport = FileTransport(path, interval=3600)
    pipelens.configure(transport=transport)
    transport.close(10)
    pipeline(2)
    assert (len(file_events(path)), transport.dropped) == (8, 0)


def _events_of_runs(runs: int) -> list[Event]:
    """The events of ``runs`` real runs of ``fetch`` (4 each), as a transport receives them."""
    with capture_runs() as captured:
        for i in range(runs):
            fetch(i)
    return list(captured.events)


def _eventually(predicate: Any) -> bool:
    for _ in range(1000):
        if predicate():
            return True
        time.sleep(0.01)
    return False


def test_closed_transport_counts_every_later_event_as_dropped(gated: GatedTransport) -> None:
    """After close(), send() refuses events and the run counts each of them."""
    gated.close(10)
    seen: list[pipelens.Run | None] = []

    @pipelens.step
    def after_close() -> str:
        seen.append(pipelens.current_run())
        return "still works"

    assert after_close() == "still works"
    run = seen[0]
    assert run is not None
    assert (run.dropped_events, gated.dropped) == (4, 4)


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), RuntimeError("bug")])
def test_failing_write_is_counted_and_later_batches_arrive(
    gated: GatedTransport, error: BaseException
) -> None:
    """A write that raises loses that batch only; the same thread writes the next batches."""
    gated.fail_first = [error]
    fetch(1)
    assert pipelens.flush(10)
    fetch(2)
    assert pipelens.flush(10)
    assert gated.failed_batches == 1
    assert [[e.result for e in b.events if isinstance(e, StepFinished)] for b in gated.batches] == [
        ["20"]
    ]
    (writer,) = gated.writer_threads
    assert threading.get_ident() != writer


def test_removed_directory_fails_batches_until_it_is_back(tmp_path: Path) -> None:
    """A vanished directory costs the batches written meanwhile; writing resumes when it returns."""
    path = tmp_path / "logs" / "events.jsonl"
    transport = FileTransport(path, interval=3600)
    pipelens.configure(transport=transport)
    fetch(1)
    assert pipelens.flush(10)
    shutil.rmtree(path.parent)
    fetch(2)
    assert pipelens.flush(10)
    path.parent.mkdir()
    fetch(3)
    assert pipelens.flush(10)
    assert transport.failed_batches == 1
    assert [e.result for e in file_events(path) if isinstance(e, StepFinished)] == ["30"]


def test_flush_returns_false_when_time_runs_out(gated: GatedTransport) -> None:
    """A write that does not finish makes flush(timeout) return False; True once it can."""
    gated.gate.clear()
    fetch(1)
    assert pipelens.flush(0.05) is False
    gated.gate.set()
    assert pipelens.flush(10) is True
    assert len(gated.batches[0].events) == 4


def test_one_thread_per_transport_however_many_runs(gated: GatedTransport) -> None:
    """A long-lived process keeps one writer thread per transport, not one per run or flush."""
    fetch(0)
    assert pipelens.flush(10)
    threads_after_first_run = threading.active_count()
    for i in range(1, 5):
        fetch(i)
        assert pipelens.flush(10)
    assert threading.active_count() <= threads_after_first_run
    assert (len(gated.writer_threads), sum(len(b.events) for b in gated.batches)) == (1, 20)


def test_capture_runs_restores_the_previous_transport(gated: GatedTransport) -> None:
    """Inside capture_runs() events are captured; afterwards they go where they went before."""
    with capture_runs() as captured:
        pipeline(1)
    fetch(7)
    assert pipelens.flush(10)
    assert (
        [s.key for s in captured.steps()],
        [e.result for b in gated.batches for e in b.events if isinstance(e, StepFinished)],
    ) == (["pipeline.fetch", "pipeline"], ["70"])
    assert isinstance(captured, CapturedEvents)


@pytest.mark.parametrize("how", ["plugin", "conftest"])
def test_pipelens_events_fixture_captures_a_test_s_runs(
    pytester: pytest.Pytester, how: str
) -> None:
    """The ``pipelens_events`` fixture works via ``-p pipelens.testing`` or a conftest import."""
    pytester.makepyfile(
        """
        import pipelens

        @pipelens.step
        def hello(name):
            return "hi " + name

        def test_it(pipelens_events):
            hello("you")
            (run,) = pipelens_events.runs()
            assert run.pipeline == "hello"
            assert pipelens_events.step("hello").result == '"hi you"'
        """
    )
    args = ["-p", "pipelens.testing"] if how == "plugin" else []
    args += ["-p", "no:cacheprovider", "-p", "no:asyncio"]
    if how == "conftest":
        pytester.makeconftest("from pipelens.testing import pipelens_events  # noqa: F401")
    result = pytester.runpytest_inprocess(*args)
    result.assert_outcomes(passed=1)
