-- Applying webhook deliveries: the webhook run that applied a delivery,
-- and the connections whose deliveries wait (`webhooks pause`): they are
-- still verified and stored, and applied once resumed.
ALTER TABLE webhook_deliveries ADD COLUMN run_id BIGINT;
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (connection_id, state, id);
CREATE TABLE webhook_pauses (
    connection_id BIGINT PRIMARY KEY,
    paused_at     TIMESTAMPTZ NOT NULL
);
