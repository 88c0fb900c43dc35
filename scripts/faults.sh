#!/usr/bin/env bash
# The fault suite: for each fault, a storm of distinct buyers through the edge (demand >
# stock, failed requests retried with the same token), the fault injected once about 35 %
# is sold, recovery, the storm finished, the outbox drained, then checked from outside
# (every buyer answered 201 still holds that slot, through the edge; every payment final)
# and inside (`flashgate check`). Writes docs/reliability.md.
#
#   scripts/faults.sh                 # every fault
#   scripts/faults.sh redis-kill      # some: origin-kill edge-kill redis-kill pg-stop
#                                     #   pg-stop-redis-kill broker-stop payments-origin-kill
#                                     #   origin-sigterm redis-wipe
#
# `redis-wipe` goes beyond what durability promises (Redis restarted with its AOF deleted):
# grants answered 201 and not yet relayed are lost, and what it checks instead is that none
# of their units is sold again and that `flashgate check` reports the loss, bounding it.
#
# Everything runs privately on its own ports, never on the machine's shared services:
# Redis on 6391 (AOF, appendfsync always), a PostgreSQL cluster of its own on 5441, tansu
# on 19193, the origin on 18091 and the edge host on 13091. Exits 1 if any fault broke an
# invariant.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
log() { printf '\033[1;33m[faults %4ss]\033[0m %s\n' "$SECONDS" "$*" >&2; }

stock=${FAULT_STOCK:-200}
buyers=${FAULT_BUYERS:-600}
redis_port=6391
pg_port=5441
kafka_addr=127.0.0.1:19193
origin_addr=127.0.0.1:18091
edge_addr=127.0.0.1:13091
out="$root/target/faults"
rm -rf "$out" && mkdir -p "$out/redis"
pg_dir=$(mktemp -d /tmp/fg-faults-pg.XXXXXX)
db_name=flashgate_faults
export DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/$db_name"
export FLASHGATE_REDIS_URL="redis://127.0.0.1:$redis_port"

all=(origin-kill edge-kill redis-kill pg-stop pg-stop-redis-kill broker-stop payments-origin-kill origin-sigterm redis-wipe)
chosen=("$@"); [ ${#chosen[@]} -gt 0 ] || chosen=("${all[@]}")
# The broker fault needs tansu (the full setup installs it, once); the others only services.
case " ${chosen[*]} " in
  *" broker-stop "*) scripts/setup.sh --kafka ;;
  *) scripts/setup.sh ;;
esac
scripts/build-edge.sh
log "building the binaries"
# --workspace: the same dependency features as `cargo test` (see scripts/dev.sh).
cargo build --locked --workspace --bin flashgate-origin --bin flashgate-edge --bin flashgate --bin flashgate-bench
bin="$root/target/debug"
dev_dir="$root/.flashgate/dev"
"$bin/flashgate" --dir "$dev_dir" dev-keys >/dev/null
export FLASHGATE_EDGE_SECRET="$(cat "$dev_dir/edge-secret.hex")"
export FLASHGATE_JWT_JWKS_FILE="$dev_dir/jwks.json"
# Every drop's decisions go into its public, signed log (docs/transparency.md).
export FLASHGATE_TRANSPARENCY_KEYS="$(cat "$dev_dir/transparency.key")"
export FLASHGATE_TRANSPARENCY_SECRET="$(cat "$dev_dir/transparency-secret.hex")"
admin=$("$bin/flashgate" --dir "$dev_dir" token --role admin --ttl 7200)

# --- services ---------------------------------------------------------------------------
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)
[ "$(id -u)" = 0 ] && chown postgres "$pg_dir"
as_pg "$pg_bin/initdb" -D "$pg_dir/data" -U postgres --auth=trust >"$out/initdb.log"
pg_start() {
  as_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w \
    -o "-p $pg_port -k $pg_dir -c listen_addresses=127.0.0.1 -c fsync=on" start >/dev/null
}
pg_stop() { as_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -m fast -w stop >/dev/null; }
psql_pg() { psql -h 127.0.0.1 -p $pg_port -U postgres -d postgres -qAtc "$1"; }

