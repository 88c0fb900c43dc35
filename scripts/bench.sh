#!/usr/bin/env bash
# The benchmark: builds release binaries, starts a private stack (its own redis-server on
# 6390, database flashgate_bench, origin on 18081, edge host on 13000 and, for one scenario,
# one reusing instances on 13001), runs every scenario
# with flashgate-bench (one load generator for all of them), runs `flashgate check` after
# each, and writes docs/benchmarks.md and docs/benchmarks.png.
#
#   scripts/bench.sh            # the whole run (about 4 minutes after the release build)
#   BENCH_SECONDS=10 scripts/bench.sh  # longer scenarios (default 6 s each)
#   BENCH_ONLY=fairness scripts/bench.sh  # the full path's capacity, the fairness and the
#                                         # scaling rows only; the page goes to target/bench/report/
#   BENCH_ONLY=scaling scripts/bench.sh   # the scaling rows only (1 vs 2 origins, 1 vs 3
#                                         # Redis shards); the page goes to target/bench/report/
#
# Everything measured runs on this machine in this one run, so the ratios compare like
# with like. The load generator takes one core; the system under test gets the other.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# Each line carries the seconds since the start, so a slow phase shows.
log() { printf '\033[1;35m[bench %4ss]\033[0m %s\n' "$SECONDS" "$*" >&2; }

secs=${BENCH_SECONDS:-6}
conns=${BENCH_CONNECTIONS:-32}
redis_port=6390
origin_addr=127.0.0.1:18081
edge_addr=127.0.0.1:13000
wasip2_addr=127.0.0.1:13001
bare_addr=127.0.0.1:13900
proxy_addr=127.0.0.1:18082
far_proxy_addr=127.0.0.1:18083
far_edge_addr=127.0.0.1:13002
db_name=flashgate_bench
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db_name"
export FLASHGATE_REDIS_URL="redis://127.0.0.1:$redis_port"
out="$root/target/bench"
results="$out/results.jsonl"
checks="$out/checks.txt"
rm -rf "$out" && mkdir -p "$out"
started=$(date +%s)

# The release build runs while the services start, the Python tools install and the wasm
# component builds: from a clean checkout, downloads and installs overlap the compiler.
log "building release binaries (log: $out/build.log)"
# --workspace: the same dependency features as `cargo test` and scripts/dev.sh --release.
cargo build --release --locked --workspace --bin flashgate-origin --bin flashgate-edge --bin flashgate \
  --bin flashgate-bench >"$out/build.log" 2>&1 & build_pid=$!
trap 'kill $build_pid 2>/dev/null || true' EXIT
scripts/setup.sh --k6
python3 -c 'import matplotlib' 2>/dev/null || python3 -m pip install --quiet matplotlib >&2
command -v k6 >/dev/null || log "k6 could not be installed: the k6 scenarios will be skipped"
scripts/build-edge.sh
scripts/build-edge.sh --platform spin-wasip2
if ! wait $build_pid; then
  tail -n 40 "$out/build.log" >&2
  log "the release build failed"
  exit 1
fi
tail -n 1 "$out/build.log" >&2
build_secs=$SECONDS
bin="$root/target/release"
dev_dir="$root/.flashgate/dev"
"$bin/flashgate" --dir "$dev_dir" dev-keys >/dev/null
export FLASHGATE_EDGE_SECRET="$(cat "$dev_dir/edge-secret.hex")"
export FLASHGATE_JWT_JWKS_FILE="$dev_dir/jwks.json"
# The drops' public logs are on, as shipped (`origin-grant-log-off` measures without).
export FLASHGATE_TRANSPARENCY_KEYS="$(cat "$dev_dir/transparency.key")"
export FLASHGATE_TRANSPARENCY_SECRET="$(cat "$dev_dir/transparency-secret.hex")"
admin=$("$bin/flashgate" --dir "$dev_dir" token --role admin --ttl 7200)

