"""Turn arbitrary user values into bounded, redacted JSON text — without ever raising.

Captured values are encoded once, when they are captured, so later mutation of a user's object
does not change what was recorded and no reference to it is kept for the wire. The server stores
the same JSON text in ``jsonb`` without decoding it again.
"""

from __future__ import annotations

import dataclasses
import re
import reprlib
import time
from typing import Any

import msgspec

from pipelens import _secrets
from pipelens._core import containment
from pipelens._core.settings import (
    DEFAULT_REDACT_KEYS,
    SECRET_VALUE_PATTERN,
    SECRET_VALUES,
    Settings,
    settings,
)
from pipelens.events import (
    MAX_KEY_BYTES,
    MAX_NAME_BYTES,
    MAX_PIPELINE_BYTES,
    MAX_RUN_ID_BYTES,
    ErrorInfo,
    Event,
    RunFinished,
    RunStarted,
    ScoreAdded,
    StepFinished,
    StepStarted,
    cut,
)

REDACTED = _secrets.REDACTED
TRUNCATED_KEY = "$truncated"
#: A ``repr()`` slower than this marks its type: later objects of it get a placeholder.
SLOW_REPR_SECONDS = 0.01
#: Levels walked when a value has to be captured structurally (cycles, bad strings).
_MAX_DEPTH = 32

_repr = reprlib.Repr()
_repr.maxstring = 160
_repr.maxother = 160
_repr.maxlong = 60
_repr.maxlevel = 3

_SURROGATES = re.compile("[\ud800-\udfff]")
_CONTAINERS = (list, tuple, dict, set, frozenset)
_slow_reprs: set[type] = set()


def clean_text(text: str) -> str:
    """``text`` with lone surrogates (``os.fsdecode`` of undecodable bytes) replaced by U+FFFD:
    UTF-8 cannot encode them, and one of them would make a whole batch unsendable."""
    if text.isascii():
        return text
    try:
        text.encode()
    except UnicodeEncodeError:
        return _SURROGATES.sub("\ufffd", text)
    return text


def short_repr(value: object) -> str:
    """A bounded ``repr`` that never raises (a broken ``__repr__`` gives a placeholder).

    A type whose ``repr()`` once took longer than :data:`SLOW_REPR_SECONDS` is not asked again
    in this process: its objects become ``<Type object>``, so a slow ``__repr__`` costs its
    caller once, not on every step.
    """
    cls = type(value)
    if cls in _slow_reprs:
        return f"<{cls.__qualname__} object>"
    started = time.perf_counter()
    try:
        text = _repr.repr(value)
    except Exception:
        return f"<unrepresentable {cls.__qualname__}>"
    elapsed = time.perf_counter() - started
    if elapsed > SLOW_REPR_SECONDS and cls not in _CONTAINERS:
        _slow_reprs.add(cls)
        containment.warn_once(
            f"slow-repr.{cls.__module__}.{cls.__qualname__}",
            f"repr() of a {cls.__qualname__} took {elapsed * 1000:.0f} ms; its objects are "
            "captured as a placeholder from now on (pass capture_args=False or "
            "capture_result=False to @step to skip them)",
        )
    return clean_text(text)


def _model_dump(value: object) -> object:
    # pydantic v2 models: captured as their fields (then redacted), not through repr.
    dump = getattr(value, "model_dump", None)
    if callable(dump) and hasattr(type(value), "model_fields"):
        try:
            return dump()
        except Exception:  # a field pydantic cannot dump: fall back to the repr
            return None
    return None


def _enc_hook(value: object) -> object:
    # Anything msgspec cannot encode natively (sockets, locks, numpy arrays, ...) becomes a short
    # repr; a step object becomes its key so seed-style ``st`` arguments stay readable; pydantic
    # models become their fields (dataclasses and attrs classes msgspec encodes itself).
    key = getattr(value, "_pipelens_key", None)
    if isinstance(key, str):
        return f"<step {key}>"
    dumped = _model_dump(value)
    if dumped is not None:
        return dumped
    return short_repr(value)