redis_pid=
redis_start() {
  redis-server --port $redis_port --bind 127.0.0.1 --save "" --appendonly yes \
    --appendfsync always --dir "$out/redis" --logfile "$out/redis.log" & redis_pid=$!
  for _ in $(seq 100); do redis-cli -p $redis_port ping 2>/dev/null | grep -q PONG && return; sleep 0.1; done
  log "redis did not start"; return 1
}
rcli() { redis-cli -p $redis_port "$@"; }

kafka_pid=
kafka_start() {
  "${FLASHGATE_TOOLS:-$HOME/.cache/flashgate/tools}/bin/tansu" broker \
    --listener-url "tcp://$kafka_addr" --advertised-listener-url "tcp://$kafka_addr" \
    --storage-engine memory://tansu/ >>"$out/tansu.log" 2>&1 & kafka_pid=$!
  sleep 0.5
}

origin_pid=; edge_pid=
origin_start() {
  FLASHGATE_ORIGIN_LISTEN=$origin_addr FLASHGATE_PAYMENT_RECONCILE_AFTER_SECS=5 \
    FLASHGATE_INSTANCE_ID=origin-faults FLASHGATE_RELAY_CLAIM_IDLE_MS=2000 RUST_LOG=${FAULT_ORIGIN_LOG:-warn} \
    "$bin/flashgate-origin" >>"$out/origin.log" 2>&1 & origin_pid=$!
}
edge_start() {
  SPIN_VARIABLE_EDGE_SECRET=$FLASHGATE_EDGE_SECRET SPIN_VARIABLE_JWT_JWKS="$(cat "$dev_dir/jwks.json")" \
    SPIN_VARIABLE_ORIGIN_HOST=$origin_addr SPIN_VARIABLE_RATE_USER_PER_SEC=0 \
    SPIN_VARIABLE_RATE_ADDRESS_PER_SEC=0 FLASHGATE_EDGE_LISTEN=$edge_addr FLASHGATE_EDGE_ADMIN_LISTEN=127.0.0.1:0 RUST_LOG=warn \
    "$bin/flashgate-edge" --manifest "$root/spin.toml" >>"$out/edge.log" 2>&1 & edge_pid=$!
}
healthy() { curl -fsS "http://$origin_addr/health" >/dev/null 2>&1; }
edge_up() { curl -s -o /dev/null "http://$edge_addr/" 2>/dev/null; }
wait_until() { # <seconds> <command...>: polls every 50 ms
  local limit=$1; shift
  local until=$(( $(date +%s%N) + limit * 1000000000 ))
  while [ "$(date +%s%N)" -lt "$until" ]; do "$@" && return 0; sleep 0.05; done
  return 1
}

cleanup() {
  kill -CONT "$kafka_pid" 2>/dev/null || true
  kill "$origin_pid" "$edge_pid" "$redis_pid" "$kafka_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  pg_stop 2>/dev/null || true
  rm -rf "$pg_dir"
}
trap cleanup EXIT INT TERM

pg_start
redis_start

# Fresh state and a fresh stack for one fault (`kafka` routes events through the broker).
reset() {
  local kafka=$1
  kill "$origin_pid" "$edge_pid" 2>/dev/null || true
  wait "$origin_pid" "$edge_pid" 2>/dev/null || true
  if [ -n "$kafka_pid" ]; then kill -CONT "$kafka_pid" 2>/dev/null || true; kill "$kafka_pid" 2>/dev/null || true; wait "$kafka_pid" 2>/dev/null || true; kafka_pid=; fi
  rcli flushall >/dev/null
  psql_pg "DROP DATABASE IF EXISTS $db_name WITH (FORCE)"
  psql_pg "CREATE DATABASE $db_name"
  if [ "$kafka" = 1 ]; then kafka_start; export FLASHGATE_KAFKA_BROKERS=$kafka_addr; else unset FLASHGATE_KAFKA_BROKERS; fi
  origin_start
  edge_start
  wait_until 30 healthy || { log "the origin did not become healthy"; return 1; }
  wait_until 30 edge_up || { log "the edge did not come up"; return 1; }
}

