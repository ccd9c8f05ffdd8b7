"""The seed's explicit API: Pipeline, track, st.step, st.record, with_step, listeners, outputs,
run ids, auto_save, and LLMTrack."""

from __future__ import annotations

import asyncio
import inspect
import uuid
from typing import Any

import pytest
from openai.types.chat import ChatCompletion

import pipelens
from pipelens import (
    LLM_RESPONSE_RECORD_KEY_PREFIX,
    ConfigurationError,
    LLMTrack,
    LLMUsage,
    OpenAICompatibleChatCompletionResponse,
    Pipeline,
    PipelineMeta,
    Step,
    StepGanttArg,
    with_step,
)
from pipelens.events import RunFinished, RunStarted, StepFinished, StepStarted
from pipelens.testing import CapturedEvents


def keys(pipeline: Pipeline) -> list[str]:
    return [m.key for m in pipeline.output_flattened()]


def is_uuid(text: str) -> bool:
    return str(uuid.UUID(text)) == text


# -- Pipeline(name, options) ---------------------------------------------------------------------


def test_options_dict_and_keywords_configure_the_same_pipeline() -> None:
    """Pipeline(name, {...}) and Pipeline(name, key=...) give the same settings."""
    transport = CapturedEvents()
    by_dict = Pipeline("p", {"run_id": "r1", "auto_save": "finish", "transport": transport})
    by_keyword = Pipeline("p", run_id="r1", auto_save="finish", transport=transport)
    for pipeline in (by_dict, by_keyword):
        assert ("p", "r1", "finish", transport) == (
            pipeline.get_name(),
            pipeline.get_run_id(),
            pipeline.auto_save,
            pipeline.transport,
        )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"runid": "x"}, r"unknown option\(s\) \['runid'\]"),
        ({"auto_save": "always"}, r"auto_save='always'; expected 'real_time', 'finish' or 'off'"),
        ({"run_id": 5}, r"run_id=5; expected a non-empty str"),
        ({"run_id": ""}, r"run_id=''; expected a non-empty str"),
        ({"transport": "http://x"}, r"transport='http://x' has no send/flush/close methods"),
        ({"auto_save": "real_time"}, r"auto_save='real_time' needs a transport"),
        ({"auto_save": "finish"}, r"auto_save='finish' needs a transport"),
    ],
)
def test_bad_options_raise_an_error_naming_the_option(
    options: dict[str, Any], message: str
) -> None:
    """A wrong option is a ConfigurationError (a ValueError, as in the seed) that names it."""
    with pytest.raises(ConfigurationError, match=message):
        Pipeline("p", options)


def test_other_bad_constructor_arguments_are_named() -> None:
    """A non-dict options, an empty name and an option given twice are clear errors."""
    with pytest.raises(ConfigurationError, match="options must be a dict"):
        Pipeline("p", "real_time")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"Pipeline\(name=''\): expected a non-empty str"):
        Pipeline("")
    with pytest.raises(
        ConfigurationError, match="run_id is given both in options and as a keyword"
    ):
        Pipeline("p", {"run_id": "a"}, run_id="b")


def test_auto_save_without_explicit_transport_uses_the_configured_one(
    events: CapturedEvents,
) -> None:
    """auto_save='real_time' is accepted when pipelens.configure() has set a transport."""
    pipeline = Pipeline("p", auto_save="real_time")
    with pipeline.run() as run:
        pass
    assert [run.id] == [e.run_id for e in events.runs()]


# -- track, st.step, st.record -------------------------------------------------------------------


async def test_track_returns_the_result_and_steps_nest() -> None:
    """track(fn) returns fn's result; st.step children return theirs and nest under the root."""
    pipeline = Pipeline("p")

    async def body(st: Step) -> str:
        first = await st.step("load", lambda child: asyncio.sleep(0, result="loaded"))
        second = await st.step("sync", lambda child: f"{first}+sync")

        async def parent(child: Step) -> str:
            return await child.step("inner", lambda grandchild: grandchild.get_key())

        third = await st.step("parent", parent)
        return f"{second}|{third}"

    assert await pipeline.track(body) == "loaded+sync|p.parent.inner"
    assert keys(pipeline) == ["p", "p.load", "p.sync", "p.parent", "p.parent.inner"]
    nested = pipeline.output_nested()
    assert (nested.key, nested.result) == ("p", "loaded+sync|p.parent.inner")
    assert [s.result for s in nested.substeps] == ["loaded", "loaded+sync", "p.parent.inner"]
    assert [s.key for s in nested.substeps[2].substeps] == ["p.parent.inner"]


