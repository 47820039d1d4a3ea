-- Per connection, when `serve` runs its syncs: a delta every N seconds and
-- a reconciliation by a cron expression (UTC). `*_next_at` is the next slot;
-- a process fires a slot by moving it on with a compare-and-swap, so two
-- processes never fire the same slot, and a slot missed while no process
-- ran fires once.
CREATE TABLE schedules (
    connection_id     BIGINT PRIMARY KEY,
    delta_every_secs  BIGINT,
    delta_next_at     TIMESTAMPTZ,
    reconcile_cron    TEXT,
    reconcile_next_at TIMESTAMPTZ,
    updated_at        TIMESTAMPTZ NOT NULL
);
