"""Run and step rows, and the one rule that merges the pieces of a row.

Events arrive in any order and may arrive twice, so every event becomes a *partial* row (``None``
for what it does not know) and partial rows are merged — first within a batch, here in Python,
then with the stored row, in SQL (``ON CONFLICT DO UPDATE``). Both apply the same rule:

* the piece with the higher status rank wins (``running`` < ``abandoned`` < ``completed`` <
  ``cancelled`` < ``failed``; a run piece known only from a step event ranks below
  ``running``): every column takes the winner's value, or the other piece's when the winner has
  none. A finished step therefore
  never goes back to running, and a finish's records replace the partial records a late start
  carried;
* on a tie the piece already held wins, filling its gaps from the newcomer;
* start times take the earliest value either piece has; a run's ``step_count`` and
  ``dropped_events`` the largest (a client resends a run's end when a step outlives it);
* an empty ``records`` object (``{}``) counts as a gap: a piece that knows records beats one that
  only says "none yet" whatever their ranks, and ``{}`` is kept only when no piece knows better
  (the seed's clients send ``{}`` on a step's start and its records on the finish, and a start
  that arrives late must not erase them);
* a step's name ``path`` (``_otlp_paths``) takes the newer piece's value when it has one: it is
  computed from a whole trace, which knows at least what the stored row's was computed from.

Any permutation and duplication of a run's events thus converges to the same rows (the property
test in ``tests/pipelens_server/test_server_convergence.py`` checks it through the HTTP API).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipelens_server._errors import RunIdReusedError

#: Status ranks; mirrors the SQL function ``pipelens_status_rank`` (migration 0009). The server
#: alone sets ``abandoned`` (``_db/_abandon.py``): a late finish outranks it, a late start not.
STATUS_RANK = {"running": 0, "abandoned": 1, "completed": 2, "cancelled": 3, "failed": 4}
#: The JSON text of an empty object, as the ingest writes it (``_seed`` normalises its spacing).
EMPTY_OBJECT = "{}"

Row = list[Any]


@dataclass(frozen=True, slots=True)
class Table:
    """A table that receives merged rows through a staging table."""

    name: str
    stage: str
    key: tuple[str, ...]
    columns: tuple[tuple[str, str], ...]  # (name, SQL type) in row order
    least: frozenset[str] = field(default_factory=frozenset)
    greatest: frozenset[str] = field(default_factory=frozenset)
    #: JSON columns where an empty object means "unknown" (a gap any other value fills).
    empty_is_gap: frozenset[str] = field(default_factory=frozenset)
    #: Columns where the newer piece's value wins whenever it has one, whatever the ranks.
    newest: frozenset[str] = field(default_factory=frozenset)
    status_index: int = field(init=False)
    least_indexes: tuple[int, ...] = field(init=False)
    greatest_indexes: tuple[int, ...] = field(init=False)
    empty_is_gap_indexes: tuple[int, ...] = field(init=False)
    newest_indexes: tuple[int, ...] = field(init=False)

    def __post_init__(self) -> None:
        names = self.column_names
        object.__setattr__(self, "status_index", names.index("status"))
        object.__setattr__(self, "least_indexes", tuple(names.index(n) for n in sorted(self.least)))
        most = tuple(names.index(n) for n in sorted(self.greatest))
        object.__setattr__(self, "greatest_indexes", most)
        gaps = tuple(names.index(n) for n in sorted(self.empty_is_gap))
        object.__setattr__(self, "empty_is_gap_indexes", gaps)
        newest = tuple(names.index(n) for n in sorted(self.newest))
        object.__setattr__(self, "newest_indexes", newest)

    @property
    def column_names(self) -> list[str]:
        """Column names in row order."""
        return [name for name, _ in self.columns]

    def create_stage_sql(self) -> str:
        """The session's staging table (emptied at every commit)."""
        cols = ", ".join(f"{name} {type_}" for name, type_ in self.columns)
        return f"CREATE TEMP TABLE IF NOT EXISTS {self.stage} ({cols}) ON COMMIT DELETE ROWS"

    def copy_sql(self) -> str:
        """``COPY`` into the staging table."""
        return f"COPY {self.stage} ({', '.join(self.column_names)}) FROM STDIN"

    def merge_assignments(self, target: str = "t") -> dict[str, str]:
        """SQL for each non-key column's merged value (``target`` is the stored row)."""
        win = f"pipelens_status_rank(excluded.status) > pipelens_status_rank({target}.status)"
        merged = {}
        for name in self.column_names:
            if name in self.key:
                continue
            if name in self.least:
                merged[name] = f"LEAST({target}.{name}, excluded.{name})"
            elif name in self.newest:
                merged[name] = f"COALESCE(excluded.{name}, {target}.{name})"
            elif name in self.greatest:  # GREATEST, like LEAST, ignores a NULL side
                merged[name] = f"GREATEST({target}.{name}, excluded.{name})"
            elif name in self.empty_is_gap:
                new, held = f"excluded.{name}", f"{target}.{name}"
                known = f"NULLIF({new}, '{{}}'::jsonb), NULLIF({held}, '{{}}'::jsonb)"
                known_held_first = f"NULLIF({held}, '{{}}'::jsonb), NULLIF({new}, '{{}}'::jsonb)"
                merged[name] = (
                    f"CASE WHEN {win} THEN COALESCE({known}, {new}, {held}) "
                    f"ELSE COALESCE({known_held_first}, {held}, {new}) END"
                )
            else:
                merged[name] = (
                    f"CASE WHEN {win} THEN COALESCE(excluded.{name}, {target}.{name}) "
                    f"ELSE COALESCE({target}.{name}, excluded.{name}) END"
                )
        return merged


