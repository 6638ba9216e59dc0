#!/usr/bin/env bash
# The whole test suite, the one command: starts the isolated RabbitMQ node the integration tests
# need (unless one is running), runs every test, and stops what it started.
#
#   scripts/test.sh [swift test options, e.g. --filter AMQPClientTests]
set -euo pipefail
cd "$(dirname "$0")/.."

started=0
cleanup() {
    # The ingester tests' Dovecot lives for the whole run (one per suite, not per test).
    pkill -f "fanfic-dovecot-[0-9]+/dovecot.conf" 2>/dev/null || true
    if [ "$started" = 1 ]; then scripts/broker.sh shutdown; fi
}
trap cleanup EXIT
if ! scripts/broker.sh ctl -q ping >/dev/null 2>&1; then
    scripts/broker.sh start
    started=1
fi
export FANFIC_TEST_BROKER_URL="${FANFIC_TEST_BROKER_URL:-amqp://guest:guest@127.0.0.1:${FANFIC_BROKER_PORT:-56720}}"

# Swift Testing only: XCTest would add an empty "Executed 0 tests" run.
swift test --disable-xctest "$@"
