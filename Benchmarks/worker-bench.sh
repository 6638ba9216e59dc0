#!/usr/bin/env bash
# Time per story through the whole worker path (coordinator + worker: queue, jail, lookup,
# fanficfare, calibredb add, events) beside the bare tools (a plain loop of fanficfare and
# calibredb add) for the same stories, measured in the same run, as a ratio; and the worker's
# resident memory, idle and while a task runs (its own process, not its fanficfare/calibredb
# children).
#
#   Benchmarks/worker-bench.sh [STORIES]     (default 10)
set -euo pipefail
cd "$(dirname "$0")/.."
source Benchmarks/benchlib.sh
stories="${1:-10}"
export QTWEBENGINE_DISABLE_SANDBOX=1

scripts/broker.sh start >/dev/null
swift build -c release --product coordinator >/dev/null
swift build -c release --product worker >/dev/null
work="$(mktemp -d)"
vhost="bench-worker"
cleanup() {
    [ -n "${pids:-}" ] && kill $pids 2>/dev/null && wait $pids 2>/dev/null
    bench_drop_vhost "$vhost"
    rm -rf "$work"
}
trap cleanup EXIT
urls=()
for sid in $(seq 1 "$stories"); do urls+=("http://test1.com?sid=$sid"); done

# The floor: the bare tools, one story after the other.
source Benchmarks/bare-tools.sh
bare_ms=$(bare_tools_ms "$work/bare" "${urls[@]}")

# The system: one coordinator, one worker.
amqp_url="$(bench_fresh_vhost "$vhost")"
url="$amqp_url"
calibredb --with-library "$work/library" list >/dev/null
cat >"$work/config.toml" <<TOML
[broker]
url = "$url"
[calibre]
library = "$work/library"
[worker]
heartbeat = 1
[coordinator]
worker_timeout = 2
TOML
.build/release/coordinator --config "$work/config.toml" >"$work/coordinator.log" 2>&1 &
pids="$!"
.build/release/worker --config "$work/config.toml" --id bench >"$work/worker.log" 2>&1 &
worker_pid="$!"
pids="$pids $worker_pid"
python3 - "$url" "$work" "$worker_pid" "$bare_ms" "${urls[@]}" <<'PY'
import json, sys, time, uuid
import pika
sys.path.insert(0, "Benchmarks")
from benchlib import book_count, rss_kb, wait_for

url, work, worker_pid, bare = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) / 1000
urls = sys.argv[5:]

wait_for("the worker is admitted", lambda: "admitted; consuming" in open(f"{work}/worker.log").read())
wait_for("the coordinator is ready", lambda: "table rebuilt" in open(f"{work}/coordinator.log").read())
time.sleep(1)
idle = rss_kb(worker_pid)

def books():
    return book_count(f"{work}/library")

connection = pika.BlockingConnection(pika.URLParameters(url))
channel = connection.channel()
channel.confirm_delivery()
start = time.time()
for story in urls:
    task = {"version": 1, "id": str(uuid.uuid4()), "url": story, "site": "test1.com", "attempt": 0,
            "hail_mary": False, "behavior": "normal", "submitted_by": "bench",
            "submitted_at": "2026-01-01T00:00:00.000Z"}
    channel.basic_publish("fanfic.ingress", "task", json.dumps(task).encode(),
                          pika.BasicProperties(delivery_mode=2, content_type="application/json"))
busy = 0
while books() < len(urls):
    busy = max(busy, rss_kb(worker_pid))
    if time.time() - start > 600:
        sys.exit("timed out waiting for the books")
    time.sleep(0.05)
system = time.time() - start
connection.close()
n = len(urls)
print(f"{n} stories from test1.com (FanFicFare's offline site), one worker, a local library folder")
print(f"{'':28} {'total s':>8} {'s/story':>8}")
print(f"{'bare fanficfare + calibredb':28} {bare:8.2f} {bare / n:8.2f}")
print(f"{'through the worker':28} {system:8.2f} {system / n:8.2f}")
print(f"ratio (worker / bare): {system / bare:.2f}x")
print(f"worker resident memory: idle {idle // 1024} MB, busy {busy // 1024} MB (peak)")
PY
