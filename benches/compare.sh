#!/usr/bin/env bash
# Ordo beside what a user would pick instead, in the same run on the same machine (SPEC §6):
#   nginx `return 200`           under wrk -t$THREADS -c$CONNS (the HTTP ceiling)
#   Redis, Lua check+DECR+XADD   with appendfsync always, under its own redis-benchmark -c50
#   Ordo POST /v1/orders         one hot SKU, `sync`, a fresh Idempotency-Key per order,
#                                under the same wrk; and the same without keys
# Each round starts every server fresh; prints every run, then medians and the ratios
# SPEC §6 sets targets for. With HOLDS=1 it then runs Ordo for 6 x 10 s back to back (keyed
# orders; every one stays a live hold) and compares the p99 of the last 10 s with the
# first's (target: within 1.5x).
#
#   benches/compare.sh [ROUNDS] [DURATION]        e.g. benches/compare.sh 3 10s
#   THREADS=6 CONNS=256 benches/compare.sh        (a 16-core machine)
#
# Needs wrk, nginx, redis-server, redis-benchmark, redis-cli, curl, python3 (Debian: wrk
# nginx-light redis-server curl) and the release binary (ORDO=path overrides it).
# Everything listens on 127.0.0.1 only and stops when the script ends.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"
DURATION="${2:-10s}"
THREADS="${THREADS:-1}"
CONNS="${CONNS:-64}"
ORDO="${ORDO:-${CARGO_TARGET_DIR:-target}/release/ordo}"
NGINX_PORT=18180 REDIS_PORT=18181 ORDO_PORT=18182
for tool in wrk nginx redis-server redis-benchmark redis-cli curl python3; do
  command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install wrk nginx-light redis-server curl)" >&2; exit 2; }
done
[ -x "$ORDO" ] || { echo "no ordo binary at $ORDO (cargo build --release)" >&2; exit 2; }
WORK="$(mktemp -d)"
PIDS=()
stop_all() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; PIDS=(); }
trap 'stop_all; rm -rf "$WORK"' EXIT
SECS="${DURATION%s}"

wait_for() { # $1 = command that succeeds once the server is up
  for _ in $(seq 1 200); do eval "$1" >/dev/null 2>&1 && return 0; sleep 0.05; done
  echo "server did not come up: $1" >&2; exit 1
}

run_nginx() {
  mkdir -p "$WORK/nginx"
  cat >"$WORK/nginx/nginx.conf" <<CONF
worker_processes auto;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx; proxy_temp_path $WORK/nginx; fastcgi_temp_path $WORK/nginx;
  uwsgi_temp_path $WORK/nginx; scgi_temp_path $WORK/nginx;
  server { listen 127.0.0.1:$NGINX_PORT; location / { return 200 "ok"; } }
}
CONF
  nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" & PIDS+=($!)
  wait_for "curl -sf http://127.0.0.1:$NGINX_PORT/"
  wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" -s benches/compare/ping.lua "http://127.0.0.1:$NGINX_PORT/" \
    | grep ORDO_RESULT | sed 's/^ORDO_RESULT/nginx/'
  stop_all
}

run_redis() {
  rm -rf "$WORK/redis"; mkdir -p "$WORK/redis"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly yes \
    --appendfsync always --dir "$WORK/redis" --daemonize no >"$WORK/redis/log" 2>&1 & PIDS+=($!)
  wait_for "redis-cli -p $REDIS_PORT ping | grep -q PONG"
  redis-cli -p "$REDIS_PORT" set stock 1000000000 >/dev/null
  local sha; sha="$(redis-cli -p "$REDIS_PORT" script load "$(cat benches/compare/reserve.lua)")"
  # A fixed count sized to take about DURATION at ~40k/s.
  redis-benchmark -p "$REDIS_PORT" -c 50 -n "$((SECS * 40000))" -r 1000000 --csv \
    evalsha "$sha" 2 stock orders __rand_int__ 2>/dev/null | tail -1 | python3 -c '
import csv, sys
row = next(csv.reader(sys.stdin))
print(f"redis rps={float(row[1]):.0f} p50_ms={float(row[4]):.2f} p99_ms={float(row[6]):.2f} non201=0 errors=0")'
  stop_all
}

