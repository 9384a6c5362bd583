-- The notification id of the last event of each tenant's stream that a relay published (the
-- broker acknowledged it). Every message carries the one before it of its tenant and stream
-- (`previousNotificationId`), so a projector that finds it never applied that one knows
-- messages were lost on the way (a broker that lost acknowledged messages, or one started
-- again empty) and applies them from the event store.
CREATE TABLE relay_tenant_positions (
    name      text   NOT NULL,
    tenant_id text   NOT NULL,
    stream    text   NOT NULL,
    position  bigint NOT NULL,
    PRIMARY KEY (name, tenant_id, stream)
);
