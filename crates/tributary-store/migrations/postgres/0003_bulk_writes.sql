-- Bulk writes: a record's connection is no longer checked by a foreign key.
-- The check ran a trigger and a query per inserted record (about a tenth of
-- the server's work in a full sync); records are created only by page
-- commits of a connection that exists, and leave only with it
-- (`remove_connection`, one transaction). Runs and checkpoints keep theirs:
-- one row per run or entity, not per record.
ALTER TABLE records DROP CONSTRAINT IF EXISTS records_connection_id_fkey;
