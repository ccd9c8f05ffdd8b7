"""Loss cases of the HTTP transport against a real ingest server: bad strings, long names and a
wrong token never lose other events, and what is lost is counted."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _ingest_server import IngestServer, Reply, wait_until

import pipelens
from pipelens import HttpTransport
from pipelens._core.capture import wire_safe
from pipelens.events import (
    MAX_KEY_BYTES,
    MAX_NAME_BYTES,
    MAX_PIPELINE_BYTES,
    MAX_RUN_ID_BYTES,
    TRUNCATED_MARK,
    ErrorInfo,
    RunFinished,
    RunStarted,
    StepFinished,
)

MakeTransport = Callable[..., HttpTransport]
BAD_NAME = os.fsdecode(b"report-\xff.csv")  # a lone surrogate: UTF-8 cannot encode it


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
            "interval": 60.0,  # only flush() hands events over: one batch per flush
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


def finished(server: IngestServer) -> dict[str, StepFinished]:
    return {e.name: e for e in server.events() if isinstance(e, StepFinished)}


def test_lone_surrogates_are_replaced_and_the_whole_batch_arrives(
    server: IngestServer, make_transport: MakeTransport
) -> None:
    """A surrogate in a step name, an exception message, a record key and an argument is
    replaced by U+FFFD; that run and another run in the same batch arrive; nothing is dropped."""
    transport = make_transport(server.url)

    @pipelens.step(BAD_NAME)
    def load(path: str) -> str:
        pipelens.record(BAD_NAME, path)
        raise FileNotFoundError(f"no such file: {path}")

    @pipelens.step
    def fine() -> int:
        return 1

    with pipelens.Pipeline("bad", transport=transport).run(), pytest.raises(FileNotFoundError):
        load(BAD_NAME)
    with pipelens.Pipeline("good", transport=transport).run():
        fine()
    assert transport.flush(5) is True

    steps = finished(server)
    clean = "report-\ufffd.csv"
    assert {"report-\ufffd_csv", "fine", "bad", "good"} == set(steps)  # "." is "_" in names
    bad = steps["report-\ufffd_csv"]
    assert bad.error is not None
    assert f"no such file: {clean}" == bad.error.message
    assert bad.error.traceback is not None
    assert clean in bad.error.traceback
    assert bad.records is not None
    assert f'"{clean}":"{clean}"' in bad.records
    # The start's inputs travel on the finish (one batch): the capture's repr of the argument,
    # whose surrogate is escaped text, so no lone surrogate is left.
    assert bad.inputs is not None
    assert bad.inputs.encode("utf-8")
    assert pipelens.transport_stats(transport).dropped == 0


def test_an_unencodable_event_is_dropped_alone_counted_and_warned_once(
    server: IngestServer, make_transport: MakeTransport, caplog: pytest.LogCaptureFixture
) -> None:
    """An event that still cannot be encoded is dropped by itself: the rest of its batch arrives,
    ``transport_stats().dropped`` counts it, and one warning says so."""
    transport = make_transport(server.url)
    poison = StepFinished(
        run_id="poison", step_id="1", key="k", name="k", start_ns=1, end_ns=2, duration_ns=1,
        status="failed", error=ErrorInfo(type="E", message=BAD_NAME),
    )  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="pipelens"):
        for _ in range(2):
            transport.send(poison)
            with pipelens.Pipeline("good", transport=transport).run():
                pass
            assert transport.flush(5) is True

    assert pipelens.transport_stats(transport).dropped == 2
    runs = [e for e in server.events() if isinstance(e, RunFinished)]
    assert [r.pipeline for r in runs] == ["good", "good"]
    assert all(e.run_id != "poison" for e in server.events())
    assert sum("could not be encoded" in r.getMessage() for r in caplog.records) == 1


def test_names_ids_and_keys_over_the_limits_are_cut_with_a_mark(
    server: IngestServer, make_transport: MakeTransport
) -> None:
    """Run ids, pipelines and names over 1,024 characters and keys over 4,096 are cut with the
    mark before sending; two long keys that share a prefix stay apart."""
    transport = make_transport(server.url)
    long_name = "n" * 2000

    @pipelens.step(long_name)
    def deep(level: int) -> None:
        if level:
            deep(level - 1)
            deep(level - 1)

    with pipelens.Pipeline("p" * 3000, transport=transport).run(run_id="r" * 5000):
        deep(2)
    assert transport.flush(5) is True

    events = server.events()
    assert events
    assert {len(e.run_id.encode()) for e in events} == {MAX_RUN_ID_BYTES}
    assert all(e.run_id.endswith(TRUNCATED_MARK) for e in events)
    assert len({e.run_id for e in events}) == 1
    run = next(e for e in events if isinstance(e, RunFinished))
    assert len(run.pipeline.encode()) == MAX_PIPELINE_BYTES
    assert run.pipeline.endswith(TRUNCATED_MARK)
    steps = [e for e in events if isinstance(e, StepFinished)]
    assert len(steps) == 8
    assert all(len(s.name.encode()) <= MAX_NAME_BYTES for s in steps)
    assert all(len(s.key.encode()) <= MAX_KEY_BYTES for s in steps)
    assert len({s.key for s in steps}) == 8
    assert any(s.key.endswith(TRUNCATED_MARK) for s in steps)


REPLAY = """
import sys, time
from pipelens import HttpTransport

