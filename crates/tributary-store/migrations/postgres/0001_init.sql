-- Tributary store, PostgreSQL flavour.

CREATE TABLE connections (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    adapter     TEXT NOT NULL,
    base_url    TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE runs (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    connection_id       BIGINT NOT NULL REFERENCES connections (id),
    kind                TEXT NOT NULL,
    state               TEXT NOT NULL,
    idempotency_key     TEXT,
    started_at          TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL,
    finished_at         TIMESTAMPTZ,
    pages               BIGINT NOT NULL DEFAULT 0,
    records_created     BIGINT NOT NULL DEFAULT 0,
    records_updated     BIGINT NOT NULL DEFAULT 0,
    records_unchanged   BIGINT NOT NULL DEFAULT 0,
    records_deleted     BIGINT NOT NULL DEFAULT 0,
    records_quarantined BIGINT NOT NULL DEFAULT 0,
    error               TEXT,
    UNIQUE (connection_id, idempotency_key)
);
CREATE INDEX runs_by_connection ON runs (connection_id, id);

CREATE TABLE checkpoints (
    run_id      BIGINT NOT NULL REFERENCES runs (id),
    entity      TEXT NOT NULL,
    cursor      JSONB NOT NULL,
    state       TEXT NOT NULL,
    pages       BIGINT NOT NULL DEFAULT 0,
    records     BIGINT NOT NULL DEFAULT 0,
    total       BIGINT,
    error       TEXT,
    updated_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (run_id, entity)
);

CREATE TABLE records (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    connection_id     BIGINT NOT NULL REFERENCES connections (id),
    entity            TEXT NOT NULL,
    external_id       TEXT NOT NULL,
    canonical_entity  TEXT NOT NULL,
    raw               JSONB NOT NULL,
    canonical         JSONB NOT NULL,
    content_hash      TEXT NOT NULL,
    source_updated_at TIMESTAMPTZ,
    first_seen_at     TIMESTAMPTZ NOT NULL,
    last_modified_at  TIMESTAMPTZ NOT NULL,
    deleted_at        TIMESTAMPTZ,
    last_run_id       BIGINT,
    UNIQUE (connection_id, entity, external_id)
);

CREATE TABLE edges (
    connection_id    BIGINT NOT NULL,
    from_entity      TEXT NOT NULL,
    from_external_id TEXT NOT NULL,
    rel              TEXT NOT NULL,
    to_entity        TEXT NOT NULL,
    to_external_id   TEXT NOT NULL,
    hard             BOOLEAN NOT NULL,
    PRIMARY KEY (connection_id, from_entity, from_external_id, rel, to_entity, to_external_id)
);
CREATE INDEX edges_by_target ON edges (connection_id, to_entity, to_external_id);

CREATE TABLE changes (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    connection_id BIGINT NOT NULL,
    record_id     BIGINT NOT NULL,
    entity        TEXT NOT NULL,
    external_id   TEXT NOT NULL,
    kind          TEXT NOT NULL,
    content_hash  TEXT,
    run_id        BIGINT,
    changed_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX changes_by_connection ON changes (connection_id, seq);

CREATE TABLE quarantine (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    connection_id BIGINT NOT NULL,
    entity        TEXT NOT NULL,
    external_id   TEXT NOT NULL,
    run_id        BIGINT,
    raw           JSONB NOT NULL,
    error         TEXT NOT NULL,
    first_seen_at TIMESTAMPTZ NOT NULL,
    last_seen_at  TIMESTAMPTZ NOT NULL,
    UNIQUE (connection_id, entity, external_id)
);
