-- The records API and full-text search.
--
-- `record_versions`: each record's version, the feed sequence number of
-- its latest change. Records are paged in version order, so a record
-- that changes while a client pages moves behind every version handed
-- out before, and a client's cursor is a feed position. The row is kept
-- by a trigger on `changes` (every feed row, whatever wrote it), in the
-- statement that writes the feed row: on SQLite `seq` is commit order.
-- A narrow table of its own, so a change costs a small row and not a
-- second write of the record.

CREATE TABLE record_versions (
    record_id     INTEGER PRIMARY KEY,
    connection_id INTEGER NOT NULL,
    entity        TEXT NOT NULL,
    version       INTEGER NOT NULL
);

-- Records whose feed rows the retention deleted get distinct versions
-- below every feed position (minus their id): pages walk them first.
INSERT INTO record_versions (record_id, connection_id, entity, version)
SELECT r.id, r.connection_id, r.entity, coalesce(m.seq, -r.id)
  FROM records r
  LEFT JOIN (SELECT record_id, max(seq) AS seq FROM changes GROUP BY record_id) m
    ON m.record_id = r.id;

CREATE INDEX record_versions_by_version ON record_versions (version);
CREATE INDEX record_versions_by_entity ON record_versions (connection_id, entity, version);

CREATE TRIGGER changes_version AFTER INSERT ON changes
BEGIN
    INSERT INTO record_versions (record_id, connection_id, entity, version)
    VALUES (NEW.record_id, NEW.connection_id, NEW.entity, NEW.seq)
    ON CONFLICT (record_id) DO UPDATE SET version = excluded.version;
END;

-- A record's incoming edges (its dependents) are read by target.
CREATE INDEX edges_by_target ON edges (connection_id, to_entity, to_external_id);

-- Full-text search over the string values of live records' canonical
-- JSON (rowid = the record's id), kept by the search indexer, which
-- follows the change feed from `search_cursor` and moves the cursor in
-- the transaction that updates the index.
CREATE VIRTUAL TABLE record_search USING fts5(body, tokenize = 'unicode61 remove_diacritics 2');

CREATE TABLE search_cursor (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL
);
INSERT INTO search_cursor (id, seq) VALUES (1, 0);
