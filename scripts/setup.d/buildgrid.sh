#!/usr/bin/env bash
# Peers for the REAPI farm tests (tests/integration/test_buildgrid_*.py): BuildGrid, a Python
# REAPI server, and PostgreSQL, the database its scheduler needs. Run by `scripts/setup --dev`
# (CI runs that as root on a fresh machine). Idempotent, and quick when everything is there.
#
# PostgreSQL: Debian's postgresql-15 (initdb, pg_ctl, postgres), installed with apt-get when no
#   /usr/lib/postgresql/*/bin/initdb exists. Debian's package would create and start a "main"
#   cluster on port 5432; a createcluster.d drop-in stops that, since the tests start their own
#   server on a port and socket directory of their own.
# BuildGrid: `buildgrid[database]==0.4.4` from PyPI in its own venv, build/buildgrid/venv
#   (project-local, git-ignored), on Python 3.11+ (pyenv's, or BUILDGRID_PYTHON). The versions
#   of its dependencies are pinned by buildgrid-constraints.txt beside this script, so a new
#   release of one of them cannot change what the tests run against; without them (another
#   Python, say) it is installed unconstrained.
# Never fatal: the tests that need either peer skip with a printed reason without it.
# BUILDGRID_SETUP=0 skips this script.
set -uo pipefail
cd "$(dirname "$0")/../.."

BUILDGRID_VERSION=0.4.4
VENV=build/buildgrid/venv
STAMP=build/buildgrid/.complete
CONSTRAINTS=scripts/setup.d/buildgrid-constraints.txt
PG_PKGS=(postgresql-15)
APT_OPTS=(-y -q --no-install-recommends -o DPkg::Lock::Timeout=300)

log() { echo "buildgrid: $*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo -n "$@"
  else return 1
  fi
}

postgresql() {
  if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then return 0; fi
  if ! command -v apt-get >/dev/null || ! as_root true 2>/dev/null; then
    log "no PostgreSQL and no root apt-get: the BuildGrid tests will skip"
    return 0
  fi
  as_root mkdir -p /etc/postgresql-common/createcluster.d
  echo "create_main_cluster = false" \
    | as_root tee /etc/postgresql-common/createcluster.d/distbuild-no-main.conf >/dev/null
  log "installing ${PG_PKGS[*]} with apt-get"
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install "${APT_OPTS[@]}" \
      "${PG_PKGS[@]}" >/dev/null 2>&1; then
    as_root apt-get update -q -o DPkg::Lock::Timeout=300 >/dev/null 2>&1 || true
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install "${APT_OPTS[@]}" \
      "${PG_PKGS[@]}" >/dev/null 2>&1 || log "apt-get install ${PG_PKGS[*]} failed"
  fi
}

# find_python: the first interpreter of Python 3.11 or newer, preferring 3.11 (what the
# constraints were frozen on).
find_python() {
  local candidate
  for candidate in "${BUILDGRID_PYTHON:-}" python3.11 python3.12 python3.13 python3; do
    [ -n "$candidate" ] || continue
    if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

buildgrid() {
  if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$BUILDGRID_VERSION" ] \
      && [ -x "$VENV/bin/bgd" ]; then
    return 0
  fi
  local py
  if ! py=$(find_python); then
    log "no Python 3.11+ for BuildGrid: the BuildGrid tests will skip"
    return 0
  fi
  log "installing buildgrid[database]==$BUILDGRID_VERSION into $VENV ($("$py" -V 2>&1))"
  rm -rf "$VENV" "$STAMP"
  mkdir -p "$(dirname "$VENV")"
  if ! "$py" -m venv "$VENV"; then
    log "cannot create $VENV: the BuildGrid tests will skip"
    return 0
  fi
  local pip=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
  if ! "${pip[@]}" -c "$CONSTRAINTS" "buildgrid[database]==$BUILDGRID_VERSION"; then
    log "install with $CONSTRAINTS failed; trying without constraints"
    if ! "${pip[@]}" "buildgrid[database]==$BUILDGRID_VERSION"; then
      log "pip install buildgrid failed: the BuildGrid tests will skip"
      return 0
    fi
  fi
  if "$VENV/bin/bgd" --help >/dev/null 2>&1; then
    echo "$BUILDGRID_VERSION" > "$STAMP"
  else
    log "$VENV/bin/bgd does not run: the BuildGrid tests will skip"
  fi
}

if [ "${BUILDGRID_SETUP:-1}" = 0 ]; then exit 0; fi
started=$SECONDS
postgresql
buildgrid
log "ready in $((SECONDS - started)) s"
exit 0
