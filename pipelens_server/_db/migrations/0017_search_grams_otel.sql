-- Migration 0015's trigrams, cheaper to make, and without OTel's bookkeeping: every OTLP span's
-- records hold ``otel.span_kind`` (one of five words) and ``otel.scope`` (the instrumentation
-- library's name), the same on most spans, and nobody looks a run up by them as text; their
-- trigrams were most of what PostgreSQL spent storing a span (about 20 µs of 0015's function
-- and index entries a span, against 1 µs for the row). They stay in the records (the API shows
-- them, ``record_key=otel.scope`` still finds them); the text search (``q``) passes them over,
-- in its index and in its check alike (``_read/_search.py``).
--
-- The rebuild reads every step that has an error message or records, once, in the migration's
-- transaction (ingest waits for it): 16 s at 1,000,000 such steps (half OTLP spans, half steps
-- with three string records) on a busy 2-core machine, about 16 µs a step.

-- The records the text search reads: all but OTel's bookkeeping (only an object has keys).
CREATE FUNCTION pipelens_searched_records(records jsonb) RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    AS $$
    SELECT CASE WHEN jsonb_typeof(records) = 'object'
        THEN records - '{otel.span_kind,otel.scope}'::text[] ELSE records END
    $$;

DROP INDEX steps_search_grams_idx;

-- As 0015's, over the searched records. Every statement is a plpgsql simple expression (0015's
-- ARRAY(SELECT ... FROM jsonb_path_query(...)) was a query, run through SPI, for each step):
-- about half the cost for records with few strings.
CREATE OR REPLACE FUNCTION pipelens_search_grams(error_message text, records jsonb)
    RETURNS text[]
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    SET search_path FROM CURRENT
    AS $$
DECLARE
    strings jsonb;
    total integer := 0;
    grams text[] := '{}';
    item text;
BEGIN
    IF error_message IS NOT NULL THEN
        total := length(error_message);
        IF total > 4096 THEN
            RETURN ARRAY[''];
        END IF;
        grams := pipelens_grams(error_message);
    END IF;
    IF records IS NULL THEN
        RETURN grams;
    END IF;
    strings := jsonb_path_query_array(
        pipelens_searched_records(records), 'strict $.** ? (@.type() == "string")'
    );
    FOR i IN 0 .. jsonb_array_length(strings) - 1 LOOP
        item := strings ->> i;
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
