"""structlog: lines logged inside a step carry its ids, and can be kept as the step's records.

Real structlog, configured with the processor and a JSON renderer writing to a buffer.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec
import pytest
import structlog

import pipelens
from pipelens.testing import CapturedEvents

Lines = Callable[[], list[dict[str, Any]]]


def configure(processor: pipelens.StructlogProcessor) -> Lines:
    """Configure structlog with ``processor``; returns a function reading the logged lines."""
    out = io.StringIO()
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            processor,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    return lambda: [json.loads(line) for line in out.getvalue().splitlines()]


@pytest.fixture
def lines() -> Iterator[Lines]:
    """structlog set up with ``pipelens.structlog_processor``, reset after the test."""
    yield configure(pipelens.structlog_processor)
    structlog.reset_defaults()


@pytest.fixture
def keep() -> Iterator[Callable[..., Lines]]:
    """Sets structlog up with a ``StructlogProcessor(**options)``; reset after the test."""
    yield lambda **options: configure(pipelens.StructlogProcessor(**options))
    structlog.reset_defaults()


def ids(line: dict[str, Any]) -> tuple[Any, Any, Any]:
    return line.get("run_id"), line.get("step_id"), line.get("step_key")


def test_lines_inside_steps_carry_the_ids_of_their_step(lines: Lines) -> None:
    """A line logged in a step has its run id, step id and key; in a child step, the child's."""
    log = structlog.get_logger()
    seen: list[tuple[str, str, str]] = []

    def note() -> None:
        step = pipelens.current_step()
        assert step is not None
        seen.append((step.run.id, step.id, step.key))

    @pipelens.step
    def child() -> None:
        note()
        log.info("in child")

    @pipelens.step
    def parent() -> None:
        note()
        log.info("in parent", n=1)
        child()

    parent()
    in_parent, in_child = lines()
    assert [ids(in_parent), ids(in_child)] == seen
    assert (in_parent["event"], in_parent["n"], in_parent["level"]) == ("in parent", 1, "info")
    assert in_child["step_key"] == "parent.child"


def test_lines_outside_steps_are_left_alone(lines: Lines) -> None:
    """A line logged outside any step gains none of the ids."""
    structlog.get_logger().warning("no step here", k="v")
    assert lines() == [{"event": "no step here", "k": "v", "level": "warning"}]


async def test_concurrent_tasks_log_their_own_step(lines: Lines) -> None:
    """Lines from concurrent asyncio tasks each carry the step of the task that logged them."""
    log = structlog.get_logger()

    @pipelens.step
    async def work(tag: str) -> None:
        for _ in range(3):
            await asyncio.sleep(0)
            log.info("tick", tag=tag)

    await asyncio.gather(*(work(f"t{i}") for i in range(10)))
    logged = lines()
    assert len(logged) == 30
    # each task's step is the root of its own run, named work: the run id tells them apart
    runs_by_tag: dict[str, set[str]] = {}
    for line in logged:
        runs_by_tag.setdefault(line["tag"], set()).add(line["run_id"])
    assert [len(runs) for runs in runs_by_tag.values()] == [1] * 10
    assert len(set().union(*runs_by_tag.values())) == 10


def test_a_worker_thread_logs_under_the_submitting_step(lines: Lines) -> None:
    """A line logged in a pool's worker carries the step that submitted the work."""
    log = structlog.get_logger()

    @pipelens.step
    def fan_out() -> str:
        with ThreadPoolExecutor(max_workers=2) as pool:
            pool.submit(log.info, "from a thread").result(10)
        step = pipelens.current_step()
        assert step is not None
        return step.id

    step_id = fan_out()
    assert [(line["step_id"], line["step_key"]) for line in lines()] == [(step_id, "fan_out")]


def test_ids_bound_by_the_caller_win(lines: Lines) -> None:
    """An event that already has a ``run_id`` keeps it; the missing ids are still added."""

    @pipelens.step
    def job() -> None:
        structlog.get_logger().bind(run_id="mine").info("bound")

    job()
    (line,) = lines()
    assert (line["run_id"], line["step_key"]) == ("mine", "job")


def test_the_default_processor_keeps_no_records(lines: Lines, events: CapturedEvents) -> None:
    """``pipelens.structlog_processor`` only adds ids: the step gets no records."""

    @pipelens.step
    def job() -> None:
        structlog.get_logger().info("hello")

    job()
    assert [s.records for s in events.steps()] == [None]


def step_records(events: CapturedEvents, key: str) -> dict[str, Any]:
    records = events.step(key).records
    assert records is not None
    return dict(msgspec.json.decode(records))


def test_kept_lines_become_the_steps_records(
    keep: Callable[..., Lines], events: CapturedEvents
) -> None:
    """With ``keep_as_records=True`` each line, its level and fields, is in its own step's
    ``logs`` record; the lines are still logged, with their ids."""
    logged = keep(keep_as_records=True)
    log = structlog.get_logger()

    @pipelens.step
    def child() -> None:
        log.debug("deep", depth=2)

    @pipelens.step
    def parent() -> None:
        log.info("start", q="why")
        child()
        log.error("failed", code=7)

    parent()
    assert step_records(events, "parent") == {
        "logs": [
            {"level": "info", "event": "start", "q": "why"},
            {"level": "error", "event": "failed", "code": 7},
        ]
    }
    assert step_records(events, "parent.child") == {
        "logs": [{"level": "debug", "event": "deep", "depth": 2}]
    }
    assert [line["step_key"] for line in logged()] == ["parent", "parent.child", "parent"]


def test_kept_lines_are_bounded_and_the_rest_counted(
    keep: Callable[..., Lines], events: CapturedEvents
) -> None:
    """Past ``max_records`` lines a step keeps no more, and counts the dropped ones; every line
    is still logged."""
    logged = keep(keep_as_records=True, max_records=3, record_key="log_lines")

    @pipelens.step
    def chatty() -> None:
        for i in range(5):
            structlog.get_logger().info("line", i=i)

    chatty()
    assert step_records(events, "chatty") == {
        "log_lines": [{"level": "info", "event": "line", "i": i} for i in range(3)],
        "log_lines_dropped": 2,
    }
    assert [line["i"] for line in logged()] == [0, 1, 2, 3, 4]


def test_values_json_cannot_hold_are_kept_as_text(
    keep: Callable[..., Lines], events: CapturedEvents
) -> None:
    """A field JSON cannot hold (an object) is kept as its text, and logging carries on."""
    logged = keep(keep_as_records=True)

    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    @pipelens.step
    def job() -> None:
        structlog.get_logger().info("odd", thing=Opaque(), tags={"a"})

    job()
    (line,) = step_records(events, "job")["logs"]
    assert (line["event"], line["thing"], line["tags"]) == ("odd", "<opaque>", ["a"])
    assert [line["event"] for line in logged()] == ["odd"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_records": 0}, "max_records must be a positive int"),
        ({"max_records": True}, "got True"),
        ({"record_key": ""}, "record_key must be a non-empty string"),
    ],
)
def test_bad_options_are_refused_naming_the_value(options: dict[str, Any], message: str) -> None:
    """Options that cannot work raise ``ConfigurationError`` naming the option and value."""
    with pytest.raises(pipelens.ConfigurationError, match=message):
        pipelens.StructlogProcessor(**options)
