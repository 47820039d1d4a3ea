-- Connection credentials (sealed by tributary-secrets; the key is never
-- here) and whether the connection needs a person to re-authorise it.

ALTER TABLE connections
    ADD COLUMN credentials_sealed BYTEA,
    ADD COLUMN credentials_kind TEXT
        CHECK (credentials_kind IN ('bearer', 'basic', 'oauth2')),
    -- Bumped by every write of the credentials; writers that refresh a
    -- rotating OAuth2 token compare-and-swap on it.
    ADD COLUMN credentials_version BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN status TEXT NOT NULL DEFAULT 'active'
        CHECK (status IN ('active', 'needs_reauth')),
    ADD COLUMN status_reason TEXT;
