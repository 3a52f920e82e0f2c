-- wrk script: one single-line order for the hot SKU per request, each with a fresh
-- Idempotency-Key (as production clients send) unless KEYED=0 is set in the environment.
local keyed = os.getenv("KEYED") ~= "0"
local sku = os.getenv("SKU") or "HOT"
local run = os.getenv("RUN") or tostring(os.time())
local n = 0
local body = '{"customer_id":"c-%d","lines":[{"sku":"' .. sku .. '","qty":1}]}'

request = function()
  n = n + 1
  local headers = { ["Content-Type"] = "application/json" }
  if keyed then
    headers["Idempotency-Key"] = run .. "-" .. n
  end
  return wrk.format("POST", "/v1/orders", headers, string.format(body, n % 100000))
end

-- Counts answers that are not 201 (a sold-out 409 or an error would flatter the rate).
local bad = 0
response = function(status)
  if status ~= 201 then bad = bad + 1 end
end

done = function(summary, latency, requests)
  io.write(string.format("ORDO_RESULT rps=%.0f p50_ms=%.2f p99_ms=%.2f non201=%d errors=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, bad,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status + summary.errors.timeout))
end