pids=()
stack_pids=()
cleanup() {
  kill "${stack_pids[@]}" "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

# Redis at the durability flashgate ships (and the origin requires): AOF, fsynced before
# every reply. The `redis-grant-volatile` row measures what that costs.
redis-server --port $redis_port --bind 127.0.0.1 --save "" --appendonly yes --appendfsync always \
  --dir "$out" --logfile "$out/redis.log" & pids+=($!)
for _ in $(seq 50); do redis-cli -p $redis_port ping >/dev/null 2>&1 && break; sleep 0.1; done
rcli() { redis-cli -p $redis_port "$@"; }

# Stops the origin and the edges, empties Redis and the database, and starts the origin
# again with one edge host or, for the fairness rows, two, each behind its own delay.
#   start_stack <fairness window ms | auto> [two-edges | one] [log-off]
start_stack() {
  local window=$1 edges=${2:-one} log=${3:-log-on}
  if [ "${#stack_pids[@]}" -gt 0 ]; then
    kill "${stack_pids[@]}" 2>/dev/null || true
    wait "${stack_pids[@]}" 2>/dev/null || true
  fi
  stack_pids=()
  rcli flushall >/dev/null
  psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS $db_name WITH (FORCE)"
  psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE $db_name"
  # `auto`: the origin's default, the adaptive window; a number fixes it.
  local fixed=()
  [ "$window" = auto ] || fixed=(FLASHGATE_FAIRNESS_WINDOW_MS="$window")
  [ "$log" = log-on ] || fixed+=(-u FLASHGATE_TRANSPARENCY_KEYS -u FLASHGATE_TRANSPARENCY_SECRET)
  env "${fixed[@]}" FLASHGATE_ORIGIN_LISTEN=$origin_addr RUST_LOG=warn \
    "$bin/flashgate-origin" >>"$out/origin.log" 2>&1 & stack_pids+=($!)
  if [ "$edges" = two-edges ]; then
    # Edge A is 0–20 ms from the origin, edge B 30–60 ms: each forwarded request is held
    # for its own random time by an HTTP proxy (keep-alive connections do not hide it).
    "$bin/flashgate-bench" jitter-proxy --listen $proxy_addr --upstream $origin_addr \
      --min-ms 0 --max-ms 20 >>"$out/proxy.log" 2>&1 & stack_pids+=($!)
    "$bin/flashgate-bench" jitter-proxy --listen $far_proxy_addr --upstream $origin_addr \
      --min-ms 30 --max-ms 60 >>"$out/proxy.log" 2>&1 & stack_pids+=($!)
    run_edge $edge_addr $proxy_addr --variable edge_id=edge-a; stack_pids+=($!)
    run_edge $far_edge_addr $far_proxy_addr --variable edge_id=edge-b; stack_pids+=($!)
  else
    run_edge $edge_addr $origin_addr; stack_pids+=($!)
  fi
  for _ in $(seq 100); do curl -fsS "http://$origin_addr/health" >/dev/null 2>&1 && break; sleep 0.1; done
  wait_edge $edge_addr
  [ "$edges" = one ] || wait_edge $far_edge_addr
}

# Starts an edge host in the background ($! is its pid).
#   [EDGE_MANIFEST=<spin.toml>] run_edge <listen> <origin host:port> [flashgate-edge options...]
run_edge() {
  local listen=$1 upstream=$2
  shift 2
  # Rate limits off: every request of the load generator comes from one address and a few
  # buyers, and this measures the sold-out and forwarding paths, not the 429 path.
  SPIN_VARIABLE_EDGE_SECRET=$FLASHGATE_EDGE_SECRET SPIN_VARIABLE_JWT_JWKS="$(cat "$dev_dir/jwks.json")" \
    SPIN_VARIABLE_ORIGIN_HOST=$upstream SPIN_VARIABLE_RATE_USER_PER_SEC=0 \
    SPIN_VARIABLE_RATE_ADDRESS_PER_SEC=0 FLASHGATE_EDGE_LISTEN=$listen FLASHGATE_EDGE_ADMIN_LISTEN=127.0.0.1:0 RUST_LOG=warn \
    "$bin/flashgate-edge" --manifest "${EDGE_MANIFEST:-$root/spin.toml}" "$@" >>"$out/edge.log" 2>&1 &
}
wait_edge() {
  for _ in $(seq 100); do curl -s -o /dev/null "http://$1/" 2>/dev/null && break; sleep 0.1; done
}

# Prints the id of a new product on sale with <stock> units.
product() {
  local id
  id=$(curl -fsS "http://$origin_addr/products" -H "authorization: Bearer $admin" \
    -H 'content-type: application/json' \
    -d "{\"name\":\"bench\",\"price\":{\"amount\":1000,\"currency\":\"EUR\"},\"stock\":$1,
         \"saleStartsAt\":\"$(date -u -d '-1 hour' +%Y-%m-%dT%H:%M:%SZ)\"}" \
    | sed -E 's/.*"productId":"([^"]+)".*/\1/')
  # One write per line: parallel callers share the output.
  printf '%s\n' "$id"
}

load() {
  log "load $2"
  "$bin/flashgate-bench" load --out "$results" --dev-dir "$dev_dir" "$@"
}
# As load, unrecorded: puts the stack in the state a scenario needs.
prime() { "$bin/flashgate-bench" load --label prime --out /dev/null --dev-dir "$dev_dir" "$@"; }

# Outbox entries not yet relayed, over every product.
undelivered() {
  rcli --scan --pattern 'fg:*:outbox' | while read -r key; do rcli xlen "$key"; done \
    | awk '{ n += $1 } END { print n + 0 }'
}

# Waits until every outbox entry reached PostgreSQL, then checks the invariants.
#   check <scenario> [skew ms]
check() {
  local name=$1 skew=${2:-0}
  log "check after $name (waiting for the outbox to drain)"
  for _ in $(seq 300); do
    [ "$(undelivered)" = 0 ] && break
    sleep 1
  done
  if "$bin/flashgate" check --skew-ms "$skew" >"$out/check-$name.txt" 2>&1; then
    echo "$name	pass	$(tail -n1 "$out/check-$name.txt")" >>"$checks"
  else
    echo "$name	FAIL	$(tail -n1 "$out/check-$name.txt")" >>"$checks"
    log "invariant check failed after $name: see $out/check-$name.txt"
  fi
}

# Raw Redis: redis-benchmark EVALSHA of lua/acquire.lua on a product only Redis knows.
#   raw <label> <remaining>
raw() {
  local label=$1 remaining=$2 p sha
  p=$(cat /proc/sys/kernel/random/uuid)
  rcli hset "fg:{$p}:product" remaining "$remaining" total 100000000 granted 0 \
    leased 100000000 startsAtMs 0 endsAtMs "" maxGrantUs 0 >/dev/null
  sha=$(rcli script load "$(cat lua/lib.lua lua/acquire.lua)")
  log "$label: redis-benchmark EVALSHA acquire.lua, $conns connections"
  redis-benchmark -p $redis_port -c "$conns" -n "${RAW_REQUESTS:-400000}" -r 100000000 --csv \
    evalsha "$sha" 9 "fg:{$p}:product" "fg:{$p}:holders" "fg:{$p}:slot:__rand_int__" \
    "fg:{$p}:expiry" "fg:{$p}:reminders" "fg:{$p}:outbox" "fg:{$p}:refused" \
    "fg:{$p}:seen:__rand_int__" "fg:{$p}:queue:admitted" \
    "$p" "u__rand_int__" "__rand_int__" "e__rand_int__" "$(( $(date +%s) * 1000000 ))" \
    "$(( $(date +%s) * 1000 ))" 1800000 "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" \
    300000 "e__rand_int__" 86400000 64 0 11000 0 "b__rand_int__" "edge-bench" 0 \
    | tail -n1 | awk -F'","' -v label="$label" -v c="$conns" '{
        gsub(/"/, ""); split($0, f, ",");
        printf "{\"label\":\"%s\",\"target\":\"redis\",\"report\":{\"connections\":%s,\"rps\":%s,\"p50_ms\":%s,\"p99_ms\":%s,\"max_ms\":%s}}\n", label, c, f[2], f[5], f[7], f[8] }' \
    >>"$results"
  rcli del "fg:{$p}:outbox" "fg:{$p}:log" >/dev/null
}


# 8. Scaling out on this machine: grants and sold-out answers at the origin with 1 vs 2
#    origins on one Redis, and with 1 vs 3 Redis shards (a Redis Cluster, one replica per
#    master, every grant waiting for its replica: the durability shipped on a cluster).
#    48 products, requests spread over them round robin, so 3 shards each own some. Two
#    origins get one load generator each, half the connections each; their rows add up.
#    On two cores every process competes for the same CPUs: these rows show that nothing
#    regresses and how the model scales (docs/capacity.md), not a speed-up.
scale_origin_addr=127.0.0.1:18091
cluster_origin_addr=127.0.0.1:18092
scale_rows() {
  local tag=$1 target=$2 second=${3:-}
  local grants sold half=$((conns / 2))
  grants=$(seq 48 | xargs -P 4 -I{} bash -c "origin_addr=$target product 10000000" | paste -sd,)
  sold=$(seq 48 | xargs -P 4 -I{} bash -c "origin_addr=$target product 1" | paste -sd,)
  prime --target "$target" --auth edge --products "$sold" --buyers 48 --buyer-seed 70 \
    --connections 4 --duration 30 --warmup 0 --max-requests 48 --round-robin
  for kind in grant sold-out; do
    local products=$grants seed=71
    [ "$kind" = sold-out ] && products=$sold && seed=72
    if [ -z "$second" ]; then
      load --label "scale-$kind-$tag" --target "$target" --auth edge --products "$products" \
        --buyers 2000000 --buyer-seed $seed --connections "$conns" --duration "$secs" --round-robin
    else
      load --label "scale-$kind-$tag-a" --target "$target" --auth edge --products "$products" \
        --buyers 2000000 --buyer-seed $seed --connections "$half" --duration "$secs" \
        --round-robin & local first=$!
      load --label "scale-$kind-$tag-b" --target "$second" --auth edge --products "$products" \
        --buyers 2000000 --buyer-seed $((seed + 100)) --connections "$half" --duration "$secs" \
        --round-robin
      wait $first
    fi
  done
}
scale_out() {
  export -f product; export admin
  log "scaling: 1 origin, 1 Redis"
  start_stack auto
  scale_rows 1-origin $origin_addr
  check scale-1-origin
  log "scaling: 2 origins, 1 Redis"
  start_stack auto
  FLASHGATE_ORIGIN_LISTEN=$scale_origin_addr RUST_LOG=warn \
    "$bin/flashgate-origin" >>"$out/origin-2.log" 2>&1 & stack_pids+=($!)
  for _ in $(seq 100); do curl -fsS "http://$scale_origin_addr/health" >/dev/null 2>&1 && break; sleep 0.1; done
  scale_rows 2-origins $origin_addr $scale_origin_addr
  check scale-2-origins
  local shards
  for shards in 1 3; do
    log "scaling: 1 origin on a Redis Cluster of $shards master(s), a replica each"
    start_stack auto
    local nodes=() node_pids=() i port
    for i in $(seq $((shards * 2))); do
      port=$((7100 + i))
      mkdir -p "$out/cluster-$shards/$port"
      redis-server --port $port --bind 127.0.0.1 --cluster-enabled yes \
        --cluster-config-file nodes.conf --save "" --appendonly yes --appendfsync always \
        --dir "$out/cluster-$shards/$port" --logfile "$out/cluster-$shards/$port/redis.log" &
      node_pids+=($!)
      nodes+=("127.0.0.1:$port")
    done
    for n in "${nodes[@]}"; do
      for _ in $(seq 50); do redis-cli -p "${n#*:}" ping >/dev/null 2>&1 && break; sleep 0.1; done
    done
    if [ "$shards" = 1 ]; then
      # redis-cli --cluster create wants 3 masters: one master and its replica by hand.
      redis-cli -p 7101 cluster addslotsrange 0 16383 >/dev/null
      redis-cli -p 7102 cluster meet 127.0.0.1 7101 >/dev/null
      sleep 1
      redis-cli -p 7102 cluster replicate "$(redis-cli -p 7101 cluster myid)" \
        >"$out/cluster-$shards/create.log" 2>&1
    else
      redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes \
        >"$out/cluster-$shards/create.log" 2>&1
    fi
    for _ in $(seq 100); do
      redis-cli -p 7101 cluster info | grep -q cluster_state:ok && break; sleep 0.2
    done
    # Every master's replica online (its first sync done), so grants can wait for it.
    for _ in $(seq 100); do
      local synced=yes n
      for n in "${nodes[@]}"; do
        local info
        info=$(redis-cli -p "${n#*:}" info replication)
        if grep -q role:master <<<"$info" && ! grep -q 'slave0:.*state=online' <<<"$info"; then
          synced=no
        fi
      done
      [ $synced = yes ] && break
      sleep 0.2
    done
    local urls
    urls=$(printf 'redis://%s,' "${nodes[@]}"); urls=${urls%,}
    FLASHGATE_ORIGIN_LISTEN=$cluster_origin_addr FLASHGATE_REDIS_CLUSTER_NODES=$urls \
      FLASHGATE_GATEWAY_STORE_URL=$FLASHGATE_REDIS_URL RUST_LOG=warn \
      "$bin/flashgate-origin" >>"$out/origin-cluster.log" 2>&1 & local cluster_origin=$!
    for _ in $(seq 100); do curl -fsS "http://$cluster_origin_addr/health" >/dev/null 2>&1 && break; sleep 0.1; done
    scale_rows "$shards-shard" $cluster_origin_addr
    log "check after scale-$shards-shard (waiting for the outbox to drain)"
    sleep 5
    if FLASHGATE_REDIS_CLUSTER_NODES=$urls "$bin/flashgate" check --skew-ms 100000 \
        >"$out/check-scale-$shards-shard.txt" 2>&1; then
      echo "scale-$shards-shard	pass	$(tail -n1 "$out/check-scale-$shards-shard.txt")" >>"$checks"
    else
      echo "scale-$shards-shard	FAIL	$(tail -n1 "$out/check-scale-$shards-shard.txt")" >>"$checks"
      log "invariant check failed after scale-$shards-shard"
    fi
    kill $cluster_origin "${node_pids[@]}" 2>/dev/null || true
    wait $cluster_origin "${node_pids[@]}" 2>/dev/null || true
  done
}

log "stack: origin $origin_addr, edge $edge_addr, redis $redis_port, database $db_name"
start_stack auto

fairness_only=false
[ "${BENCH_ONLY:-}" = fairness ] && fairness_only=true
scaling_only=false
[ "${BENCH_ONLY:-}" = scaling ] && scaling_only=true && fairness_only=true
if ! $fairness_only; then
# 1. Raw Redis capacity for acquire.lua, grant and sold-out paths.
raw redis-grant 100000000
raw redis-sold-out 0
# The cost of durability: the same grants on a Redis that fsyncs nothing.
rcli config set appendonly no >/dev/null
raw redis-grant-volatile 100000000
rcli config set appendonly yes >/dev/null
for _ in $(seq 100); do
  rcli info persistence | grep -q 'aof_rewrite_in_progress:0' && break; sleep 0.1
done

# 2. The origin over HTTP: grants (stock never runs out) and sold-out answers.
grant=$(product 10000000)
load --label origin-grant --target $origin_addr --auth edge --products "$grant" \
  --buyers 2000000 --buyer-seed 11 --connections "$conns" --duration "$secs"
check origin-grant
# The public log's cost: its size per million decisions (PostgreSQL, once the builder has
# them), and the same grants with no log kept.
for _ in $(seq 120); do
  [ -z "$(rcli --scan --pattern 'fg:*:log' | while read -r key; do [ "$(rcli xlen "$key")" = 0 ] || echo busy; done)" ] && break
  sleep 1
done
psql -h 127.0.0.1 -U postgres -d "$db_name" -Atc "SELECT json_build_object('label', 'transparency-log-size',
  'target', 'postgresql', 'report', json_build_object('entries', (SELECT count(*) FROM transparency_entries),
  'bytes_per_million_decisions', (SELECT (sum(pg_total_relation_size(c)) * 1000000
    / greatest(1, (SELECT count(*) FROM transparency_entries)))::bigint
    FROM unnest(ARRAY['transparency_entries', 'transparency_hashes', 'transparency_checkpoints',
      'transparency_logs']::regclass[]) AS c)))" >>"$results"
