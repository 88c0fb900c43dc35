-- load_product.lua: puts a product's sale state into Redis, once.
--
-- Idempotent: if the product hash exists it is left alone (its `remaining` is live state
-- that only acquisitions, expiries and stock growth may change).
--
-- KEYS[1] product hash  fg:{<pid>}:product
-- ARGV[1] total (stock)  ARGV[2] startsAtMs  ARGV[3] endsAtMs ('' when open-ended)
-- Returns 1 if loaded, 0 if it was already there.

if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'remaining', ARGV[1], 'total', ARGV[1],
  'startsAtMs', ARGV[2], 'endsAtMs', ARGV[3])
return 1
