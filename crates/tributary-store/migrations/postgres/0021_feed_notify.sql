-- The change feed's wake-up: a transaction that writes feed rows notifies
-- channel `tributary_feed` when it commits (PostgreSQL folds a
-- transaction's identical notifications into one), so every `serve`
-- process on this database hears of every commit at once. The table stays
-- the truth; a missed notification only delays a reader until its next
-- poll.
CREATE FUNCTION tributary_feed_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('tributary_feed', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER changes_notify AFTER INSERT ON changes
FOR EACH STATEMENT EXECUTE FUNCTION tributary_feed_notify();
