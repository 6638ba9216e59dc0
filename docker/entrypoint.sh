#!/bin/sh
# The entry point of every AutomatedFanfic image: the services run as the unprivileged user
# fanfic (uid 1000), whichever user made the secrets.
#
# Compose mounts a file secret with the host file's owner and mode (0600, owned by whoever ran
# docker/make-secrets.sh), which uid 1000 cannot read. Started as root (the default), this
# copies /run/secrets into /run/fanfic-secrets (a tmpfs in compose.yaml), readable by fanfic
# only, points every *_FILE variable that named /run/secrets there, and drops to fanfic for
# good. Started as any other user (`user:` in compose, Kubernetes), it changes nothing.
set -eu
secrets=/run/fanfic-secrets
if [ "$(id -u)" = 0 ]; then
    if [ -d /run/secrets ]; then
        mkdir -p "$secrets"
        chown fanfic:fanfic "$secrets"
        chmod 0700 "$secrets"
        for file in /run/secrets/*; do
            [ -f "$file" ] || continue
            install -o fanfic -g fanfic -m 0400 "$file" "$secrets/${file##*/}"
        done
        # Only names of the form [A-Z0-9_]*_FILE are rewritten: no value is ever evaluated.
        for name in $(env | sed -n 's|^\([A-Z][A-Z0-9_]*_FILE\)=/run/secrets/.*|\1|p'); do
            value=$(printenv "$name")
            export "$name=$secrets/${value#/run/secrets/}"
        done
    fi
    set -- setpriv --reuid=fanfic --regid=fanfic --init-groups -- "$@"
fi
# tini, where the image has it (ingester, worker), reaps the tools' processes; the core image's
# coordinator starts none.
if [ -x /usr/bin/tini ]; then exec /usr/bin/tini -- "$@"; fi
exec "$@"
