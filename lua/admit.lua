-- admit.lua: one admission step of a product's waiting room.
--
-- In auto mode, first counts the acquisitions the origin saw since its last step into the
-- current second; once a second's count reaches the threshold the room is on (`active`)
-- until the sale ends. A room that is not on admits nobody.
--
-- Admission starts once the sale has been open for the fairness window (every buyer who
-- arrived before the opening is in line by then). Each step earns `rate` admissions a
-- second (at most one second's worth saved up) and admits, lowest score first, only buyers
-- whose score is at most `cutoff` (the origin's clock less the fairness window, so an
-- earlier-stamped request still on its way cannot be overtaken), and only as many as units
-- remain beyond the passes already out (a pass ends when it expires or its buyer holds a
-- slot). Sold out: nobody.
-- Each admission gives the buyer a pass until `nowMs + passTtlMs` and is logged in order
-- (`<seq>:<score>:<userId>`) for the checker, and in the product's public log (lib.lua's
-- `log_entry`, when the buyer joined with a pseudonym): place, seq and when they joined,
-- so anyone can tell an admission out of line order from a join that came late.
--
-- KEYS[1] product hash   fg:{<pid>}:product
-- KEYS[2] holders hash   fg:{<pid>}:holders
-- KEYS[3] queue hash     fg:{<pid>}:queue
-- KEYS[4] waiting zset   fg:{<pid>}:queue:waiting
-- KEYS[5] admitted zset  fg:{<pid>}:queue:admitted
-- KEYS[6] log list       fg:{<pid>}:queue:log    admissions in order (at most 100,000)
-- KEYS[7] buyers hash    fg:{<pid>}:queue:buyers  userId -> '<pseudonym> <joinedMs>' (queue.lua)
-- ARGV[1] nowMs  ARGV[2] rate (admissions a second)  ARGV[3] cutoff (highest score to admit)
-- ARGV[4] passTtlMs  ARGV[5] auto (1: auto mode)  ARGV[6] demand (acquisitions since the
-- last step)  ARGV[7] threshold (acquisitions in one second that turn auto mode on)
-- ARGV[8] ttlMs
--
-- Returns {'idle', waitingCount} (auto mode, not on) | {'unknown'} | {'not_open', waiting}
--       | {'ended'} | {'sold_out', waiting} | {'admitted', n, waitingCount, passesOut}

local now = tonumber(ARGV[1])
local q = KEYS[3]
if ARGV[5] == '1' and redis.call('HGET', q, 'active') ~= '1' then
  local second = tostring(math.floor(now / 1000))
  local count = tonumber(ARGV[6])
  if redis.call('HGET', q, 'demandSec') == second then
    count = redis.call('HINCRBY', q, 'demand', count)
  else
    redis.call('HSET', q, 'demandSec', second, 'demand', count)
  end
  redis.call('PEXPIRE', q, ARGV[8])
  if count < tonumber(ARGV[7]) then
    return {'idle', redis.call('ZCARD', KEYS[4])}
  end
  redis.call('HSET', q, 'active', '1')
end

local product = redis.call('HMGET', KEYS[1], 'remaining', 'startsAtMs', 'endsAtMs')
if not product[1] then
  return {'unknown'}
end
local waiting = redis.call('ZCARD', KEYS[4])
-- Open for the fairness window already (the cutoff is past the opening): every buyer who
-- arrived before the opening is in line by now, so a lottery draws among all of them.
if tonumber(ARGV[3]) < tonumber(product[2]) * 1000 then
  return {'not_open', waiting}
end
if product[3] and product[3] ~= '' and now >= tonumber(product[3]) then
  return {'ended'}
end
local remaining = tonumber(product[1])
if remaining <= 0 then
  return {'sold_out', waiting}
end

-- Passes that ended: expired, or their buyer holds a slot now (at most 1,000 looked at
-- per step, soonest to expire first).
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
for _, user in ipairs(redis.call('ZRANGE', KEYS[5], 0, 999)) do
  if redis.call('HEXISTS', KEYS[2], user) == 1 then
    redis.call('ZREM', KEYS[5], user)
  end
end
local out = redis.call('ZCARD', KEYS[5])

local rate = tonumber(ARGV[2])
local state = redis.call('HMGET', q, 'carry', 'lastMs')
local last = tonumber(state[2] or now)
local carry = tonumber(state[1] or rate)
carry = math.min(rate, carry + rate * math.max(0, now - last) / 1000)
local n = math.floor(math.min(carry, remaining - out))
local admitted = 0
if n > 0 then
  local due = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', ARGV[3], 'WITHSCORES', 'LIMIT', 0, n)
  local expires = now + tonumber(ARGV[4])
  local max_admitted = tonumber(redis.call('HGET', q, 'maxAdmitted') or '0')
  for i = 1, #due, 2 do
    local user, score = due[i], due[i + 1]
    redis.call('ZREM', KEYS[4], user)
    redis.call('ZADD', KEYS[5], expires, user)
    local seq = redis.call('HINCRBY', q, 'seq', 1)
    redis.call('RPUSH', KEYS[6], seq .. ':' .. score .. ':' .. user)
    local joined = redis.call('HGET', KEYS[7], user)
    if joined then
      local buyer, joined_ms = string.match(joined, '^(%S+) (%d+)$')
      if redis.call('HEXISTS', KEYS[1], 'logSize') == 0 then
        log_stock(KEYS[1], ARGV[1])
      end
      log_entry(KEYS[1], 'admitted', 'buyer', buyer, 'place', score, 'seq', seq,
        'joinedAtMs', joined_ms, 'atMs', ARGV[1])
    end
    if tonumber(score) > max_admitted then
      max_admitted = tonumber(score)
    end
    admitted = admitted + 1
  end
  if admitted > 0 then
    redis.call('HSET', q, 'maxAdmitted', string.format('%d', max_admitted))
    redis.call('LTRIM', KEYS[6], -100000, -1)
  end
end
redis.call('HSET', q, 'carry', tostring(carry - admitted), 'lastMs', ARGV[1])
for i = 3, 7 do
  redis.call('PEXPIRE', KEYS[i], ARGV[8])
end
return {'admitted', admitted, waiting - admitted, out + admitted}
