-- The API's access and its audit trail.
--
-- API tokens: only a token's SHA-256 is kept (a token is 32 random bytes,
-- so a hash is as good as a password hash here and can be looked up); the
-- token itself is shown once, when it is created. `role`: `admin` may do
-- everything, `read` only reads.
CREATE TABLE api_tokens (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    role       TEXT NOT NULL CHECK (role IN ('admin', 'read')),
    hash       TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);

-- Which records each applied webhook delivery named: with the delivery's
-- run, the audit trail names the delivery behind a change.
CREATE TABLE webhook_subjects (
    connection_id INTEGER NOT NULL,
    entity        TEXT NOT NULL,
    external_id   TEXT NOT NULL,
    delivery_id   INTEGER NOT NULL,
    PRIMARY KEY (connection_id, entity, external_id, delivery_id)
) WITHOUT ROWID;

-- A record's changes, for its audit trail.
CREATE INDEX changes_by_record ON changes (record_id, seq);
