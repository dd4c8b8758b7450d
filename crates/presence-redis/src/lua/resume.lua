-- A RESUME. KEYS: user hash. ARGV: device, epoch, new gate, new session id.
-- Returns the session's record before (its old gate and session), or false.
local raw = redis.call('HGET', KEYS[1], ARGV[2])
if not raw or ARGV[2] == 'e' then return false end
local r = cjson.decode(raw)
if r[3] ~= ARGV[1] then return false end
r[1] = ARGV[3]
r[2] = ARGV[4]
redis.call('HSET', KEYS[1], ARGV[2], cjson.encode(r))
return raw
