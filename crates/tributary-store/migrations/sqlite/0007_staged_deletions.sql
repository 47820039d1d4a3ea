-- Deletions a reconciliation found but its guard held back: kept until a
-- person approves (they are applied) or rejects them (they are dropped).
CREATE TABLE staged_deletions (
    run_id      INTEGER NOT NULL,
    entity      TEXT NOT NULL,
    external_id TEXT NOT NULL,
    PRIMARY KEY (run_id, entity, external_id)
) WITHOUT ROWID;