async def test_record_works_plain_awaited_and_chained() -> None:
    """st.record(k, v) records at once; awaiting it gives the step; calls chain."""
    pipeline = Pipeline("p")

    async def body(st: Step) -> None:
        async def child(step: Step) -> None:
            step.record("plain", 1)
            same = await step.record("awaited", 2)
            assert same is step
            step.record("a", 3).record("b", 4)

        await st.step("child", child)

    await pipeline.track(body)
    assert pipeline.output_flattened()[1].records == {"plain": 1, "awaited": 2, "a": 3, "b": 4}


async def test_sibling_keys_are_numbered_and_dots_become_underscores() -> None:
    """Same-named siblings get child, child___1, ...; a '.' in any name becomes '_'."""
    pipeline = Pipeline("my.pipe")

    @with_step("deco.rated")
    async def decorated(st: Step) -> None:
        return None

    async def body(st: Step) -> None:
        for _ in range(3):
            await st.step("child", lambda child: None)
        await st.step("a.b", lambda child: None)
        await decorated(st)

    await pipeline.track(body)
    assert keys(pipeline) == [
        "my_pipe",
        "my_pipe.child",
        "my_pipe.child___1",
        "my_pipe.child___2",
        "my_pipe.a_b",
        "my_pipe.deco_rated",
    ]


async def test_user_exception_passes_through_and_fails_the_steps(events: CapturedEvents) -> None:
    """The exception raised in a step is the one track() raises; step and run are failed."""
    boom = ValueError("boom")
    pipeline = Pipeline("p")

    async def failing(step: Step) -> None:
        raise boom

    async def body(st: Step) -> None:
        await st.step("child", failing)

    with pytest.raises(ValueError, match="boom") as caught:
        await pipeline.track(body)
    assert caught.value is boom
    assert [(m.key, m.error) for m in reversed(pipeline.output_flattened())] == [
        ("p.child", "boom"),
        ("p", "boom"),
    ]
    assert [e.status for e in events.steps()] == ["failed", "failed"]
    assert [r.status for r in events.runs()] == ["failed"]


async def test_st_step_rejects_a_bad_name_or_function() -> None:
    """st.step with a non-str name or a non-callable names the argument at fault."""
    with pipelens.Pipeline("p").run() as run:
        with pytest.raises(TypeError, match="step name must be a non-empty str, not 5"):
            await run.root.step(5, lambda s: None)  # type: ignore[call-overload]
        with pytest.raises(TypeError, match="fn must be callable, not 'nope'"):
            await run.root.step("x", "nope")  # type: ignore[call-overload]


async def test_decorated_steps_nest_under_seed_steps() -> None:
    """@pipelens.step calls and pipelens.record inside st.step land on the seed step."""

    @pipelens.step
    def retrieve(query: str) -> str:
        pipelens.record("query", query)
        return f"doc:{query}"

    pipeline = Pipeline("p")

    async def body(st: Step) -> str:
        async def search(step: Step) -> str:
            assert pipelens.current_step() is step
            pipelens.record("from_context", True)
            return retrieve("q")

        return await st.step("search", search)

    assert await pipeline.track(body) == "doc:q"
    flat = {m.key: m for m in pipeline.output_flattened()}
    assert list(flat) == ["p", "p.search", "p.search.retrieve"]
    assert flat["p.search"].records == {"from_context": True}
    assert (
        flat["p.search.retrieve"].records,
        flat["p.search.retrieve"].result,
    ) == ({"query": "q"}, "doc:q")


# -- with pipeline.run() ---------------------------------------------------------------------------


def test_with_run_opens_a_run_whose_root_is_current(events: CapturedEvents) -> None:
    """`with pipeline.run(run_id=...)` gives the Run; @step calls inside nest under its root."""

    @pipelens.step
    def work() -> int:
        return 1

    with Pipeline("p").run(run_id="given") as run:
        assert pipelens.current_step() is run.root
        work()
    assert pipelens.current_step() is None
    assert (
        run.id,
        run.status,
        [s.key for s in run.steps()],
    ) == ("given", "completed", ["p", "p.work"])
    assert [(r.run_id, r.pipeline) for r in events.runs()] == [("given", "p")]


