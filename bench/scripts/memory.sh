#!/usr/bin/env bash
# Resident memory of inventoryd holding N SKUs: builds a data dir of N SKUs
# (a snapshot per shard, via the restart example), starts inventoryd on it,
# and reads its VmRSS once it is ready, next to the RSS of an inventoryd on an
# empty data dir. Usage:
#   bench/scripts/memory.sh N [N...]          e.g. 1000000 10000000 50000000
# Needs release builds of inventoryd and the restart example
# (`cargo build --release -p inventory-gateway -p inventory-bench --examples`).
set -euo pipefail
bin=${BIN_DIR:-target/release}
work=$(mktemp -d)
port=$((20000 + $$ % 20000))
trap 'kill "${pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT

# Starts inventoryd on $1, waits until ready, prints its RSS in kB.
rss_of() {
  "$bin/inventoryd" --listen "127.0.0.1:$port" --data-dir "$1" --snapshot-every-entries 0 \
    >"$work/inventoryd.log" 2>&1 &
  pid=$!
  until curl -sf "127.0.0.1:$port/readyz" >/dev/null; do
    kill -0 "$pid" 2>/dev/null || { cat "$work/inventoryd.log"; exit 1; }
    sleep 0.2
  done
  sleep 2
  awk '/VmRSS/ {print $2}' "/proc/$pid/status"
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
}

mkdir -p "$work/empty"
empty=$(rss_of "$work/empty")
echo "inventoryd on an empty data dir: RSS $((empty / 1024)) MB"
for n in "$@"; do
  "$bin/examples/restart" --skus "$n" --entries 0 --dir "$work/d$n" --keep >/dev/null
  rss=$(rss_of "$work/d$n")
  echo "inventoryd with $n SKUs: RSS $((rss / 1024)) MB; $(( (rss - empty) * 1024 / n )) bytes/SKU above the empty service"
  rm -rf "$work/d$n"
done
