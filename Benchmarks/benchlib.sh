# Shell helpers the benchmark scripts share (sourced; they run from the repository root).

# A fresh, empty virtual host on the test broker for one benchmark run, the guest user allowed
# everything in it; prints its AMQP URL.
bench_fresh_vhost() {
    local vhost="$1" base
    scripts/broker.sh ctl -q delete_vhost "$vhost" >/dev/null 2>&1 || true
    scripts/broker.sh ctl -q add_vhost "$vhost"
    scripts/broker.sh ctl -q set_permissions -p "$vhost" guest '.*' '.*' '.*'
    base="$(scripts/broker.sh url)"
    echo "${base%/*}/$vhost"
}

bench_drop_vhost() {
    scripts/broker.sh ctl -q delete_vhost "$1" >/dev/null 2>&1 || true
}

# Writes DIR/config.toml for `fanfic run` on AMQP_URL and LIBRARY with WORKERS workers (short
# heartbeats and worker timeout: the benchmark does not wait on them) and starts FANFIC run in
# the background, its output in DIR/run.log; its pid in run_pid.
bench_fanfic_run() {
    local fanfic="$1" dir="$2" amqp_url="$3" library="$4" workers="$5"
    cat >"$dir/config.toml" <<TOML
[broker]
url = "$amqp_url"
[calibre]
library = "$library"
[worker]
heartbeat = 1
[coordinator]
worker_timeout = 3
[run]
workers = $workers
TOML
    "$fanfic" run --config "$dir/config.toml" >"$dir/run.log" 2>&1 &
    run_pid=$!
}
