#!/bin/sh
# Creates the Docker secrets compose.yaml expects, in ./secrets (or DIR), without overwriting
# any that exist: a random password per broker user (inside each role's broker URL), the
# management UI's admin password (and the admin's URL), and empty files for the secrets only
# you know. The files are 0600, owned by whoever runs this: the containers read them as root
# and hand them to their unprivileged user (docker/entrypoint.sh), whatever that uid is.
#
#   docker/make-secrets.sh [DIR]
#
# BROKER_HOST (default rabbitmq: the compose service), BROKER_PORT (5672), BROKER_SCHEME (amqp;
# amqps for TLS), BROKER_VHOST (URL-encoded, default %2F) shape the URLs; for a worker-only
# host, copy worker_broker_url from the broker's host and set its host part.
set -eu
dir=${1:-secrets}
host=${BROKER_HOST:-rabbitmq}
port=${BROKER_PORT:-5672}
scheme=${BROKER_SCHEME:-amqp}
vhost=${BROKER_VHOST:-%2F}

umask 077
mkdir -p "$dir"
random() { openssl rand -hex 16; }
made=""
create() { # NAME CONTENT
    [ -e "$dir/$1" ] && return 0
    printf '%s\n' "$2" >"$dir/$1"
    made="$made $1"
}

create rabbitmq_admin_password "$(random)"
# The operator's URL (`docker compose run --rm admin failed list`): the admin user's password.
create admin_broker_url "$scheme://admin:$(head -n 1 "$dir/rabbitmq_admin_password")@$host:$port/$vhost"
for role in coordinator worker ingester cli dashboard; do
    create "${role}_broker_url" "$scheme://fanfic-$role:$(random)@$host:$port/$vhost"
done
# Yours to fill in (empty = not used): the IMAP password, and Apprise URLs (one per line or
# comma-separated). The Content Server password the workers use is made here.
create email_password ""
create calibre_password "$(random)"
create apprise_urls ""
# The dashboard's login (its page asks for it; change it whenever you like), and read-only API
# tokens for scripts and homepage widgets (one per line, 16 characters or more; empty = none).
create dashboard_password "$(random)"
create dashboard_api_tokens ""
echo "make-secrets.sh: in $dir:${made:- nothing new (every secret exists)}"
