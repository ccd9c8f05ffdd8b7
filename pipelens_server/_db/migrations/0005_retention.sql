-- Retention: how many days a pipeline's runs are kept before the periodic purge deletes them
-- (pipelens_server/_retention.py). One server-wide default (14 days, like the seed's) and an
-- optional override per pipeline; a pipeline without a row uses the default.
CREATE TABLE retention_default (
    only_row    boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    days        integer NOT NULL CHECK (days BETWEEN 1 AND 3650),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO retention_default (days) VALUES (14);

CREATE TABLE retention (
    pipeline    text PRIMARY KEY REFERENCES pipelines (name) ON DELETE CASCADE,
    days        integer NOT NULL CHECK (days BETWEEN 1 AND 3650),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The purge finds the runs whose pipeline is not yet known (their steps came first) without a scan.
CREATE INDEX runs_unnamed_idx ON runs (run_id) WHERE pipeline IS NULL;
