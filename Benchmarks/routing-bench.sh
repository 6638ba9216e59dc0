#!/usr/bin/env bash
# The coordinator's routing rate (tasks moved ingress -> backlog, persistent and confirmed, per
# second) beside the raw broker's confirmed publish rate for the same tasks, measured in the same
# run, at 1,000 and 100,000 tasks over 50 sites; and the coordinator's peak resident memory.
#
#   Benchmarks/routing-bench.sh [SIZES...]     (default: 1000 100000)
set -euo pipefail
cd "$(dirname "$0")/.."
sizes=("${@:-1000 100000}")
read -r -a sizes <<<"${sizes[*]}"

scripts/broker.sh start >/dev/null
swift build -c release --product coordinator >/dev/null
swift build -c release --product routing-bench >/dev/null
vhost="bench-routing"
scripts/broker.sh ctl -q delete_vhost "$vhost" >/dev/null 2>&1 || true
scripts/broker.sh ctl -q add_vhost "$vhost"
scripts/broker.sh ctl -q set_permissions -p "$vhost" guest '.*' '.*' '.*'
trap 'scripts/broker.sh ctl -q delete_vhost "$vhost" >/dev/null 2>&1 || true' EXIT
base="$(scripts/broker.sh url)"
url="${base%/*}/$vhost"

printf '%-8s %-6s %14s %14s %7s %16s\n' tasks sites "raw msg/s" "routed/s" ratio "coordinator RSS"
for n in "${sizes[@]}"; do
    .build/release/routing-bench --url "$url" --tasks "$n" --coordinator .build/release/coordinator |
        python3 -c 'import json, sys
r = json.loads(sys.stdin.readline())
row = (r["tasks"], r["sites"], r["raw_publish_rate"], r["routing_rate"], r["ratio"], r["coordinator_peak_rss_kb"] // 1024)
print("%-8s %-6s %14s %14s %6sx %13s MB" % row)'
done