transport = HttpTransport(sys.argv[1], spool_dir=sys.argv[2], interval=60, token="right")
deadline = time.monotonic() + 30
while transport.stats().replayed < int(sys.argv[3]) and time.monotonic() < deadline:
    time.sleep(0.01)
print(transport.stats().replayed)
"""


def test_a_refused_token_keeps_events_in_the_spool_and_flush_reports_failure(
    server: IngestServer,
    make_transport: MakeTransport,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """HTTP 401 spools the batch instead of dropping it, warns once naming PIPELENS_TOKEN,
    makes ``flush()`` return False; a later process with the right token replays it."""
    server.plan(*[Reply(401)] * 50)
    transport = make_transport(server.url, token="wrong", max_backoff=30)
    with caplog.at_level(logging.WARNING, logger="pipelens"):
        for _ in range(2):
            with pipelens.Pipeline("p", transport=transport).run():
                pass
            assert transport.flush(3) is False, pipelens.transport_stats(transport)
    stats = pipelens.transport_stats(transport)
    assert (stats.dropped, stats.rejected, stats.spooled) == (0, 0, 8)  # 4 events a run
    warnings = [r.getMessage() for r in caplog.records if "refused the token" in r.getMessage()]
    assert len(warnings) == 1
    assert "PIPELENS_TOKEN" in warnings[0]
    assert "configure(token=" in warnings[0]
    transport.close(0)

    server.clear_plan()  # the server takes the token now
    replay = subprocess.run(
        [sys.executable, "-c", REPLAY, server.url, str(tmp_path / "spool"), "8"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert replay.stdout.strip() == "8"
    assert wait_until(lambda: len(server.events()) == 8)


def test_names_are_cut_by_utf8_bytes_to_the_servers_limits() -> None:
    """A pipeline of two-byte characters is cut to the server's byte limit, on a whole character,
    so the server (which counts bytes) accepts what the client sends."""
    event = RunStarted(run_id="r", pipeline="é" * 3000, start_ns=1)
    cut = wire_safe(event).pipeline
    assert len(cut.encode()) <= MAX_PIPELINE_BYTES
    assert len(cut.encode()) > MAX_PIPELINE_BYTES - 2 - len(TRUNCATED_MARK.encode())
    assert cut.endswith(TRUNCATED_MARK)
    assert set(cut.removesuffix(TRUNCATED_MARK)) == {"é"}
