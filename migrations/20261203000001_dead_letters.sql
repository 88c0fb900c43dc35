-- Events the persister could not apply after bounded tries (a poison event: malformed, or
-- refused by a constraint). Kept with the reason, reported by `flashgate check` as
-- transitions missing from PostgreSQL, and never in the way of the events behind them.
CREATE TABLE dead_letters (
    id          bigserial   PRIMARY KEY,
    event_id    uuid        UNIQUE,
    product_id  uuid,
    source      text        NOT NULL CHECK (source IN ('relay', 'kafka')),
    payload     text        NOT NULL,
    reason      text        NOT NULL,
    dead_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letters_by_product ON dead_letters (product_id);
