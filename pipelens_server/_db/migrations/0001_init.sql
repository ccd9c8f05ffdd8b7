-- Pipelines, runs and steps. Times are nanoseconds since the Unix epoch (bigint); captured values
-- (inputs, result, records, attributes) are jsonb. See pipelens_server/_rows.py for how rows that
-- arrive in pieces, in any order and more than once, are merged.

CREATE TABLE pipelines (
    name        text PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE runs (
    run_id           text PRIMARY KEY,
    pipeline         text,  -- NULL until a run event names it (its steps may arrive first)
    status           text NOT NULL DEFAULT 'running'
                     CHECK (status IN ('running', 'completed', 'failed', 'cancelled')),
    start_ns         bigint,
    end_ns           bigint,
    duration_ns      bigint,
    error_type       text,
    error_message    text,
    error_traceback  text,
    step_count       integer,
    dropped_events   bigint,
    attributes       jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- The run list: newest first, optionally for one pipeline or one status.
CREATE INDEX runs_start_idx ON runs (start_ns DESC NULLS LAST, run_id);
CREATE INDEX runs_pipeline_start_idx ON runs (pipeline, start_ns DESC NULLS LAST, run_id);
CREATE INDEX runs_status_start_idx ON runs (status, start_ns DESC NULLS LAST, run_id);

CREATE TABLE steps (
    run_id           text NOT NULL,
    key              text NOT NULL,
    pipeline         text,  -- copied from the run once known, for step statistics
    step_id          text NOT NULL,
    parent_id        text,
    name             text NOT NULL,
    kind             text NOT NULL DEFAULT 'step',
    status           text NOT NULL
                     CHECK (status IN ('running', 'completed', 'failed', 'cancelled')),
    start_ns         bigint,
    end_ns           bigint,
    duration_ns      bigint,
    inputs           jsonb,
    result           jsonb,
    records          jsonb,
    error_type       text,
    error_message    text,
    error_traceback  text,
    PRIMARY KEY (run_id, key)
);

-- Step statistics: durations of one step of one pipeline over time.
CREATE INDEX steps_pipeline_key_start_idx ON steps (pipeline, key, start_ns);

-- The merge order of statuses: a finished step or run never goes back to running, and when two
-- final statuses meet (a step reported twice differently) the worse one wins, whatever the order.
CREATE FUNCTION pipelens_status_rank(status text) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
        SELECT CASE status
            WHEN 'running' THEN 0
            WHEN 'completed' THEN 1
            WHEN 'cancelled' THEN 2
            WHEN 'failed' THEN 3
            ELSE -1
        END
    $$;
