#!/usr/bin/env bash
# The timeline of an update sweep: 1,000 simulated books over test1.com ... test4.com, planned
# for a day (checks per site per hour against per_site_budget), then released by the real
# scheduler into the real broker in a shortened "day" (the budget scaled with it), each check's
# arrival in fanfic.ingress timed: the most arrivals of a site in any scaled hour against the
# budget, and how late the per-message expiration delivered them.
#
#   Benchmarks/sweep-bench.sh [INTERVAL_SECONDS] [BUDGET]    (default: 240 12; 0 = the plan only)
set -euo pipefail
cd "$(dirname "$0")/.."
source Benchmarks/benchlib.sh
interval="${1:-240}"
budget="${2:-12}"

scripts/broker.sh start >/dev/null
swift build -c release --product sweep-bench >/dev/null
vhost="bench-sweep"
amqp_url="$(bench_fresh_vhost "$vhost")"
trap 'bench_drop_vhost "$vhost"' EXIT
.build/release/sweep-bench --url "$amqp_url" --interval "$interval" --budget "$budget"
