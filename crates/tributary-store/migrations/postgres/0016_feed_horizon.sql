-- The change feed's retention: feed rows older than the retention are
-- deleted, and the highest sequence number ever deleted is kept, so a
-- reader whose cursor is below it is told its cursor expired instead of
-- silently missing what was deleted.

CREATE TABLE feed_horizon (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL
);
INSERT INTO feed_horizon (id, seq) VALUES (1, 0);
