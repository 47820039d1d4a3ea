-- Per connection and entity, the high-water mark of its delta syncs: every
-- change at the source up to this time (the source's clock) is stored.
-- Written in the transaction of the page that moved it; never moves back.
CREATE TABLE marks (
    connection_id INTEGER NOT NULL,
    entity        TEXT NOT NULL,
    high_water    TEXT NOT NULL,
    run_id        INTEGER,
    updated_at    TEXT NOT NULL,
    PRIMARY KEY (connection_id, entity)
) WITHOUT ROWID;