def _structure(value: object, path: set[int], depth: int) -> Any:
    """``value`` as plain data msgspec can encode: strings cleaned, cycles and depth cut,
    non-string keys spelled out, unknown objects as their bounded repr."""
    if isinstance(value, str):
        return clean_text(value)
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**64 else str(value)
    if depth >= _MAX_DEPTH:
        return "<too deep>"
    ident = id(value)
    if ident in path:
        return "<cycle>"
    path.add(ident)
    try:
        if isinstance(value, dict):
            return {
                (clean_text(k) if isinstance(k, str) else short_repr(k)): _structure(
                    v, path, depth + 1
                )
                for k, v in value.items()
            }
        if isinstance(value, list | tuple | set | frozenset):
            return [_structure(v, path, depth + 1) for v in value]
        fields = _fields(value)
        if fields is not None:
            return {k: _structure(v, path, depth + 1) for k, v in fields.items()}
        try:
            return msgspec.Raw(_encoder.encode(value))
        except Exception:
            hooked = _enc_hook(value)
            return hooked if isinstance(hooked, str) else _structure(hooked, path, depth + 1)
    finally:
        path.discard(ident)


def _fields(value: object) -> dict[str, Any] | None:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name, None) for f in dataclasses.fields(value)}
    attributes = getattr(type(value), "__attrs_attrs__", None)
    if attributes is not None:
        return {a.name: getattr(value, a.name, None) for a in attributes}
    dumped = _model_dump(value)
    return dumped if isinstance(dumped, dict) else None


_encoder = msgspec.json.Encoder(enc_hook=_enc_hook)
#: The encoding :func:`capture` starts with, for the hot path that inlines capture's common case
#: (a value that encodes within ``max_value_bytes``; anything else takes ``capture`` itself).
encode = _encoder.encode
_decoder = msgspec.json.Decoder()
_hint_cache: dict[str, re.Pattern[bytes]] = {}


def _compile_default_source() -> str:
    return Settings().redact_key_re.pattern


def _loosen(key_pattern: str) -> str:
    """A key pattern made to run over a whole JSON document: a key ``token`` appears there as
    ``"token"``, so the anchors ``^``/``$`` become quotes; inside a truncated value's
    ``preview`` string a key's closing quote is escaped (``\\"``)."""
    return key_pattern.replace("^", '"').replace("$", r'\\?"')


def _secret_hint() -> re.Pattern[bytes]:
    """A cheap test over the encoded bytes that may over-match; only a hit pays for a real walk
    (for key patterns of the user's own; the default ones have :data:`_DEFAULT_HINTS`)."""
    source = settings.redact_key_re.pattern
    hint = _hint_cache.get(source)
    if hint is None:
        hint = re.compile(f"{_loosen(source)}|{SECRET_VALUE_PATTERN}".encode(), re.IGNORECASE)
        _hint_cache[source] = hint
    return hint


_DEFAULT_KEYS_SOURCE = _compile_default_source()
#: The forms of the value patterns and of the key patterns made to run over a whole JSON text.
#: One case-insensitive regex of all 23 patterns had ``re`` try every pattern at every
#: position: 74 µs for an LLM call's 279-byte record, whose ``"input_tokens"`` passes the
#: fragment test, 2.6 ms for 10 KB of text holding "author"; so, 3.5 and ~80 µs, most of it the
#: fragment test.
_DEFAULT_HINTS = _secrets.hints((*map(_loosen, DEFAULT_REDACT_KEYS), *SECRET_VALUES))


