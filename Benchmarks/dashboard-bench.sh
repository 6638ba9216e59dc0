#!/usr/bin/env bash
# The dashboard at size: its history with N task runs (default 100,000; 4 events each), the
# server time of the usual /api/history questions beside a floor measured in the same run (the
# same number of event rows read by primary key, decoded and encoded), the recording rate
# beside bare inserts; the pages' server time; then the `dashboard` role itself, idle on the
# test broker beside a coordinator, both the multi-call `fanfic` binary as `fanfic run` and the
# images start them (so they share its code pages and the Swift runtime's), its memory from
# /proc/PID/smaps_rollup.
#
#   Benchmarks/dashboard-bench.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
source Benchmarks/benchlib.sh
runs="${1:-100000}"

scripts/broker.sh start >/dev/null
swift build -c release --product dashboard-bench >/dev/null
swift build -c release --product fanfic >/dev/null
bin="$(swift build -c release --show-bin-path)"

"$bin/dashboard-bench" --runs "$runs" | python3 -c 'import json, sys
r = json.loads(sys.stdin.readline())
print("history: %d runs, %d events; recording %d events/s (bare inserts %d/s: %.2fx)" % (
    r["runs"], r["events"], r["record_events_per_s"], r["bare_insert_events_per_s"], r["record_vs_bare"]))
print("floor: %d event rows by primary key, decoded, as JSON: %.2f ms" % (400, r["floor_ms"]))
print("%-15s %6s %9s %9s" % ("query", "runs", "ms", "vs floor"))
for q in r["queries"]:
    print("%-15s %6d %9.2f %8.2fx" % (q["query"], q["runs_returned"], q["ms"], q["vs_floor"]))
print("outcome counts (the widget), all %d runs: %.2f ms" % (r["runs"], r["outcome_counts_ms"]))
print("%-24s %9s %9s %9s" % ("page (server time)", "ms", "vs floor", "KiB"))
for p in r["pages"]:
    print("%-24s %9.2f %8.2fx %9.1f" % (p["page"], p["ms"], p["ms"] / r["floor_ms"], p["bytes"] / 1024))'

# The role, idle: connected, its queue consumed, nothing to do.
work="$(mktemp -d /tmp/dashboard-bench.XXXXXX)"
vhost="bench-dashboard"
cleanup() {
    [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    [ -n "${coordinator:-}" ] && kill "$coordinator" 2>/dev/null && wait "$coordinator" 2>/dev/null
    bench_drop_vhost "$vhost"
    rm -rf "$work"
}
trap cleanup EXIT
amqp_url="$(bench_fresh_vhost "$vhost")"
port=$((48000 + RANDOM % 1000))
cat >"$work/config.toml" <<TOML
[broker]
url = "$amqp_url"
[dashboard]
listen = "127.0.0.1:$port"
database = "$work/history.sqlite"
TOML
ln -s "$bin/fanfic" "$work/coordinator"
ln -s "$bin/fanfic" "$work/dashboard"
"$work/coordinator" --config "$work/config.toml" --log-level warning >"$work/coordinator.log" 2>&1 &
coordinator=$!
"$work/dashboard" --config "$work/config.toml" --log-level warning >"$work/log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    sleep 0.2
done
curl -sf "http://127.0.0.1:$port/api/history" >/dev/null
sleep 2   # idle: the one request above settled
python3 - "$pid" <<'PY'
import sys
fields = {}
for line in open(f"/proc/{sys.argv[1]}/smaps_rollup"):
    parts = line.split()
    if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
        fields[parts[0][:-1]] = int(parts[1])
private = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
threads = open(f"/proc/{sys.argv[1]}/status").read().split("Threads:")[1].split()[0]
print("dashboard idle beside a coordinator: RSS %.1f MiB, PSS %.1f MiB, private %.1f MiB (dirty %.1f, of it anonymous %.1f; clean %.1f: code pages no other process maps), %s threads (goal: private < 15 MiB)" % (
    fields["Rss"] / 1024, fields["Pss"] / 1024, private / 1024, fields.get("Private_Dirty", 0) / 1024,
    fields.get("Anonymous", 0) / 1024, fields.get("Private_Clean", 0) / 1024, threads))
PY
