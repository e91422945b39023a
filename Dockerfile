# syntax=docker/dockerfile:1
#
# popbridge container image.
#
#   docker build -t popbridge:0.1.0 .
#   docker run --rm -v "$PWD/config.yaml:/etc/popbridge/config.yaml:ro" \
#     -v popbridge-state:/var/lib/popbridge -e ALICE_POP3_PASSWORD=... -p 9898:9898 popbridge:0.1.0
#
# Not built in CI: the CI machines have no container daemon and no image registry. What CI does
# check (scripts/check-chart.sh) is that this file agrees with the Helm chart and the systemd unit
# on the uid/gid (10001), the port (9898), the config path (/etc/popbridge/config.yaml) and the
# state directory (/var/lib/popbridge). Keep them in step.
#
# Needs BuildKit (the default builder of current Docker) for the cache mounts.

############################################################ build
FROM rust:1.95-slim-bookworm AS build

# OpenSSL is the one TLS stack (async-native-tls, reqwest native-tls); SQLite is bundled by sqlx.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY . .

# --locked: exactly the versions in Cargo.lock. The caches keep the registry and the target
# directory between builds; the binary is copied out of the cache in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin popbridge \
 && install -D -m 0755 target/release/popbridge /out/popbridge

############################################################ runtime
FROM debian:bookworm-slim AS runtime

# The same Debian release as the build stage, so the binary finds the libssl3 it was linked with.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/*

# A fixed, non-root uid/gid 10001: the Helm chart's runAsUser/runAsGroup/fsGroup use the same
# numbers, and a numeric USER lets Kubernetes verify runAsNonRoot.
RUN groupadd --system --gid 10001 popbridge \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /var/lib/popbridge --shell /usr/sbin/nologin popbridge \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/popbridge \
 && install -d -o root -g root -m 0755 /etc/popbridge

COPY --from=build /out/popbridge /usr/local/bin/popbridge

LABEL org.opencontainers.image.title="popbridge" \
      org.opencontainers.image.description="POP3 to Maildir/webhook forwarder, effectively once" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.1.0"

USER 10001:10001
WORKDIR /var/lib/popbridge

# State database (SQLite, WAL), spool, and Maildir sinks. Mount a persistent volume here.
VOLUME /var/lib/popbridge
# /healthz, /readyz, /metrics (config: http.listen: 0.0.0.0:9898).
EXPOSE 9898
# popbridge finishes and records the deliveries in flight on SIGTERM, then exits.
STOPSIGNAL SIGTERM

ENTRYPOINT ["popbridge"]
CMD ["run", "-c", "/etc/popbridge/config.yaml", "--log-format", "json"]
