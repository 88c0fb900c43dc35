-- A product's waiting room (issue #17): whether it is on (`always`, or `auto` once the
-- acquisitions of one second reach `auto_threshold`), how the line is ordered, and how many
-- buyers a second it admits (NULL: derived from stock and hold time). No row: off.
CREATE TABLE product_queues (
    product_id        uuid        PRIMARY KEY REFERENCES products (product_id),
    mode              text        NOT NULL CHECK (mode IN ('off', 'always', 'auto')),
    line_order        text        NOT NULL CHECK (line_order IN ('fifo', 'lottery')),
    admit_per_second  integer     CHECK (admit_per_second BETWEEN 1 AND 100000),
    auto_threshold    integer     CHECK (auto_threshold BETWEEN 1 AND 10000000),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
