-- Per connection and entity, the high-water mark of its delta syncs: every
-- change at the source up to this time (the source's clock) is stored.
-- Written in the transaction of the page that moved it; never moves back.
CREATE TABLE marks (
    connection_id BIGINT NOT NULL,
    entity        TEXT COLLATE "C" NOT NULL,
    high_water    TIMESTAMPTZ NOT NULL,
    run_id        BIGINT,
    updated_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (connection_id, entity)
);
