"""What a decoded event may hold: limits PostgreSQL sets, and shapes the pages rely on.

A value PostgreSQL cannot store must be a 400 naming the field, never a database error: an error
from the database answers the whole batch with a 5xx, the client retries it forever, and every
other event in it never lands (a poison batch).

Length limits are in UTF-8 bytes, since a btree index entry is limited in bytes (about 2,700, a
third of a page) and PostgreSQL cannot compress random text. The widest entry is the step stats
index, ``steps (pipeline, key, start_ns) INCLUDE (duration_ns, status, run_id)``: 512 + 1,536 +
512 bytes of text plus 8-byte integers and headers stays under the limit. A step key is a dotted
path (``answer.retrieve.rerank___2``), so it gets the most room; the other texts stay short of
what any program writes as a name or an id.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

# The text limits are the wire contract's, so the client cuts to exactly what is accepted here.
from pipelens_server._errors import NUL, InvalidBatchError

#: The largest token count one LLM call (or a run's total of one model) may report: far above any
#: real count, and a sum of millions of them still fits PostgreSQL's ``bigint``.
MAX_TOKENS = 10**12
#: How deep a captured JSON value may nest (PostgreSQL and Python both recurse on nesting).
MAX_DEPTH = 500

TOKEN_FIELDS = (
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)

# A JSON number PostgreSQL's ``numeric`` may refuse: an exponent of 4+ digits, or a long run of
# digits (``0.000…1`` with more than 16,383 decimals). Such text is stored re-encoded (as the
# float it decodes to), which any JSON reader would make of it anyway.
# Searched in the text itself (ASCII digits only, as in a JSON number), not its UTF-8 bytes.
_RISKY_NUMBER = re.compile(r"[eE][+-]?\d{4}|\d{1000}", re.ASCII)
#: Texts this short cannot nest deeper than ``MAX_DEPTH`` (each level takes two characters).
_SHALLOW_TEXT = 2 * MAX_DEPTH


def check_length(value: str, limit: int, index: int, field: str) -> None:
    """Raise a 400 naming ``$.events[index].field`` when ``value`` is empty-safe but too long."""
    check_length_at(value, limit, field, f"$.events[{index}].{field}", "invalid batch")


#: The largest integer a ``bigint`` column holds.
MAX_BIGINT = 2**63 - 1
#: The escape in JSON text of the character PostgreSQL's ``text`` and ``jsonb`` cannot hold.
ESCAPED_NUL = "\\u0000"


def without_nul(value: str) -> str:
    """``value`` with NUL characters (which PostgreSQL text cannot hold) replaced by U+FFFD."""
    return value.replace(NUL, "\ufffd") if NUL in value else value


def check_bigint_at(value: int, field: str, path: str, what: str, limit: int = MAX_BIGINT) -> int:
    """``value``, or a 400 naming ``field`` at ``path`` of the body (``what`` opens the message)
    when it is larger than ``limit`` (a ``bigint`` by default)."""
    if value > limit:
        raise InvalidBatchError(f"{what}: {field} {value} is larger than {limit} - at `{path}`")
    return value


def check_length_at(value: str, limit: int, field: str, path: str, what: str) -> None:
    """Raise a 400 naming ``field`` at ``path`` of the body (``what`` opens the message) when
    ``value`` is longer than ``limit`` UTF-8 bytes."""
    # A character is at most 4 bytes: most texts are short enough to skip the encoding.
    if len(value) * 4 > limit and (size := len(value.encode("utf-8", "replace"))) > limit:
        raise InvalidBatchError(
            f"{what}: {field} is {size} bytes long, longer than the limit of {limit} "
            f"bytes (UTF-8): shorten it - at `{path}`"
        )


def check_not_empty(value: str, index: int, field: str) -> None:
    """Raise a 400 naming the field when ``value`` is empty."""
    if not value:
        raise InvalidBatchError(
            f"invalid batch: {field} must not be empty - at `$.events[{index}].{field}`"
        )


def check_order(start_ns: int, end_ns: int, index: int) -> None:
    """Raise a 400 when an event ends before it starts."""
    if start_ns > end_ns:
        raise InvalidBatchError(
            f"invalid batch: end_ns {end_ns} is before start_ns {start_ns}: an event cannot end "
            f"before it starts - at `$.events[{index}].end_ns`"
        )


def json_value(text: str, index: int, field: str) -> tuple[Any, str]:
    """``text`` decoded (to check it) and the JSON text to store; a 400 naming the field when it
    is not JSON, or nests too deep."""
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise InvalidBatchError(
            f"invalid batch: {field} must be JSON text ({exc}) - at `$.events[{index}].{field}`"
        ) from None
    except RecursionError:
        raise InvalidBatchError(
            f"invalid batch: {field} nests deeper than this server reads - "
            f"at `$.events[{index}].{field}`"
        ) from None
    if len(text) > _SHALLOW_TEXT and _too_deep(value):
        raise InvalidBatchError(
            f"invalid batch: {field} nests deeper than {MAX_DEPTH} levels - "
            f"at `$.events[{index}].{field}`"
        )
    if _RISKY_NUMBER.search(text):
        text = msgspec.json.encode(value).decode()
    return value, text


def _too_deep(value: Any) -> bool:
    # Iterative: the point is to refuse what recursion cannot take.
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            if depth > MAX_DEPTH:
                return True
            stack.extend((child, depth + 1) for child in item if isinstance(child, list | dict))
    return False


def check_llm(value: Any, index: int) -> None:
    """The parts of a step's ``llm`` the pages compute with: ``usage`` token counts (whole
    numbers from 0 to :data:`MAX_TOKENS`) and ``output.tool_calls`` (a list)."""
    if not isinstance(value, dict):
        return
    usage = value.get("usage")
    if isinstance(usage, dict):
        _check_tokens(usage, "llm.usage", index)
    output = value.get("output")
    if isinstance(output, dict) and "tool_calls" in output:
        calls = output["tool_calls"]
        if calls is not None and not isinstance(calls, list):
            raise InvalidBatchError(
                "invalid batch: llm.output.tool_calls must be a list of calls, got "
                f"{type(calls).__name__} - at `$.events[{index}].llm.output.tool_calls`"
            )


def check_llm_usage(value: Any, index: int) -> None:
    """A run's ``llm_usage`` (``{model: {calls, input_tokens, ...}}``): counts in range."""
    if not isinstance(value, dict):
        return
    for model, usage in value.items():
        if isinstance(usage, dict):
            _check_tokens(usage, f"llm_usage.{model}", index, ("calls", *TOKEN_FIELDS))


def _check_tokens(
    usage: dict[str, Any], where: str, index: int, names: tuple[str, ...] = TOKEN_FIELDS
) -> None:
    for name in names:
        count = usage.get(name)
        if count is None:
            continue
        # Not a number at all: the readers count it as 0. A number out of range would overflow
        # the sums the usage pages compute (stored denial of service): refused.
        number = isinstance(count, int | float) and not isinstance(count, bool)
        if number and not 0 <= count <= MAX_TOKENS:
            raise InvalidBatchError(
                f"invalid batch: {where}.{name} must be a count from 0 to {MAX_TOKENS}, "
                f"got {msgspec.json.encode(count).decode()[:40]} - "
                f"at `$.events[{index}].{where}.{name}`"
            )
