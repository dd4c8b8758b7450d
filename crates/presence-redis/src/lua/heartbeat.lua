-- A gate's heartbeat. KEYS: the gates hash. ARGV: gate id, beat JSON, ttl ms.
-- Stored as '<last seen ms>:<ttl ms>:<JSON>', the time from Redis (gates' clocks don't
-- matter). Beats dead for an hour are dropped here, so the hash holds the gates heard from.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local flat = redis.call('HGETALL', KEYS[1])
for i = 1, #flat, 2 do
  local seen, ttl = string.match(flat[i + 1], '^(%d+):(%d+):')
  if seen and tonumber(seen) + tonumber(ttl) + 3600000 < now then
    redis.call('HDEL', KEYS[1], flat[i])
  end
end
redis.call('HSET', KEYS[1], ARGV[1], string.format('%.0f', now) .. ':' .. ARGV[3] .. ':' .. ARGV[2])
return 1
