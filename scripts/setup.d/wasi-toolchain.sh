#!/usr/bin/env bash
# WASI C toolchain for the Wasm tests: Debian's clang-14, lld-14, wasi-libc and the wasm32
# compiler-rt builtins. Run by `scripts/setup --dev` (CI runs that as root on a fresh machine).
#
# Idempotent and quick when everything is already there. Strategy:
#   1. all packages installed system-wide             -> nothing to do;
#   2. root (or password-less sudo) and apt works      -> apt-get install (update once if needed);
#   3. otherwise                                       -> `apt-get download` + `dpkg -x` into
#      build/wasi-toolchain (project-local, git-ignored; found by distbuild/executors/wasm_toolchain.py).
# WASI_TOOLCHAIN_LOCAL=1 forces step 3 (to test the fallback, or to avoid touching the system).
# Never fatal: the Wasm tests that need C skip with a printed reason when no toolchain exists.
set -uo pipefail
cd "$(dirname "$0")/../.."

PKGS=(clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32)
# Extra packages the unpacked (non-installed) fallback needs beside clang itself.
FALLBACK_EXTRA=(libclang-common-14-dev libclang-cpp14 libllvm14)
LOCAL=build/wasi-toolchain
APT_OPTS=(-y -q --no-install-recommends -o DPkg::Lock::Timeout=300)

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

if [ "${WASI_TOOLCHAIN_LOCAL:-}" != 1 ] && installed "${PKGS[@]}"; then
  exit 0
fi
if [ -f "$LOCAL/.complete" ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  log "no apt-get: install clang, lld and wasi-libc yourself to run the C-based Wasm tests"
  exit 0
fi

if [ "${WASI_TOOLCHAIN_LOCAL:-}" != 1 ] && as_root true 2>/dev/null; then
  log "installing ${PKGS[*]} with apt-get"
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install "${APT_OPTS[@]}" "${PKGS[@]}" \
      >/dev/null 2>&1; then
    as_root apt-get update -q -o DPkg::Lock::Timeout=300 >/dev/null 2>&1 || true
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install "${APT_OPTS[@]}" "${PKGS[@]}" \
      >/dev/null 2>&1 || log "apt-get install failed; trying the project-local fallback"
  fi
  if installed "${PKGS[@]}"; then
    exit 0
  fi
fi

log "unpacking ${PKGS[*]} into $LOCAL (apt-get download + dpkg -x)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! (cd "$tmp" && apt-get download -q "${PKGS[@]}" "${FALLBACK_EXTRA[@]}" >/dev/null 2>&1); then
  log "apt-get download failed (no network or package lists?); C-based Wasm tests will skip"
  exit 0
fi
mkdir -p "$LOCAL"
for deb in "$tmp"/*.deb; do
  dpkg -x "$deb" "$LOCAL" || { log "dpkg -x $deb failed"; exit 0; }
done
touch "$LOCAL/.complete"
log "done: $LOCAL/usr/lib/llvm-14/bin/clang"
