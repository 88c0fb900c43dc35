#!/usr/bin/env bash
# A/B of edge host configurations on the sold-out path: one origin, then one edge host at a
# time with each configuration, loaded in turn with the same requests (a sold-out product,
# 1,000 known buyers, 32 connections). Prints req/s and latency per configuration.
#
#   scripts/edge-ab.sh                          # the configurations below
#   EDGE_AB_CONFIGS='a p3
#   b p3 --reuse-instances 100000' scripts/edge-ab.sh
#       one per line: <label> <build> [flashgate-edge flags...]; build is p3 (the default
#       WASI 0.3 build), p2 (the spin-wasip2 build) or p3-unstripped (the default build with
#       its function names, for FLASHGATE_EDGE_PERF_MAP=1)
#   EDGE_AB_PRODUCTS=1000 scripts/edge-ab.sh    # spread over 1,000 sold-out products
#   EDGE_AB_BUYERS=1000000 scripts/edge-ab.sh   # a buyer (token) not seen before per request
#   EDGE_AB_STOCK=10000000 EDGE_AB_BUYERS=200000 EDGE_AB_RATE=800 scripts/edge-ab.sh
#       the full path instead: products with stock left (grants through to Redis), open loop
#   EDGE_AB_PERF=1 FLASHGATE_EDGE_PERF_MAP=1 scripts/edge-ab.sh
#       also `perf record -e cpu-clock` 3 s of each edge host into target/edge-ab/perf-<label>.data
#
# Needs the release binaries (`cargo build --release --workspace --bin flashgate-origin
# --bin flashgate-edge --bin flashgate --bin flashgate-bench`, as scripts/bench.sh builds them) and the builds it names (scripts/build-edge.sh, with
# `--platform spin-wasip2` for p2). Private ports: Redis 6392, origin 18095, edges 13110+.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bin=$root/target/release
out=$root/target/edge-ab
rm -rf "$out" && mkdir -p "$out"
secs=${EDGE_AB_SECONDS:-5}
redis_port=6392
origin_addr=127.0.0.1:18095
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/flashgate_ab"
export FLASHGATE_REDIS_URL="redis://127.0.0.1:$redis_port"
dev_dir="$root/.flashgate/dev"
"$bin/flashgate" --dir "$dev_dir" dev-keys >/dev/null
export FLASHGATE_EDGE_SECRET="$(cat "$dev_dir/edge-secret.hex")"
export FLASHGATE_JWT_JWKS_FILE="$dev_dir/jwks.json"
admin=$("$bin/flashgate" --dir "$dev_dir" token --role admin --ttl 7200)

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT
redis-server --port $redis_port --bind 127.0.0.1 --save "" --appendonly yes \
  --appendfsync always --dir "$out" --logfile "$out/redis.log" & pids+=($!)
for _ in $(seq 50); do redis-cli -p $redis_port ping >/dev/null 2>&1 && break; sleep 0.1; done
psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS flashgate_ab WITH (FORCE)"
psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE flashgate_ab"
FLASHGATE_ORIGIN_LISTEN=$origin_addr RUST_LOG=warn "$bin/flashgate-origin" >>"$out/origin.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do curl -fsS "http://$origin_addr/health" >/dev/null 2>&1 && break; sleep 0.1; done

# A manifest like spin.toml serving the given build.
default_wasm="edge/component/target/wasm32-wasip2/release/flashgate_edge.wasm"
manifest() {
  local wasm
  case "$1" in
    p3) echo "$root/spin.toml"; return ;;
    p2) wasm="$root/edge/component/target/platforms/spin-wasip2/wasm32-wasip2/release/flashgate_edge.wasm" ;;
    p3-unstripped)
      (cd edge/component && CARGO_PROFILE_RELEASE_STRIP=false cargo build --locked --release \
        --target wasm32-wasip2 --target-dir target/unstripped >&2)
      wasm="$root/edge/component/target/unstripped/wasm32-wasip2/release/flashgate_edge.wasm" ;;
    *) echo "unknown build $1 (p3, p2, p3-unstripped)" >&2; exit 2 ;;
  esac
  sed "s|$default_wasm|$wasm|" "$root/spin.toml" >"$out/spin-$1.toml"
  echo "$out/spin-$1.toml"
}

