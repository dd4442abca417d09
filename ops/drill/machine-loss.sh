#!/usr/bin/env bash
# Machine-loss drill: inventoryd under the order mix loses its machine
# (kill -9 and its data dir deleted), is restored from PostgreSQL into a new
# data dir and started again; then the drill measures and checks:
#
#   RTO      kill -> restored -> ready -> a reserve answered
#   RPO      acknowledged writes the restored service lacks (from the load
#            generator's ledger, every hold read back), each of which must
#            have been acknowledged after PostgreSQL's last applied change
#   expiry   holds whose expiry passed during the outage read EXPIRED
#   events   the relay's lag reaches 0 and every change in inventory_txn has
#            its event in the stream (distinct event ids >= txn rows)
#   reconcile  POST /api/admin/reconcile finds no mismatch
#
# It starts its own nats-server (-js, a free port, its own store) and uses a
# fresh PostgreSQL schema; both go away at the end, whatever happens.
# Output: a short report, then one JSON line with the numbers. Exit status
# 0 when every check passed, 1 when one failed, 2 on bad usage.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: ops/drill/machine-loss.sh [options]

Options:
  --skus N                  SKUs seeded (default 1000000)
  --load DURATION           order mix before the machine is lost: 90s, 3m (default 3m)
  --rate N                  offered requests per second, open loop (default: closed
                            loop, as fast as the service answers)
  --connections N           load-generator connections (default 64)
  --ttl-secs N              hold time of every reserve and --reservation-ttl-secs
                            (default 30): holds still open at the loss expire
                            during or soon after the outage
  --journal sled|file       journal of both data dirs (default file)
  --service-arg ARG         extra inventoryd flag, both starts (repeatable), e.g.
                            --service-arg=--max-replication-lag-secs=5
  --rto-target-secs N       fail if the RTO is longer (default 900)
  --rpo-target-secs N       fail if a lost write is older than this at the loss (default 30)
  --pg-url URL              PostgreSQL (default $PG_URL or postgres://root@127.0.0.1:5432/test)
  --bin-dir DIR             inventoryd, inventoryctl, inventory-bench (default $BIN_DIR
                            or target/release)
  --nats-server PATH        nats-server binary (default $NATS_SERVER, or on PATH, or
                            /usr/sbin/nats-server)
  --work-dir DIR            logs, ledger and data dirs (default: a new temp dir)
  --keep                    keep the work dir (default: deleted at the end)
  -h, --help                this text

Build first: cargo build --release -p inventory-gateway -p inventory-bench
Needs curl, jq and psql.
EOF
}

die() { echo "machine-loss: $*" >&2; exit 2; }

skus=1000000 load=3m rate= connections=64 ttl=30 journal=file
rto_target=900 rpo_target=30 keep=0 work=
pg_url=${PG_URL:-postgres://root@127.0.0.1:5432/test}
bin_dir=${BIN_DIR:-target/release}
nats_bin=${NATS_SERVER:-}
service_args=()
while [ $# -gt 0 ]; do
  arg=$1
  case $arg in
    --*=*) set -- "${arg%%=*}" "${arg#*=}" "${@:2}"; continue ;;
  esac
  case $arg in
    -h|--help) usage; exit 0 ;;
    --keep) keep=1; shift; continue ;;
    --skus|--load|--rate|--connections|--ttl-secs|--journal|--service-arg|--rto-target-secs|--rpo-target-secs|--pg-url|--bin-dir|--nats-server|--work-dir)
      [ $# -ge 2 ] || die "$arg needs a value (see --help)" ;;
    *) die "unknown option $arg (see --help)" ;;
  esac
  case $arg in
    --skus) skus=$2 ;;
    --load) load=$2 ;;
    --rate) rate=$2 ;;
    --connections) connections=$2 ;;
    --ttl-secs) ttl=$2 ;;
    --journal) journal=$2 ;;
    --service-arg) service_args+=("$2") ;;
    --rto-target-secs) rto_target=$2 ;;
    --rpo-target-secs) rpo_target=$2 ;;
    --pg-url) pg_url=$2 ;;
    --bin-dir) bin_dir=$2 ;;
    --nats-server) nats_bin=$2 ;;
    --work-dir) work=$2 ;;
  esac
  shift 2
