#!/bin/sh
# Lists and searches the shared library from the command line, in the calibre service:
#
#   docker compose exec calibre library list --fields title,authors,identifiers
#   docker compose exec calibre library list --search 'title:"~dragon"'
#   docker compose exec calibre library search 'identifiers:"url:=https://www.example.com/s/1"'
#   docker compose exec calibre library export --to-dir /tmp/out 3
#
# Any calibredb command, through the Content Server: calibredb refuses the library folder
# while the server has it open. The password is read from the secret file by calibredb itself
# (<f:FILE>), never put on a command line.
set -eu
[ $# -gt 0 ] || set -- list
command=$1
shift
secret=${CALIBRE_PASSWORD_FILE:-/run/secrets/calibre_password}
[ -r "/run/fanfic-secrets/${secret##*/}" ] && secret="/run/fanfic-secrets/${secret##*/}"
exec calibredb "$command" --with-library "http://127.0.0.1:${CALIBRE_PORT:-8080}/#library" \
    --username "${CALIBRE_USER:-fanfic}" --password "<f:$secret>" "$@"
