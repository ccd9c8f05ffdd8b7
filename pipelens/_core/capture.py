"""Turn arbitrary user values into bounded, redacted JSON text — without ever raising.

Captured values are encoded once, when they are captured, so later mutation of a user's object
does not change what was recorded and no reference to it is kept for the wire. The server stores
the same JSON text in ``jsonb`` without decoding it again.
"""

from __future__ import annotations

import re
import reprlib
from typing import Any

import msgspec

from pipelens._core.settings import SECRET_VALUE_PATTERN, Settings, settings
from pipelens.events import ErrorInfo, Event, StepFinished, StepStarted

REDACTED = "[REDACTED]"
TRUNCATED_KEY = "$truncated"

_repr = reprlib.Repr()
_repr.maxstring = 160
_repr.maxother = 160
_repr.maxlong = 60
_repr.maxlevel = 3


def short_repr(value: object) -> str:
    """A bounded ``repr`` that never raises (a broken ``__repr__`` gives a placeholder)."""
    try:
        return _repr.repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__qualname__}>"


def _enc_hook(value: object) -> object:
    # Anything msgspec cannot encode natively (sockets, locks, numpy arrays, ...) becomes a short
    # repr; a step object becomes its key so seed-style ``st`` arguments stay readable.
    key = getattr(value, "_pipelens_key", None)
    if isinstance(key, str):
        return f"<step {key}>"
    return short_repr(value)


_encoder = msgspec.json.Encoder(enc_hook=_enc_hook)
_decoder = msgspec.json.Decoder()
_value_re = re.compile(SECRET_VALUE_PATTERN)
_hint_cache: dict[str, re.Pattern[bytes]] = {}


def _compile_default_source() -> str:
    return Settings().redact_key_re.pattern


def _secret_hint() -> re.Pattern[bytes]:
    """A cheap test over the encoded bytes that may over-match; only a hit pays for a real walk.

    In JSON text a key ``token`` appears as ``"token"``, so the anchors ``^``/``$`` of a key
    pattern become quotes and the same expression runs over the whole document.
    """
    source = settings.redact_key_re.pattern
    hint = _hint_cache.get(source)
    if hint is None:
        # Inside a truncated value's ``preview`` string a key's closing quote is escaped (``\"``).
        loose = source.replace("^", '"').replace("$", r'\\?"')
        hint = re.compile(f"{loose}|{SECRET_VALUE_PATTERN}".encode(), re.IGNORECASE)
        _hint_cache[source] = hint
    return hint


#: Lower-case fragments one of which every default key pattern and value pattern contains. A
#: substring test is ~10x faster than the case-insensitive regex, and most values have none.
_DEFAULT_FRAGMENTS = (
    "key", "passw", "secret", "token", "auth", "credential", "cookie", "session", "jwt",
    "sk-", "akia", "bearer", "ghp_", "gho_", "ghu_", "ghs_", "ghr_",
)  # fmt: skip
_DEFAULT_KEYS_SOURCE = _compile_default_source()


def _may_hold_secret(text: str) -> bool:
    if settings.redact_key_re.pattern == _DEFAULT_KEYS_SOURCE:
        lowered = text.lower()
        if not any(fragment in lowered for fragment in _DEFAULT_FRAGMENTS):
            return False
    return _secret_hint().search(text.encode()) is not None


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
    return _value_re.sub(REDACTED, preview)


def _scrub(value: Any) -> Any:
    if isinstance(value, dict):
        if value.get(TRUNCATED_KEY) is True and isinstance(value.get("preview"), str):
            return {**value, "preview": _scrub_preview(value["preview"])}
        key_re = settings.redact_key_re
        return {
            k: REDACTED if isinstance(k, str) and key_re.search(k) else _scrub(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    if isinstance(value, str):
        return _value_re.sub(REDACTED, value)
    return value


def capture(value: object) -> str:
    """JSON text of ``value``: a short ``repr`` where it cannot be encoded, truncated past the cap.

    Secrets are scrubbed later, by :func:`scrub`, on the way out of the process (the transports
    do it on their background thread), so the user's code path pays only for the encoding.
    """
    try:
        data = _encoder.encode(value)
    except Exception:  # cyclic objects, non-string dict keys, huge ints, a raising enc_hook
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
    if text is None or not settings.redact or not _may_hold_secret(text):
        return text
    try:
        return _encoder.encode(_scrub(_decoder.decode(text))).decode()
    except Exception:  # pragma: no cover - our own output always decodes
        return '"[REDACTED]"'


def decode(text: str | None) -> Any:
    """The Python value of captured JSON text (``None`` stays ``None``)."""
    return None if text is None else _decoder.decode(text)


def scrub_event(event: Event) -> Event:
    """``event`` with :func:`scrub` applied to every captured value and to its error text."""
    if not settings.redact or not isinstance(event, StepStarted | StepFinished):
        return event
    changes: dict[str, Any] = {}
    for field in _CAPTURED_FIELDS[type(event)]:
        text = getattr(event, field)
        clean = scrub(text)
        if clean is not text:
            changes[field] = clean
    error = getattr(event, "error", None)
    if error is not None:
        message = _value_re.sub(REDACTED, error.message)
        tb = None if error.traceback is None else _value_re.sub(REDACTED, error.traceback)
        if message != error.message or tb != error.traceback:
            changes["error"] = ErrorInfo(type=error.type, message=message, traceback=tb)
    return msgspec.structs.replace(event, **changes) if changes else event


_CAPTURED_FIELDS: dict[type, tuple[str, ...]] = {
    StepStarted: ("inputs",),
    StepFinished: ("inputs", "result", "records", "llm"),
}
