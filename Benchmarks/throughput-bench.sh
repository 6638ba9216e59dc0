#!/usr/bin/env bash
# Throughput of the whole system beside the bare tools run in parallel, in one run:
#   - the parallel floor: one shell loop per site (4), each `fanficfare` then `calibredb add`
#     under flock (calibredb takes turns on a library folder), over the same stories;
#   - `fanfic run` with 3 workers on a library folder (with the default `coordinator.site_turn`, and
#     with 0: each worker given a site's whole backlog, as before turns), and with 3, 1 and 4
#     workers on a Content Server (calibre-server over a library folder), fed by `fanfic submit`;
#   - where each story's time goes, from `fanfic.events`: waiting to start (routed -> started),
#     the library lookup, FanFicFare, calibredb writes, waiting for the write turn, and the rest
#     of the worker's run (jail, EPUB checks, events, acks);
#   - how many cores each run kept busy (/proc/stat), and so the most any number of workers can
#     gain over one on this machine.
# Ratios only mean something against a baseline of the same run: the machine is shared.
#
#   Benchmarks/throughput-bench.sh [STORIES_PER_SITE]     (default 10: 40 stories over test1.com ... test4.com)
#   THROUGHPUT_RUNS="whole-3 folder-3" Benchmarks/throughput-bench.sh     (some of the runs only)
#   THROUGHPUT_ROUNDS=3 Benchmarks/throughput-bench.sh     (repeat: each round measures its own floor
#       and runs the list in the other order than the round before; the ratios' median is reported)
set -euo pipefail
cd "$(dirname "$0")/.."
source Benchmarks/benchlib.sh
per_site="${1:-10}"
export QTWEBENGINE_DISABLE_SANDBOX=1

read -r -a runs <<<"${THROUGHPUT_RUNS:-whole-3 folder-3 server-3 server-1 server-4}"
rounds="${THROUGHPUT_ROUNDS:-1}"
for run in "${runs[@]}"; do
    case "$run" in
    whole-3 | folder-3 | server-3 | server-1 | server-4) ;;
    *) echo "THROUGHPUT_RUNS: unknown run '$run' (known: whole-3 folder-3 server-3 server-1 server-4)" >&2 && exit 2 ;;
    esac
done
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "THROUGHPUT_ROUNDS: a whole number of rounds, 1 or more (got '$rounds')" >&2 && exit 2; }

scripts/broker.sh start >/dev/null
swift build -c release --product fanfic >/dev/null
bin="$(swift build -c release --show-bin-path)"
work="$(mktemp -d /tmp/throughput-bench.XXXXXX)"
chmod 755 "$work"
cleanup() {
    [ -n "${run_pid:-}" ] && kill "$run_pid" 2>/dev/null && wait "$run_pid" 2>/dev/null
    [ -n "${server_pid:-}" ] && kill -9 "$server_pid" 2>/dev/null
    for run in "${runs[@]}"; do bench_drop_vhost "bench-throughput-$run"; done
    rm -rf "$work"
}
trap cleanup EXIT

sites=(test1.com test2.com test3.com test4.com)
urls=()
for sid in $(seq 1 "$per_site"); do
    for site in "${sites[@]}"; do urls+=("http://$site?sid=$sid"); done