done

# A duration (90, 90s, 3m, 1h) in whole seconds.
seconds_of() {
  case $1 in
    *[!0-9smh]*|'') return 1 ;;
    *h) echo $(( ${1%h} * 3600 )) ;;
    *m) echo $(( ${1%m} * 60 )) ;;
    *s) echo "${1%s}" ;;
    *) echo "$1" ;;
  esac
}
load_s=$(seconds_of "$load") && [ "$load_s" -gt 0 ] || die "--load $load is not a duration like 90s or 3m"
for v in skus connections ttl rto_target rpo_target; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "--${v//_/-} must be a positive whole number, got '${!v}'"
done
[ -z "$rate" ] || [[ $rate =~ ^[1-9][0-9]*$ ]] || die "--rate must be a positive whole number, got '$rate'"
case $journal in sled|file) ;; *) die "--journal must be sled or file, got '$journal'" ;; esac
for b in inventoryd inventoryctl inventory-bench; do
  [ -x "$bin_dir/$b" ] || die "no $bin_dir/$b: build with cargo build --release -p inventory-gateway -p inventory-bench, or pass --bin-dir"
done
if [ -z "$nats_bin" ]; then
  nats_bin=$(command -v nats-server || echo /usr/sbin/nats-server)
fi
[ -x "$nats_bin" ] || die "no nats-server at $nats_bin (pass --nats-server)"
for tool in curl jq psql; do
  command -v "$tool" >/dev/null || die "$tool is needed"
done
psql "$pg_url" -XAtqc 'SELECT 1' >/dev/null 2>&1 || die "PostgreSQL at $pg_url is unreachable"

bin_dir=$(cd "$bin_dir" && pwd)
if [ -z "$work" ]; then
  work=$(mktemp -d "${TMPDIR:-/tmp}/machine-loss.XXXXXX")
else
  mkdir -p "$work"
  work=$(cd "$work" && pwd)
fi
schema="drill_machine_loss_$$_$RANDOM"
service_pid= nats_pid= bench_pid=

