-- A login, atomically for the user. KEYS: user hash, bucket uid index, bucket session count.
-- ARGV: uid, device, class, record JSON, per_class (1 = Kick), max_sessions, prior_epoch
-- ('0' = none), linger ms.
-- Returns {'A', epoch, victim epoch, victim record, …} or {'S', epoch, record} (refused).
local uid, device, class = ARGV[1], ARGV[2], ARGV[3]
local per_class = ARGV[5] == '1'
local function class_key(d, c) if c == '' then return d end return c end
local mine = class_key(device, class)

-- The victims, as longlink_presence::victims decides them: the same device, the same class
-- under Kick, then the oldest of the rest beyond max_sessions - 1.
local sessions, last = load(KEYS[1])
local victims, rest = {}, {}
for _, s in ipairs(sessions) do
  if s.device == device or (per_class and class_key(s.device, s.class) == mine) then
    victims[#victims + 1] = s
  else
    rest[#rest + 1] = s
  end
end
table.sort(rest, function(x, y) return lt(x.epoch, y.epoch) end)
local keep = math.max(tonumber(ARGV[6]), 1) - 1
for i = 1, #rest - keep do victims[#victims + 1] = rest[i] end

-- A reconnect older than a session it would replace is refused, naming the newest of them.
local prior = ARGV[7]
if prior ~= '0' then
  local by = nil
  for _, s in ipairs(victims) do
    if lt(prior, s.epoch) and (by == nil or lt(by.epoch, s.epoch)) then by = s end
  end
  if by then return { 'S', by.epoch, by.raw } end
end

-- max(server time ms << 20, the user's last epoch + 1): strictly increasing per user and,
-- with no shared counter (it would be a cross-slot key), trend-increasing across users.
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now = string.format('%.0f', ms * 1048576) -- exact: a power of two times an integer < 2^53
local epoch = now
if not lt(last, now) then epoch = incr(last) end

local out = { 'A', epoch }
for _, s in ipairs(victims) do
  redis.call('HDEL', KEYS[1], s.epoch)
  out[#out + 1] = s.epoch
  out[#out + 1] = s.raw
end
redis.call('HSET', KEYS[1], epoch, ARGV[4], 'e', epoch)
settle(uid, 1 - #victims, #sessions - #victims + 1, ARGV[8])
return out
