"""A run as a file to download, in the two formats the import page reads back.

* ``events``: our event file, JSON lines of :class:`~pipelens.events.Batch` (what
  ``FileTransport`` writes): the run's start, each step as one ``StepFinished`` (a step still
  running as its ``StepStarted``), the run's finish, :data:`BATCH_EVENTS` events a line. Every
  stored column travels: ids, kinds, inputs, LLM calls, who and why.
* ``seed``: the seed's ``PipelineMeta`` (``logVersion`` 1) with its flattened ``steps``, in
  epoch milliseconds, the shape the seed's own tools read. It carries what the seed's steps
  have (key, name, times, records, result, error message); a step's status is the seed's rule
  (an error: failed, an end: completed, else running).
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import quote

import msgspec
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from pipelens.events import (
    Batch,
    ErrorInfo,
    Event,
    RunFinished,
    RunStarted,
    StepFinished,
    StepStarted,
    encode_json,
)
from pipelens_server._errors import RunNotFoundError
from pipelens_server._read._seed_dashboard import SeedStep, TimeOut, run_steps

ExportFormat = Literal["events", "seed"]
#: Events per JSON line (a line is one batch, as the file transport writes them).
BATCH_EVENTS = 1000
_FINAL = ("completed", "failed", "cancelled")
_NS_PER_MS = 1_000_000

_RUN = sql.SQL(
    "SELECT pipeline, status, start_ns, end_ns, duration_ns, error_type, error_message, "
    "error_traceback, step_count, dropped_events, attributes::text, llm_usage::text, tags::text, "
    "user_id, session_id FROM runs WHERE run_id = %s"
)
_STEPS = (
    "SELECT step_id, parent_id, key, name, kind, status, start_ns, end_ns, duration_ns, "
    "inputs::text, result::text, records::text, error_type, error_message, error_traceback, "
    "llm::text FROM steps WHERE run_id = %s ORDER BY start_ns NULLS LAST, key"
)


class SeedExport(msgspec.Struct, kw_only=True, frozen=True, rename="camel"):
    """The seed's ``PipelineMeta``: the run as its root step, its id, and every step."""

    log_version: int = 1
    run_id: str
    name: str
    key: str
    time: TimeOut
    records: msgspec.Raw
    result: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    error: str | None
    steps: list[SeedStep]


_seed_encoder = msgspec.json.Encoder()


def _error(type_: str | None, message: str | None, traceback: str | None) -> ErrorInfo | None:
    if type_ is None and message is None:
        return None
    return ErrorInfo(type=type_ or "", message=message or "", traceback=traceback)


def _step_event(run_id: str, row: tuple[Any, ...]) -> Event:
    step_id, parent_id, key, name, kind, status, start, end, duration = row[:9]
    inputs, result, records, error_type, error_message, error_traceback, llm = row[9:]
    fields: dict[str, Any] = {
        "run_id": run_id,
        "step_id": step_id,
        "parent_id": parent_id,
        "key": key,
        "name": name,
        "kind": kind,
        "start_ns": start or 0,
        "inputs": inputs,
    }
    if status not in _FINAL:
        return StepStarted(**fields)
    end = end if end is not None else fields["start_ns"]
    return StepFinished(
        **fields,
        end_ns=end,
        duration_ns=duration if duration is not None else end - fields["start_ns"],
        status=status,
        error=_error(error_type, error_message, error_traceback),
        result=result,
        records=records,
        llm=llm,
    )


