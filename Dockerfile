# sensor-stats container image.
#
#   docker build -t exercise:latest \
#     --build-arg SENSOR_STATS_GIT_REVISION=$(git rev-parse --short=12 HEAD) .
#   docker run --rm -it -p 8080:8080 exercise:latest
#
# Build stages: `chef` installs cargo-chef (a layer of its own, cached for good),
# `planner` turns the manifests into recipe.json (the manifests, lock file and target list,
# no source code), and `build` compiles the dependencies from that recipe alone
# ("cook"; reused until Cargo.toml or Cargo.lock change), then the real sources. The
# runtime stage is distroless, holds only the binary and runs as the unprivileged
# `nonroot` user. Plain Dockerfile syntax: no BuildKit-only features.
# With podman/buildah, add `--format docker`: the OCI image format has no HEALTHCHECK.

# ---------------------------------------------------------------------------- chef
FROM rust:1.95-slim-bookworm AS chef
ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0
ARG CARGO_CHEF_VERSION=0.1.78
RUN cargo install --locked cargo-chef --version "${CARGO_CHEF_VERSION}" \
 && rm -rf "${CARGO_HOME}/registry" "${CARGO_HOME}/git"
WORKDIR /build

# ------------------------------------------------------------------------- planner
# Sees the whole build context (benches/, examples/ and tests/ included: `cargo metadata`
# refuses a manifest whose [[bench]] files are missing), but only recipe.json leaves this
# stage, and it changes only when the manifests, the lock file or the set of targets do.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# --------------------------------------------------------------------------- build
FROM chef AS build

# 1. Dependencies only: cook writes the recipe's manifest and lock file, empty stand-ins
#    for every target (lib, bin, build.rs, benches, examples, tests) and builds them.
COPY --from=planner /build/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json

# 2. The real manifest (cook's copy has the crate version masked), build script and
#    sources; the bench/example/test stand-ins stay, so the manifest still resolves.
#    COPY keeps the files' own (older) modification times, so touch them for cargo to
#    see that they replace the stand-ins.
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
# Embedded in the binary: the Swagger UI files of /docs and the examples of /openapi.json.
COPY assets ./assets
COPY samples ./samples
ARG SENSOR_STATS_GIT_REVISION=unknown
ENV SENSOR_STATS_GIT_REVISION=${SENSOR_STATS_GIT_REVISION}
RUN set -eu; \
    find src build.rs Cargo.toml -type f -exec touch {} +; \
    cargo build --release --locked; \
    install -D -m 0755 target/release/sensor-stats /out/sensor-stats; \
    install -d -m 0750 /out/data; \
    /out/sensor-stats --version | grep -q '^sensor-stats '

# -------------------------------------------------------------------------- runtime
# distroless/cc: glibc, libgcc_s, CA certificates, tzdata, /etc/passwd with `nonroot`
# (65532); no shell, no package manager. Hence no RUN below.
FROM gcr.io/distroless/cc-debian12:nonroot

ARG SENSOR_STATS_GIT_REVISION=unknown
# Keep in step with `version` in Cargo.toml.
ARG SENSOR_STATS_VERSION=0.1.0
LABEL org.opencontainers.image.title="sensor-stats" \
      org.opencontainers.image.description="HTTP service that ingests sensor measurements and answers per-sensor statistics" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${SENSOR_STATS_VERSION}" \
      org.opencontainers.image.revision="${SENSOR_STATS_GIT_REVISION}"

COPY --from=build /out/sensor-stats /usr/local/bin/sensor-stats
# The embedded store's data dir, owned by the nonroot user (a named volume mounted here
# starts with this owner). SENSOR_STATS_DATA_DIR= (empty) switches it off, as the Redis
# deployments do.
COPY --from=build --chown=65532:65532 /out/data /data

ENV SENSOR_STATS_HOST=0.0.0.0 \
    SENSOR_STATS_PORT=8080 \
    SENSOR_STATS_LOG_FORMAT=json \
    SENSOR_STATS_DATA_DIR=/data

VOLUME ["/data"]
USER 65532:65532
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/sensor-stats", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/sensor-stats"]