cleanup() {
  local rc=$?
  for pid in $bench_pid $service_pid $nats_pid; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in $bench_pid $service_pid $nats_pid; do
    wait "$pid" 2>/dev/null || true
  done
  psql "$pg_url" -XAtqc "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
  if [ "$keep" = 1 ]; then
    echo "machine-loss: work dir kept: $work" >&2
  else
    rm -rf "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

now_ms() { date +%s%3N; }
secs() { awk -v ms="$1" 'BEGIN { printf "%.1f", ms / 1000 }'; }
log() { echo "machine-loss: $*" >&2; }

# Waits until FILE has a line matching PATTERN while PID lives; prints it.
wait_line() {
  local file=$1 pattern=$2 pid=$3 what=$4 deadline=$(( $(date +%s) + $5 ))
  while :; do
    if line=$(grep -m1 -E "$pattern" "$file" 2>/dev/null); then
      echo "$line"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || { log "$what exited; see $file and the log beside it"; return 1; }
    [ "$(date +%s)" -lt "$deadline" ] || { log "$what: timed out"; return 1; }
    sleep 0.05
  done
}

# --- a private broker -------------------------------------------------------
mkdir -p "$work/nats"
"$nats_bin" -a 127.0.0.1 -p -1 -js -sd "$work/nats" --ports_file_dir "$work/nats" \
  >"$work/nats.log" 2>&1 &
nats_pid=$!
ports_file="$work/nats/$(basename "$nats_bin")_$nats_pid.ports"
nats_url=$(wait_line "$ports_file" 'nats://' "$nats_pid" nats-server 10 | grep -o 'nats://[0-9.:]*' | head -1)
[ -n "$nats_url" ] || exit 1

# --- the machine that will be lost ------------------------------------------
service_flags=(--journal "$journal" --postgres-url "$pg_url" --postgres-schema "$schema"
  --events-nats-url "$nats_url" --reservation-ttl-secs "$ttl" "${service_args[@]}")

# Starts inventoryd on data dir $1 (log name $2); sets service_pid and url.
start_service() {
  "$bin_dir/inventoryd" --listen 127.0.0.1:0 --data-dir "$1" "${service_flags[@]}" \
    >"$work/$2.out" 2>"$work/$2.log" &
  service_pid=$!
  local line
  line=$(wait_line "$work/$2.out" ' listening on http://' "$service_pid" inventoryd 600) || return 1
  url=${line##* listening on }
  url=${url%/}
  local deadline=$(( $(date +%s) + 600 ))
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "$url/readyz")" = 200 ]; do
    kill -0 "$service_pid" 2>/dev/null || { log "inventoryd exited; see $work/$2.log"; return 1; }
    [ "$(date +%s)" -lt "$deadline" ] || { log "inventoryd never became ready"; return 1; }
    sleep 0.02
  done
}

post() { curl -s --max-time "${3:-30}" -H 'content-type: application/json' -d "$2" "$url$1"; }

log "work dir $work, schema $schema, broker $nats_url"
start_service "$work/data-lost" inventoryd-lost || exit 1
log "inventoryd at $url (data dir $work/data-lost); seeding $skus SKUs"
post /api/inventory/receive '{"skuId":"drill-probe","qty":1000000,"idemKey":"drill:probe:receive"}' >/dev/null

# --- load, recording every acknowledged write -------------------------------
scenario=(--scenario max)
[ -n "$rate" ] && scenario=(--scenario peak --rate "$rate")
ledger="$work/acks.jsonl"
"$bin_dir/inventory-bench" run "${scenario[@]}" --mix orders --target-url "$url" \
  --catalogue "$skus" --connections "$connections" --hold-ttl-secs "$ttl" \
  --duration "$(( load_s + 3600 ))s" --ledger "$ledger" --stop-when-target-lost \
  --no-progress --out-dir "$work/bench" >"$work/bench.out" 2>"$work/bench.log" &
bench_pid=$!
# The ledger appears when seeding is done and the order mix starts.
deadline=$(( $(date +%s) + 3600 ))
until [ -e "$ledger" ]; do
  kill -0 "$bench_pid" 2>/dev/null || { log "inventory-bench exited early; see $work/bench.log"; exit 1; }
  [ "$(date +%s)" -lt "$deadline" ] || { log "seeding took over an hour"; exit 1; }
  sleep 0.1
done
seeded=$(grep -o 'seeded [0-9]* SKUs in [0-9.]* s' "$work/bench.log" || true)
log "${seeded:-seeded}; order mix for ${load_s} s"
sleep "$load_s"

# --- the machine is lost ----------------------------------------------------
persistence=$(curl -s --max-time 5 "$url/api/admin/persistence")
kill -9 "$service_pid"
lost_at=$(now_ms)
wait "$service_pid" 2>/dev/null || true
service_pid=
rm -rf "$work/data-lost"

# --- restore onto a new machine ---------------------------------------------
"$bin_dir/inventoryd" restore --from-postgres "$pg_url" --postgres-schema "$schema" \
  --data-dir "$work/data-restored" --journal "$journal" >"$work/restore.out" 2>"$work/restore.log" \
  || { log "restore failed; see $work/restore.log"; exit 1; }
restore_end=$(now_ms)
# Per shard, the journal time of the last change PostgreSQL applied, read
# before the restored service's writer moves it on.
applied=$(psql "$pg_url" -XAtqc "SELECT string_agg(shard || ':' || last_at_ms, ',' ORDER BY shard)
                                 FROM $schema.writer_checkpoint")
start_service "$work/data-restored" inventoryd-restored || exit 1
ready_at=$(now_ms)
reserved_at=
deadline=$(( $(date +%s) + 60 ))
while [ "$(date +%s)" -lt "$deadline" ]; do
  reply=$(post /api/inventory/reserve '{"orderId":"drill-after","skuId":"drill-probe","qty":1,"idemKey":"drill:after:reserve"}' 5 || true)
  if jq -e '.status == "RESERVED"' >/dev/null 2>&1 <<<"$reply"; then
    reserved_at=$(now_ms)
    break
  fi
  sleep 0.05
done
[ -n "$reserved_at" ] || { log "the restored service never granted a reserve: $reply"; exit 1; }
restore_ms=$(( restore_end - lost_at ))
start_ms=$(( ready_at - restore_end ))
rto_ms=$(( reserved_at - lost_at ))
log "RTO $(secs $rto_ms) s: restore $(secs $restore_ms) s, start $(secs $start_ms) s, first reserve $(secs $(( reserved_at - ready_at ))) s"

# The load generator stopped when the service went away; its ledger is
# complete once it exits.
bench_rc=0
wait "$bench_pid" || bench_rc=$?
bench_pid=
[ "$bench_rc" = 0 ] || { log "inventory-bench failed ($bench_rc); see $work/bench.log"; exit 1; }
lag_s=$(jq '[.shards[].lagSeconds] | max' <<<"$persistence" 2>/dev/null || true)
lag_records=$(jq '[.shards[].lagRecords] | add' <<<"$persistence" 2>/dev/null || true)
lag_s=${lag_s:-null} lag_records=${lag_records:-null}
oldest_applied=$(tr ',' '\n' <<<"$applied" | cut -d: -f2 | sort -n | head -1)
log "writer lag just before the kill: $(awk -v s="$lag_s" 'BEGIN { printf "%.2f", s }') s, $lag_records records; PostgreSQL had applied changes up to $(secs $(( lost_at - oldest_applied ))) s before it"
restored=$(grep -m1 '^restored ' "$work/restore.out" || true)
log "${restored:-restore printed nothing}"
restored_rows=$(sed -nE 's/^restored ([0-9]+) rows.*/\1/p' <<<"$restored")
restored_holds=$(sed -nE 's/^restored [0-9]+ rows and ([0-9]+) holds.*/\1/p' <<<"$restored")
backlog=$(sed -nE 's/.* ([0-9]+) events to publish again.*/\1/p' <<<"$restored")

# --- what the restored service has ------------------------------------------
# Every hold of the run expires within ttl of the loss; wait for that, so
# each unsettled one must read EXPIRED.
settle_ms=$(( lost_at + ttl * 1000 + 1000 - $(now_ms) ))
[ "$settle_ms" -le 0 ] || sleep "$(secs "$settle_ms")"
verify_rc=0
"$bin_dir/inventory-bench" verify --target-url "$url" --ledger "$ledger" --applied-at-ms "$applied" \
  --lost-at-ms "$lost_at" --ready-at-ms "$ready_at" >"$work/verify.json" 2>"$work/verify.log" || verify_rc=$?
[ "$verify_rc" -le 2 ] && [ -s "$work/verify.json" ] || { log "verify failed; see $work/verify.log"; exit 1; }
sed 's/^/  /' "$work/verify.log" >&2
verify=$(tail -1 "$work/verify.json")
v() { jq -r ".$1 // 0" <<<"$verify"; }
acked=$(v acked) missing=$(v missing) missing_before=$(v missing_before_checkpoint)
first_missing=$(jq -r '.missing_first_ack_ms // empty' <<<"$verify")
rpo_ms=0
[ -z "$first_missing" ] || rpo_ms=$(( lost_at - first_missing ))

# --- PostgreSQL and the event relay caught up ------------------------------
# Each must reach lag 0; one that makes no progress for stall_s is stuck.
stall_s=60
# Polls $1 (an admin endpoint) until jq expression $2 is 0; $3 names the
# progress. Leaves the last answer in $answer; fails when stuck.
caught_up() {
  local last= since=$(date +%s) now progress
  while :; do
    answer=$(curl -s --max-time 10 "$url$1")
    [ "$(jq "$2" <<<"$answer" 2>/dev/null)" = 0 ] && return 0
    progress=$(jq -c "$3" <<<"$answer" 2>/dev/null || true)
    now=$(date +%s)
    [ "$progress" = "$last" ] || { last=$progress since=$now; }
    if [ $(( now - since )) -ge "$stall_s" ]; then
      log "no progress in $stall_s s at $1: $answer"
      return 1
    fi
    sleep 0.5
  done
}
caught_up /api/admin/persistence '[.shards[].lagRecords] | add' '[.shards[].appliedSeq]' \
  || { log "the PostgreSQL writer is stuck"; exit 1; }
relay_caught_up=true
caught_up /api/admin/events '.lagEntries' '[.shards[] | .position, .published]' || relay_caught_up=false
events=$answer
published=$(jq '[.shards[].published] | add' <<<"$events")
txn_rows=$(psql "$pg_url" -XAtqc "SELECT count(*) FROM $schema.inventory_txn")
tail_rc=0
"$bin_dir/inventoryctl" events tail --no-follow --nats-url "$nats_url" 2>"$work/tail.log" \
  | grep -o '"id":"[^"]*"' | sort -u -S 25% -T "$work" | wc -l >"$work/stream-ids" || tail_rc=$?
[ "$tail_rc" = 0 ] || { log "reading the stream failed; see $work/tail.log"; exit 1; }
stream_events=$(tr -d ' ' <"$work/stream-ids")
log "events: $backlog to publish again after the restore, $published published since; $stream_events distinct in the stream, $txn_rows changes in inventory_txn"

reconcile=$(post /api/admin/reconcile '{}' 1800 || true)
echo "$reconcile" >"$work/reconcile.json"
reconcile_error=
if jq -e 'has("mismatched")' >/dev/null 2>&1 <<<"$reconcile"; then
  mismatched=$(jq '.mismatched' <<<"$reconcile")
  pg_compared=$(jq '.postgres.compared // 0' <<<"$reconcile")
  history_broken=$(jq '.postgres.historyBroken // 0' <<<"$reconcile")
  log "reconcile: $(jq -c '{checked, mismatched, coreMismatches, postgres}' <<<"$reconcile")"
else
  reconcile_error=${reconcile:-no answer}
  mismatched=-1 pg_compared=0 history_broken=0
  log "reconcile failed: $reconcile_error"
fi

# --- verdict ----------------------------------------------------------------
failed=()
check() { "${@:2}" || failed+=("$1"); }
check verify_clean test "$verify_rc" = 0
check rpo_inside_lag test "$missing_before" = 0
check rpo_target test "$rpo_ms" -le $(( rpo_target * 1000 ))
check rto_target test "$rto_ms" -le $(( rto_target * 1000 ))
check holds_expired_in_outage test "$(v expired_in_outage)" -gt 0
check expired_holds_released test "$(v expired_in_outage_released)" = "$(v expired_in_outage)" -a "$(v not_released)" = 0
check events_caught_up "$relay_caught_up"
check events_republished test "${published:-0}" -ge "${backlog:-0}"
check events_complete test "$stream_events" -ge "$txn_rows"
check reconcile_clean test -z "$reconcile_error" -a "$mismatched" = 0 -a "$history_broken" = 0 -a "$pg_compared" -gt 0

mode="closed loop, $connections connections"
[ -z "$rate" ] || mode="open loop at $rate requests/s"
cat <<EOF
machine-loss drill: $skus SKUs, order mix for $load_s s ($mode), $acked writes acknowledged; $journal journal, hold TTL $ttl s
  writer lag at the kill   $(awk -v s="$lag_s" 'BEGIN { printf "%.2f", s }') s, $lag_records records (PostgreSQL's last applied change $(secs $(( lost_at - oldest_applied ))) s before the kill)
  RTO                      $(secs $rto_ms) s = restore $(secs $restore_ms) s (kill to restored data dir: $restored_rows rows, $restored_holds holds) + start $(secs $start_ms) s + first reserve $(secs $(( reserved_at - ready_at ))) s
  RPO                      $missing acknowledged writes missing, $missing_before of them before PostgreSQL's last applied change; oldest $(secs $rpo_ms) s before the kill
  expiry                   $(v expired_in_outage_released) of $(v expired_in_outage) holds that expired during the outage read EXPIRED; $(v not_released) not released
  events                   $backlog published again from the restored position ($published since the start, lag $(jq .lagEntries <<<"$events") entries); $stream_events distinct events for $txn_rows changes in PostgreSQL
  reconcile                $([ -n "$reconcile_error" ] && echo "failed: $reconcile_error" || echo "$mismatched mismatches over $pg_compared rows")
  result                   $([ ${#failed[@]} = 0 ] && echo "all checks passed" || echo "FAILED: ${failed[*]}")
EOF
jq -nc \
  --argjson skus "$skus" --argjson load_s "$load_s" --argjson acked "$acked" --arg journal "$journal" \
  --argjson ttl_s "$ttl" --argjson lag_s "$lag_s" --argjson lag_records "$lag_records" \
  --argjson checkpoint_age_ms "$(( lost_at - oldest_applied ))" \
  --argjson restore_ms "$restore_ms" --argjson start_ms "$start_ms" \
  --argjson first_reserve_ms "$(( reserved_at - ready_at ))" --argjson rto_ms "$rto_ms" \
  --argjson restored_rows "${restored_rows:-0}" --argjson restored_holds "${restored_holds:-0}" \
  --argjson rpo_ms "$rpo_ms" --argjson verify "$verify" \
  --argjson backlog "${backlog:-0}" --argjson published "${published:-0}" \
  --argjson txn_rows "$txn_rows" --argjson stream_events "$stream_events" \
  --argjson events_lag "$(jq .lagEntries <<<"$events")" \
  --argjson mismatched "$mismatched" --argjson history_broken "$history_broken" \
  --argjson reconciled_rows "$pg_compared" --arg reconcile_error "$reconcile_error" \
  --arg failed "${failed[*]}" \
  '{skus: $skus, load_s: $load_s, journal: $journal, ttl_s: $ttl_s, acked_writes: $acked,
    writer_lag_at_kill_s: $lag_s, writer_lag_at_kill_records: $lag_records,
    checkpoint_age_at_kill_s: ($checkpoint_age_ms / 1000),
    rto_s: ($rto_ms / 1000), restore_s: ($restore_ms / 1000), start_s: ($start_ms / 1000),
    first_reserve_s: ($first_reserve_ms / 1000), restored_rows: $restored_rows, restored_holds: $restored_holds,
    rpo_s: ($rpo_ms / 1000), missing_writes: $verify.missing,
    missing_reserves: $verify.missing_reserves, missing_confirms: $verify.missing_confirms,
    missing_releases: $verify.missing_releases, missing_before_checkpoint: $verify.missing_before_checkpoint,
    inconsistent: $verify.inconsistent,
    expired_in_outage: $verify.expired_in_outage, expired_in_outage_released: $verify.expired_in_outage_released,
    not_released: $verify.not_released,
    events_backlog: $backlog, events_published_after_restore: $published, events_lag: $events_lag,
    stream_events_distinct: $stream_events, txn_rows: $txn_rows,
    reconcile_mismatched: $mismatched, reconcile_history_broken: $history_broken,
    reconciled_rows: $reconciled_rows,
    reconcile_error: (if $reconcile_error == "" then null else $reconcile_error end),
    failed: ($failed | split(" ") | map(select(. != ""))), ok: ($failed == "")}'
[ ${#failed[@]} = 0 ]
