-- W1 for wrk: POST /data with a 1000-measurement batch over 100 sensors, read from the
-- file named by the environment variable BODY (written by scripts/wrk-compare.sh).
local f = assert(io.open(os.getenv("BODY"), "rb"))
wrk.method = "POST"
wrk.path = "/data"
wrk.headers["Content-Type"] = "application/json"
wrk.body = f:read("*a")
f:close()
