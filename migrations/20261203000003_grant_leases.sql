-- The grant lease: how many slots Redis may have granted for a product, made durable here
-- before Redis may grant them (lua/acquire.lua grants only while `granted < leased`). After
-- Redis lost a product's state, `leased` minus the slots PostgreSQL holds bounds the grants
-- answered 201 that never reached PostgreSQL; the rebuild withholds that many units.
CREATE TABLE grant_leases (
    product_id  uuid        PRIMARY KEY REFERENCES products (product_id),
    leased      bigint      NOT NULL CHECK (leased >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- What each rebuild found: `unseen_grants`, the grants the lease allowed that PostgreSQL
-- never heard of (at most this many grants answered 201 were lost), and `in_doubt`, the
-- units withheld for them, off sale until an operator releases them (`released_at`).
ALTER TABLE redis_losses
    ADD COLUMN unseen_grants  bigint      NOT NULL DEFAULT 0 CHECK (unseen_grants >= 0),
    ADD COLUMN in_doubt       bigint      NOT NULL DEFAULT 0 CHECK (in_doubt >= 0),
    ADD COLUMN released_at    timestamptz;
