-- settle.lua: applies the gateway's outcome to a PENDING payment, exactly once.
--
-- Only a PENDING payment changes; a repeated webhook finds it settled and changes nothing.
--
-- Failure: the payment is FAILED, the slot is no longer paying (the buyer may pay again with
-- a new key while the slot is ACTIVE), `payment-failed`.
-- Success while the slot is ACTIVE, before its deadline and paying with this payment: the
-- slot is COMPLETED (unscheduled from expiry and reminders; the buyer keeps holding it),
-- the payment COMPLETED, `payment-completed`.
-- Success too late (the slot is EXPIRED, gone, or past its deadline — which is reclaimed
-- here with lib.lua's `reclaim`, as expire.lua does): the payment is
-- REFUND_REQUIRED and queued for refund, `payment-refund-required`. The unit is never sold
-- twice: a slot is completed only while it is still ACTIVE.
--
-- KEYS[1] product hash  KEYS[2] holders hash  KEYS[3] slot hash  KEYS[4] expiry zset
-- KEYS[5] reminders zset  KEYS[6] outbox stream  KEYS[7] payment hash  KEYS[8] refunds zset
-- KEYS[9] charges zset  KEYS[10] settling zset
-- ARGV[1] paymentId  ARGV[2] outcome ('succeeded' | 'failed')  ARGV[3] nowMs  ARGV[4] eventId
-- ARGV[5] expiryEventId (for a lazy expiry)  ARGV[6] settledTtlMs
-- ARGV[7] reason (the failure's, '' on success)
--
-- Returns {'completed'} | {'failed'} | {'refund_required'} | {'settled', status}
--       | {'unknown'}

local pay = redis.call('HMGET', KEYS[7], 'status', 'slotId', 'userId', 'productId',
  'traceparent', 'amount', 'currency')
if not pay[1] then
  return {'unknown'}
end
if pay[1] ~= 'PENDING' then
  return {'settled', pay[1]}
end
local now = ARGV[3]
redis.call('ZREM', KEYS[9], ARGV[1])
redis.call('ZREM', KEYS[10], ARGV[1])
local function event(kind, ...)
  emit(KEYS[6], kind, {
    eventId = ARGV[4], productId = pay[4], slotId = pay[2], userId = pay[3], atMs = now,
    traceparent = pay[5] }, 'paymentId', ARGV[1], ...)
end

local slot = redis.call('HMGET', KEYS[3], 'status', 'expiresMs', 'paymentId', 'traceparent')
if ARGV[2] == 'failed' then
  redis.call('HSET', KEYS[7], 'status', 'FAILED', 'settledMs', now, 'reason', ARGV[7])
  redis.call('PEXPIRE', KEYS[7], ARGV[6])
  if slot[3] == ARGV[1] then
    redis.call('HDEL', KEYS[3], 'paymentId')
  end
  event('payment-failed', 'reason', ARGV[7])
  return {'failed'}
end

if slot[1] == 'ACTIVE' and slot[3] == ARGV[1] and not past_deadline(slot[2], now) then
  redis.call('HSET', KEYS[3], 'status', 'COMPLETED', 'completedMs', now)
  redis.call('ZREM', KEYS[4], pay[2])
  redis.call('ZREM', KEYS[5], pay[2])
  redis.call('HSET', KEYS[7], 'status', 'COMPLETED', 'settledMs', now)
  redis.call('PEXPIRE', KEYS[7], ARGV[6])
  event('payment-completed', 'amount', pay[6], 'currency', pay[7])
  return {'completed'}
end

if slot[1] == 'ACTIVE' and past_deadline(slot[2], now) then
  -- Past its deadline but not swept yet: reclaimed here, as expire.lua does.
  reclaim(
    {product = KEYS[1], holders = KEYS[2], expiry = KEYS[4], reminders = KEYS[5], outbox = KEYS[6]},
    {key = KEYS[3], id = pay[2], productId = pay[4], userId = pay[3], traceparent = slot[4]},
    now, ARGV[6], ARGV[5])
end
redis.call('HSET', KEYS[7], 'status', 'REFUND_REQUIRED', 'settledMs', now)
redis.call('ZADD', KEYS[8], now, ARGV[1])
event('payment-refund-required', 'amount', pay[6], 'currency', pay[7])
return {'refund_required'}