def _suspect(text: str) -> frozenset[str] | None:
    """The default fragments JSON ``text`` holds if it may hold a secret (it is then walked),
    else ``None``."""
    lowered = _secrets.folded(text)
    present = _secrets.fragments_in(lowered)
    custom = settings.redact_key_re.pattern != _DEFAULT_KEYS_SOURCE
    if not (present or custom):
        return None
    # The hint reads JSON text as it is, where an escape (``\u001f``, ``\n``) stands for the
    # character a pattern's ``\s`` or ``$`` would match: such a text is decoded and walked.
    if "\\" in text:
        return present
    if custom:
        return present if _secret_hint().search(text.encode()) is not None else None
    return present if _secrets.hinted(_DEFAULT_HINTS, lowered, present) else None


def is_secret_key(key: str) -> bool:
    """Whether values under ``key`` are redacted with the current settings."""
    return settings.redact and settings.redact_key_re.search(key) is not None


#: A key in JSON text: what a truncated value's ``preview`` (a cut JSON document) holds.
_json_key_re = re.compile(r'"((?:[^"\\]|\\.)*)"\s*:')


def _scrub_preview(preview: str) -> str:
    # The preview is JSON cut mid-document, so it cannot be decoded and walked: cut it before
    # the first secret-looking key instead.
    key_re = settings.redact_key_re
    for match in _json_key_re.finditer(preview):
        if key_re.search(match.group(1)):
            preview = preview[: match.start()] + REDACTED
            break
    return _secrets.redact_values(preview)


