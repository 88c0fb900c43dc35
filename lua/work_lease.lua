-- work_lease.lua: an origin's claim on one work partition (whose products its expiry,
-- payments, relay and admission workers sweep), renewed, taken, or given back.
--
-- A claim is its owner's instance id with a TTL: an origin that dies stops renewing, and
-- its partitions are free for the others once the TTL runs out. Only the owner renews or
-- gives back; a free partition goes to the first origin that asks for it.
--
-- KEYS[1] owner  fg:{wNN}:owner
-- ARGV[1] me (the origin's instance id)
-- ARGV[2] ttlMs
-- ARGV[3] want (1 to keep or take the partition, 0 to give it back)
-- Returns 1 if this origin owns the partition after the call, else 0.

local owner = redis.call('GET', KEYS[1])
if ARGV[3] == '0' then
  if owner == ARGV[1] then
    redis.call('DEL', KEYS[1])
  end
  return 0
end
if owner == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not owner then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