product() {
  curl -fsS "http://$origin_addr/products" -H "authorization: Bearer $admin" \
    -H 'content-type: application/json' \
    -d "{\"name\":\"Fault drop\",\"price\":{\"amount\":100,\"currency\":\"EUR\"},\"stock\":$stock,\"saleStartsAt\":\"2026-01-01T00:00:00Z\"}" \
    | sed -E 's/.*"productId":"([^"]+)".*/\1/'
}

remaining() { rcli hget "fg:{$1}:product" remaining 2>/dev/null || echo "$stock"; }
# Blocks until about 35 % of the stock is sold.
wait_for_sales() {
  local p=$1 left
  for _ in $(seq 600); do
    left=$(remaining "$p"); [ -n "$left" ] || left=$stock
    [ "$left" -le $(( stock * 65 / 100 )) ] && return 0
    sleep 0.02
  done
}

# The faults. Each injects and recovers (in this shell: it restarts processes), and sets
# `recovered` to the seconds from the recovery action to health.
recovered="—"
since() { recovered=$(awk -v a="$1" -v b="$(date +%s%N)" 'BEGIN { printf "%.2f", (b - a) / 1e9 }'); }
fault_origin_kill() { kill -9 "$origin_pid"; wait "$origin_pid" 2>/dev/null || true; sleep 1
  local t=$(date +%s%N); origin_start; wait_until 30 healthy || log "not healthy after 30 s"; since "$t"; }
fault_edge_kill() { kill -9 "$edge_pid"; wait "$edge_pid" 2>/dev/null || true; sleep 1
  local t=$(date +%s%N); edge_start; wait_until 30 edge_up || log "edge not up after 30 s"; since "$t"; }
fault_redis_kill() { kill -9 "$redis_pid"; wait "$redis_pid" 2>/dev/null || true; sleep 1
  local t=$(date +%s%N); redis_start; wait_until 30 healthy || log "not healthy after 30 s"; since "$t"; }
fault_redis_wipe() { kill -9 "$redis_pid"; wait "$redis_pid" 2>/dev/null || true
  rm -rf "$out/redis" && mkdir -p "$out/redis"; sleep 1
  local t=$(date +%s%N); redis_start; wait_until 30 healthy || log "not healthy after 30 s"; since "$t"; }
fault_pg_stop() { pg_stop; sleep 5
  local t=$(date +%s%N); pg_start; wait_until 30 healthy || log "not healthy after 30 s"; since "$t"; }
fault_pg_stop_redis_kill() { pg_stop; sleep 2; kill -9 "$redis_pid"; wait "$redis_pid" 2>/dev/null || true
  sleep 1; redis_start; sleep 2
  local t=$(date +%s%N); pg_start; wait_until 30 healthy || log "not healthy after 30 s"; since "$t"; }
fault_broker_stop() { kill -STOP "$kafka_pid"; sleep 5
  local t=$(date +%s%N); kill -CONT "$kafka_pid"; wait_until 30 healthy || log "not healthy after 30 s"; since "$t"; }
fault_origin_sigterm() { kill -TERM "$origin_pid"; wait "$origin_pid" 2>/dev/null || true
  local t=$(date +%s%N); origin_start; wait_until 30 healthy || log "not healthy after 30 s"; since "$t"; }

