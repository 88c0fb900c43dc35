-- remind.lua: emits `slot-expiring-soon` for one slot, at most once.
--
-- The reminder is claimed by removing it from the schedule: only the caller whose ZREM
-- removed it emits the event, so racing workers emit it once. Nothing is emitted for a slot
-- that is no longer ACTIVE.
--
-- KEYS[1] reminders zset  KEYS[2] slot hash  KEYS[3] outbox stream
-- ARGV[1] productId  ARGV[2] slotId  ARGV[3] eventId  ARGV[4] nowMs
--
-- Returns 1 if the event was emitted, else 0.

if redis.call('ZREM', KEYS[1], ARGV[2]) == 0 then
  return 0
end
local slot = redis.call('HMGET', KEYS[2], 'status', 'userId', 'expiresMs', 'traceparent')
if slot[1] ~= 'ACTIVE' then
  return 0
end
emit(KEYS[3], 'slot-expiring-soon', {
  eventId = ARGV[3], productId = ARGV[1], slotId = ARGV[2], userId = slot[2], atMs = ARGV[4],
  traceparent = slot[4] }, 'expiresMs', slot[3])
return 1
