#!/usr/bin/env bash
# The whole system against the bare tools, in one run on this machine, as one table:
#   - overhead: N stories (4 sites) through `fanfic run` with 1 worker beside a plain loop of
#     fanficfare + calibredb add over the same stories (the floor), as a ratio;
#   - scaling: the makespan with 1, 2 and 4 workers, as speed-up over 1 worker;
#   - resident memory of each process (supervisor, coordinator, workers), idle and busy;
#   - the coordinator's routing rate (Benchmarks/routing-bench.sh), for reference.
# Ratios only mean something against a baseline of the same run: the machine is shared.
#
#   Benchmarks/system-bench.sh [STORIES_PER_SITE]     (default 4, over test1.com ... test4.com)
set -euo pipefail
cd "$(dirname "$0")/.."
source Benchmarks/benchlib.sh
per_site="${1:-4}"
export QTWEBENGINE_DISABLE_SANDBOX=1

scripts/broker.sh start >/dev/null
swift build -c release --product coordinator >/dev/null
swift build -c release --product worker >/dev/null
swift build -c release --product fanfic >/dev/null
bin="$(swift build -c release --show-bin-path)"
work="$(mktemp -d)"
chmod 755 "$work"
cleanup() {
    [ -n "${run_pid:-}" ] && kill "$run_pid" 2>/dev/null && wait "$run_pid" 2>/dev/null
    for vhost in bench-system-1 bench-system-2 bench-system-4; do
        bench_drop_vhost "$vhost"
    done
    rm -rf "$work"
}
trap cleanup EXIT

urls=()
for sid in $(seq 1 "$per_site"); do
    for site in test1.com test2.com test3.com test4.com; do urls+=("http://$site?sid=$sid"); done
done
n=${#urls[@]}

# The floor: the bare tools, one story after the other.
source Benchmarks/bare-tools.sh
bare_ms=$(bare_tools_ms "$work/bare" "${urls[@]}")

# The system, with 1, 2 and 4 workers: `fanfic run` on a fresh virtual host and library.
results="$work/results.jsonl"
for workers in 1 2 4; do
    vhost="bench-system-$workers"
    amqp_url="$(bench_fresh_vhost "$vhost")"
    dir="$work/run-$workers"
    mkdir -p "$dir"
    calibredb --with-library "$dir/library" list >/dev/null
    bench_fanfic_run "$bin/fanfic" "$dir" "$amqp_url" "$dir/library" "$workers"
    python3 - "$dir" "$run_pid" "$workers" "$bin/fanfic" "${urls[@]}" >>"$results" <<'PY'
import json, re, subprocess, sys, time
sys.path.insert(0, "Benchmarks")
from benchlib import book_count, rss_kb, wait_for, wait_until_assigning

directory, supervisor, workers, fanfic = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
urls = sys.argv[5:]

def log():
    return open(f"{directory}/run.log").read()

def books():
    return book_count(f"{directory}/library")

wait_until_assigning(f"{directory}/run.log", workers)
children = {m.group(1): int(m.group(2)) for m in re.finditer(r"child=(.+?) pid=(\d+) \[Supervision\] started", log())}
processes = {"supervisor": supervisor, **children}
time.sleep(1)
idle = {name: rss_kb(pid) for name, pid in processes.items()}

start = time.time()
subprocess.run([fanfic, "submit", "--config", f"{directory}/config.toml", *urls], check=True,
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
busy = dict(idle)
while books() < len(urls):
    for name, pid in processes.items():
        busy[name] = max(busy[name], rss_kb(pid))
    if time.time() - start > 900:
        sys.exit("timed out waiting for the books")
    time.sleep(0.05)
makespan = time.time() - start
print(json.dumps({"workers": workers, "makespan": makespan, "idle": idle, "busy": busy}))
PY
    kill -TERM "$run_pid"
    wait "$run_pid" 2>/dev/null || true
    run_pid=""
done

routing="$(Benchmarks/routing-bench.sh 1000 | sed -n 2p)"

python3 - "$results" "$bare_ms" "$n" "$routing" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
bare, n, routing = int(sys.argv[2]) / 1000, int(sys.argv[3]), sys.argv[4]
by = {row["workers"]: row for row in rows}
one = by[1]["makespan"]
print(f"{n} stories over test1.com ... test4.com (FanFicFare's offline sites), a local library folder,")
print("the whole system = `fanfic run` (supervisor, coordinator, workers) fed by `fanfic submit`")
print()
print(f"{'':34} {'makespan s':>10} {'s/story':>8} {'vs bare':>8} {'speed-up':>9}")
print(f"{'bare fanficfare + calibredb add':34} {bare:10.2f} {bare / n:8.2f} {1:7.2f}x {'':>9}")
for workers in sorted(by):
    m = by[workers]["makespan"]
    print(f"{f'system, {workers} worker(s)':34} {m:10.2f} {m / n:8.2f} {m / bare:7.2f}x {one / m:8.2f}x")
print()
print(f"{'resident memory (MB)':34} {'idle':>10} {'busy':>8}")
for workers in sorted(by):
    row = by[workers]
    for name in sorted(row["idle"], key=lambda k: (k != "supervisor", k != "coordinator", k)):
        label = f"{workers}w: {name}"
        print(f"{label:34} {row['idle'][name] // 1024:10d} {row['busy'][name] // 1024:8d}")
print()
print("coordinator routing rate, 1,000 tasks (Benchmarks/routing-bench.sh):")
print("  coordinator tasks    sites    raw in/s  raw out/s   routed/s    vs in   vs out peak RSS")
print(f"  {routing}")
PY
