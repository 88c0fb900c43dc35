# syntax=docker/dockerfile:1
# The edge host serving the edge component (the default WASI 0.3 build) from spin.toml,
# built from the repository root:
#   docker build -f deploy/docker/edge.Dockerfile -t flashgate-edge .
# Configure it as `spin up` is configured: SPIN_VARIABLE_ORIGIN_HOST, SPIN_VARIABLE_EDGE_SECRET,
# SPIN_VARIABLE_JWT_JWKS_URL with SPIN_VARIABLE_JWKS_ORIGIN (or SPIN_VARIABLE_JWT_JWKS), …
FROM rust:1.95-bookworm AS build
RUN rustup target add wasm32-wasip2
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    --mount=type=cache,target=/src/edge/component/target \
    (cd edge/component && cargo build --release --locked --target wasm32-wasip2) \
 && mkdir -p /out/edge/component/target/wasm32-wasip2/release \
 && cp edge/component/target/wasm32-wasip2/release/flashgate_edge.wasm \
       /out/edge/component/target/wasm32-wasip2/release/ \
 && cargo build --release --locked -p flashgate-edge-host \
 && cp target/release/flashgate-edge /usr/local/bin/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=build /usr/local/bin/flashgate-edge /usr/local/bin/
# spin.toml names the component relative to itself.
COPY spin.toml /app/spin.toml
COPY --from=build /out/edge /app/edge
USER 10001:10001
ENV FLASHGATE_EDGE_LISTEN=0.0.0.0:3000 \
    FLASHGATE_EDGE_ADMIN_LISTEN=0.0.0.0:9101
EXPOSE 3000 9101
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s \
  CMD curl -fsS http://127.0.0.1:9101/health || exit 1
ENTRYPOINT ["flashgate-edge", "--manifest", "/app/spin.toml"]
