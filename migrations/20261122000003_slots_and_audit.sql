-- Slots and their history, written by the persister from outbox events (never by the
-- request path). `slot_audit_log.event_id` is the idempotency key: an event already in the
-- log has been applied, so at-least-once delivery applies each event once.
CREATE TABLE purchase_slots (
    slot_id       uuid        PRIMARY KEY,
    product_id    uuid        NOT NULL REFERENCES products (product_id),
    user_id       uuid        NOT NULL,
    status        text        NOT NULL CHECK (status IN ('ACTIVE', 'COMPLETED', 'EXPIRED')),
    arrival_at    timestamptz NOT NULL,
    acquired_at   timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    expired_at    timestamptz,
    completed_at  timestamptz,
    trace_id      text        NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX purchase_slots_by_user ON purchase_slots (user_id, acquired_at DESC);
CREATE INDEX purchase_slots_by_product ON purchase_slots (product_id, status);
-- Invariant 2, enforced a second time: one live slot per buyer and product.
CREATE UNIQUE INDEX purchase_slots_one_per_buyer
    ON purchase_slots (product_id, user_id) WHERE status IN ('ACTIVE', 'COMPLETED');

CREATE TABLE slot_audit_log (
    event_id     uuid        PRIMARY KEY,
    event_type   text        NOT NULL,
    slot_id      uuid        NOT NULL,
    product_id   uuid        NOT NULL,
    from_status  text,
    to_status    text,
    trace_id     text        NOT NULL,
    occurred_at  timestamptz NOT NULL,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    payload      jsonb       NOT NULL
);
CREATE INDEX slot_audit_log_by_slot ON slot_audit_log (slot_id, occurred_at);
