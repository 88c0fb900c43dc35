-- Payments (issue #4). A payment is created PENDING by `POST /payments`, settled by the
-- gateway's webhook (COMPLETED or FAILED), and a success that came after its slot expired
-- is REFUND_REQUIRED until the gateway confirmed the refund (REFUNDED).
ALTER TABLE purchases ADD COLUMN failure_reason text;
ALTER TABLE purchases ADD COLUMN settled_at timestamptz;

-- The audit trail of a slot includes its payments; for payment-* events the from/to
-- statuses are the payment's.
ALTER TABLE slot_audit_log ADD COLUMN payment_id uuid;
CREATE INDEX slot_audit_log_by_payment ON slot_audit_log (payment_id) WHERE payment_id IS NOT NULL;

-- Events the persister received before what they depend on (Kafka orders events within a
-- topic's partition, not across topics: a slot-expired may arrive before its slot-acquired).
-- Each waits here, keyed by the slot it waits for, and is applied as soon as that slot
-- changes; the row is deleted when it is applied. Nothing else writes here.
CREATE TABLE persister_parked (
    event_id   uuid        PRIMARY KEY,
    waits_for  uuid        NOT NULL,
    payload    jsonb       NOT NULL,
    parked_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX persister_parked_by_slot ON persister_parked (waits_for);
