-- Per run and entity, what its pages did: records created (of them
-- restored), updated, unchanged and quarantined, and records deleted (a
-- reconciliation's, a webhook's, and their cascades).
ALTER TABLE checkpoints ADD COLUMN created INTEGER NOT NULL DEFAULT 0;
ALTER TABLE checkpoints ADD COLUMN updated INTEGER NOT NULL DEFAULT 0;
ALTER TABLE checkpoints ADD COLUMN unchanged INTEGER NOT NULL DEFAULT 0;
ALTER TABLE checkpoints ADD COLUMN quarantined INTEGER NOT NULL DEFAULT 0;
ALTER TABLE checkpoints ADD COLUMN restored INTEGER NOT NULL DEFAULT 0;
ALTER TABLE checkpoints ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
