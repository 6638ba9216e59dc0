# A throwaway Dovecot for the benchmarks, serving one user (reader / secret) over plain IMAP on
# loopback. Sourced by the benchmark scripts:
#
#   bench_dovecot_start WORK PORT     config, maildir and logs under WORK (mode 755: Dovecot's
#                                     processes run as other users); mail goes to
#                                     WORK/mail/reader/new
#   bench_dovecot_stop WORK

bench_dovecot_start() {
    local work="$1" port="$2"
    mkdir -p "$work/run" "$work/state" "$work/mail/reader/new" "$work/mail/reader/cur" "$work/mail/reader/tmp"
    chmod -R 777 "$work/mail"
    echo "reader:{PLAIN}secret" >"$work/passwd"
    cat >"$work/dovecot.conf" <<CONF
base_dir = $work/run
state_dir = $work/state
log_path = $work/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
mail_location = maildir:$work/mail/%u
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $work/passwd
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=$work/mail/%u
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $port
  }
  inet_listener imaps {
    port = 0
  }
}
default_internal_user = nobody
default_login_user = nobody
CONF
    dovecot -c "$work/dovecot.conf"
}

bench_dovecot_stop() {
    pkill -f "$1/dovecot.conf" 2>/dev/null || true
}

# The `[email]` section that reads this Dovecot's mailbox.
bench_dovecot_email_config() {
    printf '[email]\nserver = "127.0.0.1:%s"\nusername = "reader"\npassword = "secret"\ntls = "none"\n' "$1"
}
