-- What a server process keeps of the rollups between two reads (the overview's bars of the
-- rolled-up days, pipelens_server/_read/_pictures.py) is keyed by this number, which every
-- statement changing ``rollups`` raises: a statement-level trigger (one UPDATE per statement of
-- the rollup job, never per row), so that no writer can forget it, TRUNCATE included. The
-- reads key it with the database's oid and the server's start time too: a copy of a database
-- (CREATE DATABASE ... TEMPLATE, a restored dump) starts with the same number.
ALTER TABLE rollup_state ADD COLUMN generation bigint NOT NULL DEFAULT 0;

CREATE FUNCTION pipelens_rollups_changed() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    UPDATE rollup_state SET generation = generation + 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER rollups_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON rollups
    FOR EACH STATEMENT EXECUTE FUNCTION pipelens_rollups_changed();
