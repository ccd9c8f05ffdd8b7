"""Seed drop-in (issue 10): code written for the seed's Python library runs with only its import
line changed — standalone ``Step``, custom seed transports, the meta models' pydantic surface,
``HttpTransportOptions``, ``pipelens.chart``, and LLM calls in the seed-style outputs."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

import pipelens
from pipelens import (
    MemoryTransport,
    NestedStepMeta,
    Pipeline,
    PipelineMeta,
    Step,
    StepMeta,
    TimeMeta,
    with_step,
)
from pipelens._seed.transport import is_seed_transport
from pipelens.testing import CapturedEvents
from pipelens.transport import HttpTransport, HttpTransportOptions, SeedTransport, Transport

# -- Step(name) standalone -----------------------------------------------------------------------


async def test_a_standalone_step_runs_with_track_and_keeps_its_key() -> None:
    """``Step(name)`` runs with ``await step.track(fn)``; ``key=`` overrides the key."""
    plain, keyed = Step("solo"), Step("solo", key="custom")
    assert await plain.track(lambda st: asyncio.sleep(0, result=st.get_key())) == "solo"
    await keyed.track(lambda st: None)
    assert (plain.get_name(), plain.status, keyed.get_key()) == ("solo", "completed", "custom")
    assert plain.get_step_meta().time.timeUsageMs is not None


async def test_a_standalone_step_fires_the_seeds_events_in_order() -> None:
    """Listeners added before ``track`` see start, success and complete of the step and its
    children; ``track`` returns after the async ones ran."""
    seen: list[tuple[str, str]] = []
    step = Step("parent")

    async def listener(event: str, key: str, *rest: Any) -> None:
        seen.append((event, key))

    for event in ("step-start", "step-success", "step-complete"):
        step.on(event, lambda *args, e=event: listener(e, *args))

    async def body(st: Step) -> str:
        return await st.step("child", lambda child: "r")

    assert await step.track(body) == "r"
    assert seen == [
        ("step-start", "parent"),
        ("step-start", "parent.child"),
        ("step-success", "parent.child"),
        ("step-complete", "parent.child"),
        ("step-success", "parent"),
        ("step-complete", "parent"),
    ]


async def test_a_step_with_a_parent_and_an_event_emitter() -> None:
    """``Step(name, parent=p)`` keys under ``p`` and joins its tree when tracked; an
    ``event_emitter`` (anything with ``emit``) receives the run's events."""

    class Emitter:
        def __init__(self) -> None:
            self.calls: list[tuple[str, str]] = []

        def emit(self, event: str, key: str, *rest: Any) -> None:
            self.calls.append((event, key))

    emitter = Emitter()
    root = Step("root", event_emitter=emitter)

    async def body(st: Step) -> None:
        await Step("kid.1", parent=st).track(lambda kid: None)

    await root.track(body)
    assert [m.key for m in root.output_flattened()] == ["root", "root.kid_1"]
    assert ("step-complete", "root.kid_1") in emitter.calls


async def test_a_standalone_step_sends_to_the_configured_transport(
    events: CapturedEvents,
) -> None:
    """A tracked ``Step(name)`` is a run like any other: its events reach the transport."""
    await Step("sent").track(lambda st: st.record("k", 1))
    assert [s.key for s in events.steps()] == ["sent"]


def test_step_rejects_a_wrong_name_or_parent() -> None:
    """Wrong arguments to ``Step(...)`` fail at once, naming the argument."""
    with pytest.raises(TypeError, match="non-empty str"):
        Step("")
    with pytest.raises(TypeError, match="parent must be a Step"):
        Step("x", parent="p")  # type: ignore[arg-type]


# -- names with dots -----------------------------------------------------------------------------


