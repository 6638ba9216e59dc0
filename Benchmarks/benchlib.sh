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
