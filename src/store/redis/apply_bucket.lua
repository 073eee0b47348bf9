-- Redis Cluster: applies the part of one group-commit flush that falls in one bucket
-- (one hash slot), atomically. Same value format and arithmetic as apply.lua.
--
-- KEYS[1]: the bucket hash {<prefix>:b<n>}; KEYS[2]: its Idempotency-Key markers, the
--   hash {<prefix>:b<n>}:idem (field: the key, value: "<fingerprint> <expiry ms>").
--   Both keys exist from the first start on and move together in a reshard, so a
--   script never waits for a half-migrated slot (TRYAGAIN), as a fresh key would.
-- ARGV[1]: how many requests; then for each request:
--   n (sensors in this bucket), Idempotency-Key ("" for none), fingerprint, ttl in ms;
--   then for each of its n sensors: sensor id, count, sum, latest (29 digits).
-- A request whose live marker holds its fingerprint was applied to this bucket by an
-- earlier attempt (a retry after a partial failure) and is skipped; a live marker
-- holding another fingerprint means the key was reused with another body.
-- Returns one status per request: 0 applied, 1 applied before, 2 key reused.
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local i = 2
local status = {}
local bucket = KEYS[1]
for r = 1, tonumber(ARGV[1]) do
  local n = tonumber(ARGV[i])
  local key = ARGV[i + 1]
  local fingerprint = ARGV[i + 2]
  local ttl = tonumber(ARGV[i + 3])
  i = i + 4
  local seen = nil
  if key ~= '' then
    local marker = redis.call('HGET', KEYS[2], key)
    if marker then
      local fp, expires = string.match(marker, '^(%S+) (%d+)$')
      if tonumber(expires) > now_ms then seen = fp end
    end
  end
  if seen then
    if seen == fingerprint then status[r] = 1 else status[r] = 2 end
    i = i + 4 * n
  else
    for _ = 1, n do
      local field = ARGV[i]
      local latest = ARGV[i + 3]
      local count = tonumber(ARGV[i + 1])
      local sum = 0 + tonumber(ARGV[i + 2])
      local old = redis.call('HGET', bucket, field)
      if old then
        local l, c, s = string.match(old, '^(%d+) (%d+) (%S+)$')
        if l > latest then latest = l end
        count = count + tonumber(c)
        sum = tonumber(s) + tonumber(ARGV[i + 2])
      end
      redis.call('HSET', bucket, field, latest .. ' ' .. string.format('%d', count) .. ' ' .. string.format('%.17g', sum))
      i = i + 4
    end
    if key ~= '' then
      redis.call('HSET', KEYS[2], key, fingerprint .. ' ' .. string.format('%d', now_ms + ttl))
    end
    status[r] = 0
  end
end
return status