start_stack auto one log-off
grant=$(product 10000000)
load --label origin-grant-log-off --target $origin_addr --auth edge --products "$grant" \
  --buyers 2000000 --buyer-seed 11 --connections "$conns" --duration "$secs"
check origin-grant-log-off
start_stack auto
sold=$(product 1)
prime --target $origin_addr --auth edge --products "$sold" --buyers 1 \
  --buyer-seed 12 --connections 1 --duration 1 --warmup 0 --max-requests 1
load --label origin-sold-out --target $origin_addr --auth edge --products "$sold" \
  --buyers 1000 --buyer-seed 13 --connections "$conns" --duration "$secs"
check origin-sold-out

# 3. The edge's sold-out answer, and a bare hyper server answering the same bytes.
load --label edge-sold-out --target $edge_addr --auth token --products "$sold" --buyers 1000 \
  --buyer-seed 14 --connections "$conns" --duration "$secs" --capture "$out/answer.json"
"$bin/flashgate-bench" bare --listen $bare_addr --answer "$out/answer.json" & pids+=($!)
sleep 0.5
load --label bare-hyper --target $bare_addr --auth token --products "$sold" --buyers 1000 \
  --buyer-seed 14 --connections "$conns" --duration "$secs"
# The same while one client address (127.0.0.2) holds 3,000 half-sent requests open, each
# reconnected a second after the edge closes it (the security review's slow client): the
# buyers, from another address, should keep their answers.
"$bin/flashgate-bench" hold --target $edge_addr --from 127.0.0.2 --connections 3000 & hold_pid=$!
pids+=($hold_pid)
sleep 2
load --label edge-sold-out-3000-half-sent --target $edge_addr --auth token --products "$sold" \
  --buyers 1000 --buyer-seed 14 --connections "$conns" --duration "$secs"
