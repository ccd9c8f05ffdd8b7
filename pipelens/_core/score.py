"""Scores and feedback on a run or one of its steps (``pipelens.score``).

A score is sent at once as a ``ScoreAdded`` event (``events.py``), not held until the run ends:
feedback often comes after the run, from another request that only knows the run's id. Values are
checked when given (a wrong type is the caller's bug: ``TypeError``/``ValueError`` naming the
argument) and capped then, like records; the comment and a categorical value are redacted on the
way out, with the captured values (``capture.scrub_event``).
"""

from __future__ import annotations

import math
import time

from pipelens._core import clock, containment
from pipelens._core.capture import clean_text
from pipelens._core.context import current_step_var
from pipelens._core.errors import PipelensError
from pipelens._core.settings import settings
from pipelens._core.step import deliver
from pipelens.events import (
    MAX_COMMENT_BYTES,
    MAX_KEY_BYTES,
    MAX_RUN_ID_BYTES,
    MAX_SCORE_ID_BYTES,
    MAX_SCORE_NAME_BYTES,
    MAX_SCORE_NUMBER,
    MAX_SCORE_VALUE_BYTES,
    ScoreAdded,
    ScoreValue,
    cut,
)

_WHERE = "pipelens.score"


def _text(value: object, name: str, limit: int, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        kind = "a non-empty str or None" if optional else "a non-empty str"
        raise TypeError(f"{_WHERE}: {name} must be {kind}, not {value!r}")
    return cut(clean_text(value), limit)


def check_value(value: object) -> ScoreValue:
    """A score's value as the wire carries it: ``bool``, a finite ``float`` or a non-empty
    ``str`` (a category), cut to the wire's limit."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        try:
            number, shown = float(value), repr(value)
        except OverflowError:  # an int past a float's range (and maybe past repr's digits)
            number, shown = math.inf, f"an int of {int(value).bit_length()} bits"
        if not (math.isfinite(number) and abs(number) <= MAX_SCORE_NUMBER):
            raise ValueError(
                f"{_WHERE}: value must be a finite number within ±{MAX_SCORE_NUMBER:.0e}, "
                f"not {shown}"
            )
        return number
    if isinstance(value, str) and value:
        return cut(clean_text(value), MAX_SCORE_VALUE_BYTES)
    raise TypeError(
        f"{_WHERE}: value must be a number, a bool or a non-empty str (a category), not {value!r}"
    )


def score(
    name: str,
    value: float | bool | str,
    comment: str | None = None,
    run_id: str | None = None,
    step_key: str | None = None,
    *,
    score_id: str | None = None,
) -> str:
    """Score the current run (or run ``run_id``, or its step ``step_key``): a number
    (``0.92``), a boolean (``True``: passed, thumbs up) or a category (``"helpful"``), with an
    optional comment. Sent at once, to the current run's transport (outside a run, to the one
    ``configure()`` set). Giving the same ``score_id`` twice records the score once.

    Returns:
        The score's id (``score_id``, or a new random one).

    Raises:
        PipelensError: called outside any run without ``run_id``.
        TypeError, ValueError: an argument has the wrong type or value (the message names it).
    """
    checked_name = _text(name, "name", MAX_SCORE_NAME_BYTES)
    checked_value = check_value(value)
    checked_comment = None
    if comment is not None:
        if not isinstance(comment, str):
            raise TypeError(f"{_WHERE}: comment must be a str or None, not {comment!r}")
        checked_comment = cut(clean_text(comment), MAX_COMMENT_BYTES)
    checked_run = _text(run_id, "run_id", MAX_RUN_ID_BYTES, optional=True)
    checked_key = _text(step_key, "step_key", MAX_KEY_BYTES, optional=True)
    checked_id = _text(score_id, "score_id", MAX_SCORE_ID_BYTES, optional=True)
    step = current_step_var.get()
    run = None if step is None else step.run
    if checked_run is None:
        if run is None:
            raise PipelensError(
                f"{_WHERE}({name!r}, ...) was called outside any run: call it inside a "
                "@pipelens.step function, or pass run_id= (the id of the run to score, "
                "pipelens.current_run().id while it ran)"
            )
        checked_run = run.id
    event = ScoreAdded(
        run_id=checked_run,
        score_id=checked_id or clock.new_run_id(),
        name=checked_name or "",
        value=checked_value,
        comment=checked_comment,
        step_key=checked_key,
        at_ns=time.time_ns(),
    )
    if run is not None and run.id == checked_run:
        run._emit(event)  # counted in the run's dropped_events if lost, as its steps are
    else:
        _send(event)
    return event.score_id


def _send(event: ScoreAdded) -> None:
    """Send a score of a run that is not the current one, through ``configure()``'s transport."""
    transport = settings.transport
    if transport is None:
        containment.warn_once(
            "score.nowhere",
            f"{_WHERE}(...): no transport is configured, so the score goes nowhere; call "
            "pipelens.configure(url=...) first",
        )
        return
    if not deliver(transport, event, not getattr(transport, "scrubs_events", False), "score.send"):
        containment.warn_once("score.dropped", f"{_WHERE}(...): {transport!r} lost a score")
