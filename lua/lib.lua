-- lib.lua: the rules every script shares. The origin loads each script as this library
-- followed by the script (`origin/src/store/script.rs`), so each is still one EVALSHA with
-- its keys declared, and each rule below is written once.

-- A slot's deadline has passed at `now` (both ms since the epoch): due at its deadline.
local function past_deadline(expires_ms, now_ms)
  return tonumber(expires_ms) <= tonumber(now_ms)
end

-- A field holds a value (Redis answers false for a missing hash field).
local function present(value)
  return value and value ~= ''
end

-- Appends one event to a product's outbox: the envelope every event carries (events/*.json),
-- then the fields of its kind as name, value pairs.
local function emit(outbox, kind, e, ...)
  redis.call('XADD', outbox, '*',
    'type', kind, 'v', '1', 'eventId', e.eventId, 'productId', e.productId,
    'slotId', e.slotId, 'userId', e.userId, 'atMs', e.atMs, 'traceparent', e.traceparent, ...)
end

-- A product's public log (issue #31) is a stream beside its hash, `fg:{<pid>}:log`: the key
-- is derived from the product hash's (same hash tag, so the same cluster slot, as
-- acquire.lua derives a held slot's key), and each entry is numbered by the hash's
-- `logSize`, so its index is known in the step that decides it. The origin's log builder
-- (`origin/src/transparency/builder.rs`) moves entries from the stream into the signed log.
local function log_key(product)
  return (string.gsub(product, ':product$', ':log'))
end

-- Appends one entry (its kind, then its members as name, value pairs); returns its index.
local function log_entry(product, kind, ...)
  local index = redis.call('HINCRBY', product, 'logSize', 1) - 1
  redis.call('XADD', log_key(product), '*', 'index', index, 'kind', kind, ...)
  return index
end

-- The product's stock and sale window as a log entry.
local function log_stock(product, now)
  local p = redis.call('HMGET', product, 'total', 'startsAtMs', 'endsAtMs')
  log_entry(product, 'stock', 'total', p[1], 'startsAtMs', p[2], 'endsAtMs', p[3] or '',
    'atMs', now)
end

-- Reclaims an ACTIVE slot whose deadline passed, exactly once (the caller checked both):
-- EXPIRED (the record kept `ttl_ms` for reads), its unit back on sale, its buyer free to try
-- again, off the expiry and reminder schedules, `slot-expired` in the slot's own trace, and
-- (when the product keeps a log) the unit's return in its log.
--   k: {product, holders, expiry, reminders, outbox} keys of the slot's product
--   slot: {key, id, productId, userId, traceparent}
-- Returns the units remaining after the reclaim.
local function reclaim(k, slot, now, ttl_ms, event_id)
  redis.call('HSET', slot.key, 'status', 'EXPIRED', 'expiredMs', now)
  redis.call('PEXPIRE', slot.key, ttl_ms)
  local remaining = redis.call('HINCRBY', k.product, 'remaining', 1)
  if redis.call('HGET', k.holders, slot.userId) == slot.id then
    redis.call('HDEL', k.holders, slot.userId)
  end
  redis.call('ZREM', k.expiry, slot.id)
  redis.call('ZREM', k.reminders, slot.id)
  emit(k.outbox, 'slot-expired', {
    eventId = event_id, productId = slot.productId, slotId = slot.id, userId = slot.userId,
    atMs = now, traceparent = slot.traceparent })
  -- A slot granted while its product's log was kept carries its buyer's pseudonym.
  local buyer = redis.call('HGET', slot.key, 'pseudonym')
  if buyer then
    log_entry(k.product, 'returned', 'buyer', buyer, 'reason', 'expired', 'atMs', now)
  end
  return remaining
end
