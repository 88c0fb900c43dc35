-- Deleted products keep their row (slots and purchases will refer to them); reads skip them.
ALTER TABLE products ADD COLUMN deleted_at timestamptz;
CREATE INDEX products_live ON products (sale_starts_at DESC, product_id) WHERE deleted_at IS NULL;
