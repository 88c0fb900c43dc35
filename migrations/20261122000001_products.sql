-- Products offered in drops. Money is in minor units; `stock` is the total ever offered
-- (it may only grow); what remains lives in Redis and is derived again from the slots.
CREATE TABLE products (
    product_id      uuid        PRIMARY KEY,
    name            text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    price_amount    bigint      NOT NULL CHECK (price_amount >= 0),
    price_currency  char(3)     NOT NULL CHECK (price_currency ~ '^[A-Z]{3}$'),
    stock           integer     NOT NULL CHECK (stock > 0),
    sale_starts_at  timestamptz NOT NULL,
    sale_ends_at    timestamptz CHECK (sale_ends_at IS NULL OR sale_ends_at > sale_starts_at),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX products_sale_starts_at ON products (sale_starts_at);
