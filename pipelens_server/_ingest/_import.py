"""Importing files: the seed's JSON exports and our file transport's files, one file at a time.

A file is recognised by its content, not its name:

* a JSON object with ``logVersion`` is the seed's ``PipelineMeta`` (``logVersion`` must be 1);
* a JSON array is a bare array of the seed's ``StepMeta``: the run id and pipeline come from the
  form (``run_id``, ``pipeline``) or, when left empty, are derived (see :func:`step_array_rows`);
* JSON objects one per line are our :class:`~pipelens.events.Batch` lines (``FileTransport``'s
  ``.jsonl``); anything else is read as its msgpack frames (a 4-byte big-endian length, then the
  batch), the format ``pipelens/_file_transport.py`` writes.

Every file becomes partial rows through the ingest's own converters (``_seed``'s and
``_decode.batch_rows``) and is stored by ``_store.store`` in one transaction: a bad file is
refused whole, with a message naming the file and the path of the bad field, and writes nothing.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

import anyio.to_thread
import msgspec
import psycopg
import psycopg_pool
import structlog
from psycopg_pool import AsyncConnectionPool

from pipelens_server._db._retention import count_expired
from pipelens_server._errors import InvalidBatchError, ServerError
from pipelens_server._ingest._decode import batch_rows, decode_batch
from pipelens_server._ingest._rows import Rows, run_row
from pipelens_server._ingest._seed import PipelineMeta, StepMeta, TimeMeta, add_pipeline, add_step
from pipelens_server._ingest._store import IngestLimiter, store

log = structlog.get_logger("pipelens_server.import")

_JSON = "application/json"
_MSGPACK = "application/msgpack"
_WHITESPACE = b" \t\r\n"
_FRAME_HEADER = 4
_SEED_LOG_VERSION = 1
SHOWN_RUNS = 5


class _Sniff(msgspec.Struct, kw_only=True, rename="camel"):
    """Just enough of a JSON object to tell a seed export from one of our batches."""

    log_version: Any = None
    v: Any = None


_sniff = msgspec.json.Decoder(_Sniff)
_pipeline_decoder = msgspec.json.Decoder(PipelineMeta)
_steps_decoder = msgspec.json.Decoder(list[StepMeta])


@dataclass(frozen=True, slots=True)
class FileResult:
    """What importing one file did: its runs and steps, or why nothing was written."""

    name: str
    kind: str = ""
    runs: int = 0
    steps: int = 0
    error: str | None = None
    #: The first :data:`SHOWN_RUNS` run ids imported, sorted, for links.
    run_ids: tuple[str, ...] = ()
    #: Runs imported that are older than their pipeline's retention: the next purge takes them.
    expired: int = 0


class ImportFileError(InvalidBatchError):
    """A file that cannot be imported; the message names the file and the bad field's path."""


def file_rows(name: str, data: bytes, *, run_id: str = "", pipeline: str = "") -> tuple[str, Rows]:
    """The kind of file ``data`` is and its partial rows, validated; nothing is written.

    Args:
        name: The file's name, for messages and for a derived pipeline name.
        data: The file's bytes.
        run_id: Run id for a bare step array (derived from the content when empty).
        pipeline: Pipeline for a bare step array (derived from its steps when empty).

    Raises:
        ImportFileError: the file is empty, of no known format, or has a bad field.
    """
    try:
        return _kind_and_rows(name, data, run_id, pipeline)
    except InvalidBatchError as exc:
        raise ImportFileError(f"{name}: {exc}", exc.path) from None
    except RecursionError:
        raise ImportFileError(
            f"{name}: the file nests deeper than about 1,000 levels: nothing was imported"
        ) from None


def _kind_and_rows(name: str, data: bytes, run_id: str, pipeline: str) -> tuple[str, Rows]:
    head = data.lstrip(_WHITESPACE)[:1]
    if not head:
        raise InvalidBatchError("the file is empty")
    if head == b"[":
        return "seed step array", step_array_rows(name, data, run_id, pipeline)
    if head == b"{":
        try:
            sniffed = _sniff.decode(data)
        except msgspec.DecodeError as exc:
            if b"\n" not in data.strip():  # one broken JSON object, not JSON lines
                raise InvalidBatchError(f"invalid JSON: {exc}") from None
            return "event batches (JSON lines)", _jsonl_rows(data)
        if sniffed.log_version is not None:
            return "seed PipelineMeta", _pipeline_rows(data, sniffed.log_version)
        return "event batches (JSON lines)", _jsonl_rows(data)
    return "event batches (msgpack)", _msgpack_rows(data)


def _decode(decoder: msgspec.json.Decoder[Any], data: bytes) -> Any:
    try:
        return decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise InvalidBatchError(f"invalid file: {exc}") from None


def _pipeline_rows(data: bytes, log_version: object) -> Rows:
    if log_version != _SEED_LOG_VERSION:
        raise InvalidBatchError(
            f"unsupported logVersion {log_version!r}: the seed's exports have logVersion 1 "
            "- at `$.logVersion`"
        )
    meta: PipelineMeta = _decode(_pipeline_decoder, data)
    rows = Rows()
    finished = meta.time is not None and meta.time.end_ts is not None
    add_pipeline(rows, meta, None, finished, path="$")
    return rows


