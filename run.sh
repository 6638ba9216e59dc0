#!/usr/bin/env bash
# AutomatedFanfic on one Debian or Ubuntu machine, in one command:
#
#   ./run.sh
#
# 1. installs what is missing (RabbitMQ, calibre, the C libraries with apt; FanFicFare and
#    Apprise with pip into data/venv), 2. builds a release, 3. creates config.toml from
#    config.example.toml when there is none (library: data/library), 4. starts a local RabbitMQ
#    node under data/rabbitmq when the configured broker is this machine and nothing listens
#    there, 5. runs `fanfic run` (coordinator, ingester if a mailbox is set, workers) until
#    Ctrl-C or SIGTERM, then stops the RabbitMQ node it started.
#
# Then, from another terminal in this folder:  .build/release/fanfic submit 'http://test1.com?sid=1'
#
# Environment (all optional):
#   FANFIC_CONFIG             the configuration file       (default: ./config.toml)
#   FANFIC_DATA_DIR           library, broker data, venv   (default: ./data)
#   FANFIC_LOCAL_BROKER_PORT  port of a new config's local RabbitMQ node (default: 5672)
#   FANFIC_BIN_DIR            use these executables instead of building a release
#   FANFIC_NO_INSTALL=1       never install anything; fail if something is missing
# FANFIC_<SECTION>_<KEY> variables override config.toml as usual.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
config=${FANFIC_CONFIG:-$root/config.toml}
data=${FANFIC_DATA_DIR:-$root/data}
local_port=${FANFIC_LOCAL_BROKER_PORT:-5672}

say() { printf 'run.sh: %s\n' "$*" >&2; }
die() {
    say "$*"
    exit 1
}

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else die "need root to run: $* (install sudo, or run that yourself)"; fi
}

# --- 1. what is missing -------------------------------------------------------------------
rabbit_bin=/usr/lib/rabbitmq/bin

