# sensor-stats container image.
#
#   docker build -t exercise:latest \
#     --build-arg SENSOR_STATS_GIT_REVISION=$(git rev-parse --short=12 HEAD) .
#   docker run --rm -it -p 8080:8080 exercise:latest
#
# Two stages: a Rust build stage (dependencies compiled in their own cached layer, then
# the real sources), and a distroless runtime stage that holds only the binary and runs
# as the unprivileged `nonroot` user. Plain Dockerfile syntax: no BuildKit-only features.
# With podman/buildah, add `--format docker`: the OCI image format has no HEALTHCHECK.

# ---------------------------------------------------------------------------- build
FROM rust:1.95-slim-bookworm AS build
WORKDIR /build
ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0

# 1. Dependencies only. Copy the manifest, lock file and build script, give every target
#    the manifest declares a stub source (so the manifest is valid without the real
#    sources), and build: this layer is reused as long as Cargo.toml, Cargo.lock and
#    build.rs do not change.
COPY Cargo.toml Cargo.lock build.rs ./
RUN set -eu; \
    mkdir -p src; \
    echo '//! Dependency-layer stub.' > src/lib.rs; \
    echo '//! Dependency-layer stub.' > src/main.rs; echo 'fn main() {}' >> src/main.rs; \
    awk 'function flush() { if (kind == "") return; \
           if (path != "") print path; \
           else if (name != "") { \
             if (kind == "bin") { if (name != pkg) print "src/bin/" name ".rs" } \
             else if (kind in dir) print dir[kind] "/" name ".rs" } } \
         BEGIN { dir["bench"] = "benches"; dir["example"] = "examples"; dir["test"] = "tests" } \
         /^[[:space:]]*\[/ { flush(); kind = ""; name = ""; path = ""; \
           sec = $0; sub(/#.*/, "", sec); gsub(/[[:space:]]/, "", sec); inpkg = (sec == "[package]"); \
           if (sec ~ /^\[\[(bin|bench|example|test)\]\]$/) { kind = sec; gsub(/\[|\]/, "", kind) } \
           else if (sec == "[lib]") kind = "lib"; \
           next } \
         { line = $0; sub(/#.*/, "", line) } \
         line ~ /^[[:space:]]*(name|path)[[:space:]]*=/ { \
           v = line; sub(/^[^"]*"/, "", v); sub(/".*/, "", v); \
           if (line ~ /^[[:space:]]*path/) path = v; else if (inpkg) pkg = v; else name = v } \
         END { flush() }' Cargo.toml \
    | while read -r stub; do \
        mkdir -p "$(dirname "$stub")"; \
        [ -e "$stub" ] || echo 'fn main() {}' > "$stub"; \
      done; \
    cargo build --release --locked; \
    rm -f target/release/sensor-stats

# 2. The real sources. COPY keeps the files' own (older) modification times, so touch
#    them for cargo to see that they replace the stubs.
COPY src ./src
ARG SENSOR_STATS_GIT_REVISION=unknown
ENV SENSOR_STATS_GIT_REVISION=${SENSOR_STATS_GIT_REVISION}
RUN set -eu; \
    find src -type f -exec touch {} +; \
    cargo build --release --locked; \
    install -D -m 0755 target/release/sensor-stats /out/sensor-stats; \
    /out/sensor-stats --version

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

ENV SENSOR_STATS_HOST=0.0.0.0 \
    SENSOR_STATS_PORT=8080 \
    SENSOR_STATS_LOG_FORMAT=json

USER 65532:65532
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/sensor-stats", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/sensor-stats"]
