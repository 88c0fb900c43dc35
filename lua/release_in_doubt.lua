-- release_in_doubt.lua: puts a product's in-doubt units back on sale, on an operator's word.
--
-- After Redis lost a product's state, its rebuild withholds as `inDoubt` the units that
-- grants answered 201 but never relayed may hold. Once the operator has settled with those
-- buyers, this returns the units to `remaining`, once.
--
-- KEYS[1] product hash  fg:{<pid>}:product
-- Returns the number of units released (0 if none were withheld), or -1 if unknown.

if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
local in_doubt = tonumber(redis.call('HGET', KEYS[1], 'inDoubt') or '0')
if in_doubt > 0 then
  redis.call('HINCRBY', KEYS[1], 'remaining', in_doubt)
  redis.call('HSET', KEYS[1], 'inDoubt', 0)
end
return in_doubt
