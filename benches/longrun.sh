#!/usr/bin/env bash
# A long lifecycle run against one server (issue 21 item 5): every order is placed, then
# paid and shipped, cancelled, or left to expire (short reservation TTL), so every order
# ends. Samples the server's RSS, its data dir and its WAL every 10 s: memory should stay
# flat and disk per order bounded while orders keep completing.
#
#   benches/longrun.sh [SECONDS] [RATE]          e.g. benches/longrun.sh 300 2000
#
# Needs the release binary (ORDO=path overrides it), curl and python3. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-180}"
RATE="${2:-2000}"
ORDO="${ORDO:-${CARGO_TARGET_DIR:-target}/release/ordo}"
PORT="${PORT:-18190}"
WORK="$(mktemp -d)"
PID=""
trap 'kill "$PID" 2>/dev/null || true; kill "$BENCH" 2>/dev/null || true; rm -rf "$WORK"' EXIT
"$ORDO" serve --data-dir "$WORK/data" --listen "127.0.0.1:$PORT" --reservation-ttl 10s \
  --log-format json 2>"$WORK/server.log" &
PID=$!
for _ in $(seq 1 200); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break; sleep 0.05; done
"$ORDO" bench lifecycle --url "http://127.0.0.1:$PORT" --setup --rate "$RATE" \
  --duration "${SECS}s" --quiet --json >"$WORK/out.json" &
BENCH=$!
printf '%6s %9s %9s %8s %9s\n' t_s rss_mb data_mb wal_files wal_mb
sample() {
  local rss data wal_n wal_mb
  rss=$(awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$PID/status")
  data=$(du -sm "$WORK/data" | cut -f1)
  wal_n=$(find "$WORK/data" -name '*.log' | wc -l)
  wal_mb=$(find "$WORK/data" -name '*.log' -printf '%s\n' | awk '{s+=$1} END {printf "%.0f", s/1048576}')
  printf '%6s %9s %9s %8s %9s\n' "$1" "$rss" "$data" "$wal_n" "$wal_mb"
}
for t in $(seq 10 10 "$SECS"); do sleep 10; sample "$t"; done
wait "$BENCH" || true
sleep 15  # the last unpaid orders expire
sample end
python3 - "$WORK/out.json" "$(du -sb "$WORK/data" | cut -f1)" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
orders = r.get("orders_placed") or r["latency_us"]["count"]
print(f"requests {r['latency_us']['count']}, {r['requests_per_s']:.0f}/s; data dir {int(sys.argv[2]) / 1e6:.0f} MB")
PY
curl -sf "http://127.0.0.1:$PORT/metrics" | grep -E '^ordo_(orders_(pending|confirmed|cancelled|fulfilled)|live_(orders|skus)|pending_orders_without_actor)' || true
# Start-up over the store the run left: SIGTERM (a clean stop), then time to /readyz.
kill -TERM "$PID"; wait "$PID" || true
START=$(date +%s.%N)
"$ORDO" serve --data-dir "$WORK/data" --listen "127.0.0.1:$PORT" --log-format json \
  2>"$WORK/restart.log" &
PID=$!
until curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1; do sleep 0.02; done
python3 -c "import sys; print(f'start-up to ready over that store: {float(sys.argv[2]) - float(sys.argv[1]):.2f} s')" \
  "$START" "$(date +%s.%N)"
awk '/VmRSS/ {printf "RSS after start-up: %.0f MB\n", $2/1024}' "/proc/$PID/status"
