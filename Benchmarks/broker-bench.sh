#!/usr/bin/env bash
# Publish-with-confirm and consume throughput: our AMQP client beside pika, in the same run
# against the same isolated broker, as ratios (the machine is shared and noisy; absolute
# numbers mean little, ratios measured together do).
#
#   Benchmarks/broker-bench.sh [MESSAGES]
set -euo pipefail
cd "$(dirname "$0")/.."
messages="${1:-5000}"
rounds="${ROUNDS:-2}"

scripts/broker.sh start >/dev/null
url="$(scripts/broker.sh url)"
swift build -c release --product broker-bench >/dev/null
bench=".build/release/broker-bench"

results="$(mktemp)"
trap 'rm -f "$results"' EXIT
# Alternate the clients so that a slow patch of the machine does not favour one of them.
for _ in $(seq "$rounds"); do
    python3 Benchmarks/pika_bench.py --url "$url" --messages "$messages" >>"$results"
    "$bench" --url "$url" --messages "$messages" >>"$results"
done

python3 - "$results" "$messages" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
best = {}
for row in rows:
    key = (row["client"], row["case"])
    best[key] = max(best.get(key, 0), row["rate"])
print(f"AMQP throughput, {sys.argv[2]} persistent messages of 512 bytes, best of each client's rounds (msg/s)")
print(f"{'case':32} {'swift':>10} {'pika':>10} {'swift/pika':>11}")
for case in ["publish_confirm_sequential", "publish_confirm_pipelined", "consume_ack"]:
    swift = best.get(("swift", case))
    pika = best.get(("pika", case))
    ratio = f"{swift / pika:.2f}x" if swift and pika else "-"
    print(f"{case:32} {swift or '-':>10} {pika or '-':>10} {ratio:>11}")
print("(pika's BlockingConnection waits for each confirm, so it has no pipelined case;")
print(" compare the sequential rows like for like.)")
PY
