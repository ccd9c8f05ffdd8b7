-- Rollups (pipelens_server/_db/_rollup.py writes them, pipelens_server/_read/_rollup.py reads
-- them): the overview's run figures per pipeline and the step statistics per pipeline and step
-- key, per hour and per day, so that a page over 30 days sums a few hundred rows instead of every
-- run or step in the range. Durations go into fixed log-scale buckets, 8 per doubling (a bucket
-- spans a factor 2^(1/8), about 9 %), so a percentile over any set of hours is a sum of buckets.

-- The duration's bucket: floor(8 * log2(duration)), -1 for none (running). The epsilon keeps an
-- exact power of two in its own bucket despite the float logarithm.
CREATE FUNCTION pipelens_duration_bucket(duration_ns bigint) RETURNS smallint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE WHEN duration_ns IS NULL THEN -1
                ELSE floor(8 * ln(greatest(duration_ns, 1)::float8) / ln(2) + 1e-9)::smallint END;

-- The start of the hour holding a time (floored, also before 1970).
CREATE FUNCTION pipelens_hour(at_ns bigint) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN at_ns - ((at_ns % 3600000000000) + 3600000000000) % 3600000000000;

-- Every run and step as a rollup row of one: what the job sums per hour and what a read sums
-- over the partial hours at a range's edges, so that both count alike. An abandoned run's
-- duration is only how long it was heard of: it counts, but not in the duration figures.
CREATE VIEW rollup_source AS
SELECT 'step'::text AS kind, pipeline, key, start_ns,
       pipelens_duration_bucket(duration_ns) AS bucket, 1 AS n,
       (status = 'failed')::int AS failed, (status = 'running')::int AS running,
       (status = 'abandoned')::int AS abandoned,
       duration_ns AS dur_sum, duration_ns AS dur_min, duration_ns AS dur_max,
       start_ns AS first_ns, start_ns AS last_ns
FROM steps WHERE pipeline IS NOT NULL AND start_ns IS NOT NULL
UNION ALL
SELECT 'run'::text, pipeline, ''::text, start_ns,
       CASE WHEN status = 'abandoned' THEN -1 ELSE pipelens_duration_bucket(duration_ns) END, 1,
       (status = 'failed')::int, (status = 'running')::int, (status = 'abandoned')::int,
       d.ns, d.ns, d.ns, start_ns, start_ns
FROM runs CROSS JOIN LATERAL (
    SELECT CASE WHEN status = 'abandoned' THEN NULL ELSE duration_ns END AS ns
) d
WHERE pipeline IS NOT NULL AND start_ns IS NOT NULL;

-- One row per kind ('run' or 'step'), pipeline, key ('' for runs), span (an hour or a day: its
-- start and width) and duration bucket (-1: no duration; -2: the span's finished rows of every
-- bucket together, for the time series).
CREATE TABLE rollups (
    kind       text NOT NULL,
    pipeline   text NOT NULL,
    key        text NOT NULL,
    span_ns    bigint NOT NULL,
    start_ns   bigint NOT NULL,
    bucket     smallint NOT NULL,
    n          bigint NOT NULL,
    failed     bigint NOT NULL,
    running    bigint NOT NULL,
    abandoned  bigint NOT NULL,
    dur_sum    numeric,
    dur_min    bigint,
    dur_max    bigint,
    first_ns   bigint NOT NULL,
    last_ns    bigint NOT NULL,
    PRIMARY KEY (kind, pipeline, key, span_ns, start_ns, bucket)
);

-- Hours before ``sealed_until_ns`` have their rollups, except those listed in rollup_dirty (a
-- write into an hour that had ended when its transaction began): a read sums rows of raw data
-- for both. The job seals an hour once no transaction begun before its end is still open, so
-- that nothing written into it can be missed. The hour this migration runs in is not sealed.
CREATE TABLE rollup_state (
    only_row         boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    sealed_until_ns  bigint NOT NULL
);
INSERT INTO rollup_state (sealed_until_ns)
    VALUES (pipelens_hour((extract(epoch FROM now()) * 1000000000)::bigint));

-- Appended to, never updated (no conflict, so ingest transactions never wait on each other here);
-- the job deletes the rows it has seen and rolls their hours up again in the same transaction.
CREATE TABLE rollup_dirty (hour_ns bigint NOT NULL);
CREATE INDEX rollup_dirty_hour_idx ON rollup_dirty (hour_ns);
INSERT INTO rollup_dirty (hour_ns)
SELECT DISTINCT pipelens_hour(start_ns) FROM (
    SELECT start_ns FROM runs UNION ALL SELECT start_ns FROM steps
) t WHERE start_ns IS NOT NULL AND start_ns < (SELECT sealed_until_ns FROM rollup_state);

-- Statement triggers (one per operation: transition tables allow no more) note the hours a
-- write changed, unless the hour was still open when the writing transaction began: ingest of
-- live runs, nearly every write, notes nothing.
CREATE FUNCTION pipelens_rollup_dirty() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    open_ns bigint := pipelens_hour((extract(epoch FROM now()) * 1000000000)::bigint);
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO rollup_dirty (hour_ns)
        SELECT DISTINCT pipelens_hour(start_ns) FROM new_rows WHERE start_ns < open_ns;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO rollup_dirty (hour_ns)
        SELECT DISTINCT pipelens_hour(start_ns) FROM old_rows WHERE start_ns < open_ns;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER runs_rollup_insert AFTER INSERT ON runs REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pipelens_rollup_dirty();
CREATE TRIGGER runs_rollup_update AFTER UPDATE ON runs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pipelens_rollup_dirty();
CREATE TRIGGER runs_rollup_delete AFTER DELETE ON runs REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pipelens_rollup_dirty();
CREATE TRIGGER steps_rollup_insert AFTER INSERT ON steps REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pipelens_rollup_dirty();
CREATE TRIGGER steps_rollup_update AFTER UPDATE ON steps
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pipelens_rollup_dirty();
CREATE TRIGGER steps_rollup_delete AFTER DELETE ON steps REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pipelens_rollup_dirty();

-- Rolling an hour up reads its steps by start time: a BRIN index, a few pages for a table
-- written in time order, next to nothing at ingest (runs have runs_start_idx).
CREATE INDEX steps_start_brin_idx ON steps USING brin (start_ns) WITH (autosummarize = on);
