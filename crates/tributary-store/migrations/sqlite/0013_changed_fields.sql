-- The change feed says which fields an update changed: the canonical
-- fields whose values differ between the old and the new version (added,
-- changed or removed), as a sorted JSON array; NULL for creations,
-- deletions and restorations.

ALTER TABLE changes ADD COLUMN fields TEXT;

DROP TRIGGER records_changed;

CREATE TRIGGER records_changed AFTER UPDATE OF content_hash, deleted_at ON records
WHEN OLD.content_hash IS NOT NEW.content_hash OR OLD.deleted_at IS NOT NEW.deleted_at
BEGIN
    INSERT INTO changes (connection_id, record_id, entity, external_id, kind, content_hash, run_id, changed_at, fields)
    VALUES (NEW.connection_id, NEW.id, NEW.entity, NEW.external_id,
            CASE WHEN NEW.deleted_at IS NOT NULL THEN 'deleted'
                 WHEN OLD.deleted_at IS NOT NULL THEN 'created'
                 ELSE 'updated' END,
            NEW.content_hash, NEW.last_run_id, NEW.last_modified_at,
            CASE WHEN NEW.deleted_at IS NULL AND OLD.deleted_at IS NULL THEN
                (SELECT json_group_array(key) FROM (
                    SELECT n.key AS key FROM json_each(NEW.canonical) n
                     WHERE NOT EXISTS (SELECT 1 FROM json_each(OLD.canonical) o
                                        WHERE o.key = n.key AND o.type = n.type AND o.value IS n.value)
                    UNION
                    SELECT o.key FROM json_each(OLD.canonical) o
                     WHERE NOT EXISTS (SELECT 1 FROM json_each(NEW.canonical) n WHERE n.key = o.key)
                    ORDER BY 1))
            END);
END;