async def test_a_dot_in_a_name_stays_in_the_name_and_leaves_the_key() -> None:
    """``st.step("v1.2", f)`` is named ``v1.2``; only its key has ``v1_2``, as in the seed."""
    pipeline = Pipeline("p.q")
    await pipeline.track(lambda st: st.step("v1.2", lambda child: None))
    metas = pipeline.output_flattened()
    assert [(m.name, m.key) for m in metas] == [("p.q", "p_q"), ("v1.2", "p_q.v1_2")]
    assert pipeline.get_name() == "p.q"


# -- with_step ------------------------------------------------------------------------------------


async def test_with_step_rejects_what_is_not_a_step_where_a_step_is_annotated() -> None:
    """A non-``Step`` passed for a parameter annotated ``Step`` is the seed's ``TypeError``."""

    @with_step("s")
    async def method(value: str, step: Step) -> str:
        return value

    with pytest.raises(TypeError, match="must be a `Step`"):
        await method("v", "not-a-step")  # type: ignore[arg-type]


# -- seed-style transports -----------------------------------------------------------------------


class SeedStyle(Transport):
    """A transport written for the seed: it subclasses ``pipelens.transport.Transport``."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def initiate_run(self, pipeline_meta: PipelineMeta) -> None:
        await asyncio.sleep(0)
        self.calls.append(("initiate_run", pipeline_meta.run_id, pipeline_meta.name))

    async def finish_run(self, pipeline_meta: PipelineMeta, status: str) -> None:
        self.calls.append(("finish_run", [s.key for s in pipeline_meta.steps], status))

    async def initiate_step(self, run_id: str, step: StepMeta) -> None:
        self.calls.append(("initiate_step", step.key))

    async def finish_step(self, run_id: str, step: StepMeta) -> None:
        self.calls.append(("finish_step", step.key, step.result, step.records))


async def test_a_seed_transport_is_called_in_real_time() -> None:
    """``auto_save='real_time'``: initiate_run, initiate_step per start, finish_step per end,
    finish_run with every step — in order, done when ``track`` returns."""
    transport = SeedStyle()
    pipeline = Pipeline("p", {"auto_save": "real_time", "transport": transport, "run_id": "r1"})

    async def body(st: Step) -> str:
        await st.record("k", 1)
        return await st.step("a", lambda child: "ra")

    await pipeline.track(body)
    assert pipeline.transport is transport
    assert transport.calls == [
        ("initiate_run", "r1", "p"),
        ("initiate_step", "p"),
        ("initiate_step", "p.a"),
        ("finish_step", "p.a", "ra", {}),
        ("finish_step", "p", "ra", {"k": 1}),
        ("finish_run", ["p", "p.a"], "completed"),
    ]


async def test_a_seed_transport_hears_a_failed_run() -> None:
    """A run that raises ends with ``finish_run(..., "failed")``."""
    transport = SeedStyle()
    pipeline = Pipeline("p", {"auto_save": "real_time", "transport": transport})

    async def body(st: Step) -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await pipeline.track(body)
    assert transport.calls[-1] == ("finish_run", ["p"], "failed")


async def test_a_seed_transport_in_finish_mode_gets_only_finish_run() -> None:
    """``auto_save='finish'``: one ``finish_run`` with every step, depth first."""
    transport = SeedStyle()
    pipeline = Pipeline("p", {"auto_save": "finish", "transport": transport})

    async def body(st: Step) -> None:
        await st.step("a", lambda a: a.step("g", lambda g: None))
        await st.step("b", lambda b: None)

    await pipeline.track(body)
    assert transport.calls == [("finish_run", ["p", "p.a", "p.a.g", "p.b"], "completed")]


def test_a_seed_transport_given_to_configure_hears_step_functions() -> None:
    """``configure(transport=...)`` with a seed-style transport: ``@step`` runs reach it too."""
    transport = SeedStyle()
    pipelens.configure(transport=transport)

    @pipelens.step
    def work() -> int:
        return 2

    assert work() == 2
    assert [c[0] for c in transport.calls] == [
        "initiate_run",
        "initiate_step",
        "finish_step",
        "finish_run",
    ]


def test_a_seed_transport_abc_is_public() -> None:
    """``SeedTransport`` states the seed's four methods; our event sinks are not seed-style."""
    assert isinstance(SeedStyle(), Transport)
    with pytest.raises(TypeError):
        SeedTransport()  # type: ignore[abstract]
    assert not is_seed_transport(MemoryTransport())
    assert is_seed_transport(SeedStyle())


