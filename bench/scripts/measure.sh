#!/usr/bin/env bash
# Runs the measurements behind the results table in bench/README.md: every
# scenario against the service and the three baselines, in one process per
# scenario so that the ratios come from the same run. Usage:
#   bench/scripts/measure.sh [OUT_DIR] [RUNS]
# Needs release builds of inventoryd and inventory-bench in the same
# directory (BIN_DIR, default target/release) and PostgreSQL and Redis on
# their default local ports. Before each run it waits until no compiler is
# running, and it notes in OUT_DIR/busy.log any run that shared the CPUs
# with one. TARGETS overrides the targets of every run.
set -euo pipefail
out=${1:-target/inventory-bench/measure}
runs=${2:-3}
bin=${BIN_DIR:-target/release}/inventory-bench
all=${TARGETS:-service,service-file,memory,postgres,redis-always,redis-everysec}
mkdir -p "$out"

idle() {
  while pgrep -x rustc >/dev/null || pgrep -x cc >/dev/null; do sleep 5; done
}

run() {
  local name=$1; shift
  idle
  local marker="$out/.busy-$name"
  rm -f "$marker"
  ( while sleep 1; do pgrep -x rustc >/dev/null && touch "$marker"; done ) &
  local watcher=$!
  "$bin" run --no-progress --out-dir "$out/$name" "$@" 2>&1 | tee "$out/$name.txt" || true
  kill "$watcher" 2>/dev/null || true
  if [ -e "$marker" ]; then echo "$name: a compiler ran during the run" >>"$out/busy.log"; rm -f "$marker"; fi
}

for i in $(seq 1 "$runs"); do
  run "max-reserves-$i" --scenario max --mix reserves --duration 15s --catalogue 100000 --targets "$all"
  run "hot-only-reserves-$i" --scenario hot-only --mix reserves --duration 15s --catalogue 1000 --targets "$all"
done
run max-orders --scenario max --duration 20s --catalogue 100000 --targets "$all"
run peak --scenario peak --duration 30s --targets "$all"
run hot-burst --scenario hot-burst --duration 30s --catalogue 100000 --targets "$all"
run double-peak --scenario double-peak --duration 30s --catalogue 100000 --targets "$all"
