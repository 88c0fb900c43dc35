#!/usr/bin/env bash
# The one command: installs what is missing, starts PostgreSQL and the stack's own Redis
# (127.0.0.1:6380, data in .flashgate/redis, AOF fsynced before every reply: a grant
# answered 201 survives a crash), generates the development identity, builds the edge
# component, and runs the origin and the edge host until Ctrl-C. Flags: --release for optimised binaries; --kafka to run a local tansu broker
# and route events through Kafka (the default relays them to PostgreSQL directly).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
log() { printf '\033[1;34m[dev]\033[0m %s\n' "$*"; }

profile=debug; cargo_flags=(); kafka=0
for arg in "$@"; do
  case "$arg" in
    --release) profile=release; cargo_flags=(--release) ;;
    --kafka) kafka=1 ;;
    *) echo "usage: scripts/dev.sh [--release] [--kafka]" >&2; exit 2 ;;
  esac
done
: "${FLASHGATE_ORIGIN_LISTEN:=127.0.0.1:8081}"
: "${FLASHGATE_EDGE_LISTEN:=127.0.0.1:3000}"
: "${DATABASE_URL:=postgres://postgres@127.0.0.1:5432/flashgate}"
: "${FLASHGATE_DEV_REDIS_PORT:=6380}"
: "${FLASHGATE_REDIS_URL:=redis://127.0.0.1:$FLASHGATE_DEV_REDIS_PORT}"
export FLASHGATE_ORIGIN_LISTEN FLASHGATE_EDGE_LISTEN DATABASE_URL FLASHGATE_REDIS_URL

if [ "$kafka" = 1 ]; then scripts/setup.sh --kafka; else scripts/setup.sh; fi
psql -h 127.0.0.1 -U postgres -d postgres -Atqc "SELECT 1 FROM pg_database WHERE datname = 'flashgate'" | grep -q 1 \
  || psql -h 127.0.0.1 -U postgres -d postgres -qc 'CREATE DATABASE flashgate'
scripts/build-edge.sh
log "building origin, edge host and CLI ($profile)"
# --workspace with the binaries named: features resolved as for `cargo test --workspace` and
# scripts/bench.sh, so one build of the dependencies serves all three (-p would resolve a
# narrower set and rebuild serde_json, wasmparser and all above them).
cargo build --locked "${cargo_flags[@]}" --workspace --bin flashgate-origin --bin flashgate-edge --bin flashgate
bin="$root/target/$profile"
dev_dir="$root/.flashgate/dev"
"$bin/flashgate" --dir "$dev_dir" dev-keys

export FLASHGATE_EDGE_SECRET="$(cat "$dev_dir/edge-secret.hex")"
export FLASHGATE_JWT_JWKS_FILE="$dev_dir/jwks.json"
# Every drop's decisions go into its public, signed log (docs/transparency.md).
export FLASHGATE_TRANSPARENCY_KEYS="$(cat "$dev_dir/transparency.key")"
export FLASHGATE_TRANSPARENCY_SECRET="$(cat "$dev_dir/transparency-secret.hex")"
export SPIN_VARIABLE_EDGE_SECRET="$FLASHGATE_EDGE_SECRET"
export SPIN_VARIABLE_JWT_JWKS="$(cat "$dev_dir/jwks.json")"
export SPIN_VARIABLE_ORIGIN_HOST="$FLASHGATE_ORIGIN_LISTEN"
# The operator console shows the edge host's decisions from its admin listener.
: "${FLASHGATE_EDGE_METRICS_URLS:=http://${FLASHGATE_EDGE_ADMIN_LISTEN:-127.0.0.1:9101}/metrics}"
export FLASHGATE_EDGE_METRICS_URLS

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
# The stack's own Redis, persisting as production must (the origin refuses anything less).
mkdir -p "$root/.flashgate/redis"
if ! redis-cli -p "$FLASHGATE_DEV_REDIS_PORT" ping >/dev/null 2>&1; then
  redis-server --bind 127.0.0.1 --port "$FLASHGATE_DEV_REDIS_PORT" --dir "$root/.flashgate/redis" \
    --appendonly yes --appendfsync always --save "" --logfile "$root/.flashgate/redis/redis.log" &
  pids+=($!)
  for _ in $(seq 100); do redis-cli -p "$FLASHGATE_DEV_REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
  log "redis on 127.0.0.1:$FLASHGATE_DEV_REDIS_PORT (AOF, appendfsync always, .flashgate/redis)"
fi
if [ "$kafka" = 1 ]; then
  : "${FLASHGATE_KAFKA_BROKERS:=127.0.0.1:19092}"
  export FLASHGATE_KAFKA_BROKERS
  tansu="${FLASHGATE_TOOLS:-$HOME/.cache/flashgate/tools}/bin/tansu"
  "$tansu" broker --listener-url "tcp://$FLASHGATE_KAFKA_BROKERS" \
    --advertised-listener-url "tcp://$FLASHGATE_KAFKA_BROKERS" --storage-engine memory://tansu/ \
    >/tmp/flashgate-tansu.log 2>&1 & pids+=($!)
  log "tansu (Kafka protocol) on $FLASHGATE_KAFKA_BROKERS"
fi
"$bin/flashgate-origin" & pids+=($!)
"$bin/flashgate-edge" --manifest "$root/spin.toml" & pids+=($!)

for _ in $(seq 100); do
  curl -fsS "http://$FLASHGATE_ORIGIN_LISTEN/health" >/dev/null 2>&1 && break; sleep 0.1
done
for _ in $(seq 100); do
  curl -s -o /dev/null "http://$FLASHGATE_EDGE_LISTEN/" 2>/dev/null && break; sleep 0.1
done
buyer_token=$("$bin/flashgate" --dir "$dev_dir" token --role buyer)
admin_token=$("$bin/flashgate" --dir "$dev_dir" token --role admin)
cat <<MSG

  flashgate is running.
    buyer page:        http://$FLASHGATE_EDGE_LISTEN/#token=$buyer_token
    operator console:  http://$FLASHGATE_ORIGIN_LISTEN/console#token=$admin_token
      (development tokens, valid for an hour; mint more as below)
    edge (buyers):     http://$FLASHGATE_EDGE_LISTEN
    edge host admin:   http://${FLASHGATE_EDGE_ADMIN_LISTEN:-127.0.0.1:9101}   (/health, /metrics)
    origin (admins):   http://$FLASHGATE_ORIGIN_LISTEN   (/health, /metrics, /admin/audit-logs)
    redis:             $FLASHGATE_REDIS_URL   (AOF in .flashgate/redis)

  Check a drop's invariants:
    $bin/flashgate check --redis-url $FLASHGATE_REDIS_URL

  Tokens (development issuer, keys in .flashgate/dev):
    ADMIN=\$($bin/flashgate token --role admin)
    BUYER=\$($bin/flashgate token --role buyer)

  Try it: see "Try it" in README.md. Ctrl-C stops everything.

MSG
wait -n "${pids[@]}"
