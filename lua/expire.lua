-- expire.lua: reclaims one slot whose deadline has passed, exactly once.
--
-- Atomically: if the slot is still ACTIVE and due, mark it EXPIRED (kept for a while for
-- reads, then dropped by its TTL), give the unit back, free the buyer to try again, drop it
-- from the schedules, and append `slot-expired` to the outbox. A slot that is no longer
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
-- ARGV[1] productId  ARGV[2] slotId  ARGV[3] eventId  ARGV[4] nowMs  ARGV[5] expired-slot TTL ms
-- ARGV[6] settle grace ms
--
-- Returns {'expired'} | {'not_due', expiresAtMs} | {'skipped', status} | {'paying', paymentId}

local slot = redis.call('HMGET', KEYS[3], 'status', 'expiresMs', 'userId', 'traceparent',
  'paymentId')
if slot[1] ~= 'ACTIVE' then
  redis.call('ZREM', KEYS[4], ARGV[2])
  redis.call('ZREM', KEYS[5], ARGV[2])
  return {'skipped', slot[1] or 'missing'}
end
if tonumber(slot[2]) > tonumber(ARGV[4]) then
  return {'not_due', slot[2]}
end
if slot[5] and slot[5] ~= '' and tonumber(slot[2]) + tonumber(ARGV[6]) > tonumber(ARGV[4]) then
  redis.call('ZADD', KEYS[7], ARGV[4], slot[5])
  return {'paying', slot[5]}
end

redis.call('HSET', KEYS[3], 'status', 'EXPIRED', 'expiredMs', ARGV[4])
redis.call('PEXPIRE', KEYS[3], ARGV[5])
redis.call('HINCRBY', KEYS[1], 'remaining', 1)
if redis.call('HGET', KEYS[2], slot[3]) == ARGV[2] then
  redis.call('HDEL', KEYS[2], slot[3])
end
redis.call('ZREM', KEYS[4], ARGV[2])
redis.call('ZREM', KEYS[5], ARGV[2])
redis.call('XADD', KEYS[6], '*',
  'type', 'slot-expired', 'v', '1', 'eventId', ARGV[3], 'productId', ARGV[1],
  'slotId', ARGV[2], 'userId', slot[3], 'atMs', ARGV[4], 'traceparent', slot[4])
if slot[5] and slot[5] ~= '' then
  -- Expired past the grace with its payment still unsettled: reconcile it now, so it ends
  -- (refunded if it succeeded) rather than waiting for its webhook deadline.
  redis.call('ZADD', KEYS[7], ARGV[4], slot[5])
end
return {'expired'}