def _scrub(value: Any, present: frozenset[str]) -> Any:
    """``value`` with secrets redacted, the same object when nothing changed; ``present``: the
    default fragments its JSON text holds (a string holds only those of them)."""
    if isinstance(value, str):
        return _secrets.redact_values(value, present)
    if isinstance(value, list):
        items = [_scrub(v, present) for v in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    if isinstance(value, dict):
        if value.get(TRUNCATED_KEY) is True and isinstance(value.get("preview"), str):
            return {**value, "preview": _scrub_preview(value["preview"])}
        key_re = settings.redact_key_re
        clean = {
            k: REDACTED if isinstance(k, str) and key_re.search(k) else _scrub(v, present)
            for k, v in value.items()
        }
        return value if all(clean[k] is v for k, v in value.items()) else clean
    return value


def capture(value: object) -> str:
    """JSON text of ``value``: a short ``repr`` where it cannot be encoded, truncated past the cap.

    Secrets are scrubbed later, by :func:`scrub`, on the way out of the process (the transports
    do it on their background thread), so the user's code path pays only for the encoding.
    """
    try:
        data = _encoder.encode(value)
    except Exception:  # cycles, lone surrogates, non-string keys, huge ints, a raising enc_hook
        try:
            data = _encoder.encode(_structure(value, set(), 0))
        except Exception:
            data = _encoder.encode(short_repr(value))
    if len(data) > settings.max_value_bytes:
        limit = settings.max_value_bytes
        preview = data[: max(limit - 64, 16)].decode("utf-8", "ignore")
        data = _encoder.encode({TRUNCATED_KEY: True, "bytes": len(data), "preview": preview})
    return data.decode()


def capture_record(key: str, value: object) -> str:
    """Like :func:`capture`, but the record's own key may mark the whole value as secret."""
    if is_secret_key(key):
        return '"[REDACTED]"'
    return capture(value)


def scrub(text: str | None) -> str | None:
    """``text`` (captured JSON) with secret-looking keys' values and secret-looking strings
    replaced by ``[REDACTED]``; unchanged when redaction is off or nothing looks secret."""
    if text is None or not settings.redact:
        return text
    present = _suspect(text)
    if present is None:
        return text
    try:
        value = _decoder.decode(text)
        clean = _scrub(value, present)
        return text if clean is value else _encoder.encode(clean).decode()
    except Exception:  # pragma: no cover - our own output always decodes
        return '"[REDACTED]"'


def decode(text: str | None) -> Any:
    """The Python value of captured JSON text (``None`` stays ``None``)."""
    return None if text is None else _decoder.decode(text)


def _over(text: str, limit: int) -> bool:
    """Whether ``text`` may be over ``limit`` bytes or hold a lone surrogate (ASCII is neither
    beyond its length, and the check is cheap)."""
    return len(text) > limit or not text.isascii()


def wire_safe(event: Event) -> Event:
    """``event`` with its names and ids within the server's limits (cut with a mark) and free of
    lone surrogates: what the user named a run, pipeline or step never makes a batch unsendable.
    """
    changes: dict[str, Any] = {}
    if _over(event.run_id, MAX_RUN_ID_BYTES):
        changes["run_id"] = cut(clean_text(event.run_id), MAX_RUN_ID_BYTES, unique=True)
    if isinstance(event, RunStarted | RunFinished):
        if _over(event.pipeline, MAX_PIPELINE_BYTES):
            changes["pipeline"] = cut(clean_text(event.pipeline), MAX_PIPELINE_BYTES)
    elif isinstance(event, StepStarted | StepFinished):
        if _over(event.name, MAX_NAME_BYTES):
            changes["name"] = cut(clean_text(event.name), MAX_NAME_BYTES)
        if _over(event.key, MAX_KEY_BYTES):
            changes["key"] = cut(clean_text(event.key), MAX_KEY_BYTES, unique=True)
        if _over(event.kind, MAX_NAME_BYTES):
            changes["kind"] = cut(clean_text(event.kind), MAX_NAME_BYTES)
    return msgspec.structs.replace(event, **changes) if changes else event


def scrub_event(event: Event) -> Event:
    """``event`` made :func:`wire_safe`, with :func:`scrub` applied to every captured value and
    to its error text, and a run's metadata redacted as records are."""
    event = wire_safe(event)
    if not settings.redact:
        return event
    if isinstance(event, RunStarted | RunFinished):
        return _scrub_who(event)
    if isinstance(event, ScoreAdded):
        return _scrub_score(event)
    changes: dict[str, Any] = {}
    for field in _CAPTURED_FIELDS[type(event)]:
        text = getattr(event, field)
        clean = scrub(text)
        if clean is not text:
            changes[field] = clean
    error = getattr(event, "error", None)
    if error is not None:
        message = _secrets.redact_values(error.message)
        tb = None if error.traceback is None else _secrets.redact_values(error.traceback)
        if message != error.message or tb != error.traceback:
            changes["error"] = ErrorInfo(type=error.type, message=message, traceback=tb)
    return msgspec.structs.replace(event, **changes) if changes else event


def _scrub_who(event: RunStarted | RunFinished) -> RunStarted | RunFinished:
    """The run's metadata redacted as records are (a secret-looking key hides its value), and
    secret-looking texts in its tags and ids."""
    if not (event.attributes or event.tags or event.user_id or event.session_id):
        return event
    key_re = settings.redact_key_re
    attributes = {
        k: REDACTED if key_re.search(k) else _secrets.redact_values(v)
        for k, v in event.attributes.items()
    }
    changes: dict[str, Any] = {}
    if attributes != event.attributes:
        changes["attributes"] = attributes
    tags = [_secrets.redact_values(t) for t in event.tags]
    if tags != event.tags:
        changes["tags"] = tags
    for field in ("user_id", "session_id"):
        text = getattr(event, field)
        if text is not None and (clean := _secrets.redact_values(text)) != text:
            changes[field] = clean
    return msgspec.structs.replace(event, **changes) if changes else event


def _scrub_score(event: ScoreAdded) -> ScoreAdded:
    """Secret-looking texts in a score's comment and category, as in error texts."""
    changes: dict[str, Any] = {}
    if event.comment is not None:
        comment = _secrets.redact_values(event.comment)
        if comment != event.comment:
            changes["comment"] = comment
    if isinstance(event.value, str):
        value = _secrets.redact_values(event.value)
        if value != event.value:
            changes["value"] = value
    return msgspec.structs.replace(event, **changes) if changes else event


_CAPTURED_FIELDS: dict[type, tuple[str, ...]] = {
    StepStarted: ("inputs",),
    StepFinished: ("inputs", "result", "records", "llm"),
}
