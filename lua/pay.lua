-- pay.lua: creates a payment for a slot, at most once per payment id.
--
-- The payment id was fixed when the buyer's Idempotency-Key was claimed, so every request
-- carrying that key runs this with the same id: the first creates the payment and is told
-- `created` (it alone submits the charge), the others are told `existing`.
--
-- Atomically: refuse a slot that is unknown, another buyer's, expired (stored EXPIRED or
-- past its deadline), completed, or already paying; else record the PENDING payment, mark
-- it in flight on the slot, queue its charge submission, and append `payment-created`.
--
-- KEYS[1] slot hash  KEYS[2] payment hash  KEYS[3] charges zset  KEYS[4] outbox stream
-- ARGV[1] paymentId  ARGV[2] userId  ARGV[3] slotId  ARGV[4] productId  ARGV[5] nowMs
-- ARGV[6] method  ARGV[7] amount  ARGV[8] currency  ARGV[9] idempotencyKey
-- ARGV[10] traceparent  ARGV[11] eventId
--
-- Returns {'created'} | {'existing'} | {'unknown'} | {'forbidden'} | {'expired'}
--       | {'completed'} | {'in_flight', paymentId}

if redis.call('EXISTS', KEYS[2]) == 1 then
  if redis.call('HGET', KEYS[2], 'userId') ~= ARGV[2] then
    return {'forbidden'}
  end
  return {'existing'}
end
local slot = redis.call('HMGET', KEYS[1], 'status', 'userId', 'expiresMs', 'paymentId')
if not slot[1] then
  return {'unknown'}
end
if slot[2] ~= ARGV[2] then
  return {'forbidden'}
end
if slot[1] == 'EXPIRED' or (slot[1] == 'ACTIVE' and past_deadline(slot[3], ARGV[5])) then
  return {'expired'}
end
if slot[1] == 'COMPLETED' then
  return {'completed'}
end
if present(slot[4]) then
  return {'in_flight', slot[4]}
end

redis.call('HSET', KEYS[2],
  'paymentId', ARGV[1], 'slotId', ARGV[3], 'productId', ARGV[4], 'userId', ARGV[2],
  'status', 'PENDING', 'method', ARGV[6], 'amount', ARGV[7], 'currency', ARGV[8],
  'idempotencyKey', ARGV[9], 'createdMs', ARGV[5], 'traceparent', ARGV[10])
redis.call('HSET', KEYS[1], 'paymentId', ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[1])
emit(KEYS[4], 'payment-created', {
  eventId = ARGV[11], productId = ARGV[4], slotId = ARGV[3], userId = ARGV[2], atMs = ARGV[5],
  traceparent = ARGV[10] }, 'paymentId', ARGV[1], 'amount', ARGV[7], 'currency', ARGV[8],
  'method', ARGV[6], 'idempotencyKey', ARGV[9])
return {'created'}