RUNS = Table(
    name="runs",
    stage="pipelens_stage_runs",
    key=("run_id",),
    columns=(
        ("run_id", "text"),
        ("pipeline", "text"),
        ("status", "text"),
        ("start_ns", "bigint"),
        ("end_ns", "bigint"),
        ("duration_ns", "bigint"),
        ("error_type", "text"),
        ("error_message", "text"),
        ("error_traceback", "text"),
        ("step_count", "integer"),
        ("dropped_events", "bigint"),
        ("attributes", "jsonb"),
        ("llm_usage", "jsonb"),  # migration 0002
        ("tags", "jsonb"),  # migration 0010
        ("user_id", "text"),
        ("session_id", "text"),
    ),
    least=frozenset({"start_ns"}),
    greatest=frozenset({"step_count", "dropped_events"}),
)

_RUN_START = RUNS.column_names.index("start_ns")

STEPS = Table(
    name="steps",
    stage="pipelens_stage_steps",
    key=("run_id", "key"),
    columns=(
        ("run_id", "text"),
        ("key", "text"),
        ("step_id", "text"),
        ("parent_id", "text"),
        ("name", "text"),
        ("kind", "text"),
        ("status", "text"),
        ("start_ns", "bigint"),
        ("end_ns", "bigint"),
        ("duration_ns", "bigint"),
        ("inputs", "jsonb"),
        ("result", "jsonb"),
        ("records", "jsonb"),
        ("error_type", "text"),
        ("error_message", "text"),
        ("error_traceback", "text"),
        ("llm", "jsonb"),  # migration 0002
        # Migration 0016: the name path of an OTLP span whose trace came whole in one request
        # (``_otlp_paths``); NULL from our own events (the key is the path) and from spans whose
        # path the database computes (``_store.FILL_STEP_PATHS``). A path computed from a whole
        # trace knows more than the stored one: the newer wins.
        ("path", "text"),
    ),
    least=frozenset({"start_ns"}),
    empty_is_gap=frozenset({"records"}),
    newest=frozenset({"path"}),
)

#: The step columns :meth:`Rows.add_finish` fills from a held start.
_PARENT_ID, _START_NS, _INPUTS = (
    STEPS.column_names.index(n) for n in ("parent_id", "start_ns", "inputs")
)


