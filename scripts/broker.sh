#!/usr/bin/env bash
# An isolated RabbitMQ node for tests and benchmarks, without systemd and without touching a
# broker the machine may already run: its own node name, ports and data folder.
#
#   scripts/broker.sh start|stop|shutdown|restart|stop-app|start-app|status|url|tls-url|ctl ARGS...|log
#
# FANFIC_BROKER_DIR (default /tmp/fanfic-broker), FANFIC_BROKER_PORT (default 31500).
set -euo pipefail

# FANFIC_BROKER_FLAVOR=rabbitmq4: the same commands on RabbitMQ 4, in a container.
if [ "${FANFIC_BROKER_FLAVOR:-debian}" = rabbitmq4 ]; then
    exec "$(dirname "$0")/rabbitmq4.sh" "$@"
fi

dir="${FANFIC_BROKER_DIR:-/tmp/fanfic-broker}"
# Below Linux's ephemeral range (32768-60999): a node restarted in a test must not find its
# port taken by some client's outgoing connection (seen: a cluster node on 56740 got eaddrinuse).
port="${FANFIC_BROKER_PORT:-31500}"
tls_port=$((port + 2))   # amqps; port + 1 is Erlang distribution
export RABBITMQ_NODENAME="fanfic-test-${port}@localhost"
export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
export RABBITMQ_NODE_PORT="$port"
export RABBITMQ_DIST_PORT=$((port + 1))
export RABBITMQ_MNESIA_BASE="$dir/mnesia"
export RABBITMQ_LOG_BASE="$dir/log"
export RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins"
export RABBITMQ_PID_FILE="$dir/rabbit.pid"
export RABBITMQ_CONFIG_FILE="$dir/rabbitmq"   # rabbitmq.conf; the extension is implied
export ERL_EPMD_ADDRESS=127.0.0.1

ctl() { rabbitmqctl -n "$RABBITMQ_NODENAME" "$@"; }

# A private CA and a server certificate for localhost, so the TLS listener can be verified.
make_certificates() {
    local tls="$dir/tls"
    [ -f "$tls/server.pem" ] && return 0
    mkdir -p "$tls"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=fanfic-test-ca" \
        -keyout "$tls/ca.key" -out "$tls/ca.pem" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
        -keyout "$tls/server.key" -out "$tls/server.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$tls/san.ext"
    openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial \
        -days 3650 -extfile "$tls/san.ext" -out "$tls/server.pem" 2>/dev/null
    chmod 644 "$tls"/*
}

prepare() {
    mkdir -p "$dir/mnesia" "$dir/log"
    [ -f "$dir/enabled_plugins" ] || echo '[].' >"$dir/enabled_plugins"
    make_certificates
    cat >"$dir/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$port
listeners.ssl.default = 127.0.0.1:$tls_port
ssl_options.cacertfile = $dir/tls/ca.pem
ssl_options.certfile = $dir/tls/server.pem
ssl_options.keyfile = $dir/tls/server.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
loopback_users = none
# Tests exercise the delivery-ack timeout; production keeps RabbitMQ's 30 minutes.
consumer_timeout = ${FANFIC_BROKER_CONSUMER_TIMEOUT_MS:-1800000}
heartbeat = 10
log.console = false
log.file.level = warning
CONF
    if id rabbitmq >/dev/null 2>&1; then chown -R rabbitmq:rabbitmq "$dir"; fi
}

await_ready() {
    local deadline=$((SECONDS + ${1:-60}))
    until ctl -q await_startup >/dev/null 2>&1; do
        if ((SECONDS > deadline)); then
            echo "broker.sh: node $RABBITMQ_NODENAME not ready; log:" >&2
            tail -n 30 "$dir"/log/*.log >&2 2>/dev/null || true
            return 1
        fi
        sleep 0.5
    done
}

start() {
    if ctl -q ping >/dev/null 2>&1; then
        echo "broker.sh: $RABBITMQ_NODENAME already running"
        return 0
    fi
    prepare
    rabbitmq-server -detached >/dev/null 2>&1 || true
    await_ready 90
    echo "broker.sh: $RABBITMQ_NODENAME ready on 127.0.0.1:$port"
}

stop() {
    ctl -q stop >/dev/null 2>&1 || true
    local deadline=$((SECONDS + 30))
    while ctl -q ping >/dev/null 2>&1; do
        ((SECONDS > deadline)) && break
        sleep 0.3
    done
}

# stop, and leave no epmd behind when no other Erlang node uses it (the end of a CI run).
shutdown() {
    stop
    if ! epmd -names 2>/dev/null | grep -q '^name '; then
        if id rabbitmq >/dev/null 2>&1; then su rabbitmq -s /bin/sh -c 'epmd -kill' >/dev/null 2>&1 || true
        else epmd -kill >/dev/null 2>&1 || true; fi
    fi
}

case "${1:-}" in
start) start ;;
stop) stop ;;
shutdown) shutdown ;;
restart) stop; start ;;
stop-app) ctl -q stop_app ;;
start-app) ctl -q start_app && await_ready 60 ;;
status) ctl -q status ;;
url) echo "amqp://guest:guest@127.0.0.1:$port/%2F" ;;
tls-url) echo "amqps://guest:guest@localhost:$tls_port/%2F?cacertfile=$dir/tls/ca.pem" ;;
ctl) shift; ctl "$@" ;;
log) cat "$dir/log/$RABBITMQ_NODENAME.log" ;;
*) echo "usage: $0 start|stop|shutdown|restart|stop-app|start-app|status|url|tls-url|ctl ARGS...|log" >&2; exit 2 ;;
esac
