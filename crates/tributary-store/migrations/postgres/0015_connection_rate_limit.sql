-- A connection's own request budget, over its manifest's policy (Clerk:
-- 100 requests per 10 s on a development instance, 1,000 on a production
-- one). NULL: the manifest's; 0 requests: no limit.

ALTER TABLE connections ADD COLUMN rate_limit_requests BIGINT;
ALTER TABLE connections ADD COLUMN rate_limit_period_ms BIGINT;
