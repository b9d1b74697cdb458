#!/usr/bin/env bash
# WASI toolchains for the Wasm tests. Run by `scripts/setup --dev` (CI runs that as root on a
# fresh machine). Idempotent, and quick when everything is already there.
#
# C: Debian's clang-14, lld-14, wasi-libc and the wasm32 compiler-rt builtins.
#   1. all packages installed system-wide          -> nothing to do;
#   2. root (or password-less sudo) and apt works   -> apt-get install (update once if needed);
#   3. otherwise                                    -> `apt-get download` + `dpkg -x` into
#      build/wasi-toolchain (project-local, git-ignored; found by
#      distbuild/executors/wasm_toolchain.py).
#   WASI_TOOLCHAIN_LOCAL=1 forces step 3 (to test the fallback, or to leave the system alone).
# Rust (optional): Debian's rustc 1.63 with the wasm32-wasi standard library, always unpacked
#   into build/wasi-rust and never installed (a system rustc would shadow rustup's on PATH).
#   WASI_TOOLCHAIN_RUST=0 skips it.
# Never fatal: the Wasm tests that need a toolchain skip with a printed reason without one.
set -uo pipefail
cd "$(dirname "$0")/../.."

PKGS=(clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32)
# What the unpacked (not installed) clang needs beside itself.
FALLBACK_EXTRA=(libclang-common-14-dev libclang-cpp14 libllvm14)
RUST_PKGS=(rustc libstd-rust-1.63 libstd-rust-dev-wasm32)
LOCAL=build/wasi-toolchain
RUST_LOCAL=build/wasi-rust
APT_OPTS=(-y -q --no-install-recommends -o DPkg::Lock::Timeout=300)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

log() { echo "wasi-toolchain: $*" >&2; }

installed() {
  local p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || return 1
  done
}

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo -n "$@"
  else return 1
  fi
}

# unpack DEST PACKAGE...: apt-get download + dpkg -x into DEST, marked complete on success.
unpack() {
  local dest=$1 dir deb
  shift
  dir=$(mktemp -d -p "$TMP")
  if ! (cd "$dir" && apt-get download -q "$@" >/dev/null 2>&1); then
    log "apt-get download $* failed (no network or package lists?)"
    return 1
  fi
  mkdir -p "$dest"
  for deb in "$dir"/*.deb; do
    dpkg -x "$deb" "$dest" || { log "dpkg -x $deb failed"; return 1; }
  done
  touch "$dest/.complete"
}

c_toolchain() {
  if [ "${WASI_TOOLCHAIN_LOCAL:-}" != 1 ] && installed "${PKGS[@]}"; then return 0; fi
  if [ -f "$LOCAL/.complete" ]; then return 0; fi
  if [ "${WASI_TOOLCHAIN_LOCAL:-}" != 1 ] && as_root true 2>/dev/null; then
    log "installing ${PKGS[*]} with apt-get"
    if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install "${APT_OPTS[@]}" \
        "${PKGS[@]}" >/dev/null 2>&1; then
      as_root apt-get update -q -o DPkg::Lock::Timeout=300 >/dev/null 2>&1 || true
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install "${APT_OPTS[@]}" \
        "${PKGS[@]}" >/dev/null 2>&1 || log "apt-get install failed; unpacking instead"
    fi
    if installed "${PKGS[@]}"; then return 0; fi
  fi
  log "unpacking ${PKGS[*]} into $LOCAL (apt-get download + dpkg -x)"
  unpack "$LOCAL" "${PKGS[@]}" "${FALLBACK_EXTRA[@]}" \
    || log "no C toolchain: the C-based Wasm tests will skip"
}

rust_toolchain() {
  if [ "${WASI_TOOLCHAIN_RUST:-1}" = 0 ] || [ -f "$RUST_LOCAL/.complete" ]; then return 0; fi
  log "unpacking ${RUST_PKGS[*]} into $RUST_LOCAL"
  unpack "$RUST_LOCAL" "${RUST_PKGS[@]}" || log "no Rust toolchain: the Rust Wasm test will skip"
}

if ! command -v apt-get >/dev/null; then
  log "no apt-get: install clang, lld and wasi-libc yourself to run the C-based Wasm tests"
  exit 0
fi
c_toolchain
rust_toolchain
exit 0
