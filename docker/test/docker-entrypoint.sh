#!/bin/sh
# What the official image's entrypoint does for us: own the data, drop to the rabbitmq user,
# run the server in the foreground with its logs on the console.
set -eu
mkdir -p /var/lib/rabbitmq /var/log/rabbitmq
chown -R rabbitmq:rabbitmq /var/lib/rabbitmq /var/log/rabbitmq
export RABBITMQ_LOGS=-
export HOME=/var/lib/rabbitmq
if [ "$(id -u)" = 0 ]; then
    exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups "$@"
fi
exec "$@"
