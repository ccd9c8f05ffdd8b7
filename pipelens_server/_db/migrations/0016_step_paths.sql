-- Name paths for steps whose key had to be made of their own id: an OTLP span's key is
-- ``name___<span id>`` (a span alone cannot know its ancestors' names nor its siblings, and a
-- key is the row's identity, so it must come out the same whatever order spans arrive in), and
-- a part of a run continued in another process is ``[parent key.]name___<step id>``. Their
-- ``path`` is the key our own client would have given them: the parent's path, a dot, the
-- step's name (dots made underscores), and ``___1``, ``___2`` for the second and later siblings
-- of that name in start order (then span id). NULL: the key is the path. Step statistics,
-- the rollups and compare group steps by ``coalesce(path, key)``.
--
-- A path depends on other rows (the ancestors, the siblings). The ingest computes it in Python
-- for a trace that comes whole in one request into a run holding nothing else
-- (``_ingest/_otlp_paths.py``, the same rule), and otherwise over the run's steps once the
-- request's rows are in (``pipelens_fill_step_paths``): once every span has come, in whatever
-- order and however often, the paths are the same.

ALTER TABLE steps ADD COLUMN path text;

-- A path capped as a client caps a key (``pipelens.events.cut`` at MAX_KEY_BYTES, 1536, with a
-- digest: the first 6 bytes of the SHA-256 of the whole text), level by level: a deep trace of
-- long names grows no path without bound, nor past the index's row limit. The kept bytes end
-- before the character the cut falls in (its first byte is not a 10xxxxxx continuation byte).
CREATE FUNCTION pipelens_capped_path(path text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$
    SELECT CASE WHEN octet_length(path) <= 1536 THEN path ELSE (
        SELECT convert_from(substring(b FROM 1 FOR (
                   SELECT max(i) FROM generate_series(n - 3, n) i
                   WHERE get_byte(b, i) & 192 <> 128
               )), 'UTF8') || tail
        FROM (SELECT convert_to(path, 'UTF8') AS b,
                     '~' || left(encode(sha256(convert_to(path, 'UTF8')), 'hex'), 12)
                         || '…[truncated]' AS tail) t
        CROSS JOIN LATERAL (SELECT 1536 - octet_length(tail) AS n) m
    ) END
    $$;

-- It answers the start times of the steps whose path it changed (their hours' rollups change).
CREATE FUNCTION pipelens_fill_step_paths(run_ids text[]) RETURNS SETOF bigint
    LANGUAGE sql VOLATILE
    AS $$
    WITH RECURSIVE own AS MATERIALIZED (
        SELECT s.run_id, s.key, s.step_id, s.parent_id, s.name, s.start_ns, s.path,
               right(s.key, length(s.step_id) + 3) = '___' || s.step_id AS by_id,
               -- One row per step id is followed down (ids should be unique in a run; a
               -- repeated one must not multiply its subtree).
               row_number() OVER (PARTITION BY s.run_id, s.step_id ORDER BY s.key) = 1 AS first
        FROM steps s WHERE s.run_id = ANY(run_ids)
    ), named AS MATERIALIZED (
        SELECT o.*,
               replace(o.name, '.', '_') || CASE WHEN o.n = 0 THEN '' ELSE '___' || o.n END
                   AS segment
        FROM (
            SELECT own.*, row_number() OVER (
                PARTITION BY run_id, parent_id, name, by_id
                ORDER BY start_ns NULLS LAST, step_id
            ) - 1 AS n
            FROM own
        ) o
    ), tree AS (
        -- The roots: no parent, or a parent not stored in the run (another process's step, an
        -- OTel span of another program, an ancestor that has not come yet).
        SELECT c.run_id, c.key, c.step_id, c.first,
               CASE WHEN c.by_id THEN pipelens_capped_path(c.segment) END AS path
        FROM named c
        WHERE c.parent_id IS NULL OR NOT EXISTS (
            SELECT 1 FROM own p WHERE p.run_id = c.run_id AND p.step_id = c.parent_id
        )
        UNION ALL
        SELECT c.run_id, c.key, c.step_id, c.first,
               CASE
                   WHEN c.by_id THEN pipelens_capped_path(coalesce(t.path, t.key) || '.' || c.segment)
                   -- Below an id-keyed step our own keys extend its key: the path extends its path.
                   WHEN t.path IS NOT NULL AND left(c.key, length(t.key) + 1) = t.key || '.'
                       THEN pipelens_capped_path(t.path || substr(c.key, length(t.key) + 1))
               END
        FROM tree t JOIN named c ON c.run_id = t.run_id AND c.parent_id = t.step_id
        WHERE t.first
    )
    UPDATE steps s SET path = tree.path
    FROM tree
    WHERE s.run_id = tree.run_id AND s.key = tree.key AND s.path IS DISTINCT FROM tree.path
    RETURNING s.start_ns
    $$;

-- What the rollups sum: a step's path where it has one.
CREATE OR REPLACE VIEW rollup_source AS
SELECT 'step'::text AS kind, pipeline, coalesce(path, key) AS key, start_ns,
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

-- Step statistics read one pipeline's steps of one path over time. The planner takes an
-- index-only scan of an expression only when the columns it is made of are in the index too,
-- but ``path`` and ``key`` beside the expression would hold a long key twice and pass btree's
-- row limit (2,704 bytes) for a key at MAX_KEY_BYTES: the read visits the rows (a bitmap heap
-- scan), only on the raw hours at a range's edges (the rest is read from the rollups).
DROP INDEX steps_pipeline_key_start_idx;
CREATE INDEX steps_pipeline_path_start_idx ON steps (pipeline, (coalesce(path, key)), start_ns)
    INCLUDE (duration_ns, status, run_id);

-- The steps stored before this migration; the hours holding those whose path it gave are
-- rolled up again (noted as the writers note theirs, migration 0014).
INSERT INTO rollup_dirty (hour_ns)
SELECT DISTINCT pipelens_hour(start_ns) FROM pipelens_fill_step_paths((
    SELECT array_agg(DISTINCT run_id) FROM steps
    WHERE right(key, length(step_id) + 3) = '___' || step_id
)) AS f(start_ns)
WHERE start_ns < (SELECT pipelens_open_hour());
