-- expire.lua: reclaims one slot whose deadline has passed, exactly once.
--
-- Atomically: if the slot is still ACTIVE and due, reclaim it (lib.lua's `reclaim`: EXPIRED,
-- unit back, buyer freed, unscheduled, `slot-expired`). A slot that is no longer
-- ACTIVE (expired by a racing worker or by acquire.lua's lazy check, or completed) is only
-- unscheduled: the unit is returned once, whoever gets there first.
--
-- A slot with a payment in flight is not expired until that payment is settled or the
-- settle grace has passed too: its payment is queued for reconciliation now (the payments
-- worker asks the processor), so a buyer who paid in time is never expired under a
-- payment nobody settled. Past the grace the slot expires, and its payment is queued for
-- reconciliation at once.
--
-- KEYS[1] product hash   KEYS[2] holders hash   KEYS[3] slot hash
-- KEYS[4] expiry zset    KEYS[5] reminders zset KEYS[6] outbox stream
-- KEYS[7] settling zset
-- ARGV[1] productId  ARGV[2] slotId  ARGV[3] eventId  ARGV[4] nowMs  ARGV[5] expiredTtlMs
-- ARGV[6] settleGraceMs
--
-- Returns {'expired'} | {'not_due', expiresAtMs} | {'skipped', status} | {'paying', paymentId}

local slot = redis.call('HMGET', KEYS[3], 'status', 'expiresMs', 'userId', 'traceparent',
  'paymentId')
if slot[1] ~= 'ACTIVE' then
  redis.call('ZREM', KEYS[4], ARGV[2])
  redis.call('ZREM', KEYS[5], ARGV[2])
  return {'skipped', slot[1] or 'missing'}
end
if not past_deadline(slot[2], ARGV[4]) then
  return {'not_due', slot[2]}
end
if present(slot[5]) and not past_deadline(tonumber(slot[2]) + tonumber(ARGV[6]), ARGV[4]) then
  redis.call('ZADD', KEYS[7], ARGV[4], slot[5])
  return {'paying', slot[5]}
end

reclaim(
  {product = KEYS[1], holders = KEYS[2], expiry = KEYS[4], reminders = KEYS[5], outbox = KEYS[6]},
  {key = KEYS[3], id = ARGV[2], productId = ARGV[1], userId = slot[3], traceparent = slot[4]},
  ARGV[4], ARGV[5], ARGV[3])
if present(slot[5]) then
  -- Expired past the grace with its payment still unsettled: reconcile it now, so it ends
  -- (refunded if it succeeded) rather than waiting for its webhook deadline.
  redis.call('ZADD', KEYS[7], ARGV[4], slot[5])
end
return {'expired'}
