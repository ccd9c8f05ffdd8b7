"""From a ``POST /api/v1/events`` body to validated partial rows, before the database is touched.

Everything that could make PostgreSQL refuse a row is checked here, so that a bad batch is a 400
naming the event and field (``$.events[3].result``) and nothing is written, never a 500 halfway:
integers must fit ``bigint``; captured values must be JSON text; and NUL characters, which
PostgreSQL's ``text`` and ``jsonb`` cannot hold, are replaced by U+FFFD. Secrets in captured
values, error texts and run attributes are redacted (``_scrub``), whatever the client did.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from pipelens.events import (
    MAX_ATTRIBUTE_KEY_BYTES,
    MAX_ATTRIBUTE_VALUE_BYTES,
    MAX_ATTRIBUTES,
    MAX_KEY_BYTES,
    MAX_NAME_BYTES,
    MAX_PIPELINE_BYTES,
    MAX_RUN_ID_BYTES,
    MAX_TAG_BYTES,
    MAX_TAGS,
    VERSION,
    Batch,
    ErrorInfo,
    RunFinished,
    RunStarted,
    ScoreAdded,
    StepFinished,
    StepStarted,
    decode_json,
    decode_msgpack,
)
from pipelens_server._errors import NUL, InvalidBatchError, UnsupportedMediaTypeError
from pipelens_server._ingest._checks import (
    ESCAPED_NUL,
    MAX_BIGINT,
    check_bigint_at,
    check_length,
    check_llm,
    check_llm_usage,
    check_not_empty,
    check_order,
    json_value,
    without_nul,
)
from pipelens_server._ingest._rows import EMPTY_OBJECT, Rows, run_row
from pipelens_server._ingest._scores import score_row
from pipelens_server._ingest._scrub import (
    scrub_json,
    scrub_opt_text,
    scrub_text,
    scrub_usage_json,
)

MSGPACK_TYPES = frozenset(
    {"application/msgpack", "application/x-msgpack", "application/vnd.msgpack"}
)
JSON_TYPES = frozenset({"application/json"})

_MAX_INTEGER = 2**31 - 1
_EMPTY_OBJECT = re.compile(r"\s*\{\s*\}\s*")


class _Version(msgspec.Struct):
    """Just the version of a batch, to explain why a batch of another version does not decode."""

    v: int = VERSION


def media_type(content_type: str | None) -> str:
    """The media type of a ``Content-Type`` header, lower case, without parameters."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def check_media_type(content_type: str | None) -> bool:
    """Whether the body is msgpack (``True``) or JSON (``False``); raise on anything else."""
    kind = media_type(content_type)
    if kind in MSGPACK_TYPES:
        return True
    if kind in JSON_TYPES:
        return False
    raise UnsupportedMediaTypeError(
        f"Content-Type {content_type or '(none)'!r} is not supported: "
        "send application/msgpack or application/json"
    )


def check_json_media_type(content_type: str | None) -> None:
    """Raise unless the body is declared JSON: the seed's clients send ``application/json``, and
    a ``text/plain`` or untyped body is what another site's page may send without a preflight."""
    if media_type(content_type) not in JSON_TYPES:
        raise UnsupportedMediaTypeError(
            f"Content-Type {content_type or '(none)'!r} is not supported: "
            "send the body as application/json"
        )


def decode_batch(body: bytes, content_type: str | None) -> Batch:
    """Decode a request body by its content type; ``InvalidBatchError`` names the bad path."""
    if check_media_type(content_type):
        decode, decode_version = decode_msgpack, _msgpack_version.decode
    else:
        decode, decode_version = decode_json, _json_version.decode
    try:
        batch = decode(body)
    except RecursionError:
        # msgspec recurses on nesting, even in fields it skips: Python's limit (1,000) is the
        # server's too.
        raise InvalidBatchError(
            "invalid batch: the body nests deeper than about 1,000 levels: no event needs that "
            "- at `$`",
            path="$",
        ) from None
    except msgspec.DecodeError as exc:
        try:  # a batch of another version may not decode as ours: say so rather than why
            version = decode_version(body).v
        except msgspec.DecodeError:
            version = VERSION
        _check_version(version)
        raise InvalidBatchError(f"invalid batch: {exc}") from None
    _check_version(batch.v)
    return batch


def _check_version(version: int) -> None:
    if version != VERSION:
        raise InvalidBatchError(
            f"unsupported batch version {version} at `$.v`: this server reads version {VERSION}",
            path="$.v",
        )


