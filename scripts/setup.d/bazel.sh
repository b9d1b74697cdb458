#!/usr/bin/env bash
# Bazel 4.2.3 (Debian's bazel-bootstrap) for the peer test that uses Bazel as a REAPI client of
# our scheduler (tests/integration/test_reapi_bazel.py). Run by `scripts/setup --dev` (CI runs
# that as root on a fresh machine). Idempotent: nothing to do when bazel is installed.
# Never fatal: without root, apt or the package, the test skips with a printed reason.
# BAZEL_SETUP=0 skips it.
set -uo pipefail

log() { echo "bazel: $*" >&2; }

[ "${BAZEL_SETUP:-1}" = 0 ] && exit 0
if dpkg-query -W -f='${Status}' bazel-bootstrap 2>/dev/null | grep -q "install ok installed"; then
  exit 0
fi

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo -n "$@"
  else return 1
  fi
}

if ! as_root true 2>/dev/null; then
  log "not root and no password-less sudo: not installing bazel-bootstrap (its test will skip)"
  exit 0
fi
APT_OPTS=(-y -q --no-install-recommends -o DPkg::Lock::Timeout=300)
log "installing bazel-bootstrap with apt-get (Bazel 4.2.3, about 30 s)"
if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install "${APT_OPTS[@]}" \
    bazel-bootstrap >/dev/null 2>&1; then
  as_root apt-get update -q -o DPkg::Lock::Timeout=300 >/dev/null 2>&1 || true
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install "${APT_OPTS[@]}" \
    bazel-bootstrap >/dev/null 2>&1 || log "apt-get install bazel-bootstrap failed (its test will skip)"
fi
exit 0
