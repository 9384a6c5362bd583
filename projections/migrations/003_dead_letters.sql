-- Events the projector could not apply (a bug or a bad event, never a transient fault): kept
-- with the error for an operator, while the stream goes on for every other entity.
CREATE TABLE projector_dead_letters (
    id               bigserial   PRIMARY KEY,
    group_id         text        NOT NULL,
    topic            text        NOT NULL,
    partition        integer     NOT NULL,
    "offset"         bigint      NOT NULL,
    tenant_id        text,
    aggregate_id     text,
    aggregate_version integer,
    notification_id  bigint,
    error            text        NOT NULL,
    message          bytea       NOT NULL,
    failed_at        timestamptz NOT NULL DEFAULT now()
);
