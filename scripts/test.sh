#!/usr/bin/env bash
# The test suites, one command.
#
#   scripts/test.sh                 unit tests, then integration tests (what CI runs)
#   scripts/test.sh unit            unit tests only: no broker, no tools, in seconds
#   scripts/test.sh integration     integration tests only (starts the test broker), then the
#                                   broker-facing suites again on RabbitMQ 4 (in a container)
#   scripts/test.sh rabbitmq4       only the RabbitMQ 4 pass (FANFIC_RABBITMQ4=0 skips it elsewhere)
#   scripts/test.sh [unit|integration] [swift test options, e.g. --filter AMQPClientTests]
#
# The two run as separate processes: the integration tests block threads on child processes,
# and the unit tests' coordinator runs on short heartbeats; together they would starve it.
set -euo pipefail
cd "$(dirname "$0")/.."

# Tests that need a real broker, mailbox, library or FanFicFare, by test id
# (Module.Suite/test). Everything else is a unit test.
integration='BrokerIntegrationTests|SiteRulesAgreementTests|OutcomeClassifierTests/live|realFanFicFare'

# Suites run a second time on RabbitMQ 4, what compose users run (Debian's is 3.10): every one
# that depends on how the broker behaves, not on FanFicFare or Calibre. Not the TLS and network
# cut tests (the container has no TLS listener; the cut needs a local socat path), nor the
# two-node cluster (Debian's nodes).
rabbitmq4_suites='AMQPClientTests|BrokerDefinitionsTests|DashboardHistoryBrokerTests|WaitingRetriesBrokerTests|SweepBrokerTests|DeliveryLimitTests|FailedCommandTests|StatusCommandTests|SubmitCommandTests|CoordinatorServiceTests|IngesterTests'
rabbitmq4_skips='tlsConnection|networkCut'

mode=all
case "${1:-}" in
    unit | integration | rabbitmq4 | all) mode=$1; shift ;;
esac

# Everything the tests need, before anything runs: installed here when we may (root), else
# named in one line with the command that installs it.
if [ "$mode" != unit ] && ! scripts/install-deps.sh --check; then
    if [ "$(id -u)" = 0 ]; then
        echo "test.sh: installing what the tests need (scripts/install-deps.sh)" >&2
        scripts/install-deps.sh
    else
        exit 1
    fi
fi

# `swift test` under a time limit, its output line by line. Into a file or a pipe (CI's log)
# swift test's output otherwise comes only when it exits, so a run that hung showed nothing of
# where. Past the limit it prints the tests that started and have not finished, the processes
# still running and where each thread of the test process waits, then stops it (status 124).
#   FANFIC_TEST_TIME_LIMIT  seconds per `swift test` run (default 1800; a pass takes about 12 min)
swift_test() {
    local limit="${FANFIC_TEST_TIME_LIMIT:-1800}" log pid follower
    log="$(mktemp "${TMPDIR:-/tmp}/fanfic-swift-test-XXXXXX")"
    stdbuf -oL -eL swift test "$@" >"$log" 2>&1 &
    pid=$!
    tail -n +1 -f --pid="$pid" "$log" &
    follower=$!
    local deadline=$((SECONDS + limit))
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 2; done
    if kill -0 "$pid" 2>/dev/null; then
        sleep 1   # the follower's last lines first
        echo "test.sh: swift test still running after ${limit} s (FANFIC_TEST_TIME_LIMIT); stopping it" >&2
        echo "test.sh: tests started and not finished:" >&2
        sed -n '/ Test run started\.$/d; s/^[^ ]* Test \(.*\) started\.$/\1/p' "$log" | sort >"$log.started"
        sed -n 's/^[^ ]* Test \(.*\) \(passed\|failed\) after .*$/\1/p; s/^[^ ]* Test \(.*\) skipped.*$/\1/p' "$log" \
            | sort -u >"$log.finished"
        comm -23 "$log.started" "$log.finished" | sed 's/^/  /' >&2
        echo "test.sh: processes:" >&2
        ps -eo pid,ppid,pgid,etimes,stat,args --forest | grep -v -e ' \[' -e 'ps -eo' | cut -c1-200 >&2 || true
        local tests
        # swift test's own child only: another checkout's test run on this machine is not ours.
        for tests in $(pgrep -P "$pid" -f 'PackageTests.xctest' || true); do
            echo "test.sh: threads of $tests:" >&2
            timeout 180 gdb -p "$tests" -batch -nx -ex 'thread apply all bt 25' 2>&1 \
                | grep -E '^(Thread|#)' | cut -c1-220 >&2 || true
            # The roles it started run in process groups of their own: stopped with it.
            pkill -KILL -P "$tests" || true
            kill -KILL "$tests" 2>/dev/null || true
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        wait "$follower" 2>/dev/null || true
        rm -f "$log" "$log.started" "$log.finished"
        return 124
    fi
    local status=0
    wait "$pid" || status=$?
    wait "$follower" 2>/dev/null || true
    rm -f "$log"
    return "$status"
}

# Swift Testing only: XCTest would add an empty "Executed 0 tests" run.
run_unit() {
    echo "== unit tests" >&2
    swift_test --disable-xctest --skip "$integration" "$@"
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
    export FANFIC_TEST_BROKER_URL="${FANFIC_TEST_BROKER_URL:-amqp://guest:guest@127.0.0.1:${FANFIC_BROKER_PORT:-31500}}"
    # The dispatch simulations again, over 200 random schedules instead of the unit suite's 30.
    FANFIC_SIMULATION_SEEDS="${FANFIC_SIMULATION_SEEDS:-200}" \
        swift_test --disable-xctest --filter "$integration|DispatchSimulationTests" "$@"
}

# The same suites against RabbitMQ 4.0 in a container (scripts/rabbitmq4.sh builds its image
# offline the first time, a few minutes), on a port of its own below Linux's ephemeral range:
# the container shares the host's network, and while the broker is stopped a reconnecting
# client's own source port could otherwise take the broker's port (seen: eaddrinuse at start_app).
run_rabbitmq4() {
    echo "== integration tests on RabbitMQ 4" >&2
    export FANFIC_BROKER_FLAVOR=rabbitmq4 FANFIC_BROKER_PORT="${FANFIC_RABBITMQ4_PORT:-31800}"
    export FANFIC_TEST_BROKER_URL="amqp://guest:guest@127.0.0.1:$FANFIC_BROKER_PORT"
    trap 'pkill -f "fanfic-dovecot-[0-9]+/dovecot.conf" 2>/dev/null || true; scripts/rabbitmq4.sh stop' EXIT
    scripts/rabbitmq4.sh start
    swift_test --disable-xctest --filter "$rabbitmq4_suites" --skip "$rabbitmq4_skips" "$@"
}

case "$mode" in
    unit) run_unit "$@" ;;
    integration)
        (run_integration "$@")
        if [ "${FANFIC_RABBITMQ4:-1}" != 0 ]; then run_rabbitmq4 --skip-build "$@"; fi
        ;;
    rabbitmq4) run_rabbitmq4 "$@" ;;
    all)
        run_unit "$@"
        (run_integration --skip-build "$@")
        if [ "${FANFIC_RABBITMQ4:-1}" != 0 ]; then run_rabbitmq4 --skip-build "$@"; fi
        ;;
esac