kill $hold_pid; wait $hold_pid 2>/dev/null || true
# The WASI 0.2 build of the same component, which the host (as `spin up`) runs in a fresh
# instance per request: what the default deployment was before the WASI 0.3 port.
wasip2_wasm="$root/edge/component/target/platforms/spin-wasip2/wasm32-wasip2/release/flashgate_edge.wasm"
sed "s|edge/component/target/wasm32-wasip2/release/flashgate_edge.wasm|$wasip2_wasm|" \
  "$root/spin.toml" >"$out/spin-wasip2.toml"
EDGE_MANIFEST="$out/spin-wasip2.toml" run_edge $wasip2_addr $origin_addr; wasip2_pid=$!
wait_edge $wasip2_addr
load --label edge-sold-out-wasip2 --target $wasip2_addr --auth token --products "$sold" \
  --buyers 1000 --buyer-seed 14 --connections "$conns" --duration "$secs"
kill $wasip2_pid; wait $wasip2_pid 2>/dev/null || true
check edge-sold-out

fi

if ! $scaling_only; then
# 4. The full path: buyers through the edge to the origin and Redis, each buyer once.
full=$(product 10000000)
load --label full-path-capacity --target $edge_addr --auth token --products "$full" \
  --buyers 200000 --buyer-seed 21 --connections "$conns" --duration "$secs"
