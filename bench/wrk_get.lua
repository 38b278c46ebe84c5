-- wrk script of bench/api.py: the same GET with the tenant's Host and a bearer token, and one JSON
-- line of results at the end (latencies in microseconds, as wrk measures them).
--   BENCH_HOST=acme.localhost BENCH_AUTH="Bearer ..." wrk --latency -s bench/wrk_get.lua http://127.0.0.1:PORT/path

local host = os.getenv("BENCH_HOST")
local auth = os.getenv("BENCH_AUTH")
if host and host ~= "" then wrk.headers["Host"] = host end
if auth and auth ~= "" then wrk.headers["Authorization"] = auth end
wrk.method = "GET"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "max_us": %d, "mean_us": %.1f, "connect_errors": %d, "read_errors": %d, ' ..
    '"write_errors": %d, "status_errors": %d, "timeouts": %d}\n',
    summary.requests, summary.duration, summary.bytes, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
