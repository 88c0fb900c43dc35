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

-- Reclaims an ACTIVE slot whose deadline passed, exactly once (the caller checked both):
-- EXPIRED (the record kept `ttl_ms` for reads), its unit back on sale, its buyer free to try
-- again, off the expiry and reminder schedules, and `slot-expired` in the slot's own trace.
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
  return remaining
end
