-- One bucket's users and sessions. KEYS: bucket uid index, bucket session count.
return { redis.call('HLEN', KEYS[1]), tonumber(redis.call('GET', KEYS[2]) or '0') }
