-- rebuild.lua: restores a product's sale state from PostgreSQL after Redis lost it.
--
-- Refused (returns 0) if the product hash exists: live state is never overwritten, so two
-- origins racing to rebuild cannot roll a sale back. Otherwise, atomically: the holders,
-- the slot records, the expiry and reminder schedules of the live (ACTIVE and COMPLETED)
-- slots, the payments still in progress (PENDING: in flight on their slot and queued for
-- charge resubmission, which the gateway deduplicates; REFUND_REQUIRED: queued for refund),
-- and the product hash with `remaining = total - live - inDoubt`.
--
-- `inDoubt`: units that grants answered 201 but never relayed to PostgreSQL may hold. The
-- origin counts them from the grant lease (`grant_leases.leased` − the slots PostgreSQL
-- holds − what earlier losses already counted); they stay off sale until an operator
-- releases them (release_in_doubt.lua), so no such grant is ever resold.
--
-- Slot and payment keys are derived from KEYS[1]'s hash tag, so they stay in the script's
-- cluster slot.
--
-- KEYS[1] product hash  KEYS[2] holders hash  KEYS[3] expiry zset  KEYS[4] reminders zset
-- KEYS[5] charges zset  KEYS[6] refunds zset
-- ARGV[1] total  ARGV[2] startsAtMs  ARGV[3] endsAtMs ('' if open-ended)  ARGV[4] granted
-- ARGV[5] nowMs  ARGV[6] remindBeforeMs  ARGV[7] productId
-- ARGV[8] payments (those in progress), a JSON array of {paymentId, slotId, userId, status,
--         method, amount, currency, idempotencyKey, createdMs, traceparent}
-- ARGV[9] leased (the durable grant lease)  ARGV[10] inDoubt (units withheld)
-- then 7 per live slot: slotId userId status expiresMs arrivalUs acquiredMs traceparent
-- Returns the number of live slots restored, or -1 if the product was already there.

if redis.call('EXISTS', KEYS[1]) == 1 then
  return -1
end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6])
local prefix = string.gsub(KEYS[1], 'product$', 'slot:')
local now = tonumber(ARGV[5])
local remind_before = tonumber(ARGV[6])
local live = 0
for i = 11, #ARGV, 7 do
  local slot, user, status, expires = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  redis.call('HSET', prefix .. slot,
    'productId', ARGV[7], 'userId', user, 'status', status, 'arrivalUs', ARGV[i + 4],
    'acquiredMs', ARGV[i + 5], 'expiresMs', expires, 'traceparent', ARGV[i + 6])
  redis.call('HSET', KEYS[2], user, slot)
  if status == 'ACTIVE' then
    redis.call('ZADD', KEYS[3], expires, slot)
    if expires - remind_before > now then
      redis.call('ZADD', KEYS[4], expires - remind_before, slot)
    end
  end
  live = live + 1
end
local payment_prefix = string.gsub(KEYS[1], 'product$', 'payment:')
for _, p in ipairs(cjson.decode(ARGV[8])) do
  redis.call('HSET', payment_prefix .. p.paymentId,
    'paymentId', p.paymentId, 'slotId', p.slotId, 'productId', ARGV[7], 'userId', p.userId,
    'status', p.status, 'method', p.method, 'amount', p.amount, 'currency', p.currency,
    'idempotencyKey', p.idempotencyKey, 'createdMs', p.createdMs, 'traceparent', p.traceparent)
  if p.status == 'PENDING' then
    redis.call('HSET', prefix .. p.slotId, 'paymentId', p.paymentId)
    redis.call('ZADD', KEYS[5], p.createdMs, p.paymentId)
  elseif p.status == 'REFUND_REQUIRED' then
    redis.call('ZADD', KEYS[6], now, p.paymentId)
  end
end
redis.call('HSET', KEYS[1], 'remaining', tonumber(ARGV[1]) - live - tonumber(ARGV[10]),
  'total', ARGV[1], 'granted', ARGV[4], 'leased', ARGV[9], 'inDoubt', ARGV[10],
  'startsAtMs', ARGV[2], 'endsAtMs', ARGV[3])
return live
