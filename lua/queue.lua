-- queue.lua: a buyer's place in a product's waiting room, joining the line when asked.
--
-- Answers, in this order: the product is unknown or its sale ended; the buyer already holds
-- a slot of it; the buyer holds a live pass (admitted); the product is sold out (nobody is
-- admitted any more, so everyone waiting is told at once; their places are kept, should
-- units come back when holds expire); the buyer is waiting (their 1-based position, from
-- ZRANK, so it only shrinks while they wait); the buyer is not in line (when not joining)
-- or the line is full; else the buyer joins at `score` (NX: a buyer's first place is kept,
-- however often they ask again).
--
-- A join scored below the highest score already admitted came too late for its place (its
-- request travelled longer than the fairness window): counted in `late` for the checker,
-- which tells such inversions (network) apart from admissions out of order (a defect).
--
-- KEYS[1] product hash   fg:{<pid>}:product
-- KEYS[2] holders hash   fg:{<pid>}:holders
-- KEYS[3] queue hash     fg:{<pid>}:queue      seq, maxAdmitted, late, carry, lastMs, active, …
-- KEYS[4] waiting zset   fg:{<pid>}:queue:waiting    userId scored by their place
-- KEYS[5] admitted zset  fg:{<pid>}:queue:admitted   userId scored by their pass's expiry (ms)
-- KEYS[6] buyers hash    fg:{<pid>}:queue:buyers     userId -> '<pseudonym> <joinedMs>' (the
--                         public log's view of a join, for its admission entry)
-- ARGV[1] userId  ARGV[2] score  ARGV[3] nowMs  ARGV[4] join (1: join if not in line)
-- ARGV[5] maxLength  ARGV[6] ttlMs (every queue key's bound, renewed on each join)
-- ARGV[7] pseudonym (the buyer's in the product's public log; '': the origin keeps none)
--
-- Returns {'unknown'} | {'ended', endsAtMs} | {'holding', slotId}
--       | {'admitted', passExpiresMs, waitingCount}
--       | {'waiting', position, waitingCount, joined (0|1)} | {'sold_out'}
--       | {'absent', waitingCount} | {'full', waitingCount}

local product = redis.call('HMGET', KEYS[1], 'remaining', 'endsAtMs')
if not product[1] then
  return {'unknown'}
end
local now = tonumber(ARGV[3])
if product[2] and product[2] ~= '' and now >= tonumber(product[2]) then
  return {'ended', product[2]}
end
local held = redis.call('HGET', KEYS[2], ARGV[1])
if held then
  return {'holding', held}
end
local waiting = redis.call('ZCARD', KEYS[4])
local pass = redis.call('ZSCORE', KEYS[5], ARGV[1])
if pass and tonumber(pass) > now then
  return {'admitted', pass, waiting}
end
if tonumber(product[1]) <= 0 then
  return {'sold_out'}
end
local rank = redis.call('ZRANK', KEYS[4], ARGV[1])
if rank then
  return {'waiting', rank + 1, waiting, 0}
end
if ARGV[4] ~= '1' then
  return {'absent', waiting}
end
if waiting >= tonumber(ARGV[5]) then
  return {'full', waiting}
end
local max_admitted = redis.call('HGET', KEYS[3], 'maxAdmitted')
if max_admitted and tonumber(ARGV[2]) < tonumber(max_admitted) then
  redis.call('HINCRBY', KEYS[3], 'late', 1)
end
redis.call('ZADD', KEYS[4], 'NX', ARGV[2], ARGV[1])
if ARGV[7] ~= '' then
  redis.call('HSET', KEYS[6], ARGV[1], ARGV[7] .. ' ' .. ARGV[3])
end
for i = 3, 6 do
  redis.call('PEXPIRE', KEYS[i], ARGV[6])
end
return {'waiting', redis.call('ZRANK', KEYS[4], ARGV[1]) + 1, waiting + 1, 1}
