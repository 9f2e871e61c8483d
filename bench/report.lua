-- wrk `done` hook: print one machine-readable line with exact percentiles.
-- Latencies are in microseconds, as wrk records them.
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "PORCH_BENCH {\"requests\":%d,\"duration_us\":%d,\"bytes\":%d," ..
    "\"err_connect\":%d,\"err_read\":%d,\"err_write\":%d,\"err_status\":%d,\"err_timeout\":%d," ..
    "\"lat_min\":%d,\"lat_mean\":%.1f,\"lat_stdev\":%.1f,\"lat_max\":%d," ..
    "\"p50\":%d,\"p90\":%d,\"p99\":%d,\"p999\":%d}\n",
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
