-- delete_product.lua: takes a product off sale for good, unless slots are still ACTIVE.
--
-- Refused while any slot is scheduled to expire (ACTIVE, including one past its deadline
-- that the worker has not reclaimed yet: its `slot-expired` event must still be written).
-- The outbox stream is left for the relay to drain.
--
-- KEYS[1] product hash  KEYS[2] holders hash  KEYS[3] expiry zset  KEYS[4] reminders zset
-- Returns {'deleted'} | {'active', count} | {'unknown'}

if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'unknown'}
end
local active = redis.call('ZCARD', KEYS[3])
if active > 0 then
  return {'active', active}
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return {'deleted'}
