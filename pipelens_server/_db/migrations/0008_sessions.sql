-- Dashboard sessions (pipelens_server/_pages/_sessions.py): one row per login, deleted at logout,
-- so a session can end before its cookie does. The cookie holds a random id; the table keeps only
-- its SHA-256 (a copy of the table opens no session) and a tag of the token that opened it
-- (changing the server's token ends every session).
CREATE TABLE sessions (
    id_hash     bytea PRIMARY KEY,
    token_tag   text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX sessions_expires_idx ON sessions (expires_at);