def step_array_rows(name: str, data: bytes, run_id: str, pipeline: str) -> Rows:
    """A bare array of seed steps as one run.

    When the form leaves them empty, the run id is ``import-`` and the first 16 hex digits of
    the file's sha256 (importing the same file again updates the same run), and the pipeline is
    the root step's name (the step whose key has no dot), else the file's name without suffix.
    The run takes the root step's times and error, else the steps' earliest start and (when
    every step ended) latest end.
    """
    steps: list[StepMeta] = _decode(_steps_decoder, data)
    if not steps:
        raise InvalidBatchError("the step array is empty: there is nothing to import - at `$`")
    root = next((s for s in steps if s.key and "." not in s.key), None)
    time = root.time if root is not None and root.time is not None else _span(steps)
    meta = PipelineMeta(
        log_version=_SEED_LOG_VERSION,
        run_id=run_id.strip() or f"import-{hashlib.sha256(data).hexdigest()[:16]}",
        name=pipeline.strip() or (root.name if root and root.name else PurePath(name).stem),
        time=time,
        error=root.error if root else None,
    )
    rows = Rows()
    finished = time.end_ts is not None
    run = add_pipeline(rows, meta, None, finished, path="$")
    for i, step in enumerate(steps):
        add_step(rows, run, step, f"$[{i}]")
    if finished:  # as the seed's pipeline/finish does
        rows.add_run(run_row(run_id=run, step_count=len(steps)))
    return rows


def _span(steps: list[StepMeta]) -> TimeMeta:
    starts = [s.time.start_ts for s in steps if s.time and s.time.start_ts is not None]
    ends = [s.time.end_ts if s.time else None for s in steps]
    done = [e for e in ends if e is not None]
    return TimeMeta(
        start_ts=min(starts) if starts else None,
        end_ts=max(done) if done and len(done) == len(ends) else None,
    )


def _merge(into: Rows, rows: Rows) -> None:
    for run in rows.runs.values():
        into.add_run(run)
    for step in rows.steps.values():
        into.add_step(step)
    for score in rows.scores.values():
        into.add_score(score)


def _batch_rows(rows: Rows, body: bytes, content_type: str, where: str) -> None:
    try:
        _merge(rows, batch_rows(decode_batch(body, content_type)))
    except InvalidBatchError as exc:
        raise InvalidBatchError(f"{where}: {exc}", exc.path) from None


def _jsonl_rows(data: bytes) -> Rows:
    rows = Rows()
    for number, line in enumerate(data.splitlines(), 1):
        if line.strip():
            _batch_rows(rows, line, _JSON, f"line {number}")
    return rows


def msgpack_frames(data: bytes) -> Iterator[tuple[int, bytes]]:
    """Each frame's byte offset and body (the format ``FileTransport`` writes).

    Raises:
        InvalidBatchError: the last frame is cut short.
    """
    offset = 0
    while offset < len(data):
        size = int.from_bytes(data[offset : offset + _FRAME_HEADER], "big")
        start = offset + _FRAME_HEADER
        if start > len(data) or start + size > len(data):
            raise InvalidBatchError(
                f"byte {offset}: truncated msgpack frame (expected {size} bytes): "
                "not a FileTransport file, or one cut short"
            )
        yield offset, data[start : start + size]
        offset = start + size


def _msgpack_rows(data: bytes) -> Rows:
    rows = Rows()
    for offset, frame in msgpack_frames(data):
        _batch_rows(rows, frame, _MSGPACK, f"byte {offset}")
    return rows


async def import_file(
    pool: AsyncConnectionPool[Any],
    limiter: IngestLimiter,
    name: str,
    data: bytes,
    *,
    run_id: str = "",
    pipeline: str = "",
    timeout: float,
) -> FileResult:
    """Import one file in one transaction (taking an ingest slot, as an ingest request does)."""
    parse = functools.partial(file_rows, name, data, run_id=run_id, pipeline=pipeline)
    try:  # a large file takes a while to decode: not on the event loop, which serves ingest
        kind, rows = await anyio.to_thread.run_sync(parse)
    except ImportFileError as exc:
        return FileResult(name=name, error=str(exc))
    try:
        async with limiter.slot():
            await store(pool, rows, timeout=timeout)
    except (ServerError, psycopg.Error, psycopg_pool.PoolTimeout) as exc:
        # The file's one transaction rolled back: this file wrote nothing, the others stand.
        log.warning("import failed", file=name, error=str(exc))
        return FileResult(name=name, kind=kind, error=f"{name}: nothing was imported: {exc}")
    return FileResult(
        name=name,
        kind=kind,
        runs=len(rows.runs),
        steps=len(rows.steps),
        run_ids=tuple(sorted(rows.runs)[:SHOWN_RUNS]),
        expired=await count_expired(pool, list(rows.runs)),
    )
