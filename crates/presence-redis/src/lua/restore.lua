-- Puts back a known session with its epoch, without the login policy (presence rebuilt after
-- Redis lost its data). KEYS: user hash, bucket uid index, bucket session count.
-- ARGV: uid, device, epoch, record JSON, linger ms.
-- Skipped (0) when the device has a session at least as new; older ones of the device go.
local device, epoch = ARGV[2], ARGV[3]
local sessions, last = load(KEYS[1])
for _, s in ipairs(sessions) do
  if s.device == device and not lt(s.epoch, epoch) then return 0 end
end
local removed = 0
for _, s in ipairs(sessions) do
  if s.device == device then
    redis.call('HDEL', KEYS[1], s.epoch)
    removed = removed + 1
  end
end
redis.call('HSET', KEYS[1], epoch, ARGV[4])
if lt(last, epoch) then redis.call('HSET', KEYS[1], 'e', epoch) end
settle(ARGV[1], 1 - removed, #sessions - removed + 1, ARGV[5])
return 1
