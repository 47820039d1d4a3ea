-- 1. A record's raw source JSON is kept as `json`, the text exactly as
-- received (key order included), no longer re-encoded as `jsonb`. Building a
-- jsonb value (a tree, its keys sorted) cost about ten times validating the
-- text, a fifth of the server's work for a page of people; the raw copy is
-- an archive, read back whole. The canonical projection — what queries
-- look into — stays `jsonb`.
ALTER TABLE records ALTER COLUMN raw TYPE json USING raw::json;

-- 2. Keys compare byte by byte (collation "C"), as SQLite's do: ids and
-- entity names are identifiers, not words. Ordered listings (external ids
-- in `external_ids`, entities) now come out in the same order on both
-- backends, and every index comparison is a memcmp instead of a locale's
-- strcoll.
ALTER TABLE records
    ALTER COLUMN entity TYPE text COLLATE "C",
    ALTER COLUMN external_id TYPE text COLLATE "C";
ALTER TABLE edges
    ALTER COLUMN from_entity TYPE text COLLATE "C",
    ALTER COLUMN from_external_id TYPE text COLLATE "C",
    ALTER COLUMN rel TYPE text COLLATE "C",
    ALTER COLUMN to_entity TYPE text COLLATE "C",
    ALTER COLUMN to_external_id TYPE text COLLATE "C";
ALTER TABLE checkpoints ALTER COLUMN entity TYPE text COLLATE "C";
ALTER TABLE quarantine
    ALTER COLUMN entity TYPE text COLLATE "C",
    ALTER COLUMN external_id TYPE text COLLATE "C";