install_missing() {
    local apt=()
    [ -x "$rabbit_bin/rabbitmq-server" ] || apt+=(rabbitmq-server)
    command -v calibredb >/dev/null || apt+=(calibre)
    command -v pkg-config >/dev/null || apt+=(pkg-config)
    if command -v pkg-config >/dev/null; then
        pkg-config --exists librabbitmq || apt+=(librabbitmq-dev)
        pkg-config --exists libcurl || apt+=(libcurl4-openssl-dev)
        pkg-config --exists sqlite3 || apt+=(libsqlite3-dev)
        pkg-config --exists zlib || apt+=(zlib1g-dev)
    else
        apt+=(librabbitmq-dev libcurl4-openssl-dev libsqlite3-dev zlib1g-dev)
    fi
    local pip=()
    [ -x "$data/venv/bin/fanficfare" ] && export PATH="$data/venv/bin:$PATH"
    command -v fanficfare >/dev/null || pip+=(FanFicFare)
    command -v apprise >/dev/null || pip+=(apprise)
    if [ ${#pip[@]} -gt 0 ]; then
        python3 -c 'import venv, ensurepip' 2>/dev/null || apt+=(python3-venv)
    fi

    if [ ${#apt[@]} -gt 0 ]; then
        [ "${FANFIC_NO_INSTALL:-0}" = 1 ] && die "missing: ${apt[*]} (FANFIC_NO_INSTALL=1 is set)"
        say "installing with apt: ${apt[*]}"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt[@]}"
        # The distribution starts its own RabbitMQ; ours runs under the data folder instead.
        if [[ " ${apt[*]} " == *" rabbitmq-server "* ]] && command -v systemctl >/dev/null; then
            as_root systemctl disable --now rabbitmq-server >/dev/null 2>&1 || true
        fi
    fi
    if [ ${#pip[@]} -gt 0 ]; then
        [ "${FANFIC_NO_INSTALL:-0}" = 1 ] && die "missing: ${pip[*]} (FANFIC_NO_INSTALL=1 is set)"
        say "installing with pip into $data/venv: ${pip[*]}"
        mkdir -p "$data"
        python3 -m venv "$data/venv"
        "$data/venv/bin/pip" install -q "${pip[@]}"
        export PATH="$data/venv/bin:$PATH"
    fi
}

# --- 2. the executables -------------------------------------------------------------------
build() {
    if [ -n "${FANFIC_BIN_DIR:-}" ]; then
        bin=$FANFIC_BIN_DIR
    else
        command -v swift >/dev/null ||
            die "no Swift toolchain: install Swift 6.1 or later (https://www.swift.org/install/linux/), then run again"
        say "building a release (the first build takes several minutes)"
        (cd "$root" && swift build -c release)
        bin=$(cd "$root" && swift build -c release --show-bin-path)
    fi
    for name in fanfic coordinator worker ingester; do
        [ -x "$bin/$name" ] || die "$bin/$name is missing"
    done
}

# --- 3. the configuration -----------------------------------------------------------------
make_config() {
    [ -f "$config" ] && return 0
    say "creating $config from config.example.toml (library: $data/library)"
    mkdir -p "$(dirname "$config")"
    sed -e "0,/^url = .*/s||url = \"amqp://guest:guest@127.0.0.1:$local_port/%2F\"|" \
        -e "s|^library = .*|library = \"$data/library\"       # a folder, or a Content Server http(s)://host:port/#library_id|" \
        "$root/config.example.toml" >"$config"
    chmod 600 "$config"
}

# The library folder the configuration names: created (as a Calibre library) when missing.
prepare_library() {
    local library
    library=$("$bin/fanfic" config show --config "$config" | sed -n 's/^library = "\(.*\)"$/\1/p')
    case "$library" in
    http://* | https://* | "") return 0 ;;
    esac
    if [ ! -f "$library/metadata.db" ]; then
        say "creating an empty Calibre library in $library"
        mkdir -p "$library"
        # calibre allows one program per user at a time: wait out another (e.g. the GUI) a while.
        local deadline=$((SECONDS + 60)) output
        until output=$(calibredb list --library-path "$library" 2>&1 >/dev/null); do
            if ((SECONDS > deadline)) || [[ "$output" != *"Another calibre program"* ]]; then
                die "cannot create the library in $library: $output"
            fi
            sleep 1
        done
    fi
}

# --- 4. the broker ------------------------------------------------------------------------
started_node=""
started_epmd=0

broker_address() {
    "$bin/fanfic" config show --config "$config" |
        sed -n 's|^url = "amqps\{0,1\}://\([^@]*@\)\{0,1\}\([^:/]*\):\{0,1\}\([0-9]*\).*|\2 \3|p' | head -n 1
}

listening() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

node_env() {
    local port=$1 dir=$2
    export RABBITMQ_NODENAME="fanfic-$port@localhost"
    export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
    export RABBITMQ_NODE_PORT=$port
    if ((port + 20000 <= 65535)); then export RABBITMQ_DIST_PORT=$((port + 20000))
    else export RABBITMQ_DIST_PORT=$((port - 1000)); fi
    export RABBITMQ_MNESIA_BASE="$dir/mnesia" RABBITMQ_LOG_BASE="$dir/log"
    export RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" RABBITMQ_PID_FILE="$dir/rabbit.pid"
    export RABBITMQ_CONFIG_FILE="$dir/rabbitmq" ERL_EPMD_ADDRESS=127.0.0.1
}

# rabbitmqctl and rabbitmq-server as the user that owns the node: the rabbitmq user when we are
# root (Debian's wrappers switch to it), ourselves otherwise.
rabbit() {
    local tool=$1
    shift
    if [ "$(id -u)" = 0 ]; then "$tool" "$@"; else "$rabbit_bin/$tool" "$@"; fi
}

start_local_broker() {
    local port=$1 dir="$data/rabbitmq"
    mkdir -p "$dir/mnesia" "$dir/log"
    if [ "$(id -u)" = 0 ] && ! su rabbitmq -s /bin/sh -c "test -x '$dir'" 2>/dev/null; then
        dir=/var/lib/rabbitmq/fanfic-$port # the rabbitmq user cannot reach the project's folder
        mkdir -p "$dir/mnesia" "$dir/log"
    fi
    node_env "$port" "$dir"
    [ -f "$dir/enabled_plugins" ] || echo '[].' >"$dir/enabled_plugins"
    cat >"$dir/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$port
# Longer than fanficfare.timeout: a worker acknowledges its task when the download is done.
consumer_timeout = 14400000
log.console = false
log.file.level = warning
CONF
    [ "$(id -u)" = 0 ] && chown -R rabbitmq:rabbitmq "$dir"
    epmd -names >/dev/null 2>&1 || started_epmd=1
    say "starting a local RabbitMQ node ($RABBITMQ_NODENAME) on 127.0.0.1:$port, data in $dir"
    rabbit rabbitmq-server -detached >/dev/null 2>&1 || true
    started_node=$RABBITMQ_NODENAME
    local deadline=$((SECONDS + 150))
    until rabbit rabbitmqctl -q -n "$started_node" await_startup >/dev/null 2>&1; do
        if ((SECONDS > deadline)); then
            tail -n 20 "$dir"/log/*.log >&2 2>/dev/null || true
            die "the local RabbitMQ node did not start within 150 s (log above)"
        fi
        sleep 0.5
    done
}

stop_local_broker() {
    [ -n "$started_node" ] || return 0
    say "stopping the local RabbitMQ node $started_node"
    # With the pid file, stop returns once the Erlang VM itself has exited.
    rabbit rabbitmqctl -q -n "$started_node" stop "$RABBITMQ_PID_FILE" >/dev/null 2>&1 || true
    local deadline=$((SECONDS + 30))
    while rabbit rabbitmqctl -q -n "$started_node" ping >/dev/null 2>&1 && ((SECONDS < deadline)); do sleep 0.3; done
    if [ "$started_epmd" = 1 ] && ! epmd -names 2>/dev/null | grep -q '^name '; then
        if [ "$(id -u)" = 0 ]; then su rabbitmq -s /bin/sh -c 'epmd -kill' >/dev/null 2>&1 || true
        else epmd -kill >/dev/null 2>&1 || true; fi
    fi
    started_node=""
}

ensure_broker() {
    local host port
    read -r host port < <(broker_address) || true
    port=${port:-5672}
    case "$host" in
    127.0.0.1 | localhost | "::1")
        if listening 127.0.0.1 "$port"; then
            say "using the broker already listening on 127.0.0.1:$port"
        else
            start_local_broker "$port"
        fi
        ;;
    *) say "using the configured broker at $host:$port" ;;
    esac
}

# --- 5. run -------------------------------------------------------------------------------
install_missing
build
make_config
prepare_library
trap stop_local_broker EXIT
ensure_broker

child=""
forward() { [ -n "$child" ] && kill -TERM "$child" 2>/dev/null || true; }
trap forward TERM INT
say "running; submit stories with: $bin/fanfic submit --config $config URL...  (Ctrl-C stops)"
"$bin/fanfic" run --config "$config" &
child=$!
set +e
wait "$child"
status=$?
while kill -0 "$child" 2>/dev/null; do
    wait "$child"
    status=$?
done
set -e
stop_local_broker
exit "$status"
