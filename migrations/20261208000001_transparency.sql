-- Each drop's public log (issue #31): its entries in order, the Merkle tree's stored hashes
-- (RFC 6962, numbered as C2SP tlog-tiles' reference code numbers them), and the signed
-- checkpoints. Written only by the origin's log builder, append-only: nothing here is ever
-- updated or deleted except a log's head (`transparency_logs`), which only grows.

CREATE TABLE transparency_logs (
    product_id   uuid        PRIMARY KEY REFERENCES products (product_id),
    -- Entries built into the tree.
    size         bigint      NOT NULL DEFAULT 0 CHECK (size >= 0),
    -- The size of the newest signed checkpoint.
    signed_size  bigint      NOT NULL DEFAULT 0 CHECK (signed_size >= 0 AND signed_size <= size),
    signed_at    timestamptz
);

CREATE TABLE transparency_entries (
    product_id  uuid    NOT NULL REFERENCES transparency_logs (product_id),
    idx         bigint  NOT NULL CHECK (idx >= 0),
    -- The entry's bytes: one line of JSON (docs/transparency.md).
    entry       bytea   NOT NULL CHECK (length(entry) <= 65535),
    -- The buyer's pseudonym, for their receipts (none for stock entries).
    buyer       text,
    PRIMARY KEY (product_id, idx)
);

CREATE INDEX transparency_entries_buyer
    ON transparency_entries (product_id, buyer, idx) WHERE buyer IS NOT NULL;

CREATE TABLE transparency_hashes (
    product_id  uuid    NOT NULL REFERENCES transparency_logs (product_id),
    -- The stored hash index (`tlog_tiles::stored_hash_index`).
    sidx        bigint  NOT NULL CHECK (sidx >= 0),
    hash        bytea   NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (product_id, sidx)
);

CREATE TABLE transparency_checkpoints (
    product_id  uuid        NOT NULL REFERENCES transparency_logs (product_id),
    size        bigint      NOT NULL CHECK (size > 0),
    -- The signed note, as served.
    note        text        NOT NULL,
    signed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (product_id, size)
);
