-- Deletions a reconciliation found but its guard held back: kept until a
-- person approves (they are applied) or rejects them (they are dropped).
CREATE TABLE staged_deletions (
    run_id      BIGINT NOT NULL,
    entity      TEXT COLLATE "C" NOT NULL,
    external_id TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (run_id, entity, external_id)
);