def run_row(
    *,
    run_id: str,
    pipeline: str | None = None,
    status: str | None = None,
    start_ns: int | None = None,
    end_ns: int | None = None,
    duration_ns: int | None = None,
    error_type: str | None = None,
    error_message: str | None = None,
    error_traceback: str | None = None,
    step_count: int | None = None,
    dropped_events: int | None = None,
    attributes: str | None = None,
    llm_usage: str | None = None,
    tags: str | None = None,
    user_id: str | None = None,
    session_id: str | None = None,
) -> Row:
    """A partial run row in ``RUNS.columns`` order (``attributes``, ``llm_usage`` and ``tags``
    are JSON text)."""
    return [
        run_id,
        pipeline,
        status,
        start_ns,
        end_ns,
        duration_ns,
        error_type,
        error_message,
        error_traceback,
        step_count,
        dropped_events,
        attributes,
        llm_usage,
        tags,
        user_id,
        session_id,
    ]


def step_row(
    *,
    run_id: str,
    key: str,
    step_id: str,
    parent_id: str | None,
    name: str,
    kind: str,
    status: str,
    start_ns: int | None,
    end_ns: int | None = None,
    duration_ns: int | None = None,
    inputs: str | None = None,
    result: str | None = None,
    records: str | None = None,
    error_type: str | None = None,
    error_message: str | None = None,
    error_traceback: str | None = None,
    llm: str | None = None,
    path: str | None = None,
) -> Row:
    """A partial step row in ``STEPS.columns`` order (``inputs``/``result``/``records``/``llm``
    are JSON text)."""
    return [
        run_id,
        key,
        step_id,
        parent_id,
        name,
        kind,
        status,
        start_ns,
        end_ns,
        duration_ns,
        inputs,
        result,
        records,
        error_type,
        error_message,
        error_traceback,
        llm,
        path,
    ]


def merge(table: Table, held: Row, new: Row) -> Row:
    """Merge two partial rows of the same key by the module's rule."""
    status = table.status_index
    rank = STATUS_RANK.get  # a missing status (``None``) ranks -1, below running
    if rank(new[status], -1) > rank(held[status], -1):
        first, second = new, held
    else:
        first, second = held, new
    merged = [b if a is None else a for a, b in zip(first, second, strict=True)]
    for i in table.least_indexes:
        if held[i] is not None and new[i] is not None:
            merged[i] = min(held[i], new[i])
    for i in table.greatest_indexes:
        if held[i] is not None and new[i] is not None:
            merged[i] = max(held[i], new[i])
    for i in table.empty_is_gap_indexes:
        if merged[i] == EMPTY_OBJECT and second[i] is not None:
            merged[i] = second[i]  # ``{}`` too when both are empty
    for i in table.newest_indexes:
        if new[i] is not None:
            merged[i] = new[i]
    return merged


#: "Heard of now": the time given for a run an event of the batch speaks of (the server's clock
#: caps every time, see ``_store.TOUCH_RUNS``).
HEARD_NOW = 2**63 - 1


