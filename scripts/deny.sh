#!/usr/bin/env bash
# The supply chain, checked offline (part of the test command):
#   - cargo deny (advisories, licences, bans, sources; deny.toml) for the workspace and for the
#     edge component (edge/component has its own lock file), with the RustSec advisory
#     database read from the snapshot in ../shared/vendor (never fetched; its date printed);
#   - the npm packages (the browser tests' e2e/browser; the pages use none): each pinned
#     version and its licence, refused unless the licence is allowed below.
# Needs cargo-deny: scripts/setup.sh --deny.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1;34m[deny]\033[0m %s\n' "$*"; }
tools="${FLASHGATE_TOOLS:-$HOME/.cache/flashgate/tools}"
deny="$tools/cargo-deny/bin/cargo-deny"
[ -x "$deny" ] || { echo "cargo-deny is missing: run scripts/setup.sh --deny" >&2; exit 1; }

snapshot="${FLASHGATE_ADVISORY_DB:-../shared/vendor/rustsec-advisory-db.tar.gz}"
version_file="${snapshot%.tar.gz}.VERSION"
[ -f "$snapshot" ] || { echo "the RustSec snapshot $snapshot is missing" >&2; exit 1; }
# "rustsec/advisory-db <commit> (YYYY-MM-DD)"
snapshot_version=$(cat "$version_file" 2>/dev/null || echo "unknown")
snapshot_date=$(sed -n 's/.*(\([0-9-]*\)).*/\1/p' "$version_file" 2>/dev/null || true)

# cargo-deny reads a git checkout under db-path, named after the database's URL (this is the
# default URL's name for cargo-deny 0.20), and takes its age from .git/FETCH_HEAD: the
# snapshot is unpacked there once per snapshot, committed and dated with its own date.
db="target/advisory-db/advisory-db-3157b0e258782691"
if [ "$(cat "$db/.snapshot" 2>/dev/null)" != "$snapshot_version" ]; then
  log "unpacking the advisory database: $snapshot_version"
  rm -rf "$db"
  mkdir -p "$db"
  tar xzf "$snapshot" -C "$db" --strip-components=1
  when="${snapshot_date:-1970-01-01}T00:00:00Z"
  (
    cd "$db"
    git -c init.defaultBranch=main init -q
    git add -A
    GIT_AUTHOR_DATE="$when" GIT_COMMITTER_DATE="$when" \
      git -c user.name=flashgate -c user.email=ci@flashgate.invalid commit -q -m "$snapshot_version"
    touch -d "$when" .git/FETCH_HEAD
  )
  echo "$snapshot_version" >"$db/.snapshot"
fi

# Every package of both lock files on disk (cargo deny reads their manifests offline),
# including those of targets never built here.
cargo fetch --locked --quiet
cargo fetch --locked --quiet --manifest-path edge/component/Cargo.toml

log "cargo deny: the workspace (advisories as of $snapshot_date)"
"$deny" --offline --locked --config deny.toml check --hide-inclusion-graph -A duplicate
log "cargo deny: the edge component (advisories as of $snapshot_date)"
"$deny" --offline --locked --manifest-path edge/component/Cargo.toml --config deny.toml \
  check --hide-inclusion-graph -A duplicate -A license-not-encountered -A advisory-not-detected

# npm: no offline audit exists; the lock file's pins and licences, against an allow list.
log "npm: the pinned packages and their licences"
python3 - e2e/browser/package-lock.json <<'PY'
import json, sys
allowed = {"MIT", "Apache-2.0", "BSD-2-Clause", "BSD-3-Clause", "ISC"}
lock = json.load(open(sys.argv[1]))
bad = []
for path, pkg in sorted(lock["packages"].items()):
    if not path:
        continue
    name = path.rsplit("node_modules/", 1)[-1]
    licence = pkg.get("license", "UNKNOWN")
    print(f"  {name} {pkg.get('version')} {licence}")
    if licence not in allowed:
        bad.append(f"{name}: {licence}")
if bad:
    sys.exit("npm licences not allowed: " + ", ".join(bad))
PY
log "supply chain ok (RustSec snapshot $snapshot_version)"
