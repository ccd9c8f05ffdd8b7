-- Abandoned runs (pipelens_server/_db/_abandon.py): a running run the server heard nothing of
-- (no event, no heartbeat) for --abandon-after seconds turns 'abandoned', with its open steps.
ALTER TABLE runs DROP CONSTRAINT runs_status_check;
ALTER TABLE runs ADD CONSTRAINT runs_status_check
    CHECK (status IN ('running', 'abandoned', 'completed', 'failed', 'cancelled'));
ALTER TABLE steps DROP CONSTRAINT steps_status_check;
ALTER TABLE steps ADD CONSTRAINT steps_status_check
    CHECK (status IN ('running', 'abandoned', 'completed', 'failed', 'cancelled'));

-- When the server last heard of the run (its clock, nanoseconds since the epoch): set on insert,
-- moved forward by every later event or heartbeat while the run is running. Added without a
-- default, then given one, so that the table is not rewritten; running runs start from their
-- last update.
ALTER TABLE runs ADD COLUMN last_seen_ns bigint;
UPDATE runs SET last_seen_ns = (extract(epoch FROM updated_at) * 1000000000)::bigint
    WHERE status = 'running';
ALTER TABLE runs ALTER COLUMN last_seen_ns
    SET DEFAULT (extract(epoch FROM clock_timestamp()) * 1000000000)::bigint;

-- The periodic check reads only running runs, oldest heard of first; and the open steps of
-- abandoned runs (a late start). Both are a small part of their tables.
CREATE INDEX runs_running_seen_idx ON runs (last_seen_ns) WHERE status = 'running';
CREATE INDEX steps_running_idx ON steps (run_id) WHERE status = 'running';

-- The merge order gains 'abandoned' between running and the final statuses: a late finish
-- still wins, a late start never reopens (mirrors _ingest/_rows.py STATUS_RANK).
CREATE OR REPLACE FUNCTION pipelens_status_rank(status text) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
        SELECT CASE status
            WHEN 'running' THEN 0
            WHEN 'abandoned' THEN 1
            WHEN 'completed' THEN 2
            WHEN 'cancelled' THEN 3
            WHEN 'failed' THEN 4
            ELSE -1
        END
    $$;
