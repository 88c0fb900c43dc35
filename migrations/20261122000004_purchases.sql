-- Payments for slots (filled by the payment flow, issue #4). A slot may see several
-- attempts (a failed one, then a retry with a new Idempotency-Key) but completes at most once.
CREATE TABLE purchases (
    payment_id       uuid        PRIMARY KEY,
    slot_id          uuid        NOT NULL REFERENCES purchase_slots (slot_id),
    product_id       uuid        NOT NULL REFERENCES products (product_id),
    user_id          uuid        NOT NULL,
    amount           bigint      NOT NULL CHECK (amount >= 0),
    currency         char(3)     NOT NULL,
    method           text        NOT NULL,
    status           text        NOT NULL
                     CHECK (status IN ('PENDING', 'COMPLETED', 'FAILED', 'REFUND_REQUIRED', 'REFUNDED')),
    idempotency_key  text        NOT NULL,
    trace_id         text        NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, idempotency_key)
);
CREATE INDEX purchases_by_slot ON purchases (slot_id);
-- Invariant 5, enforced a second time: a slot is completed at most once.
CREATE UNIQUE INDEX purchases_one_completion ON purchases (slot_id) WHERE status = 'COMPLETED';
