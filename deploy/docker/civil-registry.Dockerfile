# syntax=docker/dockerfile:1.7
# The civil-registry image. Build from the repository root:
#   docker build -f deploy/docker/civil-registry.Dockerfile -t civil-registry:dev .
#
# Stages: manifests (Cargo manifests and emptied sources only, so that the dependency
# layer is reused until a manifest or Cargo.lock changes) -> deps (cargo fetch: the only
# network access) -> builder (offline, --locked release build) -> runtime (distroless cc,
# non-root, no shell, no package manager, no build tools).
#
# The builder and runtime images share one Debian release (trixie, glibc 2.41): a binary
# linked against a newer glibc than the runtime's would not start.

FROM rust:1.95-trixie AS manifests
WORKDIR /src
COPY . .
# Keep what cargo needs to resolve the workspace: manifests, the lock file, toolchain and
# cargo config, and every .rs file emptied (declared targets must exist; their content is
# irrelevant to fetching). Sources change often; this layer's output changes only when a
# manifest or the set of files does.
RUN find . -type f ! -name Cargo.toml ! -name Cargo.lock ! -name '*.rs' \
        ! -name rust-toolchain.toml ! -path './.cargo/*' -delete \
    && find . -type f -name '*.rs' -exec truncate -s 0 {} + \
    && find . -depth -type d -empty -delete

FROM rust:1.95-trixie AS deps
WORKDIR /src
COPY --from=manifests /src/ ./
RUN cargo fetch --locked

FROM deps AS builder
COPY . .
# No network from here on: everything was fetched above. SQLX_OFFLINE keeps sqlx macros
# from looking for a database at compile time.
ENV CARGO_NET_OFFLINE=true \
    SQLX_OFFLINE=true
RUN cargo build --release --offline --locked -p civil-registry \
    && install -D -m 0755 target/release/civil-registry /out/bin/civil-registry \
    && mkdir -p /out/state/data

FROM gcr.io/distroless/cc-debian13:nonroot AS runtime
LABEL org.opencontainers.image.title="civil-registry" \
      org.opencontainers.image.source="deploy/docker/civil-registry.Dockerfile"
# The binary belongs to root and is not writable by the service user; the working
# directory (SQLite default sqlite://data/civil-registry.db when no PostgreSQL URL is set)
# belongs to the service user 65532 ("nonroot").
COPY --from=builder /out/bin/civil-registry /usr/local/bin/civil-registry
COPY --from=builder --chown=65532:65532 /out/state/ /var/lib/civil-registry/
WORKDIR /var/lib/civil-registry
USER 65532:65532
# The image's defaults (deploy/docker/civil-registry.toml) as a file rather than variables:
# variables would override whatever file a deployment names.
COPY deploy/docker/civil-registry.toml /etc/civil-registry/config.toml
ENV CIVIL_REGISTRY_CONFIG=/etc/civil-registry/config.toml
EXPOSE 50051 50052 9464
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/civil-registry", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/civil-registry"]
CMD ["serve"]
