#!/usr/bin/env bash
# The ingester on a mailbox of N messages (the email corpus of Tests/MailIngestTests, repeated):
# messages read, parsed and queued per second by `ingester --once`, beside Python's imaplib only
# fetching the same messages (BODY.PEEK, no parsing, no publishing) in the same run, as a ratio;
# and the ingester's peak resident memory.
#
#   Benchmarks/ingester-bench.sh [MESSAGES]     (default 1000)
#   INGESTER=PATH Benchmarks/ingester-bench.sh   another ingester executable (an earlier build)
set -euo pipefail
cd "$(dirname "$0")/.."
source Benchmarks/benchlib.sh
messages="${1:-1000}"

scripts/broker.sh start >/dev/null
swift build -c release --product ingester >/dev/null
work="$(mktemp -d /tmp/ingester-bench.XXXXXX)"
chmod 755 "$work" # Dovecot's auth and mail processes run as other users
vhost="bench-ingester"
port=$((46000 + RANDOM % 1000))
cleanup() {
    bench_dovecot_stop "$work"
    bench_drop_vhost "$vhost"
    rm -rf "$work"
}
trap cleanup EXIT

source Benchmarks/dovecot.sh
bench_dovecot_start "$work" "$port"
corpus=(Tests/MailIngestTests/Corpus/*.eml)
for i in $(seq 1 "$messages"); do
    cp "${corpus[$((i % ${#corpus[@]}))]}" "$work/mail/reader/new/$i.bench"
done
chmod 666 "$work/mail/reader/new/"*

amqp_url="$(bench_fresh_vhost "$vhost")"
cat >"$work/config.toml" <<TOML
[broker]
url = "$amqp_url"
$(bench_dovecot_email_config "$port")
TOML

python3 - "$port" "$work" "$messages" <<'PY'
import imaplib, os, subprocess, sys, time
port, work, messages = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])

# Baseline: fetch every unseen message, read-only, no parsing.
start = time.time()
imap = imaplib.IMAP4("127.0.0.1", port)
imap.login("reader", "secret")
imap.select("INBOX", readonly=True)
_, data = imap.uid("SEARCH", None, "UNSEEN")
uids = data[0].split()
for uid in uids:
    imap.uid("FETCH", uid, "(BODY.PEEK[])")
imap.logout()
baseline = time.time() - start
assert len(uids) == messages, f"{len(uids)} unseen, expected {messages}"

sys.path.insert(0, "Benchmarks")
from benchlib import rss_kb

start = time.time()
process = subprocess.Popen([os.environ.get("INGESTER", ".build/release/ingester"), "--once", "--config", f"{work}/config.toml",
                            "--log-level", "warning"], stderr=subprocess.PIPE, text=True)
peak = 0
while process.poll() is None:
    peak = max(peak, rss_kb(process.pid))
    time.sleep(0.01)
elapsed = time.time() - start
summary = process.stderr.read().strip().splitlines()
if process.returncode != 0:
    sys.exit(f"ingester failed: {summary}")
print(f"{messages} messages (the email corpus repeated), plain IMAP on loopback, Dovecot")
print(f"{'':44} {'seconds':>8} {'msg/s':>8}")
print(f"{'imaplib: fetch only (BODY.PEEK)':44} {baseline:8.2f} {messages / baseline:8.0f}")
print(f"{'ingester --once: fetch, parse, queue, mark':44} {elapsed:8.2f} {messages / elapsed:8.0f}")
print(f"ratio (ingester rate / fetch-only rate): {baseline / elapsed:.2f}x")
print(f"ingester peak resident memory: {peak // 1024} MB")
print("ingester said: " + "; ".join(summary[-2:]))
PY