start_ordo() {
  rm -rf "$WORK/ordo"
  "$ORDO" serve --data-dir "$WORK/ordo" --listen "127.0.0.1:$ORDO_PORT" --log-format json \
    2>"$WORK/ordo.log" & PIDS+=($!)
  wait_for "curl -sf http://127.0.0.1:$ORDO_PORT/readyz"
  curl -sf -XPUT "http://127.0.0.1:$ORDO_PORT/v1/skus/HOT" -H 'Content-Type: application/json' \
    -d '{"name":"Hot","price_minor":1000,"currency":"EUR","stock":100000000}' >/dev/null
}

ordo_wrk() { # $1 = label, $2 = KEYED (1/0), $3 = RUN id, $4 = duration
  KEYED="$2" RUN="$3" wrk -t"$THREADS" -c"$CONNS" -d"$4" -s benches/compare/order.lua \
    "http://127.0.0.1:$ORDO_PORT" | grep ORDO_RESULT | sed "s/^ORDO_RESULT/$1/"
}

run_ordo() { # $1 = label, $2 = KEYED
  start_ordo
  ordo_wrk warmup "$2" "warm-$1-$RANDOM" 2s >/dev/null
  ordo_wrk "$1" "$2" "run-$1-$RANDOM" "$DURATION"
  stop_all
}

echo "# $(date -u +%FT%TZ) $(nproc) cores; wrk -t$THREADS -c$CONNS -d$DURATION; redis-benchmark -c50"
for i in $(seq 1 "$ROUNDS"); do
  { run_nginx; run_redis; run_ordo ordo-keyed 1; run_ordo ordo-unkeyed 0; } | tee -a "$WORK/results"
done
python3 - "$WORK/results" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    label, *kv = line.split()
    runs.setdefault(label, []).append({k: float(v) for k, v in (x.split("=") for x in kv)})
med = {k: {f: statistics.median(r[f] for r in v) for f in v[0]} for k, v in runs.items()}
for k, m in med.items():
    print(f"median {k:13} {m['rps']:9.0f} req/s  p50 {m['p50_ms']:6.2f} ms  p99 {m['p99_ms']:6.2f} ms")
k = med["ordo-keyed"]
print(f"ordo keyed / redis-always  {k['rps'] / med['redis']['rps']:.2f}  (target >= 1.0)")
print(f"ordo keyed / nginx         {k['rps'] / med['nginx']['rps']:.2f}  (target >= 0.35)")
print(f"ordo keyed / unkeyed       {k['rps'] / med['ordo-unkeyed']['rps']:.2f}  (target >= 0.9)")
print(f"ordo keyed p99             {k['p99_ms']:.2f} ms  (target <= 10)")
PY

if [ "${HOLDS:-0}" = 1 ]; then
  echo "# live holds: 6 x 10 s of keyed orders on one server, every order left PENDING"
  start_ordo
  for w in 1 2 3 4 5 6; do ordo_wrk "window-$w" 1 "holds-$w" 10s | tee -a "$WORK/holds"; done
  curl -sf "http://127.0.0.1:$ORDO_PORT/v1/skus/HOT" | python3 -c 'import json,sys; print("live holds at the end:", json.load(sys.stdin)["reserved"])'
  stop_all
  python3 - "$WORK/holds" <<'PY'
import sys
p99 = [float(l.split("p99_ms=")[1].split()[0]) for l in open(sys.argv[1])]
print(f"p99 first 10 s {p99[0]:.2f} ms, last 10 s {p99[-1]:.2f} ms: ratio {p99[-1] / p99[0]:.2f} (target <= 1.5)")
PY
fi
