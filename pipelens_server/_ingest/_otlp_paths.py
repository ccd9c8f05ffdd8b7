"""Name paths of the OTLP traces a request brings whole, computed before they are stored.

A step keyed by its span id (``_otlp``) is grouped in statistics by its name path (migration
0016 says how a path is made). The database can compute paths over a run's stored steps
(``pipelens_fill_step_paths``), but an update of rows just inserted writes every index again:
it tripled PostgreSQL's time per span. Most requests bring each of their traces whole (an
exporter sends a trace's spans together once they have ended), and for those the paths are
known here, by the same rule, and stored with the rows.

A trace is whole when every span's parent is in the request, or it has none. A trace that is
not (a span's parent missing, a span id given twice, a cycle of parents) gets no paths here:
the database computes them once its rows are in, as it does for a trace that already has steps
stored (``_store``), since then the siblings and ancestors it holds count too.

A path is capped as a client caps a key (``cut`` at ``MAX_KEY_BYTES``, with a digest), level by
level: a child's path extends its parent's capped path, so a deep trace of long names neither
grows a path without bound nor passes the index's row limit.
"""

from __future__ import annotations

from operator import itemgetter

from pipelens.events import MAX_KEY_BYTES, cut
from pipelens_server._ingest._rows import STEPS, Row, Rows

_KEY, _STEP_ID, _PARENT_ID, _NAME, _START_NS, _PATH = (
    STEPS.column_names.index(n) for n in ("key", "step_id", "parent_id", "name", "start_ns", "path")
)
_START_ORDER = itemgetter(_START_NS, _STEP_ID)


def fill_paths(rows: Rows) -> None:
    """Give the steps of every whole trace of ``rows`` their path (``rows.pathed_runs``); the
    other runs are left to the database (``rows.path_runs``)."""
    runs: dict[str, list[Row]] = {}
    for (run_id, _), row in rows.steps.items():
        runs.setdefault(run_id, []).append(row)
    for run_id, steps in runs.items():
        if _fill(steps):
            rows.pathed_runs[run_id] = len(steps)
        else:
            rows.path_runs.add(run_id)


def _fill(steps: list[Row]) -> bool:
    """Fill the steps' paths, if they are a whole trace (else change nothing, answer False)."""
    by_id = {row[_STEP_ID]: row for row in steps}
    if len(by_id) != len(steps):  # a span id given twice
        return False
    children: dict[str | None, list[Row]] = {}
    for row in steps:
        parent = row[_PARENT_ID]
        if parent is not None and parent not in by_id:
            return False
        siblings = children.get(parent)
        if siblings is None:
            children[parent] = [row]
        else:
            siblings.append(row)
    if None not in children:  # no root: a cycle of parents
        return False
    paths: dict[str, str | None] = {}
    parents: list[str | None] = [None]
    while parents:
        parent_id = parents.pop()
        siblings = children[parent_id]
        # Siblings of one name are numbered in start order, then span id (as the SQL's
        # row_number(): span ids are hex of one length, ordered alike by any collation).
        siblings.sort(key=_START_ORDER)
        if parent_id is None:
            parent_key, parent_path = "", None
        else:
            parent_key = by_id[parent_id][_KEY]
            parent_path = paths[parent_id]
        below = parent_key if parent_path is None else parent_path
        seen: dict[tuple[str, bool], int] = {}
        for row in siblings:
            key, name, step_id = row[_KEY], row[_NAME], row[_STEP_ID]
            by_own_id = key.endswith("___" + step_id)
            n = seen.get((name, by_own_id), 0)
            seen[name, by_own_id] = n + 1
            path: str | None = None
            if by_own_id:
                segment = name.replace(".", "_") + (f"___{n}" if n else "")
                path = _capped(segment if parent_id is None else f"{below}.{segment}")
            elif parent_path is not None and key.startswith(parent_key + "."):
                # Below an id-keyed step our own keys extend its key: the path extends its path.
                path = _capped(parent_path + key[len(parent_key) :])
            paths[step_id] = path
            if step_id in children:
                parents.append(step_id)
    if len(paths) != len(steps):  # a cycle of parents, which no root reaches
        return False
    for row in steps:
        row[_PATH] = paths[row[_STEP_ID]]
    return True


def _capped(path: str) -> str:
    # Four bytes a character at most: most paths are known short without encoding them.
    return path if len(path) * 4 <= MAX_KEY_BYTES else cut(path, MAX_KEY_BYTES, unique=True)
