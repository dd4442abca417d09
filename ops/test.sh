#!/usr/bin/env bash
# Checks the Prometheus rules, their unit tests and the Grafana dashboard.
#   bash ops/test.sh          (from any directory)
# Installs promtool from the Debian `prometheus` package when it is missing
# (needs root, as in CI).
set -euo pipefail

ops_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
prom_dir="$ops_dir/prometheus"
config="$prom_dir/prometheus.yml"
dashboard="$ops_dir/grafana/inventory-dashboard.json"
runbook="$ops_dir/RUNBOOK.md"

if ! command -v promtool >/dev/null 2>&1; then
  echo "promtool not found: installing the Debian prometheus package"
  log="$(mktemp)"
  if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
         DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; } >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    echo "FAIL: could not install promtool" >&2
    exit 1
  fi
  rm -f "$log"
fi
promtool --version 2>&1 | head -n1

# Rule files: every *.yml in ops/prometheus except the server configuration.
rule_files=()
for f in "$prom_dir"/*.yml; do
  [[ "$f" == "$config" ]] || rule_files+=("$f")
done
test_files=("$prom_dir"/tests/*.yml)
[[ -e "${rule_files[0]}" && -e "${test_files[0]}" ]] || { echo "FAIL: no rule or test files" >&2; exit 1; }

echo "== promtool check rules"
promtool check rules "${rule_files[@]}"

echo "== promtool check config"
promtool check config "$config"

echo "== promtool test rules"
promtool test rules "${test_files[@]}"

echo "== runbook links"
# Every runbook_url must be ops/RUNBOOK.md#anchor with a matching "## Heading"
# (GitHub anchor: lower-cased heading).
status=0
while read -r url; do
  anchor="${url#ops/RUNBOOK.md#}"
  if [[ "$url" != ops/RUNBOOK.md#* ]]; then
    echo "FAIL: runbook_url $url is not a repo-relative ops/RUNBOOK.md link" >&2; status=1
  elif ! grep -qiE "^##+ +${anchor}[[:space:]]*$" "$runbook"; then
    echo "FAIL: $runbook has no section for #$anchor" >&2; status=1
  else
    echo "ok  $url"
  fi
done < <(grep -ho 'runbook_url: *[^ ]*' "${rule_files[@]}" | sed 's/runbook_url: *//')
[[ $status -eq 0 ]] || exit 1

echo "== grafana dashboard"
# Parse the JSON and check every panel query is valid PromQL, by turning the
# queries (with Grafana variables substituted) into recording rules.
if command -v python3 >/dev/null 2>&1; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  python3 - "$dashboard" "$tmp/dashboard-queries.yml" <<'PY'
import json, sys
dash = json.load(open(sys.argv[1]))
assert dash.get("schemaVersion", 0) >= 36, "schemaVersion too old"
names = {v["name"] for v in dash["templating"]["list"]}
assert "DS_PROMETHEUS" in names, "missing DS_PROMETHEUS datasource variable"
ids, exprs = set(), []
def walk(panels):
    for p in panels:
        assert p["id"] not in ids, "duplicate panel id %s" % p["id"]
        ids.add(p["id"])
        for t in p.get("targets", []):
            exprs.append((p["title"], t["expr"]))
        walk(p.get("panels", []))
walk(dash["panels"])
subst = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h",
         "$job": "inventoryd", "$shard": "0"}
with open(sys.argv[2], "w") as out:
    out.write("groups:\n  - name: dashboard-queries\n    rules:\n")
    for i, (title, e) in enumerate(exprs):
        for k, v in subst.items():
            e = e.replace(k, v)
        assert "$" not in e, "unknown variable in %r: %s" % (title, e)
        out.write("      - record: dashboard:query:%d\n        expr: %s\n" % (i, json.dumps(e)))
print("%d panels, %d queries" % (len(ids), len(exprs)))
PY
  promtool check rules "$tmp/dashboard-queries.yml" >/dev/null
  echo "ok  queries parse as PromQL"
else
  echo "skip: python3 not found, dashboard not checked"
fi

echo "ops/test.sh: all checks passed"
