"""Which runs a run list shows: the search by step name and record value, and the keyset
cursor (``start_ns:run_id``) where the next page starts, one format for pages and API.
"""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from pipelens_server._read._scores import ScoreFilter, parse_score_filter, score_condition

#: A position in a run list: the last run shown (its start, unknown for a run known only from
#: its steps, and its id).
RunCursor = tuple[int | None, str]


def parse_cursor(after: str) -> RunCursor:
    """``start_ns:run_id`` (``:run_id`` when the start is unknown), as ``cursor_text`` writes;
    ``ValueError`` when it is not one."""
    start, sep, run_id = after.partition(":")
    # ASCII digits only ("²".isdigit() holds), and no more than a bigint has.
    number = start.isascii() and start.isdigit() and len(start) <= 19 and int(start) < 2**63
    if not sep or not (number or start == ""):
        raise ValueError(
            f"after={after!r} is not a page cursor (start_ns:run_id): use the page's links or "
            "the list's 'next'"
        )
    return (int(start) if start else None), run_id


def cursor_text(start_ns: int | None, run_id: str) -> str:
    """The cursor of the page after the run ``run_id`` started at ``start_ns``."""
    return f"{'' if start_ns is None else start_ns}:{run_id}"


class RunSearch(msgspec.Struct, kw_only=True, frozen=True):
    """Runs having a step named ``step_name``, and/or a step whose records hold ``record_value``
    (under ``record_key`` when given, any top-level key otherwise; a key alone: a step that
    recorded that key). Empty fields match all; the two searches may match different steps."""

    step_name: str = ""
    #: Runs whose id starts with ``text``, or having a step whose name, error message or any
    #: string record value (at any depth) holds ``text``, case-insensitively (``ali`` finds
    #: ``Alice``).
    text: str = ""
    record_key: str = ""
    record_value: str = ""
    #: Who and why (migration 0010): runs with this tag, of this user or session, whose metadata
    #: holds ``metadata_key`` (with ``metadata_value`` when given).
    tag: str = ""
    user_id: str = ""
    session_id: str = ""
    metadata_key: str = ""
    metadata_value: str | None = None
    #: Runs with a score of this name (and value or range, see ``_scores``).
    score: ScoreFilter | None = None


def parse_metadata(text: str) -> tuple[str, str | None]:
    """``key=value`` (or a ``key`` alone) of the ``metadata`` filter; ``ValueError`` when the
    key is empty."""
    key, eq, value = text.strip().partition("=")
    if not key.strip():
        raise ValueError(f"metadata={text!r}: expected key=value (or a key alone), as plan=pro")
    return key.strip(), value if eq else None


def search_from_query(
    *,
    q: str = "",
    step: str = "",
    record_key: str = "",
    record_value: str = "",
    tag: str = "",
    user_id: str = "",
    session_id: str = "",
    metadata: str = "",
    score: str = "",
) -> RunSearch:
    """The search that a runs page's or ``GET /api/v1/runs``' query string asks for, each value
    stripped (blank: no filter); ``ValueError`` naming the fix when ``metadata`` or ``score`` is
    not one, for the page to show and the API to answer with a 400."""
    metadata_key, metadata_value = parse_metadata(metadata) if metadata.strip() else ("", None)
    return RunSearch(
        step_name=step.strip(),
        text=q.strip(),
        record_key=record_key.strip(),
        record_value=record_value.strip(),
        tag=tag.strip(),
        user_id=user_id.strip(),
        session_id=session_id.strip(),
        metadata_key=metadata_key,
        metadata_value=metadata_value,
        score=parse_score_filter(score) if score.strip() else None,
    )


def _who_conditions(search: RunSearch, conditions: list[sql.Composable], params: list[Any]) -> None:
    # Containment and equality, so that migration 0010's indexes answer them.
    if search.tag:
        conditions.append(sql.SQL("runs.tags @> %s::jsonb"))
        params.append(json.dumps([search.tag]))
    for column in ("user_id", "session_id"):
        if value := getattr(search, column):
            conditions.append(sql.SQL("runs.{} = %s").format(sql.Identifier(column)))
            params.append(value)
    if search.metadata_key and search.metadata_value is None:
        conditions.append(sql.SQL("runs.attributes ? %s"))
        params.append(search.metadata_key)
    elif search.metadata_key:
        conditions.append(sql.SQL("runs.attributes @> %s::jsonb"))
        params.append(json.dumps({search.metadata_key: search.metadata_value}))


