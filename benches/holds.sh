#!/usr/bin/env bash
# Live holds with a client that records every request: six 10 s windows of keyed orders
# for one hot SKU on one server (`ordo bench`, per-request HDR histogram), every order
# left PENDING, so the last window runs with ~1M+ live holds. After each window it prints
# how many checkpoints have finished (`ordo_checkpoints_total`), so a window's tail can be
# lined up with them. Target (SPEC §6): p99 of the last window within 1.5x the first's.
#
#   benches/holds.sh [WINDOWS] [CONNS]          e.g. benches/holds.sh 6 64
#   ORDO=/path/to/ordo benches/holds.sh          (another binary; interleave for before/after)
#
# The SKU is `ordo bench`'s own (BENCH-FLASH-1). Everything listens on 127.0.0.1 and stops
# when the script ends.
set -euo pipefail
cd "$(dirname "$0")/.."
WINDOWS="${1:-6}"
CONNS="${2:-64}"
ORDO="${ORDO:-${CARGO_TARGET_DIR:-target}/release/ordo}"
PORT="${PORT:-18190}"
[ -x "$ORDO" ] || { echo "no ordo binary at $ORDO (cargo build --release)" >&2; exit 2; }
command -v curl >/dev/null || { echo "needs curl" >&2; exit 2; }
WORK="$(mktemp -d)"
"$ORDO" serve --data-dir "$WORK/data" --listen "127.0.0.1:$PORT" --log-format json 2>"$WORK/log" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 1 200); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.05; done
: >"$WORK/p99"
for w in $(seq 1 "$WINDOWS"); do
  setup=()
  [ "$w" = 1 ] && setup=(--setup --stock 100000000)
  out="$("$ORDO" bench flash-sale --url "http://127.0.0.1:$PORT" --concurrency "$CONNS" \
    --duration 10s --idempotency-keys "${setup[@]}" 2>&1)"
  rps="$(grep -o '[0-9]* requests/s' <<<"$out" | cut -d' ' -f1)"
  lat="$(grep 'latency' <<<"$out" | sed -E 's/ +/ /g; s/^ //')"
  ckpt="$(curl -sf "http://127.0.0.1:$PORT/metrics" | awk '/^ordo_checkpoints_total/ {print $2}')"
  echo "window $w: $rps req/s; $lat; checkpoints so far $ckpt"
  grep -o 'p99 [0-9.]*' <<<"$lat" | cut -d' ' -f2 >>"$WORK/p99"
done
echo "live holds at the end: $(curl -sf "http://127.0.0.1:$PORT/v1/skus/BENCH-FLASH-1" | grep -o '"reserved":[0-9]*' | cut -d: -f2)"
grep -h 'checkpoint written' "$WORK/log" | sed -E 's/.*"seq":([0-9]+).*"pending_without_actor":([0-9]+).*"millis":([0-9]+).*/checkpoint at seq \1: \2 PENDING orders, \3 ms/' || true
awk 'NR == 1 {first = $1} {last = $1} END {printf "p99 first %.2f ms, last %.2f ms: ratio %.2f (target <= 1.5)\n", first, last, last / first}' "$WORK/p99"
