-- The change feed's order is the commit order. `seq` is drawn when a row
-- is inserted, so two transactions can commit in the other order: a
-- reader that has passed seq N could later miss a row with a lower seq
-- committed after it. Each row therefore gets its feed position `pos`
-- only once it is committed: a sequencer (one at a time, under an
-- advisory lock) numbers the committed rows that have none, after every
-- position given before. A reader follows `pos`; a row never appears
-- below a position a reader has passed.

ALTER TABLE changes ADD COLUMN pos BIGINT;
UPDATE changes SET pos = seq;
CREATE UNIQUE INDEX changes_by_pos ON changes (pos);
CREATE INDEX changes_by_connection_pos ON changes (connection_id, pos);
CREATE INDEX changes_unsequenced ON changes (seq) WHERE pos IS NULL;
DROP INDEX changes_by_connection;
