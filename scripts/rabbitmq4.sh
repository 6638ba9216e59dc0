#!/usr/bin/env bash
# RabbitMQ 4 for the integration tests, in a container (what compose users run), built offline:
# Docker Hub is out of reach here, so the base image is a local debootstrap of Debian bookworm and
# RabbitMQ comes from Debian trixie (4.0.5). See docker/test/rabbitmq4.Dockerfile.
#
#   scripts/rabbitmq4.sh image          install docker.io and debootstrap, start dockerd, build the image
#   scripts/rabbitmq4.sh start|stop     run (or remove) the test node on 127.0.0.1:$FANFIC_BROKER_PORT
#   scripts/rabbitmq4.sh ctl ARGS...    rabbitmqctl inside it
#   scripts/rabbitmq4.sh log            the node's log (warnings and errors)
#
# scripts/broker.sh hands over to this when FANFIC_BROKER_FLAVOR=rabbitmq4.
set -euo pipefail
cd "$(dirname "$0")/.."

port="${FANFIC_BROKER_PORT:-31500}"
image="${FANFIC_RABBITMQ4_IMAGE:-fanfic-standin/rabbitmq:4.0.5}"
base="fanfic-standin/debian:bookworm-slim"
name="fanfic-test-rabbitmq4-$port"
dir="${FANFIC_BROKER_DIR:-/tmp/fanfic-broker4}"

docker_up() {
    command -v dockerd >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io >/dev/null; }
    docker info >/dev/null 2>&1 && return 0
    (dockerd >/tmp/fanfic-dockerd.log 2>&1 &)
    local deadline=$((SECONDS + 60))
    until docker info >/dev/null 2>&1; do
        ((SECONDS > deadline)) && { echo "rabbitmq4.sh: dockerd did not start; see /tmp/fanfic-dockerd.log" >&2; return 1; }
        sleep 0.5
    done
}

build_image() {
    docker_up
    local recipe
    recipe=$(cat docker/test/rabbitmq4.Dockerfile docker/test/docker-entrypoint.sh | sha256sum | cut -c1-16)
    [ "$(docker image inspect -f '{{index .Config.Labels "fanfic.standin.recipe"}}' "$image" 2>/dev/null)" = "$recipe" ] &&
        return 0
    if ! docker image inspect "$base" >/dev/null 2>&1; then
        command -v debootstrap >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null; }
        local root
        root=$(mktemp -d /tmp/fanfic-bookworm.XXXXXX)
        echo "rabbitmq4.sh: debootstrap of bookworm (a stand-in for debian:bookworm-slim)" >&2
        debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >/tmp/fanfic-debootstrap.log 2>&1 ||
            { tail -n 20 /tmp/fanfic-debootstrap.log >&2; return 1; }
        tar -C "$root" -c . | docker import -c 'LABEL stand-in="debootstrap of Debian bookworm, not the official image"' - "$base" >/dev/null
        rm -rf "$root"
    fi
    echo "rabbitmq4.sh: building $image" >&2
    docker build -q --build-arg "BASE=$base" --build-arg "RECIPE=$recipe" -t "$image" \
        -f docker/test/rabbitmq4.Dockerfile docker/test >/dev/null
}

ctl() { docker exec -u rabbitmq -e HOME=/var/lib/rabbitmq "$name" rabbitmqctl "$@"; }

start() {
    build_image
    if docker ps -q --filter "name=^$name\$" | grep -q .; then
        echo "rabbitmq4.sh: $name already running"
        return 0
    fi
    docker rm -f "$name" >/dev/null 2>&1 || true
    mkdir -p "$dir"
    cat >"$dir/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$port
management.tcp.port = $((port + 3))
management.tcp.ip = 127.0.0.1
loopback_users = none
consumer_timeout = ${FANFIC_BROKER_CONSUMER_TIMEOUT_MS:-1800000}
heartbeat = 10
log.console.level = warning
CONF
    chmod 644 "$dir/rabbitmq.conf"
    # Host networking: the tests reach it on loopback like the Debian node; /tmp is shared for
    # the definition files the tests import.
    docker run -d --name "$name" --network host -v /tmp:/tmp \
        -e RABBITMQ_CONFIG_FILE="$dir/rabbitmq" -e RABBITMQ_NODENAME="fanfic4-$port@localhost" \
        -e RABBITMQ_DIST_PORT=$((port + 1)) -e ERL_EPMD_PORT=$((port + 4)) \
        "$image" >/dev/null
    local deadline=$((SECONDS + 120))
    until ctl -q await_startup --timeout 10 >/dev/null 2>&1; do
        if ((SECONDS > deadline)); then
            echo "rabbitmq4.sh: $name not ready; log:" >&2
            docker logs --tail 30 "$name" >&2 || true
            return 1
        fi
        sleep 1
    done
    echo "rabbitmq4.sh: RabbitMQ $(ctl -q version 2>/dev/null) ready on 127.0.0.1:$port"
}

stop() { docker rm -f "$name" >/dev/null 2>&1 || true; }

# The same node again, its data kept (what a broker restart is).
restart() {
    docker restart -t 30 "$name" >/dev/null
    local deadline=$((SECONDS + 120))
    until ctl -q await_startup --timeout 10 >/dev/null 2>&1; do
        ((SECONDS > deadline)) && { docker logs --tail 30 "$name" >&2; return 1; }
        sleep 0.5
    done
}

case "${1:-}" in
image) build_image ;;
engine) docker_up ;;
start) start ;;
stop | shutdown) stop ;;
restart) restart ;;
stop-app) ctl -q stop_app ;;
start-app) ctl -q start_app && ctl -q await_startup --timeout 90 ;;
status) ctl -q status ;;
url) echo "amqp://guest:guest@127.0.0.1:$port/%2F" ;;
ctl) shift; ctl "$@" ;;
log) docker logs "$name" 2>&1 ;;
*) echo "usage: $0 image|engine|start|stop|restart|stop-app|start-app|status|url|ctl ARGS..." >&2; exit 2 ;;
esac
