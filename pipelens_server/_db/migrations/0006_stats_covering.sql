-- The step stats page reads tens of thousands of steps of one key: with their duration, status
-- and run in the index, its queries are index-only scans instead of one table page per step.
DROP INDEX steps_pipeline_key_start_idx;
CREATE INDEX steps_pipeline_key_start_idx ON steps (pipeline, key, start_ns)
    INCLUDE (duration_ns, status, run_id);
