-- Scores and feedback on a run or one of its steps (pipelens.score, POST /api/v1/runs/{id}/scores,
-- the run page's form). Keyed by run like every table, so it distributes with runs; the giver's
-- score_id makes a resent score a no-op. A numeric score is value_number; a boolean one too
-- (1 or 0, so that its mean is the pass rate); a categorical one value_text. No foreign key: a
-- score may arrive before its run, and retention deletes a run's scores with it.
CREATE TABLE scores (
    run_id text NOT NULL,
    score_id text NOT NULL,
    name text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('numeric', 'boolean', 'categorical')),
    value_number double precision,
    value_text text,
    comment text,
    step_key text,
    source text NOT NULL,
    at_ns bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, score_id)
);
-- The runs filter (score=name...) and a pipeline's scores by name.
CREATE INDEX scores_name_run_idx ON scores (name, run_id);
