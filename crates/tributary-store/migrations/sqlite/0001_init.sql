-- Tributary store, SQLite flavour. Timestamps are UTC RFC 3339 text with
-- microseconds ("2026-01-02T03:04:05.000000Z"), which sorts correctly.

CREATE TABLE connections (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    adapter     TEXT NOT NULL,
    base_url    TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE runs (
    id                  INTEGER PRIMARY KEY,
    connection_id       INTEGER NOT NULL REFERENCES connections (id),
    kind                TEXT NOT NULL,
    state               TEXT NOT NULL,
    idempotency_key     TEXT,
    started_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    finished_at         TEXT,
    pages               INTEGER NOT NULL DEFAULT 0,
    records_created     INTEGER NOT NULL DEFAULT 0,
    records_updated     INTEGER NOT NULL DEFAULT 0,
    records_unchanged   INTEGER NOT NULL DEFAULT 0,
    records_deleted     INTEGER NOT NULL DEFAULT 0,
    records_quarantined INTEGER NOT NULL DEFAULT 0,
    error               TEXT,
    UNIQUE (connection_id, idempotency_key)
);
CREATE INDEX runs_by_connection ON runs (connection_id, id);

CREATE TABLE checkpoints (
    run_id      INTEGER NOT NULL REFERENCES runs (id),
    entity      TEXT NOT NULL,
    cursor      TEXT NOT NULL,
    state       TEXT NOT NULL,
    pages       INTEGER NOT NULL DEFAULT 0,
    records     INTEGER NOT NULL DEFAULT 0,
    total       INTEGER,
    error       TEXT,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (run_id, entity)
);

CREATE TABLE records (
    id                INTEGER PRIMARY KEY,
    connection_id     INTEGER NOT NULL REFERENCES connections (id),
    entity            TEXT NOT NULL,
    external_id       TEXT NOT NULL,
    canonical_entity  TEXT NOT NULL,
    raw               TEXT NOT NULL,
    canonical         TEXT NOT NULL,
    content_hash      TEXT NOT NULL,
    source_updated_at TEXT,
    first_seen_at     TEXT NOT NULL,
    last_modified_at  TEXT NOT NULL,
    deleted_at        TEXT,
    last_run_id       INTEGER,
    UNIQUE (connection_id, entity, external_id)
);

CREATE TABLE edges (
    connection_id    INTEGER NOT NULL,
    from_entity      TEXT NOT NULL,
    from_external_id TEXT NOT NULL,
    rel              TEXT NOT NULL,
    to_entity        TEXT NOT NULL,
    to_external_id   TEXT NOT NULL,
    hard             INTEGER NOT NULL,
    PRIMARY KEY (connection_id, from_entity, from_external_id, rel, to_entity, to_external_id)
) WITHOUT ROWID;
CREATE INDEX edges_by_target ON edges (connection_id, to_entity, to_external_id);

CREATE TABLE changes (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    connection_id INTEGER NOT NULL,
    record_id     INTEGER NOT NULL,
    entity        TEXT NOT NULL,
    external_id   TEXT NOT NULL,
    kind          TEXT NOT NULL,
    content_hash  TEXT,
    run_id        INTEGER,
    changed_at    TEXT NOT NULL
);
CREATE INDEX changes_by_connection ON changes (connection_id, seq);

CREATE TABLE quarantine (
    id            INTEGER PRIMARY KEY,
    connection_id INTEGER NOT NULL,
    entity        TEXT NOT NULL,
    external_id   TEXT NOT NULL,
    run_id        INTEGER,
    raw           TEXT NOT NULL,
    error         TEXT NOT NULL,
    first_seen_at TEXT NOT NULL,
    last_seen_at  TEXT NOT NULL,
    UNIQUE (connection_id, entity, external_id)
);
