-- Shared by the per-user scripts (prepended to each). Every key a script touches carries the
-- same hash tag {appcode:bucket}, so in a Redis Cluster a script runs on one slot.
--
-- Epochs are decimal strings here: they exceed 2^53, which Lua's numbers cannot hold, so they
-- are compared as strings (no leading zeros: a longer string is a larger number).
local function lt(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end

-- a + 1 for a decimal string.
local function incr(a)
  local i = #a
  while i > 0 and string.byte(a, i) == 57 do i = i - 1 end -- 57 = '9'
  if i == 0 then return '1' .. string.rep('0', #a) end
  return string.sub(a, 1, i - 1) .. string.char(string.byte(a, i) + 1) .. string.rep('0', #a - i)
end

-- The user's sessions (field = epoch, value = JSON [gate, session, device, class, since]) and
-- the last epoch given to the user (field 'e').
local function load(key)
  local flat = redis.call('HGETALL', key)
  local sessions, last = {}, '0'
  for i = 1, #flat, 2 do
    local f, v = flat[i], flat[i + 1]
    if f == 'e' then
      last = v
    else
      local r = cjson.decode(v)
      sessions[#sessions + 1] = { epoch = f, raw = v, gate = r[1], sid = r[2], device = r[3], class = r[4] }
    end
  end
  return sessions, last
end

-- After a change of `delta` sessions leaving `left`: the bucket's counters (KEYS[2]: uid →
-- sessions, KEYS[3]: sessions in the bucket), and the user hash kept for good while it has
-- sessions, else only `linger` ms (its last epoch keeps the next login's epoch larger).
local function settle(uid, delta, left, linger)
  if delta ~= 0 then redis.call('INCRBY', KEYS[3], delta) end
  if left > 0 then
    redis.call('HSET', KEYS[2], uid, left)
    redis.call('PERSIST', KEYS[1])
  else
    redis.call('HDEL', KEYS[2], uid)
    redis.call('PEXPIRE', KEYS[1], linger)
  end
end