# -- meta models: the seed's pydantic surface ------------------------------------------------------

_TIME = {"startTs": 1000, "endTs": 1500, "timeUsageMs": 500}


def test_pipeline_meta_is_built_by_field_name_or_by_alias() -> None:
    """``PipelineMeta(run_id=...)`` and ``PipelineMeta(runId=...)`` are the same record; nested
    dicts become metas and unknown keys are ignored, as pydantic did."""
    by_name = PipelineMeta(run_id="r", name="p", key="p", time=TimeMeta(**_TIME), status="x")
    by_alias = PipelineMeta(runId="r", logVersion=1, name="p", key="p", time=_TIME)
    assert by_name == by_alias
    assert (by_name.run_id, by_name.runId, by_name.log_version) == ("r", "r", 1)


def test_meta_dumps_with_and_without_aliases() -> None:
    """``model_dump_json()`` writes ``run_id``/``log_version``; ``by_alias=True`` the
    camelCase names; ``exclude_none`` leaves out ``None`` fields."""
    step = StepMeta(name="s", key="p.s", time=_TIME)
    meta = PipelineMeta(run_id="r", name="p", key="p", time=_TIME, steps=[step])
    plain = json.loads(meta.model_dump_json())
    aliased = meta.model_dump(by_alias=True)
    assert (plain["run_id"], plain["log_version"], "runId" in plain) == ("r", 1, False)
    assert (aliased["runId"], aliased["logVersion"], aliased["steps"][0]["key"]) == ("r", 1, "p.s")
    assert "error" not in step.model_dump(exclude_none=True)
    assert json.loads(meta.model_dump_json(by_alias=True)) == aliased


def test_model_validate_and_bad_values() -> None:
    """``model_validate`` takes a dict (aliases too) or a meta; a wrong type names the field."""
    meta = PipelineMeta.model_validate({"runId": "r", "name": "p", "key": "p", "time": _TIME})
    assert PipelineMeta.model_validate(meta) is meta
    assert NestedStepMeta.model_validate({"name": "n", "key": "n", "time": _TIME}).substeps == []
    assert TimeMeta(startTs="5").startTs == 5  # pydantic's lax mode
    with pytest.raises(ValueError, match=r"\$\.startTs"):
        TimeMeta(startTs="soon")
    with pytest.raises(ValueError, match=r"run_id|runId"):
        PipelineMeta(name="p", key="p", time=_TIME)


# -- HttpTransportOptions ----------------------------------------------------------------


def test_http_transport_options_take_the_seeds_keywords_and_check_types() -> None:
    """Unused seed keywords (``flush_interval=5000``) are ignored; a wrong type names the
    field; the transport keeps ``.options`` and ``.base_url`` as the seed's did."""
    options = HttpTransportOptions(
        base_url="http://127.0.0.1:9", flush_interval=5000, max_batch_size="7", spool=False
    )
    assert (options.max_batch_size, hasattr(options, "flush_interval")) == (7, False)
    options._testing = True  # the seed's tests set attributes of their own
    transport = HttpTransport(options, spool=False)
    try:
        assert (transport.options, transport.base_url) == (options, "http://127.0.0.1:9/")
    finally:
        transport.close(0)
    with pytest.raises(ValueError, match="max_batch_size"):
        HttpTransportOptions(base_url="http://x", max_batch_size="x")
    with pytest.raises(ValueError, match="base_url"):
        HttpTransportOptions(batch_logs=True)
