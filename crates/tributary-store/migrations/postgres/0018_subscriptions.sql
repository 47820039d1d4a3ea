-- Webhooks out. A subscription sends a connection's changes (all its
-- entities, or one) and/or the ends of its runs to a URL, signed with its
-- own secret (sealed like credentials: the key is outside the database).
-- `cursor`: the last feed sequence number enqueued (moved in the
-- transaction that enqueues, so nothing is enqueued twice or skipped).
-- An identity: an id is never reused, so a removed subscription's id
-- never names another.
CREATE TABLE subscriptions (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    connection_id   BIGINT NOT NULL REFERENCES connections (id),
    entity          TEXT,
    url             TEXT NOT NULL,
    sealed_secret   BYTEA NOT NULL,
    wants_changes   BOOLEAN NOT NULL,
    wants_finished  BOOLEAN NOT NULL,
    state           TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'disabled')),
    disabled_reason TEXT,
    cursor          BIGINT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    updated_at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX subscriptions_by_connection ON subscriptions (connection_id, id);

-- The outbox: one row per message (a batch of changes, or a run's end),
-- its id (`msg_...`) the same on every attempt, its body rendered once.
-- A claim counts the attempt and moves `next_attempt_at` past the
-- attempt's lease, so no other process takes it meanwhile; a process that
-- dies mid-attempt leaves it to be claimed again once the lease is over.
-- Claims lock the rows they take (FOR UPDATE SKIP LOCKED): processes that
-- claim at once take different messages and never wait on each other.
CREATE TABLE subscription_messages (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscription_id BIGINT NOT NULL REFERENCES subscriptions (id),
    message_id      TEXT NOT NULL UNIQUE,
    event           TEXT NOT NULL,
    body            TEXT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'delivered', 'dead')),
    last_status     BIGINT,
    last_error      TEXT,
    created_at      TIMESTAMPTZ NOT NULL,
    delivered_at    TIMESTAMPTZ
);
CREATE INDEX subscription_messages_by_subscription
    ON subscription_messages (subscription_id, state, id);
CREATE INDEX subscription_messages_due ON subscription_messages (state, next_attempt_at);

-- Runs that ended, per subscription that wants `sync.finished`, written
-- in the transaction that ends the run and deleted in the one that
-- enqueues its message: each end is told once.
CREATE TABLE subscription_finishes (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subscription_id BIGINT NOT NULL,
    run_id          BIGINT NOT NULL,
    state           TEXT NOT NULL,
    finished_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX subscription_finishes_by_subscription
    ON subscription_finishes (subscription_id, id);
