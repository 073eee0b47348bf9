-- Redis Cluster: forgets expired Idempotency-Key markers of one bucket, a slice at a
-- time (HSCAN), so the sweep never holds Redis for long.
-- KEYS[1]: {<prefix>:b<n>}:idem; ARGV[1]: HSCAN cursor. Returns the next cursor.
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local page = redis.call('HSCAN', KEYS[1], ARGV[1], 'COUNT', 500)
local items = page[2]
for j = 1, #items, 2 do
  local expires = string.match(items[j + 1], ' (%d+)$')
  if expires and tonumber(expires) <= now_ms then
    redis.call('HDEL', KEYS[1], items[j])
  end
end
return page[1]
