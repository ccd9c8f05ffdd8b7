"""Core correctness and redaction holes found by the reliability review (issue 9)."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import multiprocessing
import pickle
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.pool import ThreadPool
from typing import Any

import _picklable
import pydantic
import pytest

import pipelens
from pipelens.testing import CapturedEvents

# -- redaction ---------------------------------------------------------------------------------

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJlLXBhcnQ"
PLANTED = {
    "url": "https://admin:hunter2@db.example.com/x",
    "data": JWT,
    "pwd": "hunter3",
    "passphrase": "correct horse",
    "google": "AIza" + "B" * 35,
    "slack": "xoxb-123456789012-abcdefABCDEF",
}


@pipelens.step
def echo(value: Any) -> Any:
    return value


def test_planted_secrets_in_values_and_keys_are_redacted(events: CapturedEvents) -> None:
    """URL passwords, JWTs under neutral keys, pwd/passphrase keys, Google and Slack keys."""
    echo(PLANTED)
    text = events.step("echo").result or ""
    for secret in ("hunter2", JWT, "hunter3", "correct horse", "AIza", "xoxb-"):
        assert secret not in text
    assert json.loads(text)["url"] == "https://[REDACTED]@db.example.com/x"


def test_secrets_inside_exception_messages_and_tracebacks_are_redacted(
    events: CapturedEvents,
) -> None:
    """``api_key=...`` in an exception's message and traceback is scrubbed."""

    @pipelens.step
    def connect() -> None:
        raise ConnectionError("login failed for url?api_key=abc123SECRET&x=1")

    with pytest.raises(ConnectionError):
        connect()
    error = events.step("connect").error
    assert error is not None
    assert error.traceback is not None
    assert "abc123SECRET" not in error.message
    assert "abc123SECRET" not in error.traceback
    assert "login failed" in error.message


class Login(pydantic.BaseModel):
    user: str
    password: str


@dataclasses.dataclass
class Config:
    host: str
    api_key: str


def test_models_dataclasses_and_cycles_are_captured_structurally_then_redacted(
    events: CapturedEvents,
) -> None:
    """A pydantic model and a dataclass become objects (secrets redacted), a cyclic dict too."""
    cyclic: dict[str, Any] = {"user": "u", "password": "pw-cycle"}
    cyclic["self"] = cyclic
    echo(Login(user="ann", password="pw-model"))
    echo(Config(host="h", api_key="pw-dataclass"))
    echo(cyclic)
    results = [json.loads(s.result or "null") for s in events.steps()]
    assert results[0] == {"user": "ann", "password": "[REDACTED]"}
    assert results[1] == {"host": "h", "api_key": "[REDACTED]"}
    assert results[2] == {"user": "u", "password": "[REDACTED]", "self": "<cycle>"}


def test_the_secret_list_is_one_shipped_data_file() -> None:
    """``pipelens/secrets.json`` holds the key and value patterns the client compiles."""
    from importlib import resources

    from pipelens._core import settings

    data = json.loads(resources.files("pipelens").joinpath("secrets.json").read_bytes())
    assert tuple(data["keys"]) == settings.DEFAULT_REDACT_KEYS
    assert "|".join(data["values"]) == settings.SECRET_VALUE_PATTERN


# -- repr ------------------------------------------------------------------------------------


class SlowRepr:
    calls = 0

    def __repr__(self) -> str:
        type(self).calls += 1
        time.sleep(0.05)
        return "slow" * 100_000


def test_a_slow_repr_is_called_once_and_its_output_bounded(events: CapturedEvents) -> None:
    """A 50 ms ``__repr__`` runs once for the whole process (inputs, result, later calls);
    its 400 KB output is cut to a short text."""
    value = SlowRepr()
    echo(value)
    started = time.perf_counter()
    echo(SlowRepr())
    assert time.perf_counter() - started < 0.04
    assert SlowRepr.calls == 1
    texts = [s.result or "" for s in events.steps()] + [s.inputs or "" for s in events.steps()]
    assert all(len(t) < 400 for t in texts)


# -- pickling ---------------------------------------------------------------------------------

KINDS = [
    _picklable.plain,
    _picklable.coroutine,
    _picklable.generator,
    _picklable.agenerator,
    _picklable.Worker.method,
    _picklable.Worker.clsmethod,
    _picklable.Worker.static,
    _picklable.Worker(5).method,
]


@pytest.mark.parametrize("fn", KINDS, ids=lambda fn: str(getattr(fn, "__qualname__", fn)))
def test_decorated_callables_pickle_and_copy_like_the_undecorated(fn: Any) -> None:
    """Functions, coroutines, generators, methods, classmethods and staticmethods pickle."""
    again = pickle.loads(pickle.dumps(fn))
    assert again.__qualname__ == fn.__qualname__
    assert copy.copy(fn).__qualname__ == fn.__qualname__
    assert copy.deepcopy(fn).__qualname__ == fn.__qualname__


def test_decorated_methods_run_in_a_spawned_process_pool() -> None:
    """``ProcessPoolExecutor`` with spawn runs decorated functions, methods and classmethods."""
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        assert pool.submit(_picklable.plain, 1).result(60) == 2
        assert pool.submit(_picklable.Worker(5).method, 2).result(60) == 7
        assert pool.submit(_picklable.Worker.clsmethod, 3).result(60) == 30
        assert pool.submit(_picklable.Worker.static, 4).result(60) == 400


