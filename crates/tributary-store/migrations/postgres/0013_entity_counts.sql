-- Per run and entity, what its pages did: records created (of them
-- restored), updated, unchanged and quarantined, and records deleted (a
-- reconciliation's, a webhook's, and their cascades).
ALTER TABLE checkpoints
    ADD COLUMN created BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN updated BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN unchanged BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN quarantined BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN restored BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN deleted BIGINT NOT NULL DEFAULT 0;
