-- A run's figures beyond its records: deleted records seen again (brought
-- back), the API requests it made and the retries it spent.
ALTER TABLE runs ADD COLUMN records_restored INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN requests INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN retries INTEGER NOT NULL DEFAULT 0;