# -- coroutines behind sync callables ------------------------------------------------------------


class AsyncCallable:
    async def __call__(self, delay: float) -> str:
        await asyncio.sleep(delay)
        child()
        return "done"


@pipelens.step
def child() -> int:
    return 1


async def test_a_coroutine_behind_a_sync_callable_is_timed_until_awaited(
    events: CapturedEvents,
) -> None:
    """An object with ``async __call__`` is timed over its await; its result is the value and
    its children nest under it."""
    traced = pipelens.step("acall")(AsyncCallable())
    assert await traced(0.05) == "done"
    step = events.step("acall")
    assert step.duration_ns >= 50_000_000
    assert step.result == '"done"'
    assert events.step("acall.child").key == "acall.child"


# -- keys, pools, threads, exits ---------------------------------------------------------------


def test_explicit_names_never_collide_with_automatic_keys(events: CapturedEvents) -> None:
    """``child___1`` given by the user and the second automatic ``child`` get different keys."""
    named = pipelens.step("c___1")(lambda: None)
    auto = pipelens.step("c")(lambda: None)

    @pipelens.step
    def root() -> None:
        auto()
        named()
        auto()
        auto()

    root()
    keys = [s.key for s in events.steps() if s.key != "root"]
    assert len(keys) == len(set(keys)) == 4


def test_a_name_like_an_automatic_key_after_repeated_siblings_collides_with_none(
    events: CapturedEvents,
) -> None:
    """Siblings already keyed ``c``, ``c___1`` (the inlined child opening of sync and async
    steps), then a step named ``c___1``, then more ``c``: every key differs."""
    auto = pipelens.step("c")(lambda: None)
    named = pipelens.step("c___1")(lambda: None)

    async def body() -> None:
        return None

    aauto = pipelens.step("a")(body)
    anamed = pipelens.step("a___1")(body)

    @pipelens.step
    async def root() -> None:
        for call in (auto, auto, named, auto, auto):
            call()
        for acall in (aauto, aauto, anamed, aauto):
            await acall()

    asyncio.run(root())
    keys = [s.key for s in events.steps() if s.key != "root"]
    assert len(keys) == len(set(keys)) == 9
    assert keys[:2] == ["root.c", "root.c___1"]
    assert keys[5:7] == ["root.a", "root.a___1"]


def test_thread_pool_workers_do_not_carry_one_run_into_later_tasks(
    events: CapturedEvents,
) -> None:
    """A ThreadPool created inside run A runs a later task (outside any step) as its own run."""
    pools: list[ThreadPool] = []

    @pipelens.step
    def run_a() -> None:
        pools.append(ThreadPool(1))  # its threads start here, inside run A's step

    run_a()
    first = events.step("run_a").run_id
    try:
        pools[0].apply(child)
    finally:
        pools[0].close()
        pools[0].join()
    later = events.steps()[-1]
    assert (later.key, later.parent_id) == ("child", None)
    assert first != later.run_id


def test_thread_pool_tasks_nest_under_the_submitting_step(events: CapturedEvents) -> None:
    """``ThreadPool`` tasks (``apply``, ``apply_async``, ``map``, ``starmap``, ``imap``,
    ``imap_unordered``) are children of the step that submitted them, in its run."""
    with ThreadPool(2) as pool:

        @pipelens.step
        def submitter() -> None:
            pool.apply(child)
            pool.apply_async(child).get(10)
            pool.map(echo, range(3))
            pool.starmap(echo, [(1,), (2,)])
            list(pool.imap(echo, range(2)))
            list(pool.imap_unordered(echo, range(2)))

        submitter()
        # Outside any step, a task is a run of its own again.
        pool.apply(child)
    root = events.step("submitter")
    nested = [s for s in events.steps() if s.key != "submitter"][:-1]
    assert len(nested) == 11
    assert {(s.parent_id, s.run_id) for s in nested} == {(root.step_id, root.run_id)}
    assert len({s.key for s in nested}) == 11
    later = events.steps()[-1]
    assert (later.parent_id, later.run_id != root.run_id) == (None, True)


def test_steps_of_a_thread_that_outlives_its_run_still_count(events: CapturedEvents) -> None:
    """A step started after its run's root ended is counted: the run's end is sent again."""
    release = threading.Event()

    def late() -> None:
        release.wait(5)
        child()

    @pipelens.step
    def root() -> threading.Thread:
        thread = threading.Thread(target=late)
        thread.start()
        return thread

    thread = root()
    release.set()
    thread.join(5)
    runs = events.runs()
    assert runs[-1].step_count == 2
    assert len(events.steps()) == 2


@pytest.mark.parametrize(("code", "status"), [(0, "completed"), (None, "completed"), (3, "failed")])
def test_sys_exit_zero_in_a_step_is_a_normal_end(
    events: CapturedEvents, code: int | None, status: str
) -> None:
    """``sys.exit(0)``/``sys.exit()`` complete the step; a non-zero code fails it."""

    @pipelens.step
    def main() -> None:
        sys.exit(code)

    with pytest.raises(SystemExit):
        main()
    assert status == events.step("main").status
    assert status == events.runs()[0].status
