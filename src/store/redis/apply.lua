-- Applies one group-commit flush of batches atomically (a script runs alone in Redis).
--
-- KEYS: the bucket hashes, then the Idempotency-Key records of the flush.
-- ARGV[1]: how many requests the flush carries; ARGV[2]: the sensor cap (0: none);
-- ARGV[3]: how many bucket hashes lead KEYS; then for each request:
--   n (sensors), idempotency key index in KEYS (0: none), claim token, fingerprint,
--   record ttl in ms; then for each of its n sensors:
--   bucket index in KEYS, sensor id, count, sum (shortest round-trip decimal),
--   latest instant (29 digits, fixed width, so string order is instant order).
-- A sensor's field holds "<latest> <count> <sum>", the sum printed with %.17g, which
-- round-trips an IEEE double exactly; sums are added as doubles in the order the
-- requests arrived, exactly as the memory store adds them.
-- A request whose claim is no longer held (it expired) is skipped whole. With a cap, a
-- request that would make the buckets hold more sensors than the cap is refused whole;
-- the count is taken once (HLEN of every bucket) and kept up to date as requests apply,
-- so the check is exact across every replica.
-- Returns {positions (1-based) of skipped requests, positions of refused requests}.
local cap = tonumber(ARGV[2])
local tracked = 0
if cap > 0 then
  for b = 1, tonumber(ARGV[3]) do
    tracked = tracked + redis.call('HLEN', KEYS[b])
  end
end
local i = 4
local skipped = {}
local refused = {}
for r = 1, tonumber(ARGV[1]) do
  local n = tonumber(ARGV[i])
  local ik = tonumber(ARGV[i + 1])
  local token = ARGV[i + 2]
  local fingerprint = ARGV[i + 3]
  local ttl = ARGV[i + 4]
  i = i + 5
  local new = 0
  if cap > 0 then
    for s = 0, n - 1 do
      local at = i + 5 * s
      new = new + 1 - redis.call('HEXISTS', KEYS[tonumber(ARGV[at])], ARGV[at + 1])
    end
  end
  if ik > 0 and redis.call('GET', KEYS[ik]) ~= 'p:' .. token then
    skipped[#skipped + 1] = r
    i = i + 5 * n
  elseif cap > 0 and tracked + new > cap then
    refused[#refused + 1] = r
    i = i + 5 * n
  else
    tracked = tracked + new
    for _ = 1, n do
      local key = KEYS[tonumber(ARGV[i])]
      local field = ARGV[i + 1]
      local latest = ARGV[i + 4]
      local count = tonumber(ARGV[i + 2])
      local sum = 0 + tonumber(ARGV[i + 3])
      local old = redis.call('HGET', key, field)
      if old then
        local l, c, s = string.match(old, '^(%d+) (%d+) (%S+)$')
        if l > latest then latest = l end
        count = count + tonumber(c)
        sum = tonumber(s) + tonumber(ARGV[i + 3])
      end
      redis.call('HSET', key, field, latest .. ' ' .. string.format('%d', count) .. ' ' .. string.format('%.17g', sum))
      i = i + 5
    end
    if ik > 0 then
      redis.call('SET', KEYS[ik], 'd:' .. fingerprint, 'PX', ttl)
    end
  end
end
return {skipped, refused}