async def test_async_with_run_and_a_failure_inside(events: CapturedEvents) -> None:
    """`async with pipeline.run()` works the same; an exception fails the run and passes."""
    opened: list[pipelens.Run] = []

    async def failing_run() -> None:
        async with Pipeline("p").run() as run:
            opened.append(run)
            await run.root.step("child", lambda s: None)
            raise KeyError("missing")

    with pytest.raises(KeyError):
        await failing_run()
    (run,) = opened
    assert is_uuid(run.id)
    assert (run.status, [s.key for s in run.steps()]) == ("failed", ["p", "p.child"])
    assert [r.status for r in events.runs()] == ["failed"]


def test_a_run_scope_cannot_be_entered_twice_at_once() -> None:
    """Re-entering one open `pipeline.run()` object is refused with a clear message."""
    scope = Pipeline("p").run()
    with scope, pytest.raises(pipelens.PipelensError, match="already open"):
        scope.__enter__()


def test_run_rejects_a_bad_run_id() -> None:
    """pipeline.run(run_id=...) needs a non-empty str."""
    with pytest.raises(ConfigurationError, match=r"run_id=''"):
        Pipeline("p").run(run_id="")


# -- run ids ------------------------------------------------------------------------------------


async def test_given_run_id_names_the_first_run_and_later_runs_get_new_ids() -> None:
    """The constructor's run_id is the first run's; the second run gets a fresh UUID."""
    pipeline = Pipeline("p", {"run_id": "first"})
    assert pipeline.get_run_id() == "first"
    await pipeline.track(lambda st: None)
    assert pipeline.get_run_id() == "first"
    await pipeline.track(lambda st: None)
    second = pipeline.get_run_id()
    assert (second != "first", is_uuid(second)) == (True, True)
    assert second == pipeline.output_pipeline_meta().runId


async def test_generated_run_id_is_announced_before_the_run() -> None:
    """Without run_id, get_run_id() before the first run is the id that run then takes."""
    pipeline = Pipeline("p")
    before = pipeline.get_run_id()
    seen: list[str] = []
    await pipeline.track(lambda st: seen.append(pipeline.get_run_id()))
    assert (True, [before], before) == (is_uuid(before), seen, pipeline.get_run_id())


async def test_concurrent_runs_each_see_their_own_run_id() -> None:
    """Inside concurrent track() calls of one pipeline, get_run_id() is that call's run."""
    pipeline = Pipeline("p")

    async def body(st: Step) -> tuple[str, str]:
        await asyncio.sleep(0)
        return pipeline.get_run_id(), st.run.id

    results = list(await asyncio.gather(pipeline.track(body), pipeline.track(body)))
    assert [(b, b) for _, b in results] == results
    assert len({run_id for run_id, _ in results}) == 2


# -- auto_save -------------------------------------------------------------------------------------


async def seed_body(st: Step) -> str:
    await st.step("child", lambda s: "c")
    return "done"


async def test_auto_save_off_sends_nothing(events: CapturedEvents) -> None:
    """auto_save='off' sends nothing, neither to its transport nor to the configured one."""
    own = CapturedEvents()
    pipeline = Pipeline("p", {"auto_save": "off", "transport": own})
    assert await pipeline.track(seed_body) == "done"
    assert (own.events, events.events, keys(pipeline)) == ([], [], ["p", "p.child"])


async def test_auto_save_finish_sends_no_starts() -> None:
    """auto_save='finish' sends finished steps and the finished run, and no start events."""
    own = CapturedEvents()

    @with_step("child")
    async def child(n: int, st: Step) -> int:
        return n

    async def body(st: Step) -> None:
        await child(7, st)

    await Pipeline("p", auto_save="finish", transport=own).track(body)
    assert [StepFinished, StepFinished, RunFinished] == [type(e) for e in own.events]
    assert (own.step("p.child").inputs, own.runs()[0].status) == ('{"n":7}', "completed")


async def test_auto_save_real_time_sends_starts_and_finishes() -> None:
    """The default (real_time) sends the run's and each step's start before their finish."""
    own = CapturedEvents()
    await Pipeline("p", transport=own).track(seed_body)
    assert [
        (RunStarted, "p"),
        (StepStarted, "p"),
        (StepStarted, "p.child"),
        (StepFinished, "p.child"),
        (StepFinished, "p"),
        (RunFinished, "p"),
    ] == [(type(e), getattr(e, "key", getattr(e, "pipeline", None))) for e in own.events]


