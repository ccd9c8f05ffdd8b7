"""The schema stays distributable by ``run_id`` (Citus; docs/scaling.md): every table that holds
rows of runs has ``run_id`` in its primary key and in each of its unique indexes, and every
other table is a small one named here, with the reason it need not be distributed."""

from __future__ import annotations

import psycopg

#: Tables without ``run_id``: what they hold, and so why they can be Citus reference tables
#: (copied to every node) or stay on the coordinator.
NOT_BY_RUN = {
    "pipelines": "one row per pipeline name",
    "retention": "one row per pipeline with its own retention",
    "retention_default": "one row",
    "rollup_state": "one row",
    "rollup_dirty": "the hours written into since the last rollup round: a few rows",
    "rollups": "per pipeline, step key and hour or day: grows with time, not with runs",
    "schema_migrations": "one row per migration file",
    "sessions": "one row per dashboard login",
}

_UNIQUE_KEYS = """
    SELECT t.relname, i.relname, array_agg(a.attname::text ORDER BY a.attname)
    FROM pg_index x
    JOIN pg_class t ON t.oid = x.indrelid
    JOIN pg_class i ON i.oid = x.indexrelid
    JOIN pg_namespace n ON n.oid = t.relnamespace
    LEFT JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = ANY(x.indkey)
    WHERE n.nspname = 'public' AND x.indisunique
    GROUP BY t.relname, i.relname
"""
_TABLES_WITH_RUN_ID = """
    SELECT c.relname, bool_or(a.attname = 'run_id')
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
    GROUP BY c.relname
"""


def test_every_table_is_keyed_by_run_id_or_named_as_small(database_url: str) -> None:
    """Each unique index of a table with ``run_id`` includes it (a distributed table's unique
    constraints must hold its distribution column); the tables without it are those named."""
    with psycopg.connect(database_url) as conn:
        tables = dict(conn.execute(_TABLES_WITH_RUN_ID).fetchall())
        unique = conn.execute(_UNIQUE_KEYS).fetchall()
    by_run = {name for name, has_run_id in tables.items() if has_run_id}
    assert {"runs", "steps", "scores"} <= by_run
    assert {name for name, has_run_id in tables.items() if not has_run_id} == set(NOT_BY_RUN)
    without_run_id = [
        (table, index, columns)
        for table, index, columns in unique
        if table in by_run and "run_id" not in columns
    ]
    assert without_run_id == []
    assert {table for table, _, _ in unique} >= by_run  # each has a key at all
