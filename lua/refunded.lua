-- refunded.lua: records that the gateway refunded a REFUND_REQUIRED payment, once.
--
-- KEYS[1] payment hash  KEYS[2] refunds zset  KEYS[3] outbox stream
-- ARGV[1] paymentId  ARGV[2] nowMs  ARGV[3] eventId  ARGV[4] settledTtlMs
--
-- Returns 1 if recorded now, 0 if it was not awaiting a refund.

redis.call('ZREM', KEYS[2], ARGV[1])
local pay = redis.call('HMGET', KEYS[1], 'status', 'slotId', 'userId', 'productId',
  'traceparent', 'amount', 'currency')
if pay[1] ~= 'REFUND_REQUIRED' then
  return 0
end
redis.call('HSET', KEYS[1], 'status', 'REFUNDED', 'refundedMs', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
emit(KEYS[3], 'payment-refunded', {
  eventId = ARGV[3], productId = pay[4], slotId = pay[2], userId = pay[3], atMs = ARGV[2],
  traceparent = pay[5] }, 'paymentId', ARGV[1], 'amount', pay[6], 'currency', pay[7])
return 1
