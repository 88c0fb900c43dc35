#!/usr/bin/env bash
# Runs end-to-end test modules on a loaded machine, several times in a row: a CPU hog on
# every core (stress-ng, installed if missing) competes with the tests, as a parallel build
# would on a developer's or CI's machine. For the tests that involve time (a sale opening,
# a countdown, an expiry, a window), which must wait for states, never race the wall clock.
#
#   scripts/test-loaded.sh                       5 rounds of browser, queue, fairness,
#                                                expiry and identity
#   ROUNDS=3 scripts/test-loaded.sh shield:: reuse::   other modules
#   LOAD=none REUSE_BUILD=1 scripts/test-loaded.sh     no hog of its own (something else
#                                                loads the machine), the last build again
#
# Prints one line per round and exits non-zero if any round failed (logs in
# target/test-loaded/).
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '\033[1;34m[loaded]\033[0m %s\n' "$*"; }
rounds=${ROUNDS:-5}
filters=("$@")
[ ${#filters[@]} -gt 0 ] || filters=(browser:: queue:: fairness:: expiry:: identity::)
out=target/test-loaded
mkdir -p "$out"

if ! command -v stress-ng >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq stress-ng >/dev/null
fi
snapshot="$out/e2e-under-test"
if [ "${REUSE_BUILD:-0}" = 1 ] && [ -x "$snapshot" ]; then
  log "REUSE_BUILD=1: running the binary built last time ($snapshot)"
else
log "building the tests"
# Built once and run as that binary, so editing the tree while the rounds run changes nothing.
exe=$(cargo test --locked -p flashgate-e2e --test e2e --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "e2e":
        print(m["executable"])')
[ -x "$exe" ] || { log "no e2e test binary built"; exit 1; }
rm -f "$snapshot" && cp "$exe" "$snapshot"
fi
# LOAD=none: no hog of our own, for when something else loads the machine (a build, say).
if [ "${LOAD:-stress-ng}" = none ]; then
  log "no load of our own; ${rounds} rounds of ${filters[*]}"
else
  stress-ng --cpu "$(nproc)" --cpu-method matrixprod --quiet &
  hog=$!
  trap 'kill $hog 2>/dev/null || true' EXIT
  log "stress-ng on $(nproc) cores (pid $hog); ${rounds} rounds of ${filters[*]}"
fi
failed=0
for round in $(seq "$rounds"); do
  started=$SECONDS
  if (cd e2e && "../$snapshot" "${filters[@]}") >"$out/round-$round.log" 2>&1; then
    verdict=passed
  else
    verdict=FAILED; failed=$((failed + 1))
  fi
  summary=$(grep -E '^test result:' "$out/round-$round.log" | tail -n 1 || true)
  log "round $round: $verdict in $((SECONDS - started)) s — ${summary:-no result line}"
done
log "$((rounds - failed)) of $rounds rounds passed"
[ "$failed" = 0 ]
