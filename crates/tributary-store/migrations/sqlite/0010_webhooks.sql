-- Webhooks in. A connection's secrets, sealed like its credentials (the
-- key is outside the database); `event`: the one event a secret signs
-- (PCO: one secret per subscription), NULL for any.
CREATE TABLE webhook_secrets (
    id            INTEGER PRIMARY KEY,
    connection_id INTEGER NOT NULL REFERENCES connections (id),
    event         TEXT,
    sealed        BLOB NOT NULL,
    created_at    TEXT NOT NULL
);
CREATE INDEX webhook_secrets_by_connection ON webhook_secrets (connection_id, id);

-- The inbox: every verified delivery, committed before its 2xx, once per
-- sender id (a retry of one is a duplicate), kept past the senders' retry
-- horizon.
CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY,
    connection_id   INTEGER NOT NULL REFERENCES connections (id),
    delivery_id     TEXT NOT NULL,
    event           TEXT NOT NULL,
    sent_at         TEXT,
    received_at     TEXT NOT NULL,
    payload         TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'applied', 'dead')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT,
    error           TEXT,
    applied_at      TEXT,
    UNIQUE (connection_id, delivery_id)
);
CREATE INDEX webhook_deliveries_by_state ON webhook_deliveries (state, id);