def _record_candidates(value: str) -> list[Any]:
    """The JSON values a record value typed as ``value`` may be stored as: the string, and the
    number, boolean or null it spells (``2`` finds ``{"n_docs": 2}`` and ``{"n_docs": "2"}``)."""
    candidates: list[Any] = [value]
    try:
        parsed = json.loads(value)
    except ValueError:
        return candidates
    if parsed is None or isinstance(parsed, bool | int) or _finite(parsed):
        candidates.append(parsed)
    return candidates


def _finite(value: Any) -> bool:
    """A float JSON can hold (``1e999`` parses as infinity, which jsonb refuses)."""
    return isinstance(value, float) and math.isfinite(value)


def search_conditions(
    search: RunSearch,
    conditions: list[sql.Composable],
    params: list[Any],
    text_runs: list[str] | None = None,
) -> None:
    """Add to ``conditions`` (on table ``runs``) and ``params`` what ``search`` asks for.

    Each is an ``EXISTS`` on the run's steps. A step name is answered by migration 0007's
    ``steps (name, run_id)`` either way the planner goes (run by run for a common name, from the
    few matching steps for a rare one). Record searches read each candidate run's steps by
    primary key, newest run first, within the page's range, until the page is full: records have
    no index, since one would about double PostgreSQL's insert cost per step. ``text_runs``:
    what :func:`rare_text_runs` found for ``search.text``, the runs the text condition is then.
    """
    _who_conditions(search, conditions, params)
    if text_runs is not None:
        conditions.append(sql.SQL("runs.run_id = ANY(%s)"))
        params.append(text_runs)
    elif search.text:
        _text_condition(search.text, conditions, params)
    if search.score is not None:
        score_condition(search.score, conditions, params)
    if search.step_name:
        conditions.append(
            sql.SQL("EXISTS (SELECT 1 FROM steps s WHERE s.run_id = runs.run_id AND s.name = %s)")
        )
        params.append(search.step_name)
    if search.record_key and not search.record_value:
        # A key alone: runs having a step that recorded it.
        conditions.append(
            sql.SQL(
                "EXISTS (SELECT 1 FROM steps s WHERE s.run_id = runs.run_id AND s.records ? %s)"
            )
        )
        params.append(search.record_key)
    if not search.record_value:
        return
    candidates = _record_candidates(search.record_value)
    if search.record_key:
        # Containment (@>) of {key: value}.
        matches: sql.Composable = sql.SQL(" OR ").join(
            sql.SQL("s.records @> %s::jsonb") for _ in candidates
        )
        params.extend(json.dumps({search.record_key: c}) for c in candidates)
    else:
        # Any top-level key: a JSON path over the values (the string is a JSON string literal,
        # which is also a jsonpath one).
        tests = " || ".join(f"@ == {json.dumps(c)}" for c in candidates)
        matches = sql.SQL("s.records @? %s::jsonpath")
        params.append(f"$.* ? ({tests})")
    conditions.append(
        sql.SQL("EXISTS (SELECT 1 FROM steps s WHERE s.run_id = runs.run_id AND ({}))").format(
            matches
        )
    )


#: The distinct step names (0007's index, one probe per name: names are few) holding the text.
_NAMES = sql.SQL(
    "ARRAY(WITH RECURSIVE names(name) AS (SELECT min(name) FROM steps UNION ALL "
    "SELECT (SELECT min(x.name) FROM steps x WHERE x.name > names.name) FROM names "
    "WHERE names.name IS NOT NULL) SELECT name FROM names WHERE name ILIKE %s)"
)
#: An error message or a string record value holding the text (the JSON text's ILIKE narrows
#: down what the JSON path then checks: values only, never keys), OTel's bookkeeping
#: (``otel.span_kind``, ``otel.scope``) passed over as migration 0017's index does.
_FOUND = sql.SQL(
    "(s.error_message IS NOT NULL OR s.records IS NOT NULL) AND (s.error_message ILIKE %s "
    "OR (s.records::text ILIKE %s AND pipelens_searched_records(s.records) @? %s::jsonpath))"
)
#: The steps of migration 0015's index (0017's function) holding every trigram of the text in
#: their error message and string record values, or too big to have their trigrams indexed; found.
_FROM_GRAMS = sql.SQL(
    "SELECT s.run_id FROM steps s "
    "WHERE (pipelens_search_grams(s.error_message, s.records) @> pipelens_grams(%s) "
    "OR pipelens_search_grams(s.error_message, s.records) @> '{{\"\"}}') AND {}"
).format(_FOUND)
#: Past this many steps found from the trigrams, the text is common: the runs are read newest
#: first until the page is full instead. PostgreSQL cannot tell (it takes a text's trigrams for
#: independent, so it expects about no step to hold them all), hence the count.
COMMON_STEPS = 1000


