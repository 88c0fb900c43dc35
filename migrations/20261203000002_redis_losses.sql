-- Every time Redis was found without a product's sale state and it was rebuilt from
-- PostgreSQL. Grants Redis had answered 201 but not yet relayed to PostgreSQL are gone with
-- such a loss and cannot be recovered here, so `flashgate check` reports each one.
CREATE TABLE redis_losses (
    id              bigserial   PRIMARY KEY,
    product_id      uuid        NOT NULL REFERENCES products (product_id),
    restored_slots  bigint      NOT NULL,
    rebuilt_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX redis_losses_by_product ON redis_losses (product_id);
