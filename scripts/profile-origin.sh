#!/usr/bin/env bash
# The origin's cost per acquisition in instructions, under valgrind's callgrind: counts are
# repeatable whatever else the machine does, so a change's before/after needs no quiet
# machine. Runs the release origin on a private Redis (AOF fsynced on every write, as
# shipped; port 6391) and database (flashgate_profile), sends edge-signed acquisitions with
# flashgate-bench, and prints instructions per request for two scenarios:
#   sold-out  N requests for a sold-out product (HTTP, envelope, Lua, answer)
#   grant     N requests that are granted (the same, plus the relay and the persister,
#             which run in the origin process; PostgreSQL's own work is not counted)
# and the functions with the largest inclusive share of each.
#
#   scripts/profile-origin.sh              # N=2000, output in target/profile/
#   PROFILE_REQUESTS=5000 scripts/profile-origin.sh
#   PROFILE_BIN=/path/to/release scripts/profile-origin.sh   # another build's binaries
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
n=${PROFILE_REQUESTS:-2000}
out="$root/target/profile"
bin=${PROFILE_BIN:-$root/target/release}
redis_port=6391
origin_addr=127.0.0.1:18091
db=flashgate_profile
log() { printf '\033[1;36m[profile]\033[0m %s\n' "$*" >&2; }
command -v valgrind >/dev/null || {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
}
if [ -z "${PROFILE_BIN:-}" ]; then
  cargo build --release --locked -q --workspace --bin flashgate-origin --bin flashgate --bin flashgate-bench
fi
rm -rf "$out" && mkdir -p "$out"
scripts/setup.sh

dev_dir="$root/.flashgate/dev"
"$bin/flashgate" --dir "$dev_dir" dev-keys >/dev/null
export FLASHGATE_EDGE_SECRET="$(cat "$dev_dir/edge-secret.hex")"
export FLASHGATE_JWT_JWKS_FILE="$dev_dir/jwks.json"
export DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db"
export FLASHGATE_REDIS_URL="redis://127.0.0.1:$redis_port"
admin=$("$bin/flashgate" --dir "$dev_dir" token --role admin --ttl 3600)

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true' EXIT INT TERM
redis-server --port $redis_port --bind 127.0.0.1 --save "" --appendonly yes \
  --appendfsync always --dir "$out" --logfile "$out/redis.log" & pids+=($!)
for _ in $(seq 50); do redis-cli -p $redis_port ping >/dev/null 2>&1 && break; sleep 0.1; done
psql -h 127.0.0.1 -U postgres -d postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"
psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE $db"

# Instrumentation starts off: start-up and the first requests are not counted.
FLASHGATE_ORIGIN_LISTEN=$origin_addr RUST_LOG=warn valgrind --tool=callgrind \
  --instr-atstart=no --callgrind-out-file="$out/callgrind.%p" \
  "$bin/flashgate-origin" >"$out/origin.log" 2>&1 & origin_pid=$!; pids+=($origin_pid)
for _ in $(seq 600); do curl -fsS "http://$origin_addr/health" >/dev/null 2>&1 && break; sleep 0.2; done

product() {
  curl -fsS "http://$origin_addr/products" -H "authorization: Bearer $admin" \
    -H 'content-type: application/json' \
    -d "{\"name\":\"profile\",\"price\":{\"amount\":1000,\"currency\":\"EUR\"},\"stock\":$1,
         \"saleStartsAt\":\"$(date -u -d '-1 hour' +%Y-%m-%dT%H:%M:%SZ)\"}" \
    | sed -E 's/.*"productId":"([^"]+)".*/\1/'
}
send() { # <label> <product> <requests> <buyer seed>
  "$bin/flashgate-bench" load --label "$1" --target $origin_addr --auth edge --products "$2" \
    --buyers 1000000 --buyer-seed "$4" --connections 8 --warmup 0 --duration 600 \
    --max-requests "$3" --dev-dir "$dev_dir" --out "$out/load.jsonl" >/dev/null
}
undelivered() {
  redis-cli -p $redis_port --scan --pattern 'fg:*:outbox' \
    | while read -r key; do redis-cli -p $redis_port xlen "$key"; done | awk '{ n += $1 } END { print n + 0 }'
}
profile() { # <label> <product> <buyer seed>
  send warm "$2" 200 "$3"
  for _ in $(seq 120); do [ "$(undelivered)" = 0 ] && break; sleep 0.5; done
  callgrind_control -z "$origin_pid" >/dev/null
  callgrind_control -i on "$origin_pid" >/dev/null
  send "$1" "$2" "$n" "$(( $3 + 1 ))"
  for _ in $(seq 240); do [ "$(undelivered)" = 0 ] && break; sleep 0.5; done
  sleep 1 # the relay's last pass and the persister's commit
  callgrind_control -i off "$origin_pid" >/dev/null
  callgrind_control -d "$1" "$origin_pid" >/dev/null
  local file
  file=$(ls -t "$out"/callgrind.* | head -n1)
  mv "$file" "$out/$1.callgrind"
  local total
  total=$(callgrind_annotate "$out/$1.callgrind" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(/,/, "", $1); print $1 }')
  printf '%s\t%d instructions per request (%s requests)\n' "$1" $(( total / n )) "$n" | tee -a "$out/summary.txt"
  callgrind_annotate --inclusive=yes "$out/$1.callgrind" >"$out/$1.annotated.txt" 2>/dev/null || true
  grep -E '^ *[0-9,]+ \(' "$out/$1.annotated.txt" | head -n 40 >"$out/$1.top.txt" || true
}

log "sold-out: $n requests"
sold=$(product 1)
send prime "$sold" 1 100
profile sold-out "$sold" 200
log "grant: $n requests"
open=$(product $(( n * 4 )))
profile grant "$open" 300
log "per-function shares in $out/{sold-out,grant}.top.txt; callgrind files beside them"
cat "$out/summary.txt"
