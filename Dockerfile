# normserve image: build stage compiles the two binaries with Debian bookworm's -dev
# packages (scripts/install_deps.sh --build-only); the runtime stage carries only the
# shared libraries they link, the binaries, the default model repository and the entrypoint.
#
#   podman build --format docker -t normserve .        (or: docker build -t normserve .)
#   docker run -p 8001:8001 -p 8002:8002 normserve
#
# tests/deploy/image_test.sh builds and runs this image for real (see docs/deploy.md).

FROM debian:bookworm-slim AS build
ENV DEBIAN_FRONTEND=noninteractive
WORKDIR /src
COPY scripts/install_deps.sh scripts/install_deps.sh
RUN bash scripts/install_deps.sh --build-only && rm -rf /var/lib/apt/lists/*
COPY . .
# Only the two shipped binaries: the tests, the benchmark and the Python stubs need the
# oracle packages (torch, onnx) that the image does not carry.
ARG BUILD_JOBS=2
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DNORMSERVE_WERROR=ON \
 && cmake --build /build -j "${BUILD_JOBS}" --target normserve normserve-cli \
 && strip /build/service/normserve /build/tools/normserve-cli

FROM debian:bookworm-slim AS runtime
ENV DEBIAN_FRONTEND=noninteractive
# The runtime packages of what `ldd normserve normserve-cli` lists (libgrpc29, libre2-9,
# libcivetweb1, libssl3 ... come in as their dependencies).
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libgrpc++1.51 libprotobuf32 libabsl20220623 libdnnl2 ocl-icd-libopencl1 libgomp1 \
      libonnx1 libprometheus-cpp-pull1.0 libprometheus-cpp-core1.0 ca-certificates \
      libpng16-16 libjpeg62-turbo \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 normserve \
 && useradd --system --uid 10001 --gid normserve --home-dir /var/lib/normserve \
      --shell /usr/sbin/nologin normserve
COPY --from=build /build/service/normserve /build/tools/normserve-cli /usr/local/bin/
COPY deploy/entrypoint.sh /usr/local/bin/normserve-entrypoint
COPY --chown=normserve:normserve models/repository /var/lib/normserve/repository
RUN mkdir -p /var/lib/normserve/state \
 && chown normserve:normserve /var/lib/normserve /var/lib/normserve/state \
 && chmod 0755 /usr/local/bin/normserve-entrypoint

# Every flag can be set from the environment (deploy/entrypoint.sh maps NORMSERVE_<FLAG>
# to --<flag>); arguments after the image name are appended as extra flags. The training
# endpoint (port 8003) starts when a token is given (NORMSERVE_TRAINING_TOKEN or
# NORMSERVE_TRAINING_TOKEN_FILE) or a client CA; otherwise it stays off.
ENV NORMSERVE_HOST=0.0.0.0 \
    NORMSERVE_PORT=8001 \
    NORMSERVE_METRICS_PORT=8002 \
    NORMSERVE_MODEL_REPOSITORY=/var/lib/normserve/repository \
    NORMSERVE_STATE_DIR=/var/lib/normserve/state
WORKDIR /var/lib/normserve
USER normserve:normserve
VOLUME ["/var/lib/normserve/repository", "/var/lib/normserve/state"]
# 8001 gRPC (normserve.v1, KServe v2, health), 8002 Prometheus /metrics, 8003 training.
EXPOSE 8001 8002 8003
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD normserve-cli --server="127.0.0.1:${NORMSERVE_PORT}" --timeout_s=3 health || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/normserve-entrypoint"]
