#!/bin/sh
# The calibre service of compose.yaml: a Calibre Content Server over the shared library, with
# one user (CALIBRE_USER, password from the calibre_password secret) that the workers write as.
set -eu
library=${CALIBRE_LIBRARY:-/library}
userdb=${CALIBRE_USERDB:-/calibre-users/users.sqlite}
user=${CALIBRE_USER:-fanfic}
secret=${CALIBRE_PASSWORD_FILE:-/run/secrets/calibre_password}
[ -s "$secret" ] || { echo "calibre-server.sh: $secret is missing or empty" >&2; exit 1; }

[ -f "$library/metadata.db" ] || calibredb list --library-path "$library" >/dev/null
mkdir -p "$(dirname "$userdb")"
# (Re)create the user each start, so that a changed secret takes effect. The password is read
# from the file inside calibre's Python: never on a command line.
calibre-debug -c '
import sys
from calibre.srv.users import UserManager
users = UserManager(sys.argv[-3])
name, password = sys.argv[-2], open(sys.argv[-1]).readline().strip()
if name in users.all_user_names:
    users.remove_user(name)
users.add_user(name, password, readonly=False)
' "$userdb" "$user" "$secret"
# Basic auth: the workers' lookups send it; keep this port on a private network (or behind TLS).
exec calibre-server --listen-on "${CALIBRE_LISTEN:-0.0.0.0}" --port "${CALIBRE_PORT:-8080}" --enable-auth --auth-mode basic --userdb "$userdb" "$library"
