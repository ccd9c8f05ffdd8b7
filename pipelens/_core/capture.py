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
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import msgspec

from pipelens._core import containment
from pipelens._core.settings import (
    DEFAULT_REDACT_KEYS,
    SECRET_FRAGMENTS,
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

REDACTED = "[REDACTED]"
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
_value_re = re.compile(SECRET_VALUE_PATTERN)
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


#: Lower-case fragments one of which every default key pattern and value pattern contains. A
#: substring test is ~10x faster than the case-insensitive regex, and most values have none.
_DEFAULT_FRAGMENTS = SECRET_FRAGMENTS  # from ``secrets.json``, as the server's pre-check
_DEFAULT_KEYS_SOURCE = _compile_default_source()
#: Letters from the most to the least common in English text. In a long text each fragment's
#: rarest character is looked for first: finding one character is ``memchr`` (0.1 µs over
#: 10 KB), so in most prose, which has no ``_``, ``-``, ``:``, ``j`` or ``z``, nine of the 23
#: fragments cost next to nothing. The rest are searched from their rarest character on too
#: (``ken(?<=token)``): ``re`` skips to a literal's first character faster than a substring
#: test of a short fragment runs (3.4 against 6.5 µs for ``token`` over 10 KB).
_LETTERS_BY_USE = "etaoinshrdlcumwfgypbvkjxqz"
#: From this length on the rarest character is looked for first; below it each test is as cheap.
_LONG_TEXT = 256
_NONE: frozenset[str] = frozenset()


def _rarest(fragment: str) -> int:
    def rank(i: int) -> int:  # not a letter (``_``, ``-``, ``:``): rarer than any
        c = fragment[i]
        return _LETTERS_BY_USE.index(c) if c in _LETTERS_BY_USE else len(_LETTERS_BY_USE)

    return max(range(len(fragment)), key=rank)


def _from_rarest(fragment: str) -> tuple[str, str, Callable[[str], object]]:
    at = _rarest(fragment)
    behind = f"(?<={re.escape(fragment)})" if at else ""
    return fragment, fragment[at], re.compile(re.escape(fragment[at:]) + behind).search


_FROM_RAREST = tuple(map(_from_rarest, _DEFAULT_FRAGMENTS))


def _fragments_in(lowered: str) -> frozenset[str]:
    """The default fragments in a lower-cased text."""
    if len(lowered) >= _LONG_TEXT:
        return frozenset(
            f for f, rare, search in _FROM_RAREST if rare in lowered and search(lowered)
        )
    for fragment in _DEFAULT_FRAGMENTS:  # most values hold none: a plain loop is the fastest
        if fragment in lowered:
            return frozenset(f for f in _DEFAULT_FRAGMENTS if f in lowered)
    return _NONE


#: Default patterns that ``re`` would try at every position of a text (a leading ``\b`` or
#: lookbehind, an alternation of words), and the forms searched for them instead: each begins
#: with letters ``re`` skips to, holds a fragment, and together they match wherever the pattern
#: does (as tested). 150-190 µs over 10 KB each, as written; 7-12 µs so.
_SEARCH_FORMS: dict[str, tuple[str, ...]] = {
    r"\bjwt\b": (r"jwt\b(?<=\bjwt)",),
    r"gh[pousr]_[A-Za-z0-9]{20,}": tuple(f"gh{c}_[A-Za-z0-9]{{20,}}" for c in "pousr"),
    r"[Bb]earer\s+[A-Za-z0-9._~+/=-]{8,}": (r"bearer\s+[A-Za-z0-9._~+/=-]{8,}",),
    "(?<=://)[^/\\s:@\"'<>]+:[^/\\s@\"'<>]+(?=@)": ("://[^/\\s:@\"'<>]+:[^/\\s@\"'<>]+(?=@)",),
    SECRET_VALUES[-1]: tuple(
        f"(?i:{word}\\s*[=:]\\s*['\"]?[^\\s'\"&,;)]+)"
        for word in (
            "api[_-]?key",
            "passw(?:or)?d",
            "passphrase",
            "pwd",
            "secret",
            "token",
            "access[_-]?key",
        )
    ),
}


class _Hint(NamedTuple):
    """One search form of a default pattern: the fragments written in it (every match holds
    one of them, as tested), and the form lower-cased, searched case-sensitively in a text
    :func:`_folded`. It matches there wherever the form matches the text ignoring case, and
    ``re`` skips to its first letters, which it cannot do ignoring case (7-12x faster)."""

    gates: frozenset[str]
    search: Callable[[str], object]


def _hint(form: str) -> _Hint:
    lowered = form.lower()
    gates = frozenset(f for f in _DEFAULT_FRAGMENTS if f in lowered)
    if re.search(r"\\[A-Z]", form):  # \S, \W, \D, \B mean something else lower-cased
        return _Hint(gates, re.compile(form, re.IGNORECASE).search)
    return _Hint(gates, re.compile(lowered.replace("(?i:", "(?:")).search)


def _hints(patterns: Iterable[str]) -> tuple[_Hint, ...]:
    return tuple(_hint(f) for p in patterns for f in _SEARCH_FORMS.get(p, (p,)))


def _by_fragment(hints: tuple[_Hint, ...]) -> dict[str, tuple[_Hint, ...]]:
    return {f: tuple(h for h in hints if f in h.gates) for f in _DEFAULT_FRAGMENTS}


#: The hints of the default value patterns, and of them with the key patterns made to run over a
#: whole JSON text, by fragment: a text's fragments name the few forms to search. One
#: case-insensitive regex of all 23 patterns had ``re`` try every pattern at every position:
#: 74 µs for an LLM call's 279-byte record, whose ``"input_tokens"`` passes the fragment test,
#: 2.6 ms for 10 KB of text holding "author"; so, 3.5 and ~80 µs, most of it the fragment test.
_VALUE_HINTS = _hints(SECRET_VALUES)
_DEFAULT_HINTS = (*_hints(map(_loosen, DEFAULT_REDACT_KEYS)), *_VALUE_HINTS)
_VALUE_HINTS_BY_FRAGMENT = _by_fragment(_VALUE_HINTS)
_DEFAULT_HINTS_BY_FRAGMENT = _by_fragment(_DEFAULT_HINTS)

#: The characters besides ASCII letters that ``re`` takes for one when it ignores case (the
#: dotted and the dotless i, the long s, the Kelvin sign), and that letter.
_TO_ASCII = (("\u0130", "i"), ("\u0131", "i"), ("\u017f", "s"), ("\u212a", "k"))


def _folded(text: str) -> str:
    """``text`` lower-cased as ``re`` compares it with ASCII letters when it ignores case: a
    pattern's match there holds the pattern's fragments."""
    if not text.isascii():
        for char, letter in _TO_ASCII:
            if char in text:
                text = text.replace(char, letter)
    return text.lower()


def _hinted(hints: dict[str, tuple[_Hint, ...]], lowered: str, present: frozenset[str]) -> bool:
    """Whether one of the ``hints`` of the fragments ``present`` in ``lowered`` matches it."""
    for fragment in present:
        for hint in hints[fragment]:
            if hint.search(lowered) is not None:
                return True
    return False


def _suspect(text: str) -> frozenset[str] | None:
    """The default fragments JSON ``text`` holds if it may hold a secret (it is then walked),
    else ``None``."""
    lowered = _folded(text)
    present = _fragments_in(lowered)
    custom = settings.redact_key_re.pattern != _DEFAULT_KEYS_SOURCE
    if not (present or custom):
        return None
    # The hint reads JSON text as it is, where an escape (``\u001f``, ``\n``) stands for the
    # character a pattern's ``\s`` or ``$`` would match: such a text is decoded and walked.
    if "\\" in text:
        return present
    if custom:
        return present if _secret_hint().search(text.encode()) is not None else None
    return present if _hinted(_DEFAULT_HINTS_BY_FRAGMENT, lowered, present) else None


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


def _scrub_string(text: str, present: frozenset[str]) -> str:
    # A string holds a value pattern's match only if it holds one of its fragments, which the
    # whole JSON text then holds too (``present``). The patterns' one regex costs ~0.2 ms a KB:
    # it runs only where a hint matched.
    lowered = _folded(text)
    here = frozenset(f for f in present if f in lowered)
    if here and _hinted(_VALUE_HINTS_BY_FRAGMENT, lowered, here):
        return _value_re.sub(REDACTED, text)
    return text


def _scrub(value: Any, present: frozenset[str]) -> Any:
    """``value`` with secrets redacted, the same object when nothing changed; ``present``: the
    default fragments its JSON text holds."""
    if isinstance(value, str):
        return _scrub_string(value, present)
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
        message = _value_re.sub(REDACTED, error.message)
        tb = None if error.traceback is None else _value_re.sub(REDACTED, error.traceback)
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
        k: REDACTED if key_re.search(k) else _value_re.sub(REDACTED, v)
        for k, v in event.attributes.items()
    }
    changes: dict[str, Any] = {}
    if attributes != event.attributes:
        changes["attributes"] = attributes
    tags = [_value_re.sub(REDACTED, t) for t in event.tags]
    if tags != event.tags:
        changes["tags"] = tags
    for field in ("user_id", "session_id"):
        text = getattr(event, field)
        if text is not None and (clean := _value_re.sub(REDACTED, text)) != text:
            changes[field] = clean
    return msgspec.structs.replace(event, **changes) if changes else event


def _scrub_score(event: ScoreAdded) -> ScoreAdded:
    """Secret-looking texts in a score's comment and category, as in error texts."""
    changes: dict[str, Any] = {}
    if event.comment is not None:
        comment = _value_re.sub(REDACTED, event.comment)
        if comment != event.comment:
            changes["comment"] = comment
    if isinstance(event.value, str):
        value = _value_re.sub(REDACTED, event.value)
        if value != event.value:
            changes["value"] = value
    return msgspec.structs.replace(event, **changes) if changes else event


_CAPTURED_FIELDS: dict[type, tuple[str, ...]] = {
    StepStarted: ("inputs",),
    StepFinished: ("inputs", "result", "records", "llm"),
}
