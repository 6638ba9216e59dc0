#!/bin/sh
# The rabbitmq service's entrypoint: renders the users and permissions from the Docker secrets,
# then hands over to the image's own entrypoint.
set -eu
out=/var/lib/rabbitmq/fanfic-definitions.json
/fanfic/render-definitions.sh /fanfic/definitions.template.json "$out" /run/secrets "${FANFIC_VHOST:-/}"
if [ "$(id -u)" = 0 ]; then chown rabbitmq:rabbitmq "$out"; fi
exec docker-entrypoint.sh "$@"
