#!/usr/bin/env bash
# Times `inventoryd restore` from a PostgreSQL schema holding ROWS inventory
# rows (made with generate_series in a schema migrated by the service's own
# writer). Usage:
#   bench/scripts/restore.sh [ROWS]          (default 1000000)
# Needs a release build of inventoryd (BIN_DIR, default target/release) and
# PostgreSQL at PG_URL (default postgres://root@127.0.0.1:5432/test).
set -euo pipefail
rows=${1:-1000000}
bin=${BIN_DIR:-target/release}/inventoryd
url=${PG_URL:-postgres://root@127.0.0.1:5432/test}
schema=restore_bench_$$
work=$(mktemp -d)
port=$((20000 + $$ % 20000))
cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null || true
  psql "$url" -qc "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# Let the service's writer create and migrate the schema.
"$bin" --listen "127.0.0.1:$port" --data-dir "$work/source" --postgres-url "$url" \
  --postgres-schema "$schema" >"$work/source.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  n=$(psql "$url" -Atc "SELECT count(*) FROM $schema.writer_checkpoint" 2>/dev/null || echo 0)
  [ "${n:-0}" -ge 1 ] && break
  sleep 0.1
done
sleep 1
kill "$pid"; wait "$pid" 2>/dev/null || true; pid=

psql "$url" -qc "INSERT INTO $schema.inventory (sku_id, warehouse_id, available, reserved, sold, version, updated_at)
                 SELECT 'sku-' || lpad(g::text, 9, '0'), 'default', 100, 0, 0, 1, now()
                 FROM generate_series(0, $rows - 1) g"
psql "$url" -qc "ANALYZE $schema.inventory"

timer=()
[ -x /usr/bin/time ] && timer=(/usr/bin/time -f "peak RSS %M KB")
start=$(date +%s%N)
"${timer[@]}" "$bin" restore --from-postgres "$url" --postgres-schema "$schema" \
  --data-dir "$work/restored" 2>&1 | tail -3
end=$(date +%s%N)
ms=$(( (end - start) / 1000000 ))
echo "restore of $rows inventory rows: $((ms / 1000)).$(printf %03d $((ms % 1000))) s"
