-- W2 for wrk: POST /data with one measurement (the same body each time).
wrk.method = "POST"
wrk.path = "/data"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '[{"sensor":"sensor-000000000","timestamp":"2021-11-08T21:38:09Z","value":1.5}]'
