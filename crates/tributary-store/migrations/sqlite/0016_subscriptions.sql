-- Webhooks out. A subscription sends a connection's changes (all its
-- entities, or one) and/or the ends of its runs to a URL, signed with its
-- own secret (sealed like credentials: the key is outside the database).
-- `cursor`: the last feed sequence number enqueued (moved in the
-- transaction that enqueues, so nothing is enqueued twice or skipped).
-- AUTOINCREMENT: an id is never reused, so a removed subscription's id
-- never names another.
CREATE TABLE subscriptions (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    connection_id   INTEGER NOT NULL REFERENCES connections (id),
    entity          TEXT,
    url             TEXT NOT NULL,
    sealed_secret   BLOB NOT NULL,
    wants_changes   INTEGER NOT NULL,
    wants_finished  INTEGER NOT NULL,
    state           TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'disabled')),
    disabled_reason TEXT,
    cursor          INTEGER NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX subscriptions_by_connection ON subscriptions (connection_id, id);

-- The outbox: one row per message (a batch of changes, or a run's end),
-- its id (`msg_...`) the same on every attempt, its body rendered once.
-- A claim counts the attempt and moves `next_attempt_at` past the
-- attempt's lease, so no other process takes it meanwhile; a process that
-- dies mid-attempt leaves it to be claimed again once the lease is over.
CREATE TABLE subscription_messages (
    id              INTEGER PRIMARY KEY,
    subscription_id INTEGER NOT NULL REFERENCES subscriptions (id),
    message_id      TEXT NOT NULL UNIQUE,
    event           TEXT NOT NULL,
    body            TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'delivered', 'dead')),
    last_status     INTEGER,
    last_error      TEXT,
    created_at      TEXT NOT NULL,
    delivered_at    TEXT
);
CREATE INDEX subscription_messages_by_subscription
    ON subscription_messages (subscription_id, state, id);
CREATE INDEX subscription_messages_due ON subscription_messages (state, next_attempt_at);

-- Runs that ended, per subscription that wants `sync.finished`, written
-- in the transaction that ends the run and deleted in the one that
-- enqueues its message: each end is told once.
CREATE TABLE subscription_finishes (
    id              INTEGER PRIMARY KEY,
    subscription_id INTEGER NOT NULL,
    run_id          INTEGER NOT NULL,
    state           TEXT NOT NULL,
    finished_at     TEXT NOT NULL
);
CREATE INDEX subscription_finishes_by_subscription
    ON subscription_finishes (subscription_id, id);
