-- A logout, a closed session, or one session of a purged gate. KEYS: user hash, bucket uid
-- index, bucket session count. ARGV: uid, gate, session id, linger ms.
-- Removes the user's sessions registered on (gate, session id) right now — so a session that
-- moved to another gate by RESUME, or a newer one, is left alone. Returns how many.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local sessions = load(KEYS[1])
local removed = 0
for _, s in ipairs(sessions) do
  if s.gate == ARGV[2] and s.sid == ARGV[3] then
    redis.call('HDEL', KEYS[1], s.epoch)
    removed = removed + 1
  end
end
if removed > 0 then settle(ARGV[1], -removed, #sessions - removed, ARGV[4]) end
return removed
