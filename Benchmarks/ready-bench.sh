#!/usr/bin/env bash
# How soon the system works after a start and after a failover, beside the floor measured in
# the same run (one story through the bare tools: fanficfare, then calibredb add):
#   - `fanfic run` start to the first book, on a fresh broker (no worker registered) and again
#     after a restart (its workers registered, each asked to report at once);
#   - the same start to the coordinator's "table rebuilt", against coordinator.worker_timeout
#     (the window a start used to wait in full);
#   - failover: from killing the active coordinator (the broker notices a killed process at
#     once: its connection closes) to a worker starting a task submitted right after, which the
#     standby has to take over, rebuild its table for and route.
#
#   Benchmarks/ready-bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
source Benchmarks/benchlib.sh
export QTWEBENGINE_DISABLE_SANDBOX=1

scripts/broker.sh start >/dev/null
for product in fanfic coordinator worker; do swift build -c release --product "$product" >/dev/null; done
bin="$(swift build -c release --show-bin-path)"
work="$(mktemp -d)"
chmod 755 "$work"
cleanup() {
    pkill -f "$work/config" 2>/dev/null || true
    for vhost in bench-ready bench-failover; do bench_drop_vhost "$vhost"; done
    rm -rf "$work"
}
trap cleanup EXIT

source Benchmarks/bare-tools.sh
bare_ms=$(bare_tools_ms "$work/bare" "http://test1.com?sid=1")

# One virtual host for the starts, one for the failover (a registry of its own workers only).
for vhost in bench-ready bench-failover; do
    amqp_url="$(bench_fresh_vhost "$vhost")"
    cat >"$work/config-$vhost.toml" <<TOML
[broker]
url = "$amqp_url"
[calibre]
library = "$work/library-$vhost"
[run]
workers = 2
[coordinator]
worker_timeout = 20
TOML
    calibredb --with-library "$work/library-$vhost" list >/dev/null
done

python3 - "$bin" "$work" "${amqp_url%/*}/bench-failover" "$bare_ms" <<'PY'
import os, signal, subprocess, sys, time
import pika
sys.path.insert(0, "Benchmarks")
from benchlib import book_count, wait_for

bin, work, failover_url, bare = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]) / 1000
config = f"{work}/config-bench-ready.toml"
library = f"{work}/library-bench-ready"

def submit(story):
    subprocess.run([f"{bin}/fanfic", "submit", "--config", config, "--", story], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

def logged(path, text):
    try:
        return text in open(path).read()
    except OSError:
        return False

def start_to_first_book(label, story, books_before):
    log = f"{work}/run-{label}.log"
    started = time.time()
    run = subprocess.Popen([f"{bin}/fanfic", "run", "--config", config], stdout=open(log, "w"),
                           stderr=subprocess.STDOUT)
    # Submitted as soon as the broker takes it (the ingress queue may not exist yet).
    while True:
        try:
            submit(story)
            break
        except subprocess.CalledProcessError:
            time.sleep(0.05)
    rebuilt = None
    while book_count(library) <= books_before:
        if rebuilt is None and logged(log, "table rebuilt"):
            rebuilt = time.time() - started
        if time.time() - started > 180:
            sys.exit(f"no book after 180 s; see {log}")
        time.sleep(0.05)
    book = time.time() - started
    if rebuilt is None:
        rebuilt = book
    run.send_signal(signal.SIGTERM)
    run.wait(timeout=120)
    return rebuilt, book

fresh_rebuilt, fresh_book = start_to_first_book("fresh", "http://test1.com?sid=1", 0)
again_rebuilt, again_book = start_to_first_book("restart", "http://test2.com?sid=1", 1)

# Failover: two coordinators and two workers as their own processes; the first is active.
config = f"{work}/config-bench-failover.toml"
def spawn(name, argv):
    return subprocess.Popen(argv, stdout=open(f"{work}/{name}.log", "w"), stderr=subprocess.STDOUT)

active = spawn("coordinator-a", [f"{bin}/coordinator", "--config", config, "--log-level", "info"])
wait_for("coordinator a is active", lambda: logged(f"{work}/coordinator-a.log", "table rebuilt"), 60)
standby = spawn("coordinator-b", [f"{bin}/coordinator", "--config", config, "--log-level", "info"])
workers = [spawn(f"w{i}", [f"{bin}/worker", "--config", config, "--id", f"bench-{i}"]) for i in (1, 2)]
wait_for("both workers are admitted",
         lambda: all(logged(f"{work}/w{i}.log", "admitted") for i in (1, 2)), 60)
wait_for("coordinator b stands by", lambda: logged(f"{work}/coordinator-b.log", "standing by"), 60)
connection = pika.BlockingConnection(pika.URLParameters(failover_url))
channel = connection.channel()
events = channel.queue_declare("", exclusive=True).method.queue
channel.queue_bind(events, "fanfic.events", "task.started")
killed = time.time()
active.kill()
submit("http://test3.com?sid=1")
routed = None
deadline = killed + 120
while routed is None and time.time() < deadline:
    method, _, body = channel.basic_get(events, auto_ack=True)
    if method and b"test3.com" in body:
        routed = time.time() - killed
    else:
        connection.sleep(0.02)
for process in [standby] + workers:
    process.send_signal(signal.SIGTERM)
for process in [standby] + workers:
    process.wait(timeout=120)
if routed is None:
    sys.exit("the standby routed nothing within 120 s")

print(f"floor: one story through fanficfare + calibredb add: {bare:.2f} s")
print(f"{'':44}{'seconds':>9}{'x floor':>9}")
for name, value in [
    ("fanfic run start -> first book (fresh)", fresh_book),
    ("fanfic run start -> first book (restart)", again_book),
]:
    print(f"{name:44}{value:9.2f}{value / bare:9.2f}")
print(f"{'start -> table rebuilt (fresh)':44}{fresh_rebuilt:9.2f}   (window: 20 s)")
print(f"{'start -> table rebuilt (restart)':44}{again_rebuilt:9.2f}   (window: 20 s)")
print(f"{'failover: kill -> a task submitted then starts':44}{routed:9.2f}")
PY
