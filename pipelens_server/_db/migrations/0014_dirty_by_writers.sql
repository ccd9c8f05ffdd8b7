-- The hours a write changed after they ended are noted by the writers themselves (ingest,
-- retention, the abandoned-run check: ``_db._rollup.NOTE_DIRTY``) from the rows their
-- statements return, instead of by migration 0013's statement triggers: a trigger's transition
-- tables hold every whole row a statement wrote (old and new for an update), which spilled to
-- disk on large statements and slowed every batch of ingest (the benchmark's 100k-run load went
-- from 169 to 230 s). A write by hand into ``runs`` or ``steps`` in an hour already rolled up
-- must note that hour too (INSERT INTO rollup_dirty), or the overview reads the old sums.
DROP TRIGGER runs_rollup_insert ON runs;
DROP TRIGGER runs_rollup_update ON runs;
DROP TRIGGER runs_rollup_delete ON runs;
DROP TRIGGER steps_rollup_insert ON steps;
DROP TRIGGER steps_rollup_update ON steps;
DROP TRIGGER steps_rollup_delete ON steps;
DROP FUNCTION pipelens_rollup_dirty();

-- The hour the current transaction began in: writes into it or later note nothing, since the
-- job seals an hour only once no transaction begun before its end is still open.
CREATE FUNCTION pipelens_open_hour() RETURNS bigint
    LANGUAGE sql STABLE PARALLEL SAFE
    RETURN pipelens_hour((extract(epoch FROM now()) * 1000000000)::bigint);
