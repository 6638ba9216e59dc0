#!/usr/bin/env bash
# Idle memory of a whole installation: `fanfic run` (the supervisor) with its coordinator,
# ingester (polling a real Dovecot) and 3 workers, read from /proc/PID/smaps_rollup once every
# role is idle: RSS, PSS (shared pages divided among the processes that map them) and private
# memory per process, and their sums. Two layouts in the same run: the children started from
# the separate role executables (`--bin-dir`), and from `fanfic` itself (the default).
# The floor, in the same run: as many copies of a program that does nothing but start the Swift
# runtime, then FoundationEssentials, then all of Foundation (each encodes one JSON object and
# sleeps), idle together: what the goal is up against before any code of ours.
#
#   Benchmarks/memory-bench.sh [WORKERS]     (default 3)
set -euo pipefail
cd "$(dirname "$0")/.."
source Benchmarks/benchlib.sh
workers="${1:-3}"

scripts/broker.sh start >/dev/null
for product in fanfic coordinator ingester worker; do swift build -c release --product "$product" >/dev/null; done
bin="$(swift build -c release --show-bin-path)"
work="$(mktemp -d /tmp/memory-bench.XXXXXX)"
chmod 755 "$work"
vhost="bench-memory"
port=$((47000 + RANDOM % 1000))
source Benchmarks/dovecot.sh
cleanup() {
    [ -n "${run_pid:-}" ] && kill "$run_pid" 2>/dev/null && wait "$run_pid" 2>/dev/null
    bench_dovecot_stop "$work"
    bench_drop_vhost "$vhost"
    rm -rf "$work"
}
trap cleanup EXIT
bench_dovecot_start "$work" "$port"
amqp_url="$(bench_fresh_vhost "$vhost")"
calibredb --with-library "$work/library" list >/dev/null
cat >"$work/config.toml" <<TOML
[broker]
url = "$amqp_url"
$(bench_dovecot_email_config "$port")
sleep_time = 5
[calibre]
library = "$work/library"
[worker]
heartbeat = 1
[coordinator]
worker_timeout = 3
TOML

results="$work/results.jsonl"
for layout in separate multi-call; do
    # One message for the ingester's first poll (no story in it: nothing to download).
    printf 'From: reader@example.org\r\nSubject: hello\r\n\r\nno story here\r\n' >"$work/mail/reader/new/$layout.bench"
    chmod 666 "$work/mail/reader/new/$layout.bench"
    extra=()
    [ "$layout" = separate ] && extra=(--bin-dir "$bin")
    "$bin/fanfic" run --config "$work/config.toml" --workers "$workers" "${extra[@]}" >"$work/run-$layout.log" 2>&1 &
    run_pid=$!
    python3 - "$work/run-$layout.log" "$run_pid" "$workers" "$layout" >>"$results" <<'PY'
import json, re, sys, time
sys.path.insert(0, "Benchmarks")
from benchlib import smaps_rollup_kb, wait_for, wait_until_assigning

log_path, supervisor, workers, layout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]

def log():
    return open(log_path).read()

wait_until_assigning(log_path, workers)
wait_for("the ingester has polled the mailbox", lambda: "mailbox polled" in log())
children = {m.group(1): int(m.group(2)) for m in re.finditer(r"child=(.+?) pid=(\d+) \[Supervision\] started", log())}
processes = {"supervisor": supervisor, **children}
time.sleep(2)  # idle: a few heartbeats and polls after the last start
print(json.dumps({"layout": layout, "memory": {name: smaps_rollup_kb(pid) for name, pid in processes.items()}}))
PY
    kill -TERM "$run_pid"
    wait "$run_pid" 2>/dev/null || true
    run_pid=""
done

# The floor: the same number of processes, each only the runtime and (some of) Foundation.
processes=$((3 + workers))
printf 'import Glibc\nprint("ready")\nfflush(stdout)\nwhile true { sleep(60) }\n' >"$work/runtime.swift"
for module in FoundationEssentials Foundation; do
    printf 'import %s\nimport Glibc\nlet data = try! JSONEncoder().encode(["at": Date().timeIntervalSince1970])\nprint("ready", data.count)\nfflush(stdout)\nwhile true { sleep(60) }\n' \
        "$module" >"$work/$module.swift"
done
for floor in runtime FoundationEssentials Foundation; do
    swiftc -O "$work/$floor.swift" -o "$work/floor-$floor" >/dev/null
    pids=()
    : >"$work/floor-$floor.out"
    for _ in $(seq "$processes"); do
        "$work/floor-$floor" >>"$work/floor-$floor.out" &
        pids+=($!)
    done
    python3 - "$floor" "$work/floor-$floor.out" "$processes" "${pids[@]}" >>"$results" <<'PY'
import json, sys
sys.path.insert(0, "Benchmarks")
from benchlib import smaps_rollup_kb, wait_for

floor, out, count, pids = sys.argv[1], sys.argv[2], int(sys.argv[3]), [int(p) for p in sys.argv[4:]]
wait_for(f"{count} copies of the {floor} floor are ready", lambda: open(out).read().count("ready") >= count)
print(json.dumps({"layout": f"floor: {floor}", "memory": {f"copy {i + 1}": smaps_rollup_kb(p) for i, p in enumerate(pids)}}))
PY
    kill "${pids[@]}"
    wait "${pids[@]}" 2>/dev/null || true
done

python3 - "$results" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print("idle memory, MiB, from /proc/PID/smaps_rollup (goal: sum <= 25 PSS, <= 100 RSS)")
for row in rows:
    print()
    print(f"{row['layout']}:")
    print(f"  {'process':22} {'RSS':>7} {'PSS':>7} {'private':>8}")
    total = {"Rss": 0, "Pss": 0, "Private": 0}
    order = sorted(row["memory"], key=lambda k: (k != "supervisor", k != "coordinator", k != "ingester", k))
    for name in order:
        m = row["memory"][name]
        for key in total:
            total[key] += m[key]
        print(f"  {name:22} {m['Rss'] / 1024:7.1f} {m['Pss'] / 1024:7.1f} {m['Private'] / 1024:8.1f}")
    print(f"  {'sum':22} {total['Rss'] / 1024:7.1f} {total['Pss'] / 1024:7.1f} {total['Private'] / 1024:8.1f}")
PY
