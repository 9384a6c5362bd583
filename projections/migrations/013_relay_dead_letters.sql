-- Stored events the relay could not make a message of (a state that does not decode, a stream
-- id of no known shape): kept here with the reason, and skipped, so that one such event never
-- stops every tenant's events from being published. (An event of a class the relay does not
-- know stops it instead, until a release that knows the class runs: see workers/relay.py.)
-- Like the projector's dead letters, they are for an operator to look at.
CREATE TABLE relay_dead_letters (
    id                 bigserial   PRIMARY KEY,
    name               text        NOT NULL,
    notification_id    bigint      NOT NULL,
    originator_id      text        NOT NULL,
    originator_version bigint      NOT NULL,
    topic              text        NOT NULL,
    error              text        NOT NULL,
    failed_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (name, notification_id)
);