async def run_events_file(pool: AsyncConnectionPool[Any], run_id: str) -> bytes:
    """The run as our event file (JSON lines); ``RunNotFoundError`` when unknown."""
    async with pool.connection() as conn:
        run = await (await conn.execute(_RUN, [run_id])).fetchone()
        if run is None:
            raise RunNotFoundError(run_id)
        steps = await (await conn.execute(_STEPS, [run_id])).fetchall()
    pipeline, status, start, end, duration, error_type, error_message, error_traceback = run[:8]
    step_count, dropped, attributes, llm_usage, tags, user_id, session_id = run[8:]
    who: dict[str, Any] = {
        "attributes": msgspec.json.decode(attributes) if attributes else {},
        "tags": msgspec.json.decode(tags) if tags else [],
        "user_id": user_id,
        "session_id": session_id,
    }
    # A run that no event named (its steps came first) has no pipeline to start it with.
    start = start or 0
    head: dict[str, Any] = {"run_id": run_id, "pipeline": pipeline or "", "start_ns": start}
    events: list[Event] = [RunStarted(**head, **who)] if pipeline else []
    events += [_step_event(run_id, row) for row in steps]
    if pipeline and status in _FINAL:
        end = end if end is not None else start
        events.append(
            RunFinished(
                **head,
                **who,
                end_ns=end,
                duration_ns=duration if duration is not None else end - start,
                status=status,
                error=_error(error_type, error_message, error_traceback),
                step_count=step_count or 0,
                dropped_events=dropped or 0,
                llm_usage=llm_usage,
            )
        )
    lines = (
        encode_json(Batch(events=events[i : i + BATCH_EVENTS]))
        for i in range(0, len(events), BATCH_EVENTS)
    )
    return b"\n".join(lines) + b"\n"


def _ms(ns: int | None) -> int | None:
    return None if ns is None else round(ns / _NS_PER_MS)


async def run_seed_json(pool: AsyncConnectionPool[Any], run_id: str) -> bytes:
    """The run as the seed's ``PipelineMeta`` JSON; ``RunNotFoundError`` when unknown."""
    async with pool.connection() as conn:
        run = await (await conn.execute(_RUN, [run_id])).fetchone()
    if run is None:
        raise RunNotFoundError(run_id)
    steps = await run_steps(pool, run_id)
    pipeline, _, start, end, duration, error_type, error_message = run[:7]
    roots = [step for step in steps if "." not in step.key]
    root = roots[0] if len(roots) == 1 else None
    name = pipeline or (root.name if root else run_id)
    export = SeedExport(
        run_id=run_id,
        name=name,
        key=root.key if root else name,
        time=TimeOut(start_ts=_ms(start), end_ts=_ms(end), time_usage_ms=_ms(duration)),
        records=root.records if root else msgspec.Raw(b"{}"),
        result=root.result if root else msgspec.UNSET,
        error=error_message or error_type,
        steps=steps,
    )
    return _seed_encoder.encode(export)


async def _export(pool: AsyncConnectionPool[Any], run_id: str, format: ExportFormat) -> bytes:
    """The run in ``format``; ``RunNotFoundError`` when unknown."""
    if format == "seed":
        return await run_seed_json(pool, run_id)
    return await run_events_file(pool, run_id)


#: Each format's media type.
_MEDIA_TYPES: dict[str, str] = {"events": "application/x-ndjson", "seed": "application/json"}


def _headers(run_id: str, format: ExportFormat) -> dict[str, str]:
    """The answer's ``Content-Disposition``: a download named after the run and the format,
    ``filename`` in ASCII letters, digits and ``-_.`` (a header is latin-1, and a file name must
    not carry quotes or slashes) and ``filename*`` the whole name (RFC 6266, UTF-8)."""
    ending = ".seed.json" if format == "seed" else ".events.jsonl"
    safe = "".join(c if (c.isascii() and c.isalnum()) or c in "-_." else "_" for c in run_id)
    whole = quote(f"run-{run_id[:100]}{ending}", safe="")
    return {
        "Content-Disposition": f'attachment; filename="run-{safe[:100]}{ending}"; '
        f"filename*=UTF-8''{whole}"
    }


class Download(msgspec.Struct, kw_only=True, frozen=True):
    """A run as a file to answer with: its bytes, media type and the headers naming it."""

    body: bytes
    media_type: str
    headers: dict[str, str]


async def download(pool: AsyncConnectionPool[Any], run_id: str, format: ExportFormat) -> Download:
    """Run ``run_id`` as a download in ``format``, the same for the run page's links and
    ``GET /api/v1/runs/{id}/export``; ``RunNotFoundError`` when unknown."""
    return Download(
        body=await _export(pool, run_id, format),
        media_type=_MEDIA_TYPES[format],
        headers=_headers(run_id, format),
    )
