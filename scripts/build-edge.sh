#!/usr/bin/env bash
# Builds the edge component (edge/component) for wasm32-wasip2 into
# edge/component/target/wasm32-wasip2/release/flashgate_edge.wasm, the path spin.toml names.
#
#   scripts/build-edge.sh                         the default build: WASI 0.3 (spin-sdk 7), for
#                                                 Spin 4.1+ and flashgate's own host
#   scripts/build-edge.sh --platform wasmcloud1   one platform, into
#                                                 edge/component/target/platforms/<p>/wasm32-wasip2/release/
#                                                 (spin-wasip2: WASI 0.2 for Spin 3.x/4.0;
#                                                 wasmcloud1, wasmcloud2: WASI 0.2)
#   scripts/build-edge.sh --platform all          spin, spin-wasip2, wasmcloud1 and wasmcloud2
# Each platform has its own target dir, so switching platforms rebuilds nothing.
#
# Uses rustup's wasm32-wasip2 target when it is installed or can be added; otherwise falls
# back to Debian's rustc with build-std (see ../shared/notes/toolchain.md). A second run with
# nothing changed takes about a second. FLASHGATE_EDGE_TOOLCHAIN=debian forces the fallback.
set -euo pipefail
self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$0")/../edge/component"
log() { printf '\033[1;34m[build-edge]\033[0m %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

have_rustup_target() {
  command -v rustup >/dev/null || return 1
  rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2 && return 0
  log "adding rustup target wasm32-wasip2"
  timeout 300 rustup target add wasm32-wasip2 >&2
}

platform=spin
if [ "${1:-}" = --platform ]; then
  platform="${2:?--platform needs spin, spin-wasip2, wasmcloud1, wasmcloud2 or all}"
  shift 2
fi
if [ "$platform" = all ]; then
  for p in spin spin-wasip2 wasmcloud1 wasmcloud2; do "$self" --platform "$p" "$@"; done
  exit 0
fi
case "$platform" in
  spin) platform_args=() ;;
  spin-wasip2)
    platform_args=(--no-default-features --features spin,wasip2 --target-dir "target/platforms/$platform") ;;
  wasmcloud1 | wasmcloud2)
    platform_args=(--no-default-features --features "$platform,wasip2" --target-dir "target/platforms/$platform") ;;
  *) log "unknown platform $platform (spin, spin-wasip2, wasmcloud1, wasmcloud2, all)"; exit 2 ;;
esac
set -- "${platform_args[@]}" "$@"

if [ "${FLASHGATE_EDGE_TOOLCHAIN:-}" != debian ] && have_rustup_target; then
  cargo build --locked --release --target wasm32-wasip2 "$@"
else
  log "rustup cannot provide wasm32-wasip2: using Debian's rustc with build-std"
  if ! [ -x /usr/bin/rustc ] || ! [ -d /usr/lib/wasm32-wasi ] || ! ls /usr/lib/rustlib/src >/dev/null 2>&1; then
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq rustc-web cargo-web rust-web-src wasi-libc >/dev/null
  fi
  bin="$PWD/target/debian-bin"
  mkdir -p "$bin"
  lld="$(rustc --print sysroot)/lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld"
  [ -x "$lld" ] || lld="$(command -v rust-lld || command -v wasm-ld)"
  ln -sf "$lld" "$bin/wasm-ld"
  PATH="$bin:$PATH" RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 RUSTFLAGS="-L /usr/lib/wasm32-wasi" \
    /usr/bin/cargo build --locked --release -Zbuild-std=std,panic_abort --target wasm32-wasip2 "$@"
fi
if [ "$platform" = spin ]; then out=target; else out="target/platforms/$platform"; fi
log "built $platform: $(pwd)/$out/wasm32-wasip2/release/flashgate_edge.wasm"
