-- Who and why of a run (pipelens.tag / pipelens.set_run): its tags (a JSON array of strings),
-- user and session; its metadata is the existing attributes column. The runs list filters on
-- each: GIN indexes answer containment (tags @> '["nightly"]', attributes @> '{"plan": "pro"}'),
-- btree ones a user's or a session's runs in time order (the session page).
ALTER TABLE runs ADD COLUMN tags jsonb;
ALTER TABLE runs ADD COLUMN user_id text;
ALTER TABLE runs ADD COLUMN session_id text;
CREATE INDEX runs_tags_idx ON runs USING gin (tags jsonb_path_ops) WHERE tags IS NOT NULL;
CREATE INDEX runs_attributes_idx ON runs USING gin (attributes jsonb_path_ops)
    WHERE attributes IS NOT NULL;
CREATE INDEX runs_user_start_idx ON runs (user_id, start_ns DESC, run_id DESC)
    WHERE user_id IS NOT NULL;
CREATE INDEX runs_session_start_idx ON runs (session_id, start_ns, run_id)
    WHERE session_id IS NOT NULL;
