"""The shapes the queries answer with, and the columns each is read from.

Two families: the pages' rows (``RunRow``, ``StepRow``: only the columns a page shows, never the
captured values of a whole run) and the JSON API's (``RunOut``, ``StepOut``: every column, the
captured values passed through as ``msgspec.Raw``, so stored ``jsonb`` reaches the client without
being decoded into Python objects and encoded again).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from psycopg import sql

#: The run statuses a list may be filtered by.
StatusFilter = Literal["running", "abandoned", "completed", "failed", "cancelled"]


class PipelineSummary(msgspec.Struct, kw_only=True, frozen=True):
    """One pipeline over a time range; durations are of finished runs."""

    name: str
    runs: int
    failed: int
    running: int
    abandoned: int
    p50_ns: float | None
    p95_ns: float | None
    last_run_id: str | None
    last_start_ns: int | None

    @property
    def error_rate(self) -> float | None:
        """Failed runs over all runs in the range; ``None`` without runs."""
        return self.failed / self.runs if self.runs else None


class RunRow(msgspec.Struct, kw_only=True, frozen=True):
    """A run as the runs list and the run page show it."""

    run_id: str
    pipeline: str | None
    status: str
    start_ns: int | None
    end_ns: int | None
    duration_ns: int | None
    step_count: int | None
    error_type: str | None
    error_message: str | None
    #: Who and why (migration 0010); ``attributes`` is the metadata.
    tags: list[str] | None = None
    user_id: str | None = None
    session_id: str | None = None
    attributes: dict[str, str] | None = None


class StepRow(msgspec.Struct, frozen=True):
    """A step as the Gantt chart and the step tree show it. Positional (in ``STEP_ROW_FIELDS``
    order) as well as by keyword: a 10,000-step run page builds them from rows, and
    ``StepRow(*row)`` is about 12 times faster than ``StepRow(**dict(zip(...)))``."""

    key: str
    step_id: str
    parent_id: str | None
    name: str
    kind: str
    status: str
    start_ns: int | None
    end_ns: int | None
    duration_ns: int | None


class StepDetail(msgspec.Struct, kw_only=True, frozen=True):
    """One step with its captured values (JSON text) for the step panel."""

    run_id: str
    key: str
    name: str
    kind: str
    status: str
    start_ns: int | None
    end_ns: int | None
    duration_ns: int | None
    inputs: str | None
    result: str | None
    records: str | None
    error_type: str | None
    error_message: str | None
    error_traceback: str | None


#: The columns of ``RunRow``, ``StepRow`` and ``StepDetail``, in field order.
RUN_ROW_COLUMNS = (
    "run_id, pipeline, status, start_ns, end_ns, duration_ns, step_count, error_type, "
    "error_message, tags, user_id, session_id, attributes"
)
RUN_ROW_FIELDS = tuple(name.strip() for name in RUN_ROW_COLUMNS.split(","))


class StepTree(msgspec.Struct, kw_only=True, frozen=True):
    """What the run page reads of a run: the steps it can show, and counts of them all.

    A run may have a million steps; the page shows about :data:`_gantt.CHILD_CAP` children of
    a parent, so only those (and what the user asked for) are read, with the numbers that
    stand for the others (a gap row's count, a collapsed step's ``+N``, the step total).
    """

    steps: list[StepRow]
    #: Every step of the run, read or not.
    total: int
    #: Direct children of each step read, by step id (``""``: the roots).
    children: dict[str, int]
    #: Each step's index among its siblings in start order (of all of them, read or not).
    position: dict[str, int]
    #: How many steps are under each step read that has children.
    under: dict[str, int]
    #: The earliest start, latest end and latest start of all the steps (the chart's axis).
    first_start_ns: int | None
    last_end_ns: int | None
    last_start_ns: int | None
    #: Ids of the steps on the critical path (see ``_gantt.critical_path``), read wherever
    #: they are among their siblings.
    critical: list[str] = []


#: The columns of a ``StepRow``, in its fields' order.
STEP_ROW_FIELDS = StepRow.__struct_fields__
DETAIL_FIELDS = tuple(name for name in StepDetail.__struct_fields__)


class ErrorOut(msgspec.Struct, kw_only=True, frozen=True):
    """A step's or run's error."""

    type: str | None
    message: str | None
    traceback: str | None


class LLMTotals(msgspec.Struct, kw_only=True, frozen=True):
    """A run's LLM calls, tokens and cost; unknown is ``None``, never zero.

    Tokens and cost sum the calls that reported usage; ``calls_without_usage`` counts the
    others. ``cost_usd`` is of the priced models (``None``: none is); ``unpriced`` names the
    models with tokens but no price.
    """

    calls: int = 0
    calls_without_usage: int = 0
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    unpriced: list[str] = []

    @property
    def tokens(self) -> int | None:
        """Input plus output tokens; ``None`` when no call reported usage."""
        if self.input_tokens is None:
            return None
        return self.input_tokens + (self.output_tokens or 0)


class ScoreOut(msgspec.Struct, kw_only=True, frozen=True):
    """A score given to a run (or to its step ``step_key``), as pages and API show it.

    ``kind`` is ``numeric``, ``boolean`` or ``categorical`` (``value`` a ``str``); ``source``
    says who gave it: ``code`` (``pipelens.score``), ``api`` or ``ui`` (the run page's form).
    """

    score_id: str
    name: str
    kind: str
    value: bool | float | str
    comment: str | None = None
    step_key: str | None = None
    source: str
    at_ns: int


class RunOut(msgspec.Struct, kw_only=True, frozen=True):
    """A run as the read API shows it. ``pipeline`` is ``None`` until a run event names it."""

    run_id: str
    pipeline: str | None
    status: str
    start_ns: int | None
    end_ns: int | None
    duration_ns: int | None
    error: ErrorOut | None
    step_count: int | None
    dropped_events: int | None
    attributes: msgspec.Raw | None
    updated_at: str
    #: LLM usage by model as the client sent it: ``{model: {calls, input_tokens, ...}}``, but
    #: each ``cost_usd`` the server's (``_llm.priced_runs``), as in ``llm``.
    llm_usage: msgspec.Raw | None
    #: Who and why (``pipelens.tag``/``set_run``); ``attributes`` holds the metadata.
    tags: list[str] = []
    user_id: str | None = None
    session_id: str | None = None
    #: The run's LLM totals, priced by the server; ``None`` when it made no LLM call.
    llm: LLMTotals | None = None
    #: Its scores (``pipelens.score``, ``POST /api/v1/runs/{id}/scores``), in the order given.
    scores: list[ScoreOut] = []


class StepOut(msgspec.Struct, kw_only=True, frozen=True):
    """A step as the read API shows it."""

    key: str
    step_id: str
    parent_id: str | None
    name: str
    kind: str
    status: str
    start_ns: int | None
    end_ns: int | None
    duration_ns: int | None
    inputs: msgspec.Raw | None
    result: msgspec.Raw | None
    records: msgspec.Raw | None
    error: ErrorOut | None
    #: The LLM call of a ``kind="llm"`` step (provider, model, messages, output, usage, ...),
    #: its ``cost_usd`` the server's (``_llm.priced_steps``).
    llm: msgspec.Raw | None


class RunList(msgspec.Struct, kw_only=True, frozen=True):
    """``GET /api/v1/runs``: newest first."""

    runs: list[RunOut]
    #: The ``after`` of the next page; ``None`` on the last one.
    next: str | None = None


class RunDetail(msgspec.Struct, kw_only=True, frozen=True):
    """``GET /api/v1/runs/{run_id}``: the run and all its steps, in start order."""

    run: RunOut
    steps: list[StepOut]


#: The columns of ``RunOut`` and ``StepOut``, in the order ``run_out``/``step_out`` read.
RUN_OUT_COLUMNS = sql.SQL(
    "run_id, pipeline, status, start_ns, end_ns, duration_ns, error_type, error_message, "
    "error_traceback, step_count, dropped_events, attributes::text, "
    """to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'), llm_usage::text, """
    "tags, user_id, session_id"
)
STEP_OUT_COLUMNS = sql.SQL(
    "key, step_id, parent_id, name, kind, status, start_ns, end_ns, duration_ns, inputs::text, "
    "result::text, records::text, error_type, error_message, error_traceback, "
    # The client's own cost is left out: the server's takes its place (``_llm.priced_steps``).
    "(CASE WHEN jsonb_typeof(llm) = 'object' THEN llm - 'cost_usd' ELSE llm END)::text"
)


