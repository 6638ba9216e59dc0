#!/bin/sh
# Renders RabbitMQ definitions (users, permissions) from definitions.template.json and the
# broker URL secrets, so that each password exists in one place: the URL its role connects with.
#
#   render-definitions.sh TEMPLATE OUTPUT SECRETS_DIR [VHOST]
#
# SECRETS_DIR holds rabbitmq_admin_password and coordinator_broker_url, worker_broker_url,
# ingester_broker_url, cli_broker_url, dashboard_broker_url (amqp[s]://fanfic-ROLE:PASSWORD@host:port/vhost, the
# password in letters and digits as docker/make-secrets.sh makes them). Passwords are stored
# as RabbitMQ's salted SHA-256 hashes; OUTPUT is written readable by its owner only.
set -eu
template=$1 output=$2 secrets=$3 vhost=${4:-/}

hash() { # RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password))
    work=$(mktemp -d)
    openssl rand 4 >"$work/salt"
    { cat "$work/salt"; printf '%s' "$1"; } | openssl dgst -binary -sha256 >"$work/digest"
    cat "$work/salt" "$work/digest" | openssl base64 -A
    rm -rf "$work"
}

password_of() { # the password of a role's broker URL
    file="$secrets/$1_broker_url"
    [ -s "$file" ] || { echo "render-definitions.sh: $file is missing or empty" >&2; exit 1; }
    sed -n 's|^amqps\{0,1\}://[^:/@]*:\([A-Za-z0-9._~-]*\)@.*|\1|p' "$file" | head -n 1 | grep . ||
        { echo "render-definitions.sh: $file has no user:password (letters, digits . _ ~ - only)" >&2; exit 1; }
}

admin_file="$secrets/rabbitmq_admin_password"
[ -s "$admin_file" ] || { echo "render-definitions.sh: $admin_file is missing or empty" >&2; exit 1; }
admin=$(head -n 1 "$admin_file")

umask 077
sed -e "s|@VHOST@|$vhost|g" \
    -e "s|@ADMIN_HASH@|$(hash "$admin")|" \
    -e "s|@COORDINATOR_HASH@|$(hash "$(password_of coordinator)")|" \
    -e "s|@WORKER_HASH@|$(hash "$(password_of worker)")|" \
    -e "s|@INGESTER_HASH@|$(hash "$(password_of ingester)")|" \
    -e "s|@CLI_HASH@|$(hash "$(password_of cli)")|" \
    -e "s|@DASHBOARD_HASH@|$(hash "$(password_of dashboard)")|" \
    "$template" >"$output"
