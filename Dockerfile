# syntax=docker/dockerfile:1
#
# The `modelbus` binary in a small runtime image. One image runs every service:
# the container's command picks it (`registry`, `ingest`, `features`, `trainer`,
# `deployer`, `serving`), as docker-compose.yml and k8s/ do.
#
#   docker build -t modelbus:local .
#   docker build --build-arg GIT_REVISION="$(git rev-parse HEAD)" -t modelbus:local .

######## builder ########
FROM rust:1.95-bookworm AS builder

# Same pins as scripts/bootstrap.sh: LightGBM's vendored build needs CMake >= 3.28
# (Debian ships 3.25), bindgen needs libclang, and .cargo/config.toml links with mold.
ARG CMAKE_VERSION=3.31.6

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

RUN apt-get update \
 && apt-get install -y --no-install-recommends libclang-dev mold python3-venv \
 && rm -rf /var/lib/apt/lists/*

# CMake from PyPI (official Kitware binaries) in its own venv.
RUN python3 -m venv /opt/cmake \
 && /opt/cmake/bin/pip install --no-cache-dir "cmake==${CMAKE_VERSION}" \
 && /opt/cmake/bin/cmake --version

# .cargo/config.toml points CMAKE at .tools/bin/cmake (a bootstrap.sh install,
# excluded from the build context); cargo's [env] never overrides a variable
# that is already set, so this one wins.
ENV CMAKE=/opt/cmake/bin/cmake

WORKDIR /src
COPY . .

# Recorded in lineage as the code revision (`general.code_revision` defaults to it).
ARG GIT_REVISION=""

# Cache mounts keep the registry and target dir between builds; the binary is
# copied out because the target cache mount is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    if [ -n "${GIT_REVISION}" ]; then export MODELBUS_GIT_REVISION="${GIT_REVISION}"; fi \
 && cargo build --release --locked -p modelbus-cli --bin modelbus \
 && install -D -m 0755 target/release/modelbus /out/modelbus

######## runtime ########
FROM debian:bookworm-slim AS runtime

# libstdc++6: LightGBM is C++; ca-certificates: TLS to NATS, PostgreSQL, OTLP.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libstdc++6 \
 && rm -rf /var/lib/apt/lists/*

# A fixed numeric uid so Kubernetes' runAsNonRoot can verify it. The state dir
# and the mount points exist and belong to that user, so named volumes mounted
# there (docker-compose `artifacts`, `keys`) start out writable by it.
RUN groupadd --system --gid 10001 modelbus \
 && useradd --system --uid 10001 --gid modelbus --home-dir /var/lib/modelbus --shell /usr/sbin/nologin modelbus \
 && mkdir -p /var/lib/modelbus/artifacts /var/lib/modelbus/keys \
 && chown -R modelbus:modelbus /var/lib/modelbus

COPY --from=builder /out/modelbus /usr/local/bin/modelbus
# No curl in this image: health checks use this bash /dev/tcp probe.
COPY --chmod=0755 deploy/docker/readyz.sh /usr/local/bin/modelbus-readyz

# Dataset specs, so `modelbus up` and `modelbus datasets apply config/datasets/...`
# work from the working directory.
WORKDIR /opt/modelbus
COPY config/ ./config/

ENV MODELBUS_GENERAL__STATE_DIR=/var/lib/modelbus \
    MODELBUS_TELEMETRY__LOG_FORMAT=json

USER 10001:10001

# registry HTTP, registry gRPC, ingest, features/trainer/deployer ops, serving staging/production
EXPOSE 7070 7071 7072 7073 7074 7075 7080 7081

ENTRYPOINT ["modelbus"]
CMD ["--help"]
