-- The change feed says which fields an update changed: the canonical
-- fields whose values differ between the old and the new version (added,
-- changed or removed), as a sorted JSON array (text); NULL for creations,
-- deletions and restorations. Written by the upsert of a page.

ALTER TABLE changes ADD COLUMN fields text;