check full-path-capacity
capacity=$(tail -n1 "$results" | python3 -c 'import json,sys; print(json.load(sys.stdin)["report"]["rps"])')
half=$(python3 -c "print(max(1, round($capacity / 2)))")
load --label full-path-half-capacity --target $edge_addr --auth token --products "$full" \
  --buyers 200000 --buyer-seed 22 --connections "$conns" --duration "$secs" --rate "$half"
check full-path-half-capacity
# The same rate with no public log kept: what the log costs the full path's p99.
start_stack auto one log-off
full=$(product 10000000)
load --label full-path-half-capacity-log-off --target $edge_addr --auth token --products "$full" \
  --buyers 200000 --buyer-seed 23 --connections "$conns" --duration "$secs" --rate "$half"
check full-path-half-capacity-log-off
# Back to the stack as shipped, with a sold-out product again for the rows below.
start_stack auto
sold=$(product 1)
prime --target $origin_addr --auth edge --products "$sold" --buyers 1 \
  --buyer-seed 12 --connections 1 --duration 1 --warmup 0 --max-requests 1

if ! $fairness_only; then
# 5. Scaling: 1 vs 1,000 sold-out products; 1k vs 1M buyers.
log "creating 1,000 products and selling each out"
export -f product; export origin_addr admin
seq 1000 | xargs -P 4 -I{} bash -c 'product 1' >"$out/products.txt"
prime --target $origin_addr --auth edge --products "@$out/products.txt" \
  --buyers 1000 --buyer-seed 31 --connections 4 --duration 30 --warmup 0 --max-requests 1000 \
  --round-robin
