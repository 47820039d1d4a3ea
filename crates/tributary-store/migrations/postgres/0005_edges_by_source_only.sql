-- Edges are indexed by their source only (the primary key): every read
-- (a record's edges) and every delete (a changed record's old edges) goes
-- by source. The index by target served no query, and its inserts land in
-- random order — about a tenth of a PostgreSQL full sync. The first query
-- by target (a record's dependents) brings its index back with it.
DROP INDEX IF EXISTS edges_by_target;
