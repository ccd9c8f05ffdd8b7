"""Scores: a ``ScoreAdded`` event, or the body of ``POST /api/v1/runs/{id}/scores`` and the run
page's form, as a checked, redacted row of the ``scores`` table (migration 0011).

Both ways in share the checks, so that a score the API refuses the event ingest refuses too, with
a 400 naming the field: texts within the wire's limits, a number finite (msgpack can carry NaN),
NUL characters replaced. The comment and a categorical value are redacted like error texts.
"""

from __future__ import annotations

import math
import time
import uuid

import msgspec

from pipelens.events import (
    MAX_COMMENT_BYTES,
    MAX_KEY_BYTES,
    MAX_RUN_ID_BYTES,
    MAX_SCORE_ID_BYTES,
    MAX_SCORE_NAME_BYTES,
    MAX_SCORE_NUMBER,
    MAX_SCORE_VALUE_BYTES,
    ScoreAdded,
    ScoreSource,
    ScoreValue,
)
from pipelens_server._errors import InvalidBatchError
from pipelens_server._ingest._checks import check_bigint_at, check_length_at, without_nul
from pipelens_server._ingest._rows import Row, Rows
from pipelens_server._ingest._scrub import scrub_text

#: The columns of a score row, in row order.
SCORE_COLUMNS = (
    "run_id",
    "score_id",
    "name",
    "kind",
    "value_number",
    "value_text",
    "comment",
    "step_key",
    "source",
    "at_ns",
)


class ScoreIn(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The body of ``POST /api/v1/runs/{run_id}/scores``.

    Attributes:
        score_id: the giver's id of the score: posting the same id again changes nothing (a retry is
            safe). Without one the server makes one, and every post is a new score.
        name: what is scored (``relevance``, ``user_feedback``).
        value: a number, a boolean or a category (a non-empty string).
        comment: why, in words (a user's feedback).
        step_key: the step scored (its dotted key), when not the whole run.
    """

    score_id: str | None = None
    name: str
    value: ScoreValue
    comment: str | None = None
    step_key: str | None = None


def score_event(run_id: str, body: ScoreIn, source: ScoreSource) -> ScoreAdded:
    """The event a posted score stands for (the server's clock, a new id when none was given)."""
    return ScoreAdded(
        run_id=run_id,
        score_id=body.score_id if body.score_id is not None else str(uuid.uuid4()),
        name=body.name,
        value=body.value,
        comment=body.comment,
        step_key=body.step_key,
        source=source,
        at_ns=time.time_ns(),
    )


def _text(value: str, limit: int, field: str, at: str, what: str) -> str:
    path = f"{at}.{field}"
    if not value:
        raise InvalidBatchError(f"{what}: {field} must not be empty - at `{path}`", path=path)
    check_length_at(value, limit, field, path, what)
    return without_nul(value)


def score_row(event: ScoreAdded, at: str, what: str = "invalid batch") -> Row:
    """A score row in :data:`SCORE_COLUMNS` order; ``at`` is the event's path in the body
    (``$.events[3]``), ``what`` opens a refusal's message."""
    value = event.value
    number: float | None = None
    text: str | None = None
    if isinstance(value, bool):
        kind, number = "boolean", 1.0 if value else 0.0
    elif isinstance(value, float):
        if not (math.isfinite(value) and abs(value) <= MAX_SCORE_NUMBER):
            raise InvalidBatchError(
                f"{what}: value must be a finite number within ±{MAX_SCORE_NUMBER:.0e}, not "
                f"{value} - at `{at}.value`",
                path=f"{at}.value",
            )
        kind, number = "numeric", value
    else:
        kind = "categorical"
        text = scrub_text(_text(value, MAX_SCORE_VALUE_BYTES, "value", at, what))
    comment = event.comment
    if comment is not None:
        check_length_at(comment, MAX_COMMENT_BYTES, "comment", f"{at}.comment", what)
        comment = scrub_text(without_nul(comment))
    step_key = event.step_key
    if step_key is not None:
        step_key = _text(step_key, MAX_KEY_BYTES, "step_key", at, what)
    check_bigint_at(event.at_ns, "at_ns", f"{at}.at_ns", what)
    return [
        _text(event.run_id, MAX_RUN_ID_BYTES, "run_id", at, what),
        _text(event.score_id, MAX_SCORE_ID_BYTES, "score_id", at, what),
        _text(event.name, MAX_SCORE_NAME_BYTES, "name", at, what),
        kind,
        number,
        text,
        comment,
        step_key,
        event.source,
        event.at_ns,
    ]


def score_rows(run_id: str, body: ScoreIn, source: ScoreSource) -> tuple[Rows, ScoreAdded]:
    """The rows of one posted score (its body checked, a 400 naming the field) and its event."""
    event = score_event(run_id, body, source)
    rows = Rows()
    rows.add_score(score_row(event, "$", "invalid score"))
    return rows, event


def decode_score(body: bytes) -> ScoreIn:
    """The JSON body of ``POST /api/v1/runs/{id}/scores``; a 400 naming the path when it is not
    one (``$.value``: a number, a boolean or a string)."""
    try:
        return _score_decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise InvalidBatchError(f"invalid score: {exc}") from None


def form_value(text: str) -> ScoreValue:
    """What the run page's form means by its value field: ``true``/``false`` a boolean, a
    number a number, anything else a category."""
    cleaned = text.strip()
    if cleaned.lower() in ("true", "false"):
        return cleaned.lower() == "true"
    try:
        number = float(cleaned)
    except ValueError:
        return cleaned
    return number if math.isfinite(number) else cleaned


_score_decoder = msgspec.json.Decoder(ScoreIn)