def batch_rows(batch: Batch, *, partial: bool = False) -> Rows:
    """The batch's events as merged partial rows; ``InvalidBatchError`` on the first bad one.

    ``partial``: a run id naming a second run refuses that run's events alone (``Rows.refused``).
    """
    rows = Rows(partial=partial)
    rows.events = len(batch.events)
    add_start, add_finish = rows.add_start, rows.add_finish
    # A captured value's stored text depends on its text alone, and the same texts come back
    # within a batch (a loop's inputs, a small result, ``{}``): each distinct one is checked and
    # redacted once per batch, by text.
    stored: dict[str, str] = {}
    # Step events are nearly all of a batch: built positionally (in ``STEPS.columns`` order, as
    # ``step_row`` documents it) rather than through keyword calls, a third of the batch's time.
    for i, event in enumerate(batch.events):
        if isinstance(event, StepFinished):
            start_ns, end_ns, duration_ns = event.start_ns, event.end_ns, event.duration_ns
            if start_ns > MAX_BIGINT or end_ns > MAX_BIGINT or duration_ns > MAX_BIGINT:
                _bigint(start_ns, i, "start_ns")
                _bigint(end_ns, i, "end_ns")
                _bigint(duration_ns, i, "duration_ns")
            check_order(start_ns, end_ns, i)
            inputs, result, records, llm = event.inputs, event.result, event.records, event.llm
            if inputs is not None:
                inputs = stored.get(inputs) or _stored_json(stored, inputs, i, "inputs")
            if result is not None:
                result = stored.get(result) or _stored_json(stored, result, i, "result")
            if records is not None:
                records = stored.get(records) or _stored_json(stored, records, i, "records")
            error_type, error_message, error_traceback = _error(event.error)
            add_finish(
                [
                    *_step_texts(event, i),
                    event.status,
                    start_ns,
                    end_ns,
                    duration_ns,
                    inputs,
                    result,
                    records,
                    error_type,
                    error_message,
                    error_traceback,
                    None if llm is None else _llm(llm, i),
                    None,  # the key is the path
                ]
            )
        elif isinstance(event, StepStarted):
            inputs, start_ns = event.inputs, event.start_ns
            if inputs is not None:
                inputs = stored.get(inputs) or _stored_json(stored, inputs, i, "inputs")
            add_start(
                [
                    *_step_texts(event, i),
                    "running",
                    start_ns if start_ns <= MAX_BIGINT else _bigint(start_ns, i, "start_ns"),
                    None,
                    None,
                    inputs,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                    None,
                ]
            )
        elif isinstance(event, RunFinished):
            _run_texts(event, i)
            check_order(event.start_ns, event.end_ns, i)
            error_type, error_message, error_traceback = _error(event.error)
            rows.add_run(
                run_row(
                    run_id=without_nul(event.run_id),
                    pipeline=without_nul(event.pipeline),
                    status=event.status,
                    start_ns=_bigint(event.start_ns, i, "start_ns"),
                    end_ns=_bigint(event.end_ns, i, "end_ns"),
                    duration_ns=_bigint(event.duration_ns, i, "duration_ns"),
                    error_type=error_type,
                    error_message=error_message,
                    error_traceback=error_traceback,
                    step_count=_bigint(event.step_count, i, "step_count", _MAX_INTEGER),
                    dropped_events=_bigint(event.dropped_events, i, "dropped_events"),
                    llm_usage=_llm_usage(event.llm_usage, i),
                    **_who(event, i),
                )
            )
        elif isinstance(event, RunStarted):
            _run_texts(event, i)
            rows.add_run(
                run_row(
                    run_id=without_nul(event.run_id),
                    pipeline=without_nul(event.pipeline),
                    status="running",
                    start_ns=_bigint(event.start_ns, i, "start_ns"),
                    **_who(event, i),
                )
            )
        elif isinstance(event, ScoreAdded):
            rows.add_score(score_row(event, f"$.events[{i}]"))
    if batch.heartbeats is not msgspec.UNSET:
        for beat in batch.heartbeats:
            rows.add_heartbeat(without_nul(beat.run_id), beat.at_ns)
    return rows


def _run_texts(event: RunStarted | RunFinished, index: int) -> None:
    """Check a run event's run_id and pipeline: not empty, not too long."""
    check_not_empty(event.run_id, index, "run_id")
    check_not_empty(event.pipeline, index, "pipeline")
    check_length(event.run_id, MAX_RUN_ID_BYTES, index, "run_id")
    check_length(event.pipeline, MAX_PIPELINE_BYTES, index, "pipeline")


