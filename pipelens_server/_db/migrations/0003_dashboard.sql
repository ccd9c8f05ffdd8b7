-- The dashboard's runs list: one pipeline's runs newest first, optionally of one status, paged by
-- keyset on (start_ns, run_id) descending (0001's indexes order run_id ascending, which a row
-- comparison cannot use).
CREATE INDEX runs_pipeline_start_desc_idx ON runs (pipeline, start_ns DESC, run_id DESC);
CREATE INDEX runs_pipeline_status_start_desc_idx
    ON runs (pipeline, status, start_ns DESC, run_id DESC);
