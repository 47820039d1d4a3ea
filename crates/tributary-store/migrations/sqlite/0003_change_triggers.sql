-- The change feed is written by the database itself: every record inserted,
-- changed (content hash), deleted or brought back gets its change row
-- inside the same statement, from the row's own values — one write path
-- that no code can forget, and no second statement (nor index probe) per
-- page to find the records' ids.

CREATE TRIGGER records_created AFTER INSERT ON records
BEGIN
    INSERT INTO changes (connection_id, record_id, entity, external_id, kind, content_hash, run_id, changed_at)
    VALUES (NEW.connection_id, NEW.id, NEW.entity, NEW.external_id,
            CASE WHEN NEW.deleted_at IS NULL THEN 'created' ELSE 'deleted' END,
            NEW.content_hash, NEW.last_run_id, NEW.last_modified_at);
END;

CREATE TRIGGER records_changed AFTER UPDATE OF content_hash, deleted_at ON records
WHEN OLD.content_hash IS NOT NEW.content_hash OR OLD.deleted_at IS NOT NEW.deleted_at
BEGIN
    INSERT INTO changes (connection_id, record_id, entity, external_id, kind, content_hash, run_id, changed_at)
    VALUES (NEW.connection_id, NEW.id, NEW.entity, NEW.external_id,
            CASE WHEN NEW.deleted_at IS NOT NULL THEN 'deleted'
                 WHEN OLD.deleted_at IS NOT NULL THEN 'created'
                 ELSE 'updated' END,
            NEW.content_hash, NEW.last_run_id, NEW.last_modified_at);
END;
