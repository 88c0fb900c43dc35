-- acquire.lua: the authoritative acquisition of one unit of one product.
--
-- Atomically: refuse an unknown product, a buyer who already holds a live slot, a sale not
-- yet open or already closed, or a sold-out product; otherwise take one unit, record the
-- slot with the edge's arrival stamp and trace context, schedule its expiry and its
-- expiring-soon reminder, and append the grant event to the product's outbox stream.
--
-- Lazy expiry: a held slot past its deadline that no worker has swept yet is reclaimed here
-- (lib.lua's `reclaim`, as expire.lua does), before the buyer's new attempt is decided. A
-- held slot with a payment in flight stays held: the expiration worker settles that payment
-- first (expire.lua).
--
-- Grant lease: Redis grants only while `granted < leased`, where `leased` is a count the
-- origin first made durable in PostgreSQL (`grant_leases`). If Redis loses its state anyway,
-- the rebuild knows how many grants it may not have heard of (`leased` − the slots
-- PostgreSQL holds) and withholds that many units instead of reselling them. When the lease
-- is used up the script grants nothing and answers {'lease', …}: the origin extends it and
-- asks again; when it runs low, a grant says so and the origin extends it in the background.
--
-- KEYS[1] product hash    fg:{<pid>}:product    remaining, total, granted, leased, inDoubt,
--                         startsAtMs, endsAtMs, maxGrantUs (the latest arrival stamp granted)
-- KEYS[2] holders hash    fg:{<pid>}:holders    userId -> slotId (ACTIVE or COMPLETED)
-- KEYS[3] slot hash       fg:{<pid>}:slot:<slotId>   (the new slot)
-- KEYS[4] expiry zset     fg:{<pid>}:expiry     slotId scored by expiresAtMs
-- KEYS[5] reminders zset  fg:{<pid>}:reminders  slotId scored by the reminder time
-- KEYS[6] outbox stream   fg:{<pid>}:outbox
-- KEYS[7] refused zset    fg:{<pid>}:refused  sold-out refusals that may be fairness
--                         inversions (stamped before the latest grant), for the checker
-- KEYS[8] seen string     fg:{<pid>}:seen:<requestId>  this edge-signed request was decided
--                         (replay guard; lives ARGV[14] ms, the signature's freshness window)
-- KEYS[9] admitted zset   fg:{<pid>}:queue:admitted  the waiting room's live passes: userId
--                         scored by its pass's expiry (ms)
-- ARGV[1] productId  ARGV[2] userId  ARGV[3] slotId  ARGV[4] eventId
-- ARGV[5] arrivalUs  ARGV[6] nowMs   ARGV[7] holdMs  ARGV[8] traceparent
-- ARGV[9] remindBeforeMs  ARGV[10] expiryEventId (for a lazy expiry)  ARGV[11] expiredTtlMs
-- ARGV[12] leaseSize (the most grants one lease extension covers)
-- ARGV[13] late (1: the stamp was older than the fairness window when the origin got it)
-- ARGV[14] seenTtlMs (0: no replay guard, the request is not an edge-signed one)
-- ARGV[15] passExpiresMs (0: the acquisition carries no queue pass)
-- ARGV[16] pseudonym (the buyer's in this drop's log; '': the origin keeps no log)
-- ARGV[17] edgeId  ARGV[18] windowUs (the fairness window in force)
--
-- Public log (issue #31): every decision (not a lease answer, a replay or an unknown
-- product) is appended to the product's log in this same step (lib.lua's `log_entry`),
-- the product's stock opening the log when it has none yet; a grant keeps its buyer's
-- pseudonym on the slot, so the unit's return is logged too. The entry's index ends the
-- answer.
--
-- Replay guard: an edge-signed request is decided once. Sent again within its signature's
-- freshness window (by anyone between edge and origin) it is answered {'replayed'} and
-- changes nothing. Only a decision marks it seen: {'lease'} asks again with the same request.
--
-- Queue pass: a pass admits one grant. It counts only while the room still lists its buyer
-- as admitted under it (KEYS[9], the score its expiry); the grant takes the buyer off that
-- list, so once their slot expires unpaid, the same pass finds nothing and they line up again
-- ({'pass_spent'}): a pass outliving its hold cannot buy twice.
--
-- Returns {'granted', remaining, expiresAtMs, leaseLow (0|1)} | {'holding', slotId}
--       | {'sold_out'} | {'not_on_sale', startsAtMs} | {'ended', endsAtMs} | {'unknown'}
--       | {'lease', granted, remaining} (nothing granted: extend the lease and ask again)
--       (each decision followed by its log index when the log is kept)
--       | {'replayed'} (this signed request was decided before)
--       | {'pass_spent'} (the queue pass no longer admits: used, or its buyer no longer admitted)

local guarded = ARGV[14] ~= '0'
if guarded and redis.call('EXISTS', KEYS[8]) == 1 then
  return {'replayed'}
end

local function decide()
  local product = redis.call('HMGET', KEYS[1], 'remaining', 'startsAtMs', 'endsAtMs', 'maxGrantUs',
    'granted', 'leased')
  if not product[1] then
    return {'unknown'}
  end
  local now = tonumber(ARGV[6])

  local held = redis.call('HGET', KEYS[2], ARGV[2])
  if held then
    -- The held slot shares the product's hash tag (derived from KEYS[3]), so this stays in
    -- the script's cluster slot.
    local held_key = string.gsub(KEYS[3], '[^:]+$', held)
    local slot = redis.call('HMGET', held_key, 'status', 'expiresMs', 'paymentId', 'traceparent')
    if slot[1] ~= 'ACTIVE' or not past_deadline(slot[2], now) or present(slot[3]) then
      return {'holding', held}
    end
    product[1] = reclaim(
      {product = KEYS[1], holders = KEYS[2], expiry = KEYS[4], reminders = KEYS[5], outbox = KEYS[6]},
      {key = held_key, id = held, productId = ARGV[1], userId = ARGV[2], traceparent = slot[4]},
      ARGV[6], ARGV[11], ARGV[10])
  end

  local pass = ARGV[15] ~= '0'
  if pass then
    local admitted = redis.call('ZSCORE', KEYS[9], ARGV[2])
    if not admitted or tonumber(admitted) ~= tonumber(ARGV[15]) then
      return {'pass_spent'}
    end
  end

  if now < tonumber(product[2]) then
    return {'not_on_sale', product[2]}
  end
  if product[3] and product[3] ~= '' and now >= tonumber(product[3]) then
    return {'ended', product[3]}
  end
  if tonumber(product[1]) <= 0 then
    -- Refused although stamped before a request that was granted: a possible fairness
    -- inversion. Kept (at most 10,000 per product, for 7 days) for the invariant checker.
    if product[4] and tonumber(ARGV[5]) < tonumber(product[4]) then
      redis.call('ZADD', KEYS[7], ARGV[5], ARGV[5] .. ':' .. ARGV[6] .. ':' .. ARGV[2] .. ':' .. ARGV[13])
      redis.call('ZREMRANGEBYRANK', KEYS[7], 0, -10001)
      redis.call('PEXPIRE', KEYS[7], 604800000)
    end
    return {'sold_out'}
  end

  local granted = tonumber(product[5] or '0')
  local leased = tonumber(product[6] or '0')
  if granted >= leased then
    return {'lease', granted, product[1]}
  end

  local remaining = redis.call('HINCRBY', KEYS[1], 'remaining', -1)
  granted = redis.call('HINCRBY', KEYS[1], 'granted', 1)
  if not product[4] or tonumber(ARGV[5]) > tonumber(product[4]) then
    redis.call('HSET', KEYS[1], 'maxGrantUs', ARGV[5])
  end
  local expires = now + tonumber(ARGV[7])
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
  redis.call('HSET', KEYS[3],
    'productId', ARGV[1], 'userId', ARGV[2], 'status', 'ACTIVE', 'arrivalUs', ARGV[5],
    'acquiredMs', ARGV[6], 'expiresMs', expires, 'traceparent', ARGV[8])
  if ARGV[16] ~= '' then
    redis.call('HSET', KEYS[3], 'pseudonym', ARGV[16])
  end
  redis.call('ZADD', KEYS[4], expires, ARGV[3])
  redis.call('ZADD', KEYS[5], expires - tonumber(ARGV[9]), ARGV[3])
  if pass then
    redis.call('ZREM', KEYS[9], ARGV[2])
  end
  emit(KEYS[6], 'slot-acquired', {
    eventId = ARGV[4], productId = ARGV[1], slotId = ARGV[3], userId = ARGV[2], atMs = ARGV[6],
    traceparent = ARGV[8] }, 'arrivalUs', ARGV[5], 'expiresMs', expires)
  -- Low: the lease covers less than half of what an extension would give it now.
  local low = 0
  if 2 * (leased - granted) < math.min(tonumber(ARGV[12]), remaining) then
    low = 1
  end
  return {'granted', remaining, expires, low}
end

local decision = decide()
local outcome = decision[1]
if guarded and outcome ~= 'lease' then
  redis.call('SET', KEYS[8], '1', 'PX', ARGV[14])
end
if ARGV[16] ~= '' and outcome ~= 'lease' and outcome ~= 'unknown' then
  if redis.call('HEXISTS', KEYS[1], 'logSize') == 0 then
    log_stock(KEYS[1], ARGV[6])
  end
  decision[#decision + 1] = log_entry(KEYS[1], 'decision', 'arrivalUs', ARGV[5],
    'edge', ARGV[17], 'buyer', ARGV[16], 'outcome', outcome, 'atMs', ARGV[6],
    'late', ARGV[13], 'windowUs', ARGV[18])
end
return decision
