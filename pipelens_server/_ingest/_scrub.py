"""Secrets redacted on the server too: every captured value of every event, before it is stored.

The client scrubs before a value leaves the process; the raw API (any client, JSON or msgpack),
the seed's endpoints and file import store what they are sent, so the server applies the same
rules with the same matcher: ``pipelens._secrets`` (a leaf of the client, as ``_pricing`` is),
which reads ``pipelens/secrets.json``. A value under a key matching a ``keys`` pattern becomes
``[REDACTED]``, and every match of a ``values`` pattern in a string too, the same output as
``pipelens._core.capture.scrub`` for the same text.

The common value holds nothing secret-looking, which is told without decoding it: its text,
lower-cased, holds none of the list's ``fragments``. The same test skips each key and string of
a walked value, and in a string only the value patterns' forms gated by the fragments it holds
are searched (``_secrets.redact_values``). Escapes can hide a fragment (``\\u0061``, ``\\/``):
such a text is walked. The raw API tests each distinct captured text of a batch once
(``_decode``); OTLP tests a step's texts at once (:func:`may_hold_secret` of them all).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import msgspec

from pipelens import _secrets
from pipelens._secrets import REDACTED

#: How a client marks a value cut past its size limit (``pipelens._core.capture``).
TRUNCATED_KEY = "$truncated"

#: How many keys' verdicts :meth:`Patterns.secret_key` keeps (then it starts afresh).
_KEYS_REMEMBERED = 4096
#: A key in JSON text: what a truncated value's ``preview`` (a cut JSON document) holds.
_JSON_KEY = re.compile(r'"((?:[^"\\]|\\.)*)"\s*:')


class Patterns:
    """The shared list, compiled: key names (each one's verdict kept), and the cheap pre-check."""

    __slots__ = ("_keys_seen", "fragments", "key")

    def __init__(self) -> None:
        self.fragments = _secrets.FRAGMENTS
        # As the client compiles them (``pipelens._core.settings``).
        self.key = re.compile("|".join(f"(?:{p})" for p in _secrets.KEYS), re.IGNORECASE)
        # Whether a key is secret, by key: the same few keys come in every event.
        self._keys_seen: dict[str, bool] = {}

    def secret_key(self, key: str) -> bool:
        """Whether the value under ``key`` is redacted."""
        seen = self._keys_seen.get(key)
        if seen is None:
            seen = self.suspect(key) and self.key.search(key) is not None
            if len(self._keys_seen) >= _KEYS_REMEMBERED:
                self._keys_seen.clear()
            self._keys_seen[key] = seen
        return seen

    def suspect(self, text: str) -> bool:
        """Whether a key or value pattern may match in ``text`` (``False`` only when none can)."""
        return bool(_secrets.fragments_in(_secrets.folded(text)))


def secrets_file() -> Path:
    """The client's shipped list of what is redacted."""
    return Path(_secrets.__file__).with_name("secrets.json")


@functools.cache
def patterns() -> Patterns:
    """The shared list, compiled once per process."""
    return Patterns()


def may_hold_secret(*texts: str | None) -> bool:
    """Whether JSON or plain ``texts`` may hold a secret (``False`` only when none can)."""
    text = "\n".join([t for t in texts if t])
    return "\\u" in text or "\\/" in text or patterns().suspect(text)


def scrub_text(text: str) -> str:
    """``text`` (a message, a traceback, a string of a value) with each secret-looking match
    replaced."""
    return _secrets.redact_values(text)


def scrub_opt_text(text: str | None) -> str | None:
    """:func:`scrub_text` of ``text`` unless it is ``None``."""
    return None if text is None else scrub_text(text)


def scrub_json(text: str, value: Any = msgspec.UNSET) -> str:
    """JSON ``text`` scrubbed: the same text when nothing is secret (or it is not JSON).

    ``value`` is ``text`` already decoded, when the caller has it (the check decoded it).
    """
    if not may_hold_secret(text):
        return text
    if value is msgspec.UNSET:
        try:
            value = msgspec.json.decode(text)
        except (msgspec.DecodeError, RecursionError):
            return text
    try:
        clean = scrub_value(value)
    except RecursionError:  # too deep to walk: nothing of it is kept
        return f'"{REDACTED}"'
    if clean is value:
        return text
    try:
        return msgspec.json.encode(clean).decode()
    except (msgspec.EncodeError, RecursionError, OverflowError):  # pragma: no cover - decoded
        return text


def scrub_value(value: Any) -> Any:
    """A decoded JSON value scrubbed; the same object when nothing changed."""
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, list):
        items = [scrub_value(item) for item in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    if isinstance(value, dict):
        if value.get(TRUNCATED_KEY) is True and isinstance(value.get("preview"), str):
            preview = _scrub_preview(value["preview"])
            return value if preview == value["preview"] else {**value, "preview": preview}
        secret_key = patterns().secret_key
        changed = False
        clean: dict[Any, Any] = {}
        for k, v in value.items():
            new = REDACTED if isinstance(k, str) and secret_key(k) else scrub_value(v)
            changed = changed or new is not v
            clean[k] = new
        return clean if changed else value
    return value


def scrub_usage_json(text: str, value: Any) -> str:
    """A run's ``llm_usage`` JSON ``text`` (decoded: ``value``) scrubbed: its keys are model
    names, the caller's text (a URL with a password, a key in a deployment name), so they are
    scrubbed as text too. Two names that become one add up their counts (nothing is lost)."""
    if not isinstance(value, dict) or not may_hold_secret(text):
        return scrub_json(text, value)
    merged: dict[str, Any] = {}
    for model, usage in value.items():
        name, clean = scrub_text(model), scrub_value(usage)
        before = merged.get(name)
        if isinstance(before, dict) and isinstance(clean, dict):
            clean = before | {
                k: before.get(k, 0) + v if _is_count(v) and _is_count(before.get(k, 0)) else v
                for k, v in clean.items()
            }
        merged[name] = clean
    return msgspec.json.encode(merged).decode()


def _is_count(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _scrub_preview(preview: str) -> str:
    # A cut JSON document cannot be decoded and walked: cut it before the first secret key.
    key = patterns().key
    for match in _JSON_KEY.finditer(preview):
        if key.search(match.group(1)):
            preview = preview[: match.start()] + REDACTED
            break
    return _secrets.redact_values(preview)
