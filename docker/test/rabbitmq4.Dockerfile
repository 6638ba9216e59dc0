# A RabbitMQ 4 for the integration tests and the compose stack where Docker Hub is out of reach:
# Debian trixie's rabbitmq-server (4.0.5, Erlang 27) on a Debian bookworm base. A labelled
# stand-in for rabbitmq:4-management, built by scripts/rabbitmq4.sh; compose.yaml names the real
# image.
ARG BASE=debian:bookworm-slim
FROM ${BASE}
# What this recipe was when the image was built: scripts rebuild a stand-in whose recipe changed.
ARG RECIPE=unknown
LABEL fanfic.standin.recipe=${RECIPE}
LABEL org.opencontainers.image.title="rabbitmq:4-management (offline stand-in)" \
      org.opencontainers.image.description="Debian trixie rabbitmq-server on bookworm; not the official image"
# The mirror's trixie suite as the only apt source, so that Erlang 27 comes with the server.
RUN printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        >/etc/apt/sources.list.d/debian.sources \
    && rm -f /etc/apt/sources.list \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rabbitmq-server \
    && rm -rf /var/lib/apt/lists/* \
    && rabbitmq-plugins enable --offline rabbitmq_management
# HOME as the official image sets it: root's CLI tools (compose's healthcheck runs as root)
# then share the server's Erlang cookie, /var/lib/rabbitmq/.erlang.cookie.
ENV PATH=/usr/lib/rabbitmq/bin:$PATH \
    HOME=/var/lib/rabbitmq
COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENTRYPOINT ["docker-entrypoint.sh"]
EXPOSE 5672 15672
CMD ["rabbitmq-server"]
