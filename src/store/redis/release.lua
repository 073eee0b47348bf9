-- Deletes an Idempotency-Key record only while the given claim still holds it.
-- KEYS[1]: the record; ARGV[1]: the claim token.
if redis.call('GET', KEYS[1]) == 'p:' .. ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