# -- with_step ------------------------------------------------------------------------------------


async def test_with_step_with_a_trailing_step_makes_a_child_of_it(events: CapturedEvents) -> None:
    """The seed's form: the function gets its own child step in place of the one passed."""

    class Service:
        @with_step("method")
        async def method(self, value: str, step: Step) -> str:
            await step.record("value", value)
            return step.get_key()

    @with_step("function")
    async def function(param: int, st: Step) -> str:
        return await Service().method(f"v{param}", st)

    pipeline = Pipeline("p")
    assert await pipeline.track(lambda st: function(1, st)) == "p.function.method"
    flat = {m.key: m for m in pipeline.output_flattened()}
    assert list(flat) == ["p", "p.function", "p.function.method"]
    assert flat["p.function.method"].records == {"value": "v1"}
    started = {e.key: e.inputs for e in events.steps_started()}
    assert (
        started["p.function"],
        started["p.function.method"],
    ) == ('{"param":1}', '{"value":"v1"}')


def test_with_step_keeps_a_sync_function_sync() -> None:
    """A sync function stays sync (no coroutine), with its name and signature."""

    @with_step("double")
    def double(n: int, st: Step) -> int:
        return n * 2

    assert (
        inspect.iscoroutinefunction(double),
        list(inspect.signature(double).parameters),
        double.__name__,
    ) == (False, ["n", "st"], "double")
    with Pipeline("p").run() as run:
        assert double(2, run.root) == 4
    assert [s.key for s in run.steps()] == ["p", "p.double"]


async def test_with_step_without_a_step_argument_nests_under_the_current_step() -> None:
    """Without a trailing Step, the step nests under the current one (or opens its own run)."""

    @with_step("plain")
    async def plain(x: int) -> int:
        pipelens.record("x", x)
        return x

    pipeline = Pipeline("p")

    async def body(st: Step) -> None:
        async def inner(step: Step) -> int:
            return await plain(2)

        await st.step("inner", inner)

    await pipeline.track(body)
    assert keys(pipeline) == ["p", "p.inner", "p.inner.plain"]
    assert pipeline.output_flattened()[2].records == {"x": 2}
    with pipelens.testing.capture_runs() as captured:
        assert await plain(3) == 3
    assert [r.pipeline for r in captured.runs()] == ["plain"]


async def test_with_step_passes_its_step_when_the_step_parameter_is_left_out() -> None:
    """A function declaring `st: Step` but called without it receives its new step."""

    @with_step("injected")
    async def injected(x: int, st: Step) -> str:
        await st.record("x", x)
        return st.get_key()

    @with_step("by_keyword")
    def by_keyword(x: int, st: Step) -> str:
        return st.get_key()

    with Pipeline("p").run() as run:
        assert await injected(1) == "p.injected"  # type: ignore[call-arg] # st is passed in
        assert by_keyword(2, st=run.root) == "p.by_keyword"
    assert [s.key for s in run.steps()] == ["p", "p.injected", "p.by_keyword"]
    assert run.step("p.injected").records == {"x": 1}


async def test_with_step_exception_passes_through() -> None:
    """A with_step function's exception reaches the caller unchanged; its step is failed."""
    boom = RuntimeError("no")

    @with_step("fails")
    async def fails(st: Step) -> None:
        raise boom

    with pytest.raises(RuntimeError) as caught:
        async with Pipeline("p").run() as run:
            await fails(run.root)
    assert (boom, "failed", "no") == (
        caught.value,
        run.step("p.fails").status,
        run.step("p.fails").get_step_meta().error,
    )


def test_with_step_misuse_is_a_clear_type_error() -> None:
    """@with_step without a name, or on a generator function, raises TypeError at decoration."""
    with pytest.raises(TypeError, match=r"write @with_step\('name'\)"):

        @with_step  # type: ignore[arg-type]
        async def no_name(st: Step) -> None:
            return None

    with pytest.raises(TypeError, match="cannot decorate the generator function"):

        @with_step("gen")
        def gen(st: Step) -> Any:
            yield 1


# -- listeners -----------------------------------------------------------------------------------


