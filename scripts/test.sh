#!/usr/bin/env bash
# The one test command: sets up services, builds the edge component, checks formatting and
# lints, and runs every test (unit, and end-to-end against real Redis, PostgreSQL and the
# real component in flashgate's wasmtime host, and the buyer page and console in chromium).
#
# Each step's wall time is printed as it ends and again in a table at the end (also when a
# step fails). The Kafka broker's and cargo-deny's one-time builds run in the background beside
# the other steps; the supply-chain check and the tests wait for them. `cargo test` runs with --no-fail-fast, so one
# failing test binary does not hide the others' results.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '\033[1;34m[test]\033[0m %s\n' "$*"; }

logs=target/test-steps
mkdir -p "$logs"
steps=()
run_started=$SECONDS
summary() {
  local rc=$1
  log "step times (wall clock; total $(((SECONDS - run_started) / 60))m$(((SECONDS - run_started) % 60))s, exit $rc):"
  for s in "${steps[@]}"; do printf '  %s\n' "$s"; done
}
broker_pid=
on_exit() {
  local rc=$?
  # The broker's build runs in a session of its own: stop all of it if a step failed first.
  [ -z "$broker_pid" ] || kill -- "-$broker_pid" 2>/dev/null || true
  summary "$rc"
}
trap on_exit EXIT

# `step NAME CMD...` runs CMD in the foreground and records how long it took.
step() {
  local name=$1 started=$SECONDS rc=0
  shift
  log "$name"
  "$@" || rc=$?
  local took=$((SECONDS - started))
  steps+=("$(printf '%-34s %4dm%02ds%s' "$name" $((took / 60)) $((took % 60)) "$([ $rc = 0 ] || echo "  FAILED ($rc)")")")
  return $rc
}

# A clean run takes about 12 GB on disk (packages, the Kafka broker's build, target/).
free_gb=$(df -P -BG . | awk 'NR == 2 { sub("G", "", $4); print $4 }')
log "disk: ${free_gb} GB free here"
if [ "${free_gb}" -lt 15 ]; then
  log "warning: a clean run needs about 12 GB; a full disk fails the build with ENOSPC or a linker Bus error"
fi

step "setup: services" scripts/setup.sh
# The broker (and then cargo-deny) builds once per machine (cached in ~/.cache/flashgate); in the background it
# overlaps the downloads, the wasm builds and the link steps below instead of preceding them.
broker_started=$(date +%s)
rm -f "$logs/broker.done"
setsid bash -c 'scripts/setup.sh --kafka --deny; rc=$?; date +%s >"$1"; exit $rc' _ "$logs/broker.done" \
  >"$logs/broker.log" 2>&1 & broker_pid=$!
step "setup: test tools, browser" scripts/setup.sh --test-tools --browser
step "edge component (4 builds)" scripts/build-edge.sh --platform all
step "cargo fmt --check" bash -c 'cargo fmt --all -- --check && cd edge/component && cargo fmt -- --check'
step "promtool: alert rules" bash -c \
  'promtool check rules deploy/prometheus/alerts.yaml && promtool test rules deploy/prometheus/alerts.test.yaml'
step "clippy (native)" cargo clippy --locked --workspace --all-targets -- -D warnings
step "sqlx offline data" scripts/sqlx-prepare.sh --check
step "clippy (wasm, 2 builds)" bash -c '
  cd edge/component &&
  cargo clippy --locked --release --target wasm32-wasip2 -- -D warnings &&
  cargo clippy --locked --release --target wasm32-wasip2 --no-default-features \
    --features wasmcloud2,wasip2 --target-dir target/platforms/wasmcloud2 -- -D warnings'
step "build tests" cargo test --locked --workspace --no-run
wait_broker() {
  if ! wait "$broker_pid"; then
    broker_pid=
    tail -n 40 "$logs/broker.log" >&2
    return 1
  fi
  broker_pid=
  local took=$(($(cat "$logs/broker.done") - broker_started))
  log "broker: ready $((took / 60))m$((took % 60))s after it started (built, or found in the cache), beside the steps above"
  steps+=("$(printf '%-34s %4dm%02ds' "  (broker, in the background)" $((took / 60)) $((took % 60)))")
}
step "wait for the Kafka broker, cargo-deny" wait_broker
step "supply chain (cargo deny, offline)" scripts/deny.sh
step "cargo test" cargo test --locked --workspace --no-fail-fast
