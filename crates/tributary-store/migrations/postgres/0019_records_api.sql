-- The records API and full-text search.
--
-- `record_versions`: each record's version, the feed position (`pos`) of
-- its latest change. Records are paged in version order, so a record
-- that changes while a client pages moves behind every version handed
-- out before, and a client's cursor is a feed position. The feed's
-- sequencer (`sequence_changes`) writes a record's version in the
-- transaction that gives its change a position, so a version is never
-- below a position a reader has passed — a transaction that commits late
-- is numbered after. A record whose newest change has no position yet is
-- left out of pages until it has one (`changes_unsequenced_by_record`).
-- A narrow table of its own, so a change costs a small row and not a
-- second write of the record.

CREATE TABLE record_versions (
    record_id     BIGINT PRIMARY KEY,
    connection_id BIGINT NOT NULL,
    entity        TEXT COLLATE "C" NOT NULL,
    version       BIGINT NOT NULL
);

-- Records whose feed rows the retention deleted get distinct versions
-- below every feed position (minus their id): pages walk them first.
INSERT INTO record_versions (record_id, connection_id, entity, version)
SELECT r.id, r.connection_id, r.entity, coalesce(m.pos, -r.id)
  FROM records r
  LEFT JOIN (SELECT record_id, max(pos) AS pos FROM changes WHERE pos IS NOT NULL GROUP BY record_id) m
    ON m.record_id = r.id;

CREATE INDEX record_versions_by_version ON record_versions (version);
CREATE INDEX record_versions_by_entity ON record_versions (connection_id, entity, version);
CREATE INDEX changes_unsequenced_by_record ON changes (record_id) WHERE pos IS NULL;

-- A record's incoming edges (its dependents) are read by target.
CREATE INDEX edges_by_target ON edges (connection_id, to_entity, to_external_id);

-- Full-text search over the string values of live records' canonical
-- JSON, kept by the search indexer, which follows the change feed from
-- `search_cursor` and moves the cursor in the transaction that updates
-- the index. `body` is the text (for snippets), `doc` its words.
CREATE TABLE record_search (
    record_id BIGINT PRIMARY KEY,
    body      TEXT NOT NULL,
    doc       TSVECTOR NOT NULL
);
CREATE INDEX record_search_doc ON record_search USING GIN (doc);

CREATE TABLE search_cursor (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL
);
INSERT INTO search_cursor (id, seq) VALUES (1, 0);