report_rows=()
failed=0
# Set for a fault that loses Redis's data: the checker must report that loss (and nothing
# else) instead of passing.
expect_loss=0
# Whether a check output shows only the reported loss of Redis data, relayed through.
only_the_loss() {
  grep -q ' 0 outbox entries undelivered' "$1" && grep -q '^VIOLATION' "$1" \
    && ! grep '^VIOLATION' "$1" | grep -vq "Redis lost this product's sale state"
}
# run_fault <name> <description> <kafka 0|1> <inject function> [payments]
run_fault() {
  local name=$1 what=$2 kafka=$3 inject=$4 payments=${5:-}
  log "$name: $what"
  reset "$kafka"
  local p; p=$(product)
  local storm_out="$out/$name-storm.json"
  "$bin/flashgate-bench" storm --edge "http://$edge_addr" --product "$p" --buyers "$buyers" \
    --buyer-seed "$RANDOM" --concurrency 32 --dev-dir "$dev_dir" --out "$storm_out" \
    >"$out/$name-storm.txt" 2>&1 & local storm_pid=$!
  recovered="—"
  if [ -z "$payments" ]; then
    wait_for_sales "$p"
    $inject
  fi
  wait "$storm_pid" || { log "$name: the storm failed"; cat "$out/$name-storm.txt" >&2; failed=1; return; }
  local pay_note=""
  if [ -n "$payments" ]; then
    # Payments for every slot; the origin is killed while they are in flight; then every
    # request is replayed with its Idempotency-Key and every payment must end.
    "$bin/flashgate-bench" verify --edge "http://$edge_addr" --storm "$storm_out" --pay pay \
      --payments "$out/$name-payments.json" >"$out/$name-pay.txt" 2>&1 & local pay_pid=$!
    sleep 0.3
    $inject
    wait "$pay_pid" || true
    [ -f "$out/$name-payments.json" ] || echo '[]' >"$out/$name-payments.json"
    pay_note="--pay replay --payments $out/$name-payments.json"
  fi
  # The outbox drained and PostgreSQL caught up (the checker passes), at most a minute.
  local undelivered=0 caught_up=$(date +%s%N)
  for _ in $(seq 120); do
    if "$bin/flashgate" check --skew-ms 1000000 >"$out/$name-check.txt" 2>&1 \
      && grep -q ' 0 outbox entries undelivered' "$out/$name-check.txt"; then break; fi
    [ "$expect_loss" = 1 ] && only_the_loss "$out/$name-check.txt" && break
    sleep 0.5
  done
  undelivered=$(sed -nE 's/.* ([0-9]+) outbox entries undelivered.*/\1/p' "$out/$name-check.txt" | tail -n1)
  local lag; lag=$(awk -v a="$caught_up" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }')
  # shellcheck disable=SC2086
  local verdict; verdict=$("$bin/flashgate-bench" verify --edge "http://$edge_addr" --storm "$storm_out" $pay_note 2>"$out/$name-verify.err" || echo '{}')
  local check_ok=pass unseen=0
  "$bin/flashgate" check --skew-ms 1000000 >"$out/$name-check.txt" 2>&1 || check_ok=FAIL
  if [ "$expect_loss" = 1 ]; then
    check_ok=FAIL
    if only_the_loss "$out/$name-check.txt"; then
      unseen=$(sed -nE 's/.*up to ([0-9]+) grants answered 201.*/\1/p' "$out/$name-check.txt" | head -n1)
      check_ok="loss of ≤ ${unseen:-?} grants reported"
    fi
  fi
  local storm_line; storm_line=$(tail -n1 "$out/$name-storm.txt")
  local row
  row=$(python3 - "$name" "$what" "$storm_line" "$verdict" "$stock" "$undelivered" "$recovered" "$check_ok" "$lag" "$expect_loss" "${unseen:-0}" <<'PY'
import json, sys
name, what, storm, verdict, stock, undelivered, recovered, check, lag, expect_loss, unseen = sys.argv[1:]
s = json.loads(storm or "{}"); v = json.loads(verdict or "{}")
f = s.get("failures", {})
granted, holding = v.get("granted", 0), v.get("holding", 0)
sold = granted + holding
# Units answered to two buyers, or more answered than exist.
oversold = max(0, sold - int(stock)) + (sold - v.get("distinctSlots", sold))
pnf = v.get("paymentsNotFinal")
if expect_loss == "1":
    # Grants lost with the data are allowed, up to the bound the checker reports; a unit
    # sold twice, or more 201s than units, is not.
    bad = (v.get("lost", 1) > int(unseen) or oversold or sold > int(stock)
           or int(undelivered or 1) or not check.startswith("loss of") or v.get("unanswered", 1))
else:
    bad = (v.get("lost", 1) or oversold or (pnf or 0) or int(undelivered or 1) or check != "pass"
           or v.get("unanswered", 1) or sold != int(stock))
print("|".join([
    "", f" {name} ", f" {what} ", f" {s.get('requests', '?')} ", f" {granted} + {holding} ",
    f" {v.get('lost', '?')} ", f" {oversold} ", f" {'—' if pnf is None else pnf} ", f" {undelivered} ",
    f" {f.get('fast503', 0)} / {f.get('other', 0)} ", f" {recovered} s " if recovered != "—" else " — ",
    f" {lag} s ", f" {check} ", f" {'**FAILED**' if bad else 'ok'} ", ""]))
PY
)
  report_rows+=("$row")
  log "$name: $row"
  case "$row" in *FAILED*) failed=1 ;; esac
}

