-- The runs page's step-name search: an EXISTS on the run's steps, answered per run from this
-- index (a common name: the newest runs are checked one by one) or started from the few matching
-- steps (a rare one). Record-value searches get no index on purpose: a GIN index on records about
-- doubled PostgreSQL's insert cost per step, and ingest speed comes first; they read the steps of
-- the runs in the page's range, newest first, until the page is full.
CREATE INDEX steps_name_run_idx ON steps (name, run_id);