def recorder(seen: list[tuple[Any, ...]], pipeline: Pipeline) -> None:
    pipeline.on("step-start", lambda key, meta: seen.append(("start", key, meta.time.endTs)))
    pipeline.on("step-success", lambda key, result, meta: seen.append(("success", key, result)))
    pipeline.on("step-error", lambda key, error, meta: seen.append(("error", key, error)))
    pipeline.on("step-complete", lambda key, meta: seen.append(("complete", key, meta.error)))
    pipeline.on(
        "step-record",
        lambda key, record_key, value, meta: seen.append(
            ("record", key, record_key, value, meta.records)
        ),
    )


async def test_sync_listeners_fire_in_order_with_the_seeds_arguments() -> None:
    """start; record; success; complete — each with the seed's argument order."""
    seen: list[tuple[Any, ...]] = []
    pipeline = Pipeline("p")
    recorder(seen, pipeline)

    async def child(step: Step) -> str:
        await step.record("n", 1)
        return "r"

    await pipeline.track(lambda st: st.step("child", child))
    assert seen == [
        ("start", "p", None),
        ("start", "p.child", None),
        ("record", "p.child", "n", 1, {"n": 1}),
        ("success", "p.child", "r"),
        ("complete", "p.child", None),
        ("success", "p", "r"),
        ("complete", "p", None),
    ]


async def test_error_listeners_get_the_exception_then_complete() -> None:
    """On failure: start; error (the exception itself); complete (meta.error set); no success."""
    seen: list[tuple[Any, ...]] = []
    pipeline = Pipeline("p")
    recorder(seen, pipeline)
    boom = ValueError("boom")

    async def child(step: Step) -> None:
        raise boom

    with pytest.raises(ValueError, match="boom"):
        await pipeline.track(lambda st: st.step("child", child))
    assert [
        ("start", "p", None),
        ("start", "p.child", None),
        ("error", "p.child", boom),
        ("complete", "p.child", "boom"),
        ("error", "p", boom),
        ("complete", "p", "boom"),
    ] == seen


async def test_async_listeners_run_in_order_and_before_track_returns() -> None:
    """Async listeners (even ones that await) see events in order, all done when track returns."""
    seen: list[tuple[str, str]] = []
    pipeline = Pipeline("p")

    def listener(name: str, yields: int) -> Any:
        async def listen(key: str, *rest: Any) -> None:
            for _ in range(yields):  # the earlier event's listener takes longer
                await asyncio.sleep(0)
            seen.append((name, key))

        return listen

    for yields, event in enumerate(("step-complete", "step-success", "step-start"), start=1):
        pipeline.on(event, listener(event, yields))
    await pipeline.track(lambda st: st.step("child", lambda s: None))
    assert seen == [
        ("step-start", "p"),
        ("step-start", "p.child"),
        ("step-success", "p.child"),
        ("step-complete", "p.child"),
        ("step-success", "p"),
        ("step-complete", "p"),
    ]


def test_async_listeners_without_a_running_loop_run_at_once() -> None:
    """In sync code, an async listener runs to completion when its event fires."""
    seen: list[str] = []

    async def on_start(key: str, meta: Any) -> None:
        seen.append(f"async {key}")

    pipeline = Pipeline("p").on("step-start", on_start)
    pipeline.on("step-complete", lambda key, meta: seen.append(f"sync {key}"))
    with pipeline.run():
        seen.append("body")
    assert seen == ["async p", "body", "sync p"]


async def test_a_raising_listener_is_contained(monkeypatch: pytest.MonkeyPatch) -> None:
    """A listener that raises (sync or async) does not affect the steps or the result."""
    monkeypatch.setattr(pipelens._core.containment, "RAISE_INTERNAL", False)

    def sync_boom(*args: Any) -> None:
        raise RuntimeError("sync listener bug")

    async def async_boom(*args: Any) -> None:
        raise RuntimeError("async listener bug")

    pipeline = Pipeline("p").on("step-start", sync_boom).on("step-success", async_boom)
    pipeline.on("step-record", sync_boom)

    async def body(st: Step) -> str:
        await st.record("k", "v")
        return await st.step("child", lambda s: "ok")

    assert await pipeline.track(body) == "ok"
    assert [(m.key, m.error) for m in pipeline.output_flattened()] == [
        ("p", None),
        ("p.child", None),
    ]
    assert pipeline.root.status == "completed"


