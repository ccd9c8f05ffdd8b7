"""The seed's JSON ingest payloads (``/api/ingestion/...``, ``_api._ingest``) as partial rows: its
libraries report here unchanged.

Shapes follow ``shared/seed/PROTOCOL.md``: camelCase keys, times in epoch
milliseconds (stored as nanoseconds), ``null`` (Python) and a missing field (TypeScript) mean the
same. A seed step has no ids: its ``key`` serves as its step id and the key's dotted prefix as its
parent's. Every payload becomes partial rows that go through the same merge and store as
``POST /api/v1/events``, so seed events may arrive in any order or twice as well; their values
and errors are scrubbed of secrets as the events' are (``_scrub``).

A step *start* is a start, whatever it carries: the seed's Python client shares one ``TimeMeta``
between a step's events, so its start may already hold ``endTs`` (and ``records: {}``). A start
therefore ranks ``running`` (``failed`` when it names an error) and its end time is only a
fallback for a finish that never comes; the finish, and the pipeline finish's copy of every step,
rank above it and bring the records.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, TypeVar

import msgspec

from pipelens.events import MAX_KEY_BYTES, MAX_NAME_BYTES, MAX_PIPELINE_BYTES, MAX_RUN_ID_BYTES
from pipelens_server._errors import InvalidBatchError
from pipelens_server._ingest._checks import check_length_at, without_nul
from pipelens_server._ingest._decode import clean_json_text
from pipelens_server._ingest._rows import Rows, run_row, step_row
from pipelens_server._ingest._scrub import scrub_json, scrub_text

_NS_PER_MS = 1_000_000
_MAX_MS = (2**63 - 1) // _NS_PER_MS
_NULL = b"null"

Body = TypeVar("Body")
Result = TypeVar("Result")


class TimeMeta(msgspec.Struct, kw_only=True, rename="camel"):
    """``{startTs, endTs?, timeUsageMs?}`` in epoch milliseconds."""

    start_ts: int | float | None = None
    end_ts: int | float | None = None
    time_usage_ms: int | float | None = None


class StepMeta(msgspec.Struct, kw_only=True, rename="camel"):
    """A seed step. ``records`` and ``result`` are kept as raw JSON."""

    name: str | None = None
    key: str | None = None
    time: TimeMeta | None = None
    records: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    result: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    error: str | None = None


class PipelineMeta(StepMeta, kw_only=True, rename="camel"):
    """A seed run: its own step plus ``runId`` and the flattened ``steps``."""

    log_version: int | None = None
    run_id: str | None = None
    steps: list[StepMeta] | None = None


RunStatus = Literal["completed", "failed", "running"]


class PipelineFinish(msgspec.Struct, kw_only=True, rename="camel"):
    """Body of ``/pipeline/finish``."""

    pipeline_meta: PipelineMeta
    status: RunStatus | None = None


class StepBody(msgspec.Struct, kw_only=True, rename="camel"):
    """Body of ``/step/start`` and ``/step/finish``."""

    run_id: str | None = None
    step: StepMeta


class PipelineOp(msgspec.Struct, kw_only=True, rename="camel", tag_field="type", tag="pipeline"):
    """A pipeline item of a ``/batch`` array."""

    operation: Literal["start", "finish"]
    meta: PipelineMeta
    status: RunStatus | None = None


class StepOp(msgspec.Struct, kw_only=True, rename="camel", tag_field="type", tag="step"):
    """A step item of a ``/batch`` array."""

    operation: Literal["start", "finish"]
    run_id: str | None = None
    step: StepMeta


_pipeline_decoder = msgspec.json.Decoder(PipelineMeta)
_finish_decoder = msgspec.json.Decoder(PipelineFinish)
_step_decoder = msgspec.json.Decoder(StepBody)
_batch_decoder = msgspec.json.Decoder(list[PipelineOp | StepOp])


def _decode(decoder: msgspec.json.Decoder[Body], body: bytes) -> Body:
    try:
        return decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise InvalidBatchError(f"invalid body: {exc}") from None


def _ns(ms: float | None, path: str) -> int | None:
    if ms is None:
        return None
    if not 0 <= ms <= _MAX_MS:
        raise InvalidBatchError(
            f"invalid body: {ms} is not a time in epoch milliseconds - at `{path}`"
        )
    return round(ms * _NS_PER_MS)


def _json(raw: msgspec.Raw | msgspec.UnsetType) -> str | None:
    if raw is msgspec.UNSET:
        return None
    text = bytes(raw)
    # A body that decoded holds valid JSON here; scrubbed, it keeps its text when nothing is secret.
    return None if text == _NULL else clean_json_text(scrub_json(text.decode()))


def _required(value: str | None, path: str, limit: int) -> str:
    if not value:
        raise InvalidBatchError(f"invalid body: a non-empty string is required - at `{path}`")
    check_length_at(value, limit, path.rpartition(".")[2], path, "invalid body")
    return without_nul(value)


def _run_id(value: str | None, path: str) -> str:
    return _required(value, path, MAX_RUN_ID_BYTES)


def add_step(rows: Rows, run_id: str, step: StepMeta, path: str, *, started: bool = False) -> None:
    """Add the seed step ``step`` of run ``run_id`` (found at ``path`` of the body) to ``rows``;
    ``started`` when it comes from a start event (see the module's docstring)."""
    key = _required(step.key, f"{path}.key", MAX_KEY_BYTES)
    if step.name:
        check_length_at(step.name, MAX_NAME_BYTES, "name", f"{path}.name", "invalid body")
    time = step.time or TimeMeta()
    start_ns = _ns(time.start_ts, f"{path}.time.startTs")
    end_ns = _ns(time.end_ts, f"{path}.time.endTs")
    duration_ns = _ns(time.time_usage_ms, f"{path}.time.timeUsageMs")
    if duration_ns is None and start_ns is not None and end_ns is not None:
        duration_ns = end_ns - start_ns
    # The seed's rule: an error means failed, an end without one completed, no end running;
    # but a start never claims the step ended.
    ended = end_ns is not None and not started
    status = "failed" if step.error else "completed" if ended else "running"
    parent_key = key.rpartition(".")[0]
    rows.add_step(
        step_row(
            run_id=run_id,
            key=key,
            step_id=key,
            parent_id=parent_key or None,
            name=without_nul(step.name) if step.name else key.rpartition(".")[2],
            kind="step",
            status=status,
            start_ns=start_ns,
            end_ns=end_ns,
            duration_ns=duration_ns,
            result=_json(step.result),
            records=_json(step.records),
            error_message=without_nul(scrub_text(step.error)) if step.error else None,
        )
    )


def add_pipeline(
    rows: Rows, meta: PipelineMeta, status: str | None, finished: bool, path: str
) -> str:
    """Add the seed run ``meta`` and its steps (found at ``path``) to ``rows``; its run id.

    The steps of a pipeline that has not finished are starts (``add_step``'s ``started``); those
    of a finish are the final copy of every step, which repairs what the step events missed.
    """
    run_id = _run_id(meta.run_id, f"{path}.runId")
    pipeline = _required(meta.name, f"{path}.name", MAX_PIPELINE_BYTES)
    time = meta.time or TimeMeta()
    steps = meta.steps or []
    rows.add_run(
        run_row(
            run_id=run_id,
            pipeline=pipeline,
            status=status or ("failed" if meta.error else "completed" if finished else "running"),
            start_ns=_ns(time.start_ts, f"{path}.time.startTs"),
            end_ns=_ns(time.end_ts, f"{path}.time.endTs") if finished else None,
            duration_ns=_ns(time.time_usage_ms, f"{path}.time.timeUsageMs") if finished else None,
            error_message=without_nul(scrub_text(meta.error)) if meta.error else None,
            step_count=len(steps) if finished and steps else None,
        )
    )
    for i, step in enumerate(steps):
        add_step(rows, run_id, step, f"{path}.steps[{i}]", started=not finished)
    return run_id


def _seed_rows(
    decoder: msgspec.json.Decoder[Body], add_rows: Callable[[Rows, Body], Result]
) -> Callable[[bytes], tuple[Rows, Result]]:
    """A ``to_rows`` for ``_store.ingest``: decode the body with ``decoder`` and let ``add_rows``
    turn it into rows (raising a 400 before anything is written)."""

    def to_rows(body: bytes) -> tuple[Rows, Result]:
        decoded = _decode(decoder, body)
        rows = Rows()
        return rows, add_rows(rows, decoded)

    return to_rows


def _start_rows(rows: Rows, meta: PipelineMeta) -> str:
    return add_pipeline(rows, meta, None, finished=False, path="$")


def _finish_rows(rows: Rows, body: PipelineFinish) -> None:
    finished = body.status != "running"
    add_pipeline(rows, body.pipeline_meta, body.status, finished, path="$.pipelineMeta")


def _step_start_rows(rows: Rows, body: StepBody) -> None:
    add_step(rows, _run_id(body.run_id, "$.runId"), body.step, "$.step", started=True)


def _step_finish_rows(rows: Rows, body: StepBody) -> None:
    add_step(rows, _run_id(body.run_id, "$.runId"), body.step, "$.step")


def _batch_rows(rows: Rows, items: list[PipelineOp | StepOp]) -> None:
    for i, item in enumerate(items):
        if isinstance(item, PipelineOp):
            finished = item.operation == "finish" and item.status != "running"
            add_pipeline(rows, item.meta, item.status, finished, path=f"$[{i}].meta")
        else:
            run_id = _run_id(item.run_id, f"$[{i}].runId")
            started = item.operation == "start"
            add_step(rows, run_id, item.step, f"$[{i}].step", started=started)


#: Each endpoint's body to rows: ``/pipeline/start`` (its run id), ``/pipeline/finish``,
#: ``/step/start`` (a start even when its body already carries the step's end), ``/step/finish``,
#: and ``/batch``.
pipeline_start_rows = _seed_rows(_pipeline_decoder, _start_rows)
pipeline_finish_rows = _seed_rows(_finish_decoder, _finish_rows)
step_start_rows = _seed_rows(_step_decoder, _step_start_rows)
step_finish_rows = _seed_rows(_step_decoder, _step_finish_rows)
batch_rows = _seed_rows(_batch_decoder, _batch_rows)
