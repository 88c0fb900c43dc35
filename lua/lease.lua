-- lease.lua: raises a product's grant lease to a count PostgreSQL already holds durably.
--
-- Only ever raises (two origins extending at once both end at the larger count), and only
-- on a product Redis has sale state for: a lease never creates a partial product hash,
-- which would hide a lost product from its rebuild.
--
-- KEYS[1] product hash  fg:{<pid>}:product
-- ARGV[1] leased (the count already committed to `grant_leases`)
-- Returns the product's lease after the call, or -1 if Redis does not know the product.

if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
local leased = tonumber(redis.call('HGET', KEYS[1], 'leased') or '0')
local offered = tonumber(ARGV[1])
if offered > leased then
  redis.call('HSET', KEYS[1], 'leased', offered)
  return offered
end
return leased