load --label edge-sold-out-1000-products --target $edge_addr --auth token \
  --products "@$out/products.txt" --buyers 1000 --buyer-seed 14 --connections "$conns" \
  --duration "$secs"
load --label origin-sold-out-1000-products --target $origin_addr --auth edge \
  --products "@$out/products.txt" --buyers 1000 --buyer-seed 13 --connections "$conns" \
  --duration "$secs"
load --label origin-sold-out-1m-buyers --target $origin_addr --auth edge --products "$sold" \
  --buyers 1000000 --buyer-seed 32 --connections "$conns" --duration "$secs"
load --label edge-sold-out-1m-buyers --target $edge_addr --auth token --products "$sold" \
  --buyers 1000000 --buyer-seed 33 --connections "$conns" --duration "$secs"
check scaling

# 6. The k6 scenarios of k6/ (their thresholds decide pass or fail), when k6 is installed.
#    k6 runs JavaScript per request on the same two cores, so its rates stay modest here:
#    every k6 request is a buyer the edge has not seen, whose token it verifies in wasm, and
#    with k6 on one core that path saturates near 1,000 req/s (the sold-out storm's p99 went
#    to 23–49 ms at 1,000/s in two runs of 2026-11-23), so the storm runs at 600/s.
#    Each runs on its own products with its own buyers.
k6_run() {
  local name=$1 script=$2 rate=$3 products=$4 tokens=$5 code=0
  log "k6 $script at $rate req/s"
  k6 run --quiet --summary-trend-stats "med,p(90),p(99),p(99.9),max" \
    --summary-export "$out/k6-$name.json" -e BASE_URL="http://$edge_addr" \
    -e TOKENS="$tokens" -e PRODUCTS="$products" -e RATE="$rate" -e DURATION="${K6_DURATION:-6s}" \
    -e VUS=32 "$root/k6/$script" >"$out/k6-$name.log" 2>&1 || code=$?
  python3 - "$out/k6-$name.json" "$name" "$code" "$rate" >>"$results" <<'PY'
import json, sys
path, name, code, rate = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
m = json.load(open(path))["metrics"]
d, reqs = m["http_req_duration"], m["http_reqs"]
print(json.dumps({"label": f"k6-{name}", "target": "edge (k6)", "report": {
    "rate": rate, "rps": reqs["rate"], "requests": reqs["count"], "p50_ms": d["med"],
    "p90_ms": d["p(90)"], "p99_ms": d["p(99)"], "p999_ms": d["p(99.9)"], "max_ms": d["max"],
    "statuses": {"thresholds": "passed" if code == 0 else f"FAILED (k6 exit {code})"},
    "errors": round(m.get("http_req_failed", {}).get("value", 0) * reqs["count"])}}))
PY
  # A threshold is a performance figure, shown in the report; only invariant violations fail
  # the benchmark (why the sold-out storm's p99 misses here: docs/benchmark-notes.md).
  [ "$code" = 0 ] || log "k6 $script: thresholds not met (exit $code), see $out/k6-$name.log"
}
if command -v k6 >/dev/null; then
  "$bin/flashgate" --dir "$dev_dir" tokens --count 20000 >"$out/tokens.json"
  k6_sold=$(product 1)
  prime --target $origin_addr --auth edge --products "$k6_sold" --buyers 1 --buyer-seed 60 \
    --connections 1 --duration 1 --warmup 0 --max-requests 1
  k6_run sold-out-storm sold-out-storm.js 600 "$k6_sold" "$out/tokens.json"
  k6_run acquisition-storm acquisition-storm.js 300 \
    "$(product 500),$(product 100),$(product 100)" "$out/tokens.json"
  k6_run full-flow full-flow.js 100 "$(product 1000)" "$out/tokens.json"
  check k6