done
n=${#urls[@]}

results="$work/results.jsonl"
for round in $(seq 1 "$rounds"); do # (the round's body is not indented: its heredocs end at column 0)
# The parallel floor: a loop per site, calibredb taking turns on the one library.
floor="$work/floor-$round"
mkdir -p "$floor"
calibredb --with-library "$floor/library" list >/dev/null
start=$(date +%s%N)
for site in "${sites[@]}"; do
    (
        jail="$floor/jail-$site"
        mkdir -p "$jail"
        for sid in $(seq 1 "$per_site"); do
            (cd "$jail" && fanficfare --non-interactive -o output_filename=story.epub -- "http://$site?sid=$sid" >/dev/null 2>&1)
            flock "$floor/library.lock" calibredb --with-library "$floor/library" add --duplicates -- "$jail/story.epub" \
                >/dev/null 2>&1
            rm -f "$jail/story.epub"
        done
    ) &
done
wait
floor_ms=$((($(date +%s%N) - start) / 1000000))
echo "{\"round\": $round, \"run\": \"floor\", \"makespan\": $floor_ms}" >>"$results"

# Every other round runs the list backwards: on this machine the first run after the floor was
# seen to be the fastest, whichever it was.
order=("${runs[@]}")
if ((round % 2 == 0)); then
    order=()
    for ((i = ${#runs[@]} - 1; i >= 0; i--)); do order+=("${runs[i]}"); done
fi
for run in "${order[@]}"; do
    library_kind="${run%-*}"
    workers="${run#*-}"
    # whole: a library folder, each worker given its site's whole backlog (no turns); every other
    # run keeps the configuration's default turn.
    if [ "$library_kind" = whole ]; then
        export FANFIC_COORDINATOR_SITE_TURN=0
    else
        unset FANFIC_COORDINATOR_SITE_TURN
    fi
    vhost="bench-throughput-$run"
    amqp_url="$(bench_fresh_vhost "$vhost")"
    dir="$work/$round-$run"
    mkdir -p "$dir/books"
    calibredb --with-library "$dir/books" list >/dev/null
    library="$dir/books"
    if [ "$library_kind" = server ]; then
        port=$((33000 + RANDOM % 1000))
        calibre-server --listen-on 127.0.0.1 --port "$port" --enable-local-write "$dir/books" >"$dir/server.log" 2>&1 &
        server_pid=$!
        python3 - "$port" <<'PY'
import sys, time, urllib.request
deadline = time.time() + 60
while True:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/ajax/library-info")
        break
    except OSError:
        if time.time() > deadline:
            sys.exit("calibre-server did not answer")
        time.sleep(0.1)
PY
        library="http://127.0.0.1:$port/#books"
    fi
    bench_fanfic_run "$bin/fanfic" "$dir" "$amqp_url" "$library" "$workers"
    python3 - "$dir" "$run" "$workers" "$bin/fanfic" "$amqp_url" "$round" "${urls[@]}" >>"$results" <<'PY'
import json, os, subprocess, sys, time
import pika
sys.path.insert(0, "Benchmarks")
from benchlib import book_count, wait_for, wait_until_assigning

directory, run, workers, fanfic, url = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
round_number, urls = int(sys.argv[6]), sys.argv[7:]
wait_until_assigning(f"{directory}/run.log", workers)

# Every task event of the run, into a queue of the benchmark's own (declared before submitting).
connection = pika.BlockingConnection(pika.URLParameters(url))
channel = connection.channel()
channel.queue_declare("bench.events", durable=True)
channel.queue_bind("bench.events", "fanfic.events", "task.#")
connection.close()  # a blocking connection left idle through the run would miss its heartbeats

def busy_seconds():
    """CPU seconds the whole machine has spent busy (every core; not idle, not iowait)."""
    fields = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")

busy = busy_seconds()
start = time.time()
subprocess.run([fanfic, "submit", "--config", f"{directory}/config.toml", *urls], check=True,
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
wait_for("every book", lambda: book_count(f"{directory}/books") >= len(urls), timeout=1200)
makespan = time.time() - start
cores_busy = (busy_seconds() - busy) / makespan

events = []
connection = pika.BlockingConnection(pika.URLParameters(url))
channel = connection.channel()
def collect():
    while True:
        method, _, body = channel.basic_get("bench.events", auto_ack=True)
        if method is None:
            break
        events.append(json.loads(body))
    return sum(1 for e in events if e["type"] == "task.succeeded") >= len(urls)
wait_for("every task.succeeded event", collect, timeout=60)
connection.close()
print(json.dumps({"round": round_number, "run": run, "workers": workers, "makespan": makespan, "cores_busy": cores_busy, "events": events}))
PY
    kill -TERM "$run_pid"
    wait "$run_pid" 2>/dev/null || true
    run_pid=""
    if [ -n "${server_pid:-}" ]; then
        kill -9 "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
        server_pid=""
    fi
done
done # rounds

python3 - "$results" "$n" <<'PY'
import json, os, statistics, sys
from datetime import datetime

# Each run's figures are the median over the rounds; a ratio compares a run with its own round's floor.
floors, by_run = {}, {}
for line in open(sys.argv[1]):
    row = json.loads(line)
    if row["run"] == "floor":
        floors[row["round"]] = row["makespan"] / 1000
    else:
        by_run.setdefault(row["run"], []).append(row)
n = int(sys.argv[2])
floor = statistics.median(floors.values())
rows = {}
for run, rounds in by_run.items():
    ratios = [r["makespan"] / floors[r["round"]] for r in rounds]
    rows[run] = {
        "makespan": statistics.median(r["makespan"] for r in rounds),
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "cores_busy": statistics.median(r["cores_busy"] for r in rounds),
        "events": rounds[0]["events"],
    }

def at(event):
    return datetime.fromisoformat(event["at"].replace("Z", "+00:00")).timestamp()

def breakdown(events):
    """Per task: seconds waiting to start, each stage, the rest of the run."""
    routed, started, stages = {}, {}, []
    for event in events:
        task = event.get("url")  # each story once in this benchmark; task.routed carries no task id
        if event["type"] == "task.routed":
            routed.setdefault(task, at(event))
        elif event["type"] == "task.started":
            started[task] = at(event)
        elif event["type"] == "task.succeeded":
            parts = {k: v / 1000 for k, v in (event.get("stages_ms") or {}).items()}
            run = event.get("duration_ms", 0) / 1000
            parts["other"] = max(0.0, run - sum(parts.values()))
            if task in routed and task in started:
                parts["wait"] = max(0.0, started[task] - routed[task])
            stages.append(parts)
    return stages

names = ["wait", "lookup", "fanficfare", "lock_wait", "calibredb", "other"]
print(f"{n} stories over test1.com ... test4.com (FanFicFare's offline sites), `fanfic run` fed by `fanfic submit`")
print()
if len(floors) > 1:
    print(f"{len(floors)} rounds; figures are medians; vs floor compares each round with its own floor")
print(f"{'':44} {'makespan s':>10} {'vs floor':>9} {'cores busy':>11}")
print(f"{'parallel floor: a loop per site, calibredb under flock':44} {floor:10.2f} {1:8.2f}x")
labels = {"whole-3": "3 workers, folder, site_turn = 0", "folder-3": "3 workers, library folder",
          "server-3": "3 workers, Content Server", "server-1": "1 worker, Content Server",
          "server-4": "4 workers, Content Server"}
order = [run for run in labels if run in rows]
for run in order:
    m = rows[run]["makespan"]
    each = "  (" + ", ".join(f"{r:.2f}x" for r in rows[run]["ratios"]) + ")" if len(floors) > 1 else ""
    print(f"{labels[run]:44} {m:10.2f} {rows[run]['ratio']:8.2f}x {rows[run]['cores_busy']:11.2f}{each}")
if "server-1" in rows and "server-4" in rows:
    one, four = rows["server-1"]["makespan"], rows["server-4"]["makespan"]
    print(f"4 workers over 1 worker, Content Server: {one / four:.2f}x speed-up")
    # One worker's stories run one after another and are CPU-bound (Python start-up and parsing
    # in FanFicFare and calibre-server): no number of workers can beat every core busy.
    cores = os.cpu_count() or 1
    ceiling = cores / max(rows["server-1"]["cores_busy"], 0.01)
    print(f"ceiling on this machine: {cores} cores / {rows['server-1']['cores_busy']:.2f} busy with 1 worker = {ceiling:.2f}x")
print()
print("where a story's time goes: median seconds per story (and the sum over all stories), first round")
print(f"{'':34}" + "".join(f"{name:>16}" for name in names))
for run in order:
    stages = breakdown(rows[run]["events"])
    cells = []
    for name in names:
        values = [s.get(name, 0.0) for s in stages]
        cells.append(f"{statistics.median(values):7.2f} ({sum(values):6.1f})")
    print(f"{labels[run]:34}" + "".join(f"{c:>16}" for c in cells))
print()
print("wait: routed -> started (queued behind the site's other stories, and the broker hops);")
print("other: the rest of the worker's run (jail, EPUB checks, the outcome's publishes and events).")
PY
