-- Redis Cluster: records an Idempotency-Key as completed once every bucket of its
-- request has been applied, if the request's claim still holds the key.
-- KEYS[1]: the key's record; ARGV[1]: claim token; ARGV[2]: fingerprint; ARGV[3]: ttl ms.
if redis.call('GET', KEYS[1]) == 'p:' .. ARGV[1] then
  return redis.call('SET', KEYS[1], 'd:' .. ARGV[2], 'PX', ARGV[3])
end
return false