else
  log "k6 is not installed; skipping the k6 scenarios"
fi

fi

# 7. Fairness at capacity: two edge hosts, A 0–20 ms and B 30–60 ms from the origin, the
#    load split evenly between them (one load generator each, first-time buyers), open loop
#    at the full path's measured capacity and at twice it, W = 0 and the default (adaptive).
#    The product has a second of capacity in stock, so it sells out during the storm.
#    Recorded per run: `flashgate check` with no skew allowed (inversions within the window
#    and of late requests), the window in force, each edge's late count and stamp-delay
#    legs (/metrics), and each grant's stamp age when the origin received it (PostgreSQL).
stock=$(python3 -c "print(max(100, round($capacity)))")
seed=40
for load_x in 1 2; do
  for w in 0 auto; do
    seed=$((seed + 2))
    name="fairness-w$w-x$load_x"
    start_stack "$w" two-edges
    # Each edge learns the catalogue's state first (a sold-out product), as a live one has.
    warm=$(product 1)
    prime --target $origin_addr --auth edge --products "$warm" --buyers 1 --buyer-seed 50 \
      --connections 1 --duration 1 --warmup 0 --max-requests 1
    for addr in $edge_addr $far_edge_addr; do
      prime --target "$addr" --auth token --products "$warm" --buyers 200 --buyer-seed 51 \
        --connections 8 --duration 1 --warmup 0
    done
    f=$(product "$stock")
    rate=$(python3 -c "print(round($capacity * $load_x / 2))")
    load --label "$name-a" --target $edge_addr --auth token --products "$f" --buyers 100000 \
      --buyer-seed $seed --connections 256 --duration 4 --warmup 0 --rate "$rate" &
    load_a=$!
    load --label "$name-b" --target $far_edge_addr --auth token --products "$f" \
      --buyers 100000 --buyer-seed $((seed + 1)) --connections 256 --duration 4 --warmup 0 \
      --rate "$rate"
    wait $load_a
    curl -fsS "http://$origin_addr/metrics" >"$out/metrics-$name.txt" || true
    # Every run must keep invariants 1–5; only the default must also be fair (W = 0 is
    # there to show what the window removes, so its fairness is measured, not checked).
    if [ "$w" = 0 ]; then check "$name" 100000; else check "$name" 0; fi
    "$bin/flashgate" check --skew-ms 0 >"$out/inversions-$name.txt" 2>&1 || true
    psql -h 127.0.0.1 -U postgres -d $db_name -tAc "SELECT count(*),
        percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM acquired_at - arrival_at)),
        percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM acquired_at - arrival_at))
        FROM purchase_slots WHERE product_id = '$f'" >"$out/grants-$name.txt"
  done
done

fi

scale_out

total_secs=$(( $(date +%s) - started ))
# A partial run does not overwrite the page of a whole one.
page=docs
$fairness_only && page="$out/report"
python3 scripts/bench_report.py --results "$results" --checks "$checks" --out "$page" \
  --build-secs "$build_secs" --total-secs "$total_secs" --fairness "$out" \
  --command "scripts/bench.sh" --seconds "$secs" --connections "$conns" \
  --notes docs/benchmark-notes.md
log "wrote $page/benchmarks.md and $page/benchmarks.png ($total_secs s)"
if grep -q "	FAIL	" "$checks"; then
  log "an invariant check failed"
  exit 1
fi
