-- update_product.lua: an operator's change to a product's sale state.
--
-- Atomically: stock may only grow, and the growth goes straight onto `remaining`; the sale
-- start may change only while no slot was ever granted; the sale end may change freely.
--
-- KEYS[1] product hash  fg:{<pid>}:product
-- ARGV[1] growth (of the stock, >= 0)  ARGV[2] startsAtMs (new, or '' unchanged)
-- ARGV[3] endsAtMs (new, '' unchanged or 'none' open-ended)
-- ARGV[4] nowMs (the change's time in the product's public log, if it keeps one)
--
-- Returns {'ok', remaining, total} | {'unknown'} | {'starts_locked', granted}

if redis.call('EXISTS', KEYS[1]) == 0 then
  return {'unknown'}
end
if ARGV[2] ~= '' then
  local granted = tonumber(redis.call('HGET', KEYS[1], 'granted') or '0')
  if granted > 0 and ARGV[2] ~= redis.call('HGET', KEYS[1], 'startsAtMs') then
    return {'starts_locked', granted}
  end
  redis.call('HSET', KEYS[1], 'startsAtMs', ARGV[2])
end
if ARGV[3] == 'none' then
  redis.call('HSET', KEYS[1], 'endsAtMs', '')
elseif ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'endsAtMs', ARGV[3])
end
local growth = tonumber(ARGV[1])
local remaining = redis.call('HINCRBY', KEYS[1], 'remaining', growth)
local total = redis.call('HINCRBY', KEYS[1], 'total', growth)
if redis.call('HEXISTS', KEYS[1], 'logSize') == 1 then
  log_stock(KEYS[1], ARGV[4])
end
return {'ok', remaining, total}