#: The three ways a text finds runs, each bounded: the step names holding it, then (none
#: holding it) the steps of ``_FROM_GRAMS`` and the run ids it starts (``rare_text_runs``).
_RARE = sql.SQL(
    "WITH n AS MATERIALIZED (SELECT {names} AS names) "  # read once, not at each mention
    "SELECT n.names, "
    "CASE WHEN cardinality(n.names) = 0 THEN ARRAY({grams} LIMIT {common}) END, "
    "CASE WHEN cardinality(n.names) = 0 THEN "
    "ARRAY(SELECT run_id FROM runs WHERE run_id LIKE %s LIMIT {common}) END "
    "FROM n"
).format(names=_NAMES, grams=_FROM_GRAMS, common=sql.Literal(COMMON_STEPS))


async def rare_text_runs(
    pool: AsyncConnectionPool[Any], search: RunSearch | None
) -> list[str] | None:
    """The runs ``search.text`` finds, when it is rare: no step name holds it, and fewer than
    :data:`COMMON_STEPS` steps and run ids do. Looked up first (a few index probes, one
    statement), they are what a run list reads then, by id; otherwise every run of the list's
    range would be tested, newest first, until the page is full: all of them for a rare text.
    ``None`` for a common text, one under three characters, or no text."""
    text = "" if search is None else search.text
    if len(text) < 3:
        return None
    pattern, found = _found_params(text)
    async with pool.connection() as conn:
        cursor = await conn.execute(_RARE, [pattern, text, *found, like_escaped(text) + "%"])
        row = await cursor.fetchone()
    assert row is not None  # a SELECT of three arrays answers one row
    names, steps, runs = row
    if names or len(steps) >= COMMON_STEPS or len(runs) >= COMMON_STEPS:
        return None
    return sorted({*steps, *runs})


def _found_params(text: str) -> tuple[str, list[str]]:
    """The ILIKE pattern of ``text``, and ``_FOUND``'s three parameters."""
    pattern = f"%{like_escaped(text)}%"
    # The records' JSON text escapes '"', '\\' and control characters as JSON does.
    json_pattern = f"%{like_escaped(json.dumps(text, ensure_ascii=False)[1:-1])}%"
    regex = json.dumps(text)  # a JSON string literal is a jsonpath one; flag "q": taken literally
    return pattern, [pattern, json_pattern, f'$.** ? (@ like_regex {regex} flag "iq")']


def _text_condition(text: str, conditions: list[sql.Composable], params: list[Any]) -> None:
    """The substring search run by run, newest first, until the page is full: a run id's
    start, or a step whose name (from the distinct names), error message or string record value
    holds the text, case-insensitively. For a common text (a rare one's runs are listed by
    :func:`rare_text_runs` instead), or one under three characters (no trigram)."""
    pattern, found = _found_params(text)
    params.extend([like_escaped(text) + "%", pattern, *found])
    if len(text) < 3:
        # PostgreSQL picks between the probe per run and one read of every step.
        steps = sql.SQL("EXISTS (SELECT 1 FROM steps s WHERE s.run_id = runs.run_id AND {})")
    else:
        # A scalar subquery, never an EXISTS: PostgreSQL may turn an EXISTS into one read of
        # every matching step, hashed, where this stops at the page's LIMIT.
        steps = sql.SQL(
            "(SELECT true FROM steps s WHERE s.run_id = runs.run_id AND {} LIMIT 1) IS NOT NULL"
        )
    conditions.append(
        sql.SQL(
            "(runs.run_id LIKE %s OR EXISTS (SELECT 1 FROM steps s WHERE s.run_id = runs.run_id "
            "AND s.name = ANY({})) OR {})"
        ).format(_NAMES, steps.format(_FOUND))
    )


def like_escaped(text: str) -> str:
    """``text`` matched literally by LIKE (backslash is PostgreSQL's default escape)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
