#!/usr/bin/env bash
# Bulk import rate: writes a catalogue of ROWS single-warehouse SKUs as CSV
# (`SKU-000000000,,100` rows), then RUNS times starts inventoryd on an empty
# data dir, imports the file with `inventoryctl import --chunk 10000
# --concurrency 4`, and prints the importer's rows/s, the service's CPU
# seconds and its peak RSS. Usage:
#   bench/scripts/import.sh ROWS [RUNS]          e.g. 10000000 5
# BIN_DIRS="dirA dirB" alternates the builds in those directories run by run
# (default: target/release), so two builds are compared in the same hour.
# INVENTORYD_ARGS is passed to inventoryd (e.g. "--expected-skus 10000000").
# Needs release builds of inventoryd and inventoryctl
# (`cargo build --release -p inventory-gateway --bins`).
set -euo pipefail
rows=${1:?usage: import.sh ROWS [RUNS]}
runs=${2:-3}
read -r -a bins <<<"${BIN_DIRS:-target/release}"
work=$(mktemp -d "${TMPDIR:-/tmp}/import-bench.XXXXXX")
port=$((20000 + $$ % 20000))
trap 'kill "${pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT

file="$work/catalogue.csv"
awk -v n="$rows" 'BEGIN { print "skuId,warehouseId,qty"; for (i = 0; i < n; i++) printf "SKU-%09d,,100\n", i }' >"$file"

for run in $(seq 1 "$runs"); do
  for bin in "${bins[@]}"; do
    data="$work/data"
    rm -rf "$data"
    # shellcheck disable=SC2086
    "$bin/inventoryd" --listen "127.0.0.1:$port" --data-dir "$data" ${INVENTORYD_ARGS:-} >"$work/inventoryd.log" 2>&1 &
    pid=$!
    until curl -sf "127.0.0.1:$port/readyz" >/dev/null; do
      kill -0 "$pid" 2>/dev/null || { cat "$work/inventoryd.log"; exit 1; }
      sleep 0.2
    done
    line=$("$bin/inventoryctl" import --file "$file" --url "http://127.0.0.1:$port" --chunk 10000 --concurrency 4 | tail -n 1)
    cpu=$(awk '{ printf "%.1f", ($14 + $15) / 100 }' "/proc/$pid/stat")
    peak=$(awk '/VmHWM/ { printf "%d", $2 / 1024 }' "/proc/$pid/status")
    rate=$(sed -n 's/.*(\([0-9]*\) rows\/s).*/\1/p' <<<"$line")
    echo "run $run $bin: $rate rows/s, inventoryd CPU ${cpu} s, peak RSS ${peak} MB"
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
  done
done