def _who(event: RunStarted | RunFinished, index: int) -> dict[str, Any]:
    """A run event's tags, user, session and metadata (``attributes``) as run row columns: within
    the wire's limits (a 400 naming the field), without NUL characters, redacted."""
    for field, count, limit in (
        ("tags", len(event.tags), MAX_TAGS),
        ("attributes", len(event.attributes), MAX_ATTRIBUTES),
    ):
        if count > limit:
            raise InvalidBatchError(
                f"invalid batch: {field} has {count} entries, more than the limit of {limit} "
                f"- at `$.events[{index}].{field}`"
            )
    for tag in event.tags:
        check_not_empty(tag, index, "tags")
        check_length(tag, MAX_TAG_BYTES, index, "tags")
    for key, value in event.attributes.items():
        check_length(key, MAX_ATTRIBUTE_KEY_BYTES, index, "attributes")
        check_length(value, MAX_ATTRIBUTE_VALUE_BYTES, index, "attributes")
    who: dict[str, Any] = {}
    for field in ("user_id", "session_id"):
        text = getattr(event, field)
        if text is not None:
            check_not_empty(text, index, field)
            check_length(text, MAX_RUN_ID_BYTES, index, field)
            who[field] = scrub_text(without_nul(text))
    for field in ("tags", "attributes"):
        value = getattr(event, field)
        if value:
            who[field] = clean_json_text(scrub_json(msgspec.json.encode(value).decode()))
    return who


def _step_texts(
    event: StepStarted | StepFinished, index: int
) -> tuple[str, str, str, str | None, str, str]:
    """A step event's run_id, key, step_id, parent_id, name and kind, without NUL characters;
    a 400 naming the field when one is empty or too long."""
    texts = (event.run_id, event.key, event.step_id, event.parent_id, event.name, event.kind)
    if not (event.run_id and event.key and event.step_id):
        check_not_empty(event.run_id, index, "run_id")
        check_not_empty(event.key, index, "key")
        check_not_empty(event.step_id, index, "step_id")
    # The common case, short texts, costs one sum; only a long one is measured in bytes.
    if len(event.key) + len(event.run_id) + len(event.step_id) + len(event.name) + len(
        event.kind
    ) > 128 or (event.parent_id is not None and len(event.parent_id) > 128):
        check_length(event.run_id, MAX_RUN_ID_BYTES, index, "run_id")
        check_length(event.key, MAX_KEY_BYTES, index, "key")
        check_length(event.step_id, MAX_NAME_BYTES, index, "step_id")
        check_length(event.parent_id or "", MAX_NAME_BYTES, index, "parent_id")
        check_length(event.name, MAX_NAME_BYTES, index, "name")
        check_length(event.kind, MAX_NAME_BYTES, index, "kind")
    # One search of all six (``None`` formats as "None") instead of one per field.
    if NUL in f"{texts[0]}{texts[1]}{texts[2]}{texts[3]}{texts[4]}{texts[5]}":
        run_id, key, step_id, parent_id, name, kind = texts
        return (
            without_nul(run_id),
            without_nul(key),
            without_nul(step_id),
            _opt_text(parent_id),
            without_nul(name),
            without_nul(kind),
        )
    return texts


def _bigint(value: int, index: int, field: str, limit: int = MAX_BIGINT) -> int:
    return check_bigint_at(value, field, f"$.events[{index}].{field}", "invalid batch", limit)


def _opt_text(value: str | None) -> str | None:
    return None if value is None else without_nul(value)


def _error(error: ErrorInfo | None) -> tuple[str | None, str | None, str | None]:
    if error is None:
        return None, None, None
    message, traceback = scrub_text(error.message), scrub_opt_text(error.traceback)
    return without_nul(error.type), without_nul(message), _opt_text(traceback)


def _stored_json(stored: dict[str, str], value: str, index: int, field: str) -> str:
    """The text a captured value is stored as (checked as JSON text PostgreSQL's ``jsonb``
    accepts, redacted), kept in ``stored`` by the value's text for the batch's next events."""
    decoded, text = json_value(value, index, field)
    stored[value] = text = clean_json_text(scrub_json(text, decoded))
    return text


def _llm(value: str, index: int) -> str:
    decoded, text = json_value(value, index, "llm")
    check_llm(decoded, index)
    return clean_json_text(scrub_json(text, decoded))


def _llm_usage(value: str | None, index: int) -> str | None:
    if value is None:
        return None
    decoded, text = json_value(value, index, "llm_usage")
    check_llm_usage(decoded, index)
    return clean_json_text(scrub_usage_json(text, decoded))


def clean_json_text(value: str) -> str:
    """JSON text with every NUL character inside its strings replaced by U+FFFD, and an empty
    object spelt ``{}`` (the merge in ``_rows`` tells an empty ``records`` by its text)."""
    if _EMPTY_OBJECT.fullmatch(value):
        return EMPTY_OBJECT
    if ESCAPED_NUL not in value:
        return value
    return msgspec.json.encode(_json_without_nul(msgspec.json.decode(value))).decode()


def _json_without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return without_nul(value)
    if isinstance(value, list):
        return [_json_without_nul(item) for item in value]
    if isinstance(value, dict):
        return {without_nul(k): _json_without_nul(v) for k, v in value.items()}
    return value


_msgpack_version = msgspec.msgpack.Decoder(_Version)
_json_version = msgspec.json.Decoder(_Version)