def test_listener_registration_is_checked() -> None:
    """An unknown event name or a non-callable listener is refused, naming it."""
    pipeline = Pipeline("p")
    with pytest.raises(ConfigurationError, match=r"on\('step-finish', \.\.\.\): unknown event"):
        pipeline.on("step-finish", print)
    with pytest.raises(TypeError, match="the listener must be callable"):
        pipeline.on("step-start", "print")  # type: ignore[arg-type]


async def test_a_listener_added_on_a_step_sees_the_rest_of_its_run() -> None:
    """st.on(...) inside a run listens to that run's later events."""
    seen: list[str] = []

    async def body(st: Step) -> None:
        st.on("step-complete", lambda key, meta: seen.append(key))
        await st.step("child", lambda s: None)

    async with Pipeline("p").run() as run:
        await body(run.root)
    assert seen == ["p.child", "p"]


async def test_records_on_the_pipeline_before_it_runs_belong_to_the_next_run() -> None:
    """pipeline.record() before any run fires step-record and lands on the next run's root."""
    seen: list[tuple[str, str, Any]] = []
    pipeline = Pipeline("p").on("step-record", lambda key, rk, v, meta: seen.append((key, rk, v)))
    assert pipeline is await pipeline.record("early", 1)
    assert pipeline.get_records() == {"early": 1}
    await pipeline.track(lambda st: st.record("late", 2))
    assert seen == [("p", "early", 1), ("p", "late", 2)]
    assert pipeline.get_records() == {"early": 1, "late": 2}


# -- outputs ---------------------------------------------------------------------------------------


async def test_output_pipeline_meta_has_the_seeds_shape() -> None:
    """logVersion 1, runId, the root's fields, and every step flattened (root first)."""
    pipeline = Pipeline("p", run_id="r1")
    await pipeline.track(seed_body)
    meta = pipeline.output_pipeline_meta()
    assert isinstance(meta, PipelineMeta)
    assert (
        meta.logVersion,
        meta.runId,
        meta.key,
        meta.result,
        [s.key for s in meta.steps],
    ) == (1, "r1", "p", "done", ["p", "p.child"])
    assert (meta.log_version, meta.run_id) == (meta.logVersion, meta.runId)
    dumped = meta.model_dump(by_alias=True)
    assert (list(dumped)) == [
        "name",
        "key",
        "time",
        "records",
        "result",
        "error",
        "logVersion",
        "runId",
        "steps",
    ]
    assert list(meta.model_dump())[6:8] == ["log_version", "run_id"]
    assert list(dumped["time"]) == ["startTs", "endTs", "timeUsageMs"]
    time = meta.time
    assert time.endTs is not None
    assert time.endTs - time.startTs == time.timeUsageMs


def test_output_pipeline_meta_before_any_run_is_the_unstarted_pipeline() -> None:
    """Before a run: the pipeline's own meta, not finished, with the next run's id."""
    pipeline = Pipeline("p", {"run_id": "next"})
    meta = pipeline.output_pipeline_meta()
    assert (
        meta.runId,
        [s.key for s in meta.steps],
        meta.time.endTs,
        meta.logVersion,
    ) == ("next", ["p"], None, 1)
    assert (pipeline.output_nested().key, pipeline.output_nested().substeps) == ("p", [])


async def test_model_dump_turns_a_step_result_into_its_key() -> None:
    """A step object returned as a result dumps as '<step key>' (no recursion into the tree)."""
    pipeline = Pipeline("p")
    await pipeline.track(lambda st: st.step("child", lambda s: s.record("k", 1)))
    assert pipeline.output_pipeline_meta().model_dump()["steps"][1]["result"] == "<step p.child>"
    assert '"result":"<step p.child>"' in pipeline.output_nested().model_dump_json()


async def test_pipeline_step_methods_act_on_the_root_step() -> None:
    """get_key, get_records, get_step_meta and the rest are the root step's."""
    pipeline = Pipeline("p")
    with pytest.raises(AttributeError, match="has not run yet"):
        _ = pipeline.tree_text
    await pipeline.track(lambda st: st.record("k", "v"))
    assert (
        pipeline.get_key(),
        pipeline.get_records(),
        pipeline.get_step_meta().key,
        pipeline.last_run.status,
    ) == ("p", {"k": "v"}, "p", "completed")
    assert pipeline.root.tree_text() == pipeline.tree_text()


