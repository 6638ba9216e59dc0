#!/usr/bin/env bash
# The test suites, one command.
#
#   scripts/test.sh                 unit tests, then integration tests (what CI runs)
#   scripts/test.sh unit            unit tests only: no broker, no tools, in seconds
#   scripts/test.sh integration     integration tests only (starts the test broker)
#   scripts/test.sh [unit|integration] [swift test options, e.g. --filter AMQPClientTests]
#
# The two run as separate processes: the integration tests block threads on child processes,
# and the unit tests' coordinator runs on short heartbeats; together they would starve it.
set -euo pipefail
cd "$(dirname "$0")/.."

# Tests that need a real broker, mailbox, library or FanFicFare, by test id
# (Module.Suite/test). Everything else is a unit test.
integration='BrokerIntegrationTests|SiteRulesAgreementTests|OutcomeClassifierTests/live|realFanFicFare'

mode=all
case "${1:-}" in
    unit | integration | all) mode=$1; shift ;;
esac

# Swift Testing only: XCTest would add an empty "Executed 0 tests" run.
run_unit() {
    echo "== unit tests" >&2
    swift test --disable-xctest --skip "$integration" "$@"
}

run_integration() {
    echo "== integration tests" >&2
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
    # The dispatch simulations again, over 200 random schedules instead of the unit suite's 30.
    FANFIC_SIMULATION_SEEDS="${FANFIC_SIMULATION_SEEDS:-200}" \
        swift test --disable-xctest --filter "$integration|DispatchSimulationTests" "$@"
}

case "$mode" in
    unit) run_unit "$@" ;;
    integration) run_integration "$@" ;;
    all)
        run_unit "$@"
        run_integration --skip-build "$@"
        ;;
esac