def _raw(text: str | None) -> msgspec.Raw | None:
    return None if text is None else msgspec.Raw(text.encode())


def _error(type_: str | None, message: str | None, traceback: str | None) -> ErrorOut | None:
    if type_ is None and message is None and traceback is None:
        return None
    return ErrorOut(type=type_, message=message, traceback=traceback)


def run_out(row: tuple[Any, ...]) -> RunOut:
    """A row of ``RUN_OUT_COLUMNS`` as a ``RunOut``."""
    return RunOut(
        run_id=row[0],
        pipeline=row[1],
        status=row[2],
        start_ns=row[3],
        end_ns=row[4],
        duration_ns=row[5],
        error=_error(row[6], row[7], row[8]),
        step_count=row[9],
        dropped_events=row[10],
        attributes=_raw(row[11]),
        updated_at=row[12],
        llm_usage=_raw(row[13]),
        tags=row[14] or [],
        user_id=row[15],
        session_id=row[16],
    )


def step_out(row: tuple[Any, ...]) -> StepOut:
    """A row of ``STEP_OUT_COLUMNS`` as a ``StepOut``."""
    return StepOut(
        key=row[0],
        step_id=row[1],
        parent_id=row[2],
        name=row[3],
        kind=row[4],
        status=row[5],
        start_ns=row[6],
        end_ns=row[7],
        duration_ns=row[8],
        inputs=_raw(row[9]),
        result=_raw(row[10]),
        records=_raw(row[11]),
        error=_error(row[12], row[13], row[14]),
        llm=_raw(row[15]),
    )
