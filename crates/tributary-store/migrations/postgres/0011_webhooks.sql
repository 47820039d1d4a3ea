-- Webhooks in. A connection's secrets, sealed like its credentials (the
-- key is outside the database); `event`: the one event a secret signs
-- (PCO: one secret per subscription), NULL for any.
CREATE TABLE webhook_secrets (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    connection_id BIGINT NOT NULL REFERENCES connections (id),
    event         TEXT,
    sealed        BYTEA NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX webhook_secrets_by_connection ON webhook_secrets (connection_id, id);

-- The inbox: every verified delivery, committed before its 2xx, once per
-- sender id (a retry of one is a duplicate), kept past the senders' retry
-- horizon.
CREATE TABLE webhook_deliveries (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    connection_id   BIGINT NOT NULL REFERENCES connections (id),
    delivery_id     TEXT NOT NULL,
    event           TEXT NOT NULL,
    sent_at         TIMESTAMPTZ,
    received_at     TIMESTAMPTZ NOT NULL,
    payload         TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'applied', 'dead')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ,
    error           TEXT,
    applied_at      TIMESTAMPTZ,
    UNIQUE (connection_id, delivery_id)
);
CREATE INDEX webhook_deliveries_by_state ON webhook_deliveries (state, id);
