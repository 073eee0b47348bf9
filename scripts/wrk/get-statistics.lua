-- W3 for wrk: GET /statistics/{sensor} over the 100 sensors sensor-000000000..099
-- (load them first with one POST of workload::batch(1000, 100, 1); the script only reads).
local requests = {}
for i = 0, 99 do
  requests[i + 1] = wrk.format("GET", string.format("/statistics/sensor-%09d", i))
end
local n = 0
request = function()
  n = n % 100 + 1
  return requests[n]
end
