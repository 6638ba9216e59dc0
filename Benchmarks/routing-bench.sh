#!/usr/bin/env bash
# The coordinator's routing rate (tasks moved ingress -> backlog, persistent and confirmed, per
# second) beside the raw broker's confirmed publish rate for the same tasks, measured in the same
# run, at 1,000 and 100,000 tasks over 50 sites; and the coordinator's peak resident memory.
# Two raw figures: the tasks published into `fanfic.ingress` (one queue), and the same tasks
# published straight into their sites' backlog queues (the queues routing fills). And the
# ceiling: the same moves made by a bare client (consume, confirmed publish, ack; nothing else, and
# again with the one event per move a routed task costs),
# with the coordinator's CPU time per task, the figure that noise on a shared machine moves least.
#
#   Benchmarks/routing-bench.sh [SIZES...]     (default: 1000 100000)
#   ROUTING_BASELINE=PATH Benchmarks/routing-bench.sh ...
#       also each size with the coordinator executable at PATH (an earlier build), in the same run
set -euo pipefail
cd "$(dirname "$0")/.."
source Benchmarks/benchlib.sh
sizes=("${@:-1000 100000}")
read -r -a sizes <<<"${sizes[*]}"

scripts/broker.sh start >/dev/null
swift build -c release --product coordinator >/dev/null
swift build -c release --product routing-bench >/dev/null
vhost="bench-routing"
amqp_url="$(bench_fresh_vhost "$vhost")"
trap 'bench_drop_vhost "$vhost"' EXIT

coordinators=(".build/release/coordinator")
[ -n "${ROUTING_BASELINE:-}" ] && coordinators=("$ROUTING_BASELINE" "${coordinators[@]}")
printf '%-11s %-8s %-6s %10s %10s %10s %10s %10s %8s %8s %8s %8s %8s %8s %8s %8s\n' coordinator tasks sites "raw in/s" \
    "raw out/s" "bare mv/s" "mv+ev/s" routed/s "ceiling" "vs in" "vs out" "vs move" "CPU/task" "all CPU" "bare CPU" \
    "peak RSS"
for n in "${sizes[@]}"; do
    for coordinator in "${coordinators[@]}"; do
        label=$([ "$coordinator" = .build/release/coordinator ] && echo this || echo baseline)
        .build/release/routing-bench --url "$amqp_url" --tasks "$n" --coordinator "$coordinator" |
            python3 -c 'import json, sys
r = json.loads(sys.stdin.readline())
row = (sys.argv[1], r["tasks"], r["sites"], r["raw_publish_rate"], r["raw_spread_rate"], r["bare_move_rate"],
       r["bare_move_event_rate"], r["routing_rate"], r["bare_move_event_ratio"], r["ratio"], r["ratio_spread"],
       r["ratio_move"], r["coordinator_cpu_us_per_task"], r["machine_cpu_us_per_task"],
       r["machine_cpu_us_per_bare_move"], r["coordinator_peak_rss_kb"] // 1024)
print("%-11s %-8s %-6s %10s %10s %10s %10s %10s %7.2fx %7.2fx %7.2fx %7.2fx %5s us %5s us %5s us %5s MB" % row)' "$label"
    done
done
echo "raw in: confirmed publishes into fanfic.ingress; raw out: the same into the 50 backlog queues;"
echo "bare mv: the same moves ingress -> backlog (consume, confirmed publish, ack) by a bare client;"
echo "mv+ev: the bare moves plus one confirmed event each (task.routed); ceiling: mv+ev/s vs raw in,"
echo "what a coordinator doing no work of its own would reach;"
echo "CPU/task: the coordinator's user + system CPU time per task routed; all CPU: the whole machine's"
echo "busy CPU time per task routed (broker, coordinator, this benchmark); bare CPU: the same per bare move"