product() {
  local id
  id=$(curl -fsS "http://$origin_addr/products" -H "authorization: Bearer $admin" \
    -H 'content-type: application/json' \
    -d "{\"name\":\"ab\",\"price\":{\"amount\":1000,\"currency\":\"EUR\"},\"stock\":${EDGE_AB_STOCK:-1},
         \"saleStartsAt\":\"$(date -u -d '-1 hour' +%Y-%m-%dT%H:%M:%SZ)\"}" \
    | sed -E 's/.*"productId":"([^"]+)".*/\1/')
  printf '%s\n' "$id"
}
export -f product
export origin_addr admin
seq "${EDGE_AB_PRODUCTS:-1}" | xargs -P 4 -I{} bash -c product >"$out/products.txt"
# Sold out at the origin (each product's one unit granted), not yet known to the edges.
[ "${EDGE_AB_STOCK:-1}" != 1 ] || "$bin/flashgate-bench" load --label prime --out /dev/null --dev-dir "$dev_dir" \
  --target $origin_addr --auth edge --products "@$out/products.txt" --buyers 1000 \
  --buyer-seed 31 --connections 4 --duration 30 --warmup 0 \
  --max-requests "$(wc -l <"$out/products.txt")" --round-robin >/dev/null

configs=${EDGE_AB_CONFIGS:-"p3-default p3
p3-reuse-100k p3 --reuse-instances 100000
p3-reuse-100k-one-at-a-time p3 --reuse-instances 100000 --instance-concurrency 1
p2-reuse-100k p2 --reuse-instances 100000
p2-fresh p2"}
port=13110
while read -r label build flags; do
  [ -n "$label" ] || continue
  port=$((port + 1))
  addr=127.0.0.1:$port
  m=$(manifest "$build")
  # shellcheck disable=SC2086 # flags are words
  SPIN_VARIABLE_EDGE_SECRET=$FLASHGATE_EDGE_SECRET SPIN_VARIABLE_JWT_JWKS="$(cat "$dev_dir/jwks.json")" \
    SPIN_VARIABLE_ORIGIN_HOST=$origin_addr SPIN_VARIABLE_RATE_USER_PER_SEC=0 \
    SPIN_VARIABLE_RATE_ADDRESS_PER_SEC=0 FLASHGATE_EDGE_LISTEN=$addr FLASHGATE_EDGE_ADMIN_LISTEN=127.0.0.1:0 RUST_LOG=warn \
    "$bin/flashgate-edge" --manifest "$m" $flags >>"$out/edge-$label.log" 2>&1 &
  edge=$!
  for _ in $(seq 100); do curl -s -o /dev/null "http://$addr/" 2>/dev/null && break; sleep 0.1; done
  if [ -n "${EDGE_AB_PERF:-}" ]; then
    (sleep 1; perf record -e cpu-clock -F 1999 --call-graph dwarf,16384 -p $edge \
      -o "$out/perf-$label.data" -- sleep 3 >/dev/null 2>&1) &
  fi
  "$bin/flashgate-bench" load --label "$label" --out "$out/results.jsonl" --dev-dir "$dev_dir" \
    --target $addr --auth token --products "@$out/products.txt" \
    --buyers "${EDGE_AB_BUYERS:-1000}" --buyer-seed $port \
    --connections 32 --duration "$secs" ${EDGE_AB_RATE:+--rate "$EDGE_AB_RATE"} 2>&1 | tail -n 1
  kill $edge
  wait $edge 2>/dev/null || true
done <<<"$configs"