for f in "${chosen[@]}"; do
  case "$f" in
    origin-kill) run_fault "$f" "kill -9 of the origin" 0 fault_origin_kill ;;
    edge-kill) run_fault "$f" "kill -9 of the edge host" 0 fault_edge_kill ;;
    redis-kill) run_fault "$f" "kill -9 of Redis, restarted from its AOF" 0 fault_redis_kill ;;
    pg-stop) run_fault "$f" "PostgreSQL stopped 5 s" 0 fault_pg_stop ;;
    pg-stop-redis-kill) run_fault "$f" "PostgreSQL stopped, then Redis killed and restarted" 0 fault_pg_stop_redis_kill ;;
    broker-stop) run_fault "$f" "the Kafka broker frozen 5 s (SIGSTOP)" 1 fault_broker_stop ;;
    payments-origin-kill) run_fault "$f" "kill -9 of the origin while paying; every payment replayed" 0 fault_origin_kill payments ;;
    origin-sigterm) run_fault "$f" "SIGTERM of the origin mid-storm" 0 fault_origin_sigterm ;;
    redis-wipe) expect_loss=1
      run_fault "$f" "kill -9 of Redis, restarted with its data deleted (beyond the durability promise)" 0 fault_redis_wipe
      expect_loss=0 ;;
    *) log "unknown fault $f (${all[*]})"; exit 2 ;;
  esac
done

{
  echo "# Reliability: the fault suite"
  echo
  echo "Written by \`scripts/faults.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC') ($(nproc) cores)."
  echo "Each fault: $buyers distinct buyers storm a drop of $stock units through the edge (32 at"
  echo "a time, failures retried with the same token); the fault is injected once about 35 % is"
  echo "sold; then recovery, the storm finished, the outbox drained, and the checks: through the"
  echo "edge, every buyer answered \`201\` still holds that slot (\`GET /slots/my-slots\`); inside,"
  echo "\`flashgate check\` (fairness inversions not counted here: issue #14). Services are"
  echo "private: Redis (AOF, \`appendfsync always\`), a PostgreSQL cluster of the suite's own,"
  echo "tansu; debug builds."
  echo
  echo "| fault | what | requests | granted: 201 + already-holding | lost grants | oversold | payments not final | undelivered events | failed answers: 503+Retry-After / other | recovered in | PostgreSQL caught up in | check | |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  for r in "${report_rows[@]}"; do echo "$r"; done
  echo
  echo "\"Already-holding\": a buyer whose \`201\` was lost with the process that was killed after"
  echo "the grant; the retry is told \`409 already-holding\` with the same slot, so the unit is"
  echo "theirs and counted once. Sold = 201 + already-holding must equal the stock."
  echo "\"Other\" failed answers are mostly refused connections while the killed process is"
  echo "down (nothing answers then; the buyers retry), and 502/503s from the edge without a body"
  echo "of ours would count here too. \"Recovered in\": from the restart (or the dependency's"
  echo "return) until the origin's \`/health\` answered 200. \"PostgreSQL caught up in\": from the"
  echo "end of the storm until \`flashgate check\` passed (outbox relayed, persister applied)."
  echo
  echo "\`redis-wipe\` is the one fault past the promise: Redis comes back with no data at all,"
  echo "so grants it had answered but not yet relayed to PostgreSQL are gone (\"lost grants\")."
  echo "What must hold then: no unit is sold to anyone else (oversold 0, 201s ≤ stock), because"
  echo "the grant lease bounds the grants PostgreSQL never saw and the rebuild withholds that"
  echo "many units; and \`flashgate check\` reports the loss with that bound (≥ the lost grants)"
  echo "instead of passing. Sold is then below the stock by the withheld units not lost."
} >"$root/docs/reliability.md"
log "wrote docs/reliability.md"
exit $failed
