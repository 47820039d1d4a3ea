-- A failed run that met a cause that may pass (an exhausted retry budget, a
-- server that stopped answering, a full disk) and no refused credentials is
-- resumed by the next request of its kind, from its checkpoints.
ALTER TABLE runs ADD COLUMN resumable BOOLEAN NOT NULL DEFAULT false;
-- What a run covers (its entities, its API): a run is resumed only by a
-- request for the same scope, so `--entities A` never finishes a run of
-- every entity, nor a run against another API. NULL: runs from before.
ALTER TABLE runs ADD COLUMN scope TEXT;
