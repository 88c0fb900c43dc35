#!/usr/bin/env bash
# Refreshes `.sqlx/`, the offline data of the compile-checked SQL (`origin/src/pg/` and the
# invariant checker, `origin/src/check.rs`),
# so that builds need no database. Run it after changing a statement or a migration; with
# `--check` it only fails when `.sqlx/` is stale (scripts/test.sh runs that).
#
# The statements are checked against a scratch database with every migration applied
# (on FLASHGATE_TEST_PG, the server the tests use), without sqlx-cli: the query macros
# write what they checked to SQLX_OFFLINE_DIR when they run online.
set -euo pipefail
cd "$(dirname "$0")/.."
base=${FLASHGATE_TEST_PG:-postgres://postgres@127.0.0.1:5432}
db="flashgate_sqlx_$$"
out=$(mktemp -d)
cleanup() {
  psql "$base/postgres" -qc "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 || true
  rm -rf "$out"
}
trap cleanup EXIT
psql "$base/postgres" -qc "CREATE DATABASE $db" >/dev/null
for migration in migrations/*.sql; do
  psql "$base/$db" -v ON_ERROR_STOP=1 -q -f "$migration" >/dev/null
done
# The macros run again only when their crate is rebuilt. --workspace: the dependencies'
# features as clippy and the tests resolve them, so this check reuses clippy's artefacts
# (scripts/test.sh runs it after clippy) instead of checking them all again with others.
touch origin/src/pg/*.rs origin/src/check.rs
SQLX_OFFLINE=false DATABASE_URL="$base/$db" SQLX_OFFLINE_DIR="$out" \
  cargo check --locked -q --workspace --lib
if [[ "${1:-}" == "--check" ]]; then
  if ! diff -r "$out" .sqlx >/dev/null; then
    echo "sqlx-prepare: .sqlx/ is stale; run scripts/sqlx-prepare.sh and commit it" >&2
    diff -r "$out" .sqlx | head -20 >&2 || true
    exit 1
  fi
  echo "sqlx-prepare: .sqlx/ matches the statements and migrations"
else
  rm -rf .sqlx && cp -r "$out" .sqlx
  echo "sqlx-prepare: $(ls .sqlx | wc -l) statements in .sqlx/"
fi
