#!/usr/bin/env bash
# Offline stand-ins for the base images the project's Docker files name, for machines without
# Docker Hub: each is built only when the real image is absent, and labelled as a stand-in.
#
#   scripts/docker-standins.sh            debian:bookworm-slim, swift:6.3-bookworm, rabbitmq:4-management
#
# - debian:bookworm-slim: a debootstrap (minbase) of bookworm plus this machine's CA bundle, so
#   that pip inside a build reaches PyPI;
# - swift:6.3-bookworm: that plus this machine's Swift toolchain, the official image's build
#   packages and the local Swift package mirror (git's url.<mirror>.insteadof), so that
#   `swift package resolve` works offline;
# - rabbitmq:4-management: Debian trixie's rabbitmq-server 4.0.5 with the management plugin
#   (docker/test/rabbitmq4.Dockerfile).
set -euo pipefail
cd "$(dirname "$0")/.."

docker info >/dev/null 2>&1 || scripts/rabbitmq4.sh engine
have() { docker image inspect "$1" >/dev/null 2>&1; }
label="stand-in: built offline by scripts/docker-standins.sh, not the official image"

if ! have debian:bookworm-slim; then
    command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
    root=$(mktemp -d /tmp/fanfic-bookworm.XXXXXX)
    echo "docker-standins.sh: debian:bookworm-slim (debootstrap, about 2 min)" >&2
    debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >/tmp/fanfic-debootstrap.log 2>&1 ||
        { tail -n 20 /tmp/fanfic-debootstrap.log >&2; exit 1; }
    # Where the ca-certificates package (which images install) does not regenerate it, and
    # named by PIP_CERT: pip uses its own bundle otherwise, without this machine's CAs.
    # What the official slim image does after apt (debuerreotype): no .deb cache, no package
    # lists in layers, no docs, man pages or translations; else image sizes here mislead.
    cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'APT'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
APT
    printf 'Acquire::Languages "none";\n' >"$root/etc/apt/apt.conf.d/docker-no-languages"
    printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
        'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' 'path-exclude /usr/share/locale/*' \
        'path-include /usr/share/locale/locale.alias' 'path-exclude /usr/share/lintian/*' >"$root/etc/dpkg/dpkg.cfg.d/docker"
    find "$root/usr/share/doc" -mindepth 2 ! -name copyright -delete 2>/dev/null || true
    rm -rf "$root/usr/share/man"/* "$root/usr/share/info"/* "$root/var/cache/apt"/*.bin \
        "$root/var/cache/apt/archives"/*.deb "$root/var/lib/apt/lists"/*
    find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} + 2>/dev/null || true
    mkdir -p "$root/usr/local/share/fanfic-standin"
    cp /etc/ssl/certs/ca-certificates.crt "$root/usr/local/share/fanfic-standin/ca-bundle.crt"
    tar -C "$root" -c . | docker import -c "LABEL org.opencontainers.image.description=\"$label\"" \
        -c "ENV PIP_CERT=/usr/local/share/fanfic-standin/ca-bundle.crt" - debian:bookworm-slim >/dev/null
    rm -rf "$root"
fi

if ! have swift:6.3-bookworm; then
    toolchain=$(dirname "$(dirname "$(readlink -f "$(command -v swift)")")")   # .../usr
    mirror=$(git config --system --get-regexp '^url\..*\.insteadof$' | head -n 1 | sed 's/^url\.\(.*\)\.insteadof .*/\1/')
    context=$(mktemp -d /tmp/fanfic-swift.XXXXXX)
    echo "docker-standins.sh: swift:6.3-bookworm from $toolchain (mirror ${mirror:-none})" >&2
    cp -a "$toolchain" "$context/usr"
    if [ -n "$mirror" ]; then cp -a "$mirror" "$context/mirror"; else mkdir "$context/mirror"; fi
    cat >"$context/Dockerfile" <<DOCKERFILE
FROM debian:bookworm-slim
LABEL org.opencontainers.image.description="$label"
RUN apt-get update && apt-get install -y --no-install-recommends binutils git gnupg2 libc6-dev libcurl4-openssl-dev \
        libedit2 libgcc-12-dev libpython3-dev libsqlite3-0 libstdc++-12-dev libxml2-dev libz3-dev pkg-config tzdata \
        zlib1g-dev libncurses6 ca-certificates && rm -rf /var/lib/apt/lists/*
COPY usr/ /usr/
COPY mirror/ ${mirror:-/opt/swift-packages/}
RUN git config --system url.${mirror:-/opt/swift-packages/}.insteadof https://github.com/
DOCKERFILE
    docker build -q -t swift:6.3-bookworm "$context" >/dev/null
    rm -rf "$context"
fi

# Rebuilt when its recipe changed since (a stand-in is ours: the real image is never replaced).
recipe=$(cat docker/test/rabbitmq4.Dockerfile docker/test/docker-entrypoint.sh | sha256sum | cut -c1-16)
labels=$(docker image inspect -f '{{index .Config.Labels "org.opencontainers.image.title"}}|{{index .Config.Labels "fanfic.standin.recipe"}}' rabbitmq:4-management 2>/dev/null || true)
stale=0
case "$labels" in *"offline stand-in"*) [ "${labels##*|}" = "$recipe" ] || stale=1 ;; esac
if ! have rabbitmq:4-management || [ "$stale" = 1 ]; then
    echo "docker-standins.sh: rabbitmq:4-management (Debian trixie's rabbitmq-server)" >&2
    docker build -q --build-arg BASE=debian:bookworm-slim --build-arg "RECIPE=$recipe" -t rabbitmq:4-management \
        -f docker/test/rabbitmq4.Dockerfile docker/test >/dev/null
fi
docker image ls --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' | grep -E '^(debian:bookworm-slim|swift:6.3-bookworm|rabbitmq:4-management)'