class Rows:
    """One batch's partial rows, merged per key as they are added."""

    __slots__ = (
        "_starts",
        "copied",
        "events",
        "heartbeats",
        "partial",
        "path_runs",
        "pathed_runs",
        "refused",
        "runs",
        "scores",
        "steps",
    )

    def __init__(self, *, partial: bool = False) -> None:
        #: A run id naming a second run costs that run's events alone (``refused``), rather than
        #: the whole batch: for batches of many runs (``/api/v1/events``).
        self.partial = partial
        #: Run ids refused for naming a second run, with why (``partial`` batches only).
        self.refused: dict[str, RunIdReusedError] = {}
        self.runs: dict[str, Row] = {}
        self.steps: dict[tuple[str, str], Row] = {}
        #: Score rows (``_scores.SCORE_COLUMNS``) by (run id, score id): the first one given
        #: wins, as the stored one does (a score is never changed, only given again).
        self.scores: dict[tuple[str, str], Row] = {}
        self.events = 0
        #: Of the steps, how many the store ``COPY``'d straight into ``steps`` (new ones).
        self.copied = 0
        #: Runs a heartbeat says are alive, with the latest time it says so (they get no row of
        #: their own: heard of, no more).
        self.heartbeats: dict[str, int] = {}
        #: Runs whose name paths the database computes again once the batch's rows are in
        #: (``pipelens_fill_step_paths``, 0016): OTLP traces that did not come whole.
        self.path_runs: set[str] = set()
        #: Runs whose steps carry the name paths computed here (``_otlp_paths``), with their
        #: step count: the database computes them again only if it holds more of the run.
        self.pathed_runs: dict[str, int] = {}
        #: Keys whose row is one ``StepStarted``'s, merged with nothing yet (``add_start``).
        self._starts: set[tuple[str, str]] = set()

    def add_run(self, row: Row) -> None:
        """Add a partial run row."""
        run_id = row[0]
        held = self.runs.get(run_id)
        if held is None:
            self.runs[run_id] = row
            return
        # One id, two starts: two runs, which a merge would silently make one.
        if None not in (held[_RUN_START], row[_RUN_START]) and held[_RUN_START] != row[_RUN_START]:
            reused = RunIdReusedError(run_id, held[_RUN_START], row[_RUN_START])
            if not self.partial:
                raise reused
            self.refused.setdefault(run_id, reused)
        self.runs[run_id] = merge(RUNS, held, row)

    def add_step(self, row: Row) -> None:
        """Add a partial step row; its run gets a (placeholder) row too."""
        key = (row[0], row[1])
        held = self.steps.get(key)
        if held is not None:  # its run has a row already
            self._starts.discard(key)
            self.steps[key] = merge(STEPS, held, row)
            return
        self.steps[key] = row
        if row[0] not in self.runs:
            self.runs[row[0]] = run_row(run_id=row[0])

    def add_score(self, row: Row) -> None:
        """Add a score row; it needs no run row (a score may come before its run)."""
        self.scores.setdefault((row[0], row[1]), row)

    def add_heartbeat(self, run_id: str, at_ns: int) -> None:
        """A heartbeat of ``run_id`` the client sent at ``at_ns`` (past ``bigint``: now)."""
        at_ns = min(at_ns, HEARD_NOW)
        self.heartbeats[run_id] = max(at_ns, self.heartbeats.get(run_id, at_ns))

    def heard_of(self) -> tuple[list[str], list[int]]:
        """Every run the batch speaks of, in key order, and when it was heard of: an event's run
        now (:data:`HEARD_NOW`), a heartbeat-only run at its heartbeat's own time, since a
        heartbeat replayed from a spool by a later process says nothing of the run now."""
        heard = dict.fromkeys(self.runs, HEARD_NOW)
        run_ids = sorted((heard.keys() | self.heartbeats.keys()) - self.refused.keys())
        return run_ids, [heard.get(run, self.heartbeats.get(run, HEARD_NOW)) for run in run_ids]

    def add_start(self, row: Row) -> None:
        """Add a ``StepStarted``'s row: status ``running``, nothing known past its inputs."""
        key = (row[0], row[1])
        alone = key not in self.steps
        self.add_step(row)
        if alone:
            self._starts.add(key)

    def add_finish(self, row: Row) -> None:
        """Add a ``StepFinished``'s row (a final status, every text known), which the caller
        hands over: it may be changed and kept.

        The common case, the step's start held alone, is :func:`merge` written out for these
        two shapes: the finish wins (its rank is higher); of the start's columns only
        ``parent_id`` and ``inputs`` can fill a gap and ``start_ns`` take the earlier value;
        the start has no ``records`` to put in place of an empty one.
        """
        key = (row[0], row[1])
        if key not in self._starts:
            self.add_step(row)
            return
        self._starts.discard(key)
        held = self.steps[key]
        if row[_PARENT_ID] is None:
            row[_PARENT_ID] = held[_PARENT_ID]
        if row[_INPUTS] is None:
            row[_INPUTS] = held[_INPUTS]
        if held[_START_NS] < row[_START_NS]:
            row[_START_NS] = held[_START_NS]
        self.steps[key] = row

    def __len__(self) -> int:
        return len(self.runs) + len(self.steps)
