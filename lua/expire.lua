-- expire.lua: reclaims one slot whose deadline has passed, exactly once.
--
-- Atomically: if the slot is still ACTIVE and due, mark it EXPIRED (kept for a while for
-- reads, then dropped by its TTL), give the unit back, free the buyer to try again, drop it
-- from the schedules, and append `slot-expired` to the outbox. A slot that is no longer
-- ACTIVE (expired by a racing worker or by acquire.lua's lazy check, or completed) is only
-- unscheduled: the unit is returned once, whoever gets there first.
--
-- KEYS[1] product hash   KEYS[2] holders hash   KEYS[3] slot hash
-- KEYS[4] expiry zset    KEYS[5] reminders zset KEYS[6] outbox stream
-- ARGV[1] productId  ARGV[2] slotId  ARGV[3] eventId  ARGV[4] nowMs  ARGV[5] expired-slot TTL ms
--
-- Returns {'expired'} | {'not_due', expiresAtMs} | {'skipped', status}

local slot = redis.call('HMGET', KEYS[3], 'status', 'expiresMs', 'userId', 'traceparent')
if slot[1] ~= 'ACTIVE' then
  redis.call('ZREM', KEYS[4], ARGV[2])
  redis.call('ZREM', KEYS[5], ARGV[2])
  return {'skipped', slot[1] or 'missing'}
end
if tonumber(slot[2]) > tonumber(ARGV[4]) then
  return {'not_due', slot[2]}
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
return {'expired'}
