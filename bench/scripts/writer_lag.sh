#!/usr/bin/env bash
# The PostgreSQL writer beside a saturated service on the same machine:
# starts inventoryd with --postgres-url on a fresh schema, runs the `max`
# scenario (reserves only, 1M SKUs; holds expire after 30 s, so the second
# half of the run also writes the expiries), samples the writer's lag every
# 5 s from GET /api/admin/persistence, and reports how long the writer
# takes to catch up after the load stops. Usage:
#   bench/scripts/writer_lag.sh [DURATION] [OUT_DIR]     (default 60s)
# Needs release builds of inventoryd and inventory-bench (BIN_DIR, default
# target/release) and PostgreSQL at PG_URL.
set -euo pipefail
duration=${1:-60s}
out=${2:-target/inventory-bench/writer-lag}
bin=${BIN_DIR:-target/release}
url=${PG_URL:-postgres://root@127.0.0.1:5432/test}
schema=writer_lag_$$
port=$((20000 + $$ % 20000))
data=$(mktemp -d)
mkdir -p "$out"
cleanup() {
  [ -n "${sampler:-}" ] && kill "$sampler" 2>/dev/null || true
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null || true
  psql "$url" -qc "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
  rm -rf "$data"
}
trap cleanup EXIT

lag() {
  curl -sf "127.0.0.1:$port/api/admin/persistence" | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(sum(s["lagRecords"] for s in d["shards"]), max(s["lagSeconds"] for s in d["shards"]))'
}

"$bin/inventoryd" --listen "127.0.0.1:$port" --data-dir "$data" --postgres-url "$url" \
  --postgres-schema "$schema" >"$out/inventoryd.log" 2>&1 &
pid=$!
for _ in $(seq 1 50); do lag >/dev/null 2>&1 && break; sleep 0.2; done
( while sleep 5; do echo "$(date +%T) $(lag)"; done ) >"$out/lag.log" 2>&1 &
sampler=$!
"$bin/inventory-bench" run --no-progress --scenario max --mix reserves --duration "$duration" \
  --catalogue 1000000 --target-url "http://127.0.0.1:$port" --out-dir "$out" 2>&1 | tee "$out/bench.txt" |
  grep -E "seeded|^service  |audit:"
stopped=$(date +%s)
while [ "$(lag | cut -d' ' -f1)" != 0 ]; do sleep 1; done
echo "writer caught up $(( $(date +%s) - stopped )) s after the benchmark (load, then its audit) ended"
echo "largest lag sampled (records, seconds): $(sort -k2 -n "$out/lag.log" | tail -1 | cut -d' ' -f2-)"
