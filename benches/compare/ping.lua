-- wrk script for the nginx baseline: same summary line as order.lua.
done = function(summary, latency, requests)
  io.write(string.format("ORDO_RESULT rps=%.0f p50_ms=%.2f p99_ms=%.2f non201=0 errors=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status + summary.errors.timeout))
end