async def test_seed_chart_options_are_honoured() -> None:
    """StepGanttArg (or a dict) filters the rows and sets the width of the local chart."""
    pipeline = Pipeline("p")
    await pipeline.track(seed_body)
    by_arg = await pipeline.gantt_quickchart(StepGanttArg(filter=["p.child"], min_width=640))
    svg = by_arg.getvalue().decode()
    assert ('width="640"' in svg, 'data-key="p.child"' in svg, 'data-key="p"' in svg) == (
        True,
        True,
        False,
    )
    page = await pipeline.gantt_google_chart_html({"filter": "child$"})
    assert ('data-key="p.child"' in page, 'data-key="p"' in page) == (True, False)


# -- LLMTrack --------------------------------------------------------------------------------------


def completion(resp_id: str, model: str, prompt: int, completion_tokens: int) -> dict[str, Any]:
    return {
        "id": resp_id,
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": f"answer {resp_id}"},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens,
        },
    }


async def test_llm_track_records_a_dict_response() -> None:
    """A dict response is recorded under __LLM_RESPONSE_<id> with the seed's fields only."""
    response = {**completion("r1", "gpt-4", 100, 50), "extra": "dropped"}
    with Pipeline("p").run() as run:
        assert None is await LLMTrack.track(run.root, response)
    record = run.root.records[f"{LLM_RESPONSE_RECORD_KEY_PREFIX}r1"]
    assert {**completion("r1", "gpt-4", 100, 50), "system_fingerprint": None} == record


async def test_llm_track_records_an_openai_chat_completion() -> None:
    """An openai ChatCompletion object is recorded as plain data and counted by model."""
    response = ChatCompletion.model_validate(completion("chatcmpl-1", "gpt-4o", 12, 3))
    with Pipeline("p").run() as run:
        LLMTrack.track(run.root, response)
    record = run.root.records["__LLM_RESPONSE_chatcmpl-1"]
    assert (
        record["model"],
        record["choices"][0]["message"]["content"],
        record["usage"]["total_tokens"],
    ) == ("gpt-4o", "answer chatcmpl-1", 15)
    assert {"gpt-4o": LLMUsage(prompt_tokens=12, completion_tokens=3, total_tokens=15)} == (
        LLMTrack.get_total_usage(run.root)
    )


async def test_get_total_usage_sums_by_model_over_substeps() -> None:
    """Usage is summed per model over the step and all its descendants; the seed's model works."""

    def tracker(*response: Any) -> Any:
        async def track(step: Step) -> str:
            await LLMTrack.track(step, completion(*response))
            return "ok"

        return track

    async def body(st: Step) -> None:
        await st.step("step1", tracker("a", "gpt-4", 100, 50))

        async def deeper(step: Step) -> None:
            await step.step("step2", tracker("b", "gpt-4", 200, 100))

        await st.step("nest", deeper)
        seed_model = OpenAICompatibleChatCompletionResponse(
            id="c", model="gpt-3.5-turbo", usage={"prompt_tokens": 50, "completion_tokens": 25}
        )
        await st.step("step3", lambda step: LLMTrack.track(step, seed_model))
        no_usage = {**completion("d", "gpt-4o", 1, 1), "usage": None}
        no_model = completion("e", "", 9, 9)
        await st.step("step4", lambda step: LLMTrack.track(step, no_usage))
        await st.step("step5", lambda step: LLMTrack.track(step, no_model))

    pipeline = Pipeline("p")
    await pipeline.track(body)
    assert {
        "gpt-4": LLMUsage(prompt_tokens=300, completion_tokens=150, total_tokens=450),
        "gpt-3.5-turbo": LLMUsage(prompt_tokens=50, completion_tokens=25, total_tokens=0),
        "gpt-4o": LLMUsage(),
    } == LLMTrack.get_total_usage(pipeline)
    nest = pipeline.root.children[1]
    assert {"gpt-4": LLMUsage(prompt_tokens=200, completion_tokens=100, total_tokens=300)} == (
        LLMTrack.get_total_usage(nest)
    )


def test_llm_track_never_raises_on_an_unreadable_response(monkeypatch: pytest.MonkeyPatch) -> None:
    """A response whose attributes raise is skipped; the caller's code carries on."""
    monkeypatch.setattr(pipelens._core.containment, "RAISE_INTERNAL", False)

    class Broken:
        @property
        def id(self) -> str:
            raise RuntimeError("unreadable")

    with Pipeline("p").run() as run:
        LLMTrack.track(run.root, Broken())
    assert (run.root.records, run.status) == ({}, "completed")
