#!/usr/bin/env bash
# Fuzzes every operation of the API document (GET /openapi.json) against a
# live inventoryd with Schemathesis, and fails on any finding: a 5xx, an
# answer whose status, media type, headers or body the document does not
# describe, a 4xx or 5xx that is not a {code, message} body, invalid input
# accepted, a method the document does not list answered other than 405.
#
# Two runs, each against a fresh inventoryd on a free port and a temporary
# data dir (no NATS): one open (--auth none); one with --auth jwt and a token
# that holds every role, where requests without it must be refused. Each has
# the PostgreSQL read model (127.0.0.1:5432, database `test`, a schema of its
# own, dropped after; $SCHEMATHESIS_POSTGRES_URL), without which the read
# model's endpoint answers 503 READ_MODEL_UNAVAILABLE, a server error to
# Schemathesis: where PostgreSQL is unreachable (never in CI) that one
# operation is left out.
#
#   bash gateway/openapi/schemathesis.sh              # 100 examples an operation
#   SCHEMATHESIS_EXAMPLES=100 SCHEMATHESIS_SEED=7 bash gateway/openapi/schemathesis.sh
#
# Runs the inventoryd and inventoryctl in $INVENTORY_BIN_DIR if set (CI: the
# ones `cargo test --workspace` just built); else builds them with the
# `test` profile, whose dependencies `cargo test` has built. Schemathesis
# comes from requirements.txt, in a virtualenv under target/.
set -euo pipefail
cd "$(dirname "$0")/../.."
here=gateway/openapi
examples=${SCHEMATHESIS_EXAMPLES:-100}
seed=${SCHEMATHESIS_SEED:-1}

bin=${INVENTORY_BIN_DIR:-}
if [ -z "$bin" ]; then
  cargo build --profile test -p inventory-gateway --bin inventoryd --bin inventoryctl
  bin=target/debug
fi

venv=target/schemathesis-venv
if ! cmp -s "$here/requirements.txt" "$venv/requirements.txt" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r "$here/requirements.txt"
  cp "$here/requirements.txt" "$venv/requirements.txt"
fi

root=$(pwd)
mkdir -p target/schemathesis
work=$(mktemp -d)
pids=()
schemas=()
pg_url=${SCHEMATHESIS_POSTGRES_URL:-host=127.0.0.1 port=5432 user=root dbname=test connect_timeout=3}
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for schema in "${schemas[@]}"; do
    PGOPTIONS="-c client_min_messages=warning" psql "$pg_url" -qAtc "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

# Flags for the read model of the server named $1 (a fresh schema), or for
# Schemathesis to leave its endpoint out; sets $read_model and $leave_out.
read_model=()
leave_out=()
with_read_model() {
  if command -v psql >/dev/null && psql "$pg_url" -qAtc 'SELECT 1' >/dev/null 2>&1; then
    local schema="schemathesis_$1_$$"
    schemas+=("$schema")
    read_model=(--postgres-url "$pg_url" --postgres-schema "$schema")
  elif [ -n "${CI:-}" ]; then
    echo "schemathesis: PostgreSQL is unreachable ($pg_url)" >&2
    exit 1
  else
    echo "schemathesis: PostgreSQL is unreachable ($pg_url): leaving out readModelOrderStatus"
    leave_out=(--exclude-operation-id readModelOrderStatus)
  fi
}

# Starts inventoryd with the given flags; sets $url.
start() {
  local name=$1
  shift
  "$bin/inventoryd" --listen 127.0.0.1:0 --data-dir "$work/$name" --shards 2 --pin-threads false "$@" \
    >"$work/$name.out" 2>"$work/$name.log" &
  pids+=($!)
  for _ in $(seq 100); do
    # (The file may not be there yet: the shell opens it after the fork.)
    url=$(sed -n 's/^inventoryd listening on //p' "$work/$name.out" 2>/dev/null || true)
    if [ -n "$url" ] && curl -sf "$url/readyz" >/dev/null; then
      return
    fi
    sleep 0.1
  done
  echo "inventoryd ($name) did not start:" >&2
  cat "$work/$name.log" >&2
  exit 1
}

# Stock under the ids generated data tends to (`0`, the default
# warehouse), so writes and reads get past "not found" now and then.
seed_stock() {
  local body
  for body in '{"skuId":"0","qty":1000,"idemKey":"seed-1"}' '{"skuId":"0","warehouseId":"0","qty":1000,"idemKey":"seed-2"}'; do
    curl -sf "$url/api/inventory/receive" -H 'content-type: application/json' "$@" -d "$body" >/dev/null
  done
}

checks=not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance
checks+=,response_schema_conformance,negative_data_rejection,missing_required_header,unsupported_method
checks+=,allow_header_conformance,error_is_code_and_message

# Runs Schemathesis over every operation of the server at $url.
fuzz() {
  local name=$1
  shift
  echo "schemathesis: $name, $examples examples an operation, seed $seed"
  # From target/schemathesis, where it keeps what `st replay` needs. One
  # worker: with threads, Python 3.11's ast module (which Hypothesis uses)
  # fails now and then ("AST constructor recursion depth mismatch").
  (cd target/schemathesis && PYTHONPATH="$root/$here" SCHEMATHESIS_HOOKS=schemathesis_hooks \
    "$root/$venv/bin/schemathesis" run "$url/openapi.json" --checks "$checks" --phases examples,coverage,fuzzing \
    --max-examples "$examples" --seed "$seed" --workers 1 --generation-database none --no-color "$@") || {
    echo "schemathesis: findings against the $name server; its log:" >&2
    tail -n 50 "$work/$name.log" >&2
    exit 1
  }
}

started=$(date +%s)
with_read_model open
start open --auth none "${read_model[@]}"
seed_stock
# Open: a request without a token is as good as one with.
fuzz open --generation-with-security-parameters false "${leave_out[@]}"

secret="$work/hs256"
head -c 32 /dev/urandom >"$secret"
chmod 600 "$secret"
with_read_model jwt
start jwt --auth jwt --jwt-hs256-secret-file "$secret" "${read_model[@]}"
roles=()
for role in reserver payment reader receiver operator approver admin; do roles+=(--role "$role"); done
token=$("$bin/inventoryctl" token --hs256-secret-file "$secret" --sub schemathesis "${roles[@]}")
seed_stock -H "Authorization: Bearer $token"
checks+=,ignored_auth
fuzz jwt --header "Authorization: Bearer $token" "${leave_out[@]}"

echo "schemathesis: no findings in $(($(date +%s) - started)) s"
