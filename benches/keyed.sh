#!/usr/bin/env bash
# Keyed vs unkeyed orders on one hot SKU over HTTP, `sync`, same binary, same run
# (issue: "a keyed order costs >= 0.9 x an unkeyed one"). Rounds alternate keyed and
# unkeyed, each on a fresh server and data dir; prints each run and the medians.
#
#   benches/keyed.sh [ROUNDS] [DURATION] [CONCURRENCY]
#
# Needs the release binary (`cargo build --release`); ORDO=path overrides it. With
# BASELINE=path/to/another/ordo, each round also runs that server (same client, this
# binary's `ordo bench`), e.g. the previous release, for a before/after in one run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"
DURATION="${2:-10s}"
CONC="${3:-64}"
ORDO="${ORDO:-${CARGO_TARGET_DIR:-target}/release/ordo}"
PORT="${PORT:-18091}"
WORK="$(mktemp -d)"
trap 'kill "$PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT
PID=""

run() { # $1 = label, $2 = extra bench flags, $3 = server binary
  rm -rf "$WORK/data"
  "${3:-$ORDO}" serve --data-dir "$WORK/data" --listen "127.0.0.1:$PORT" --log-format json \
    2>"$WORK/server.log" &
  PID=$!
  for _ in $(seq 1 400); do
    curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
    sleep 0.05
  done
  # shellcheck disable=SC2086
  "$ORDO" bench flash-sale --url "http://127.0.0.1:$PORT" --setup --stock 100000000 \
    --concurrency "$CONC" --duration "$DURATION" --quiet --json $2 >"$WORK/out.json"
  kill -TERM "$PID"; wait "$PID" || true
  python3 - "$1" "$WORK/out.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[2]))
lat = r["latency_us"]
print(f'{sys.argv[1]:8} {r["requests_per_s"]:10.0f} req/s  p50 {lat["p50"]/1000:6.2f} ms  p99 {lat["p99"]/1000:6.2f} ms  errors {r["errors"]}  audit {r["audit"]["ok"]}')
EOF
}

for i in $(seq 1 "$ROUNDS"); do
  run unkeyed "" | tee -a "$WORK/results"
  run keyed "--idempotency-keys" | tee -a "$WORK/results"
  if [ -n "${BASELINE:-}" ]; then
    run base-unkeyed "" "$BASELINE" | tee -a "$WORK/results"
    run base-keyed "--idempotency-keys" "$BASELINE" | tee -a "$WORK/results"
  fi
done
python3 - "$WORK/results" <<'EOF'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
for prefix in ("", "base-"):
    got = {k: [float(r[1]) for r in rows if r[0] == prefix + k] for k in ("unkeyed", "keyed")}
    if not got["keyed"]:
        continue
    med = {k: statistics.median(v) for k, v in got.items()}
    print(f'{prefix or "this "}median unkeyed {med["unkeyed"]:.0f} req/s, keyed {med["keyed"]:.0f} req/s, keyed/unkeyed {med["keyed"]/med["unkeyed"]:.2f}')
EOF
