#!/usr/bin/env bash
# Set up a virtual environment in .venv with sockbroker installed (editable) and, with
# --test, everything the test suite needs. Works on a fresh Debian with Python 3.11 as root
# (installs python3-venv, and with --test util-linux, mount, iproute2, racket, Node.js and curl, with apt when
# they are missing; racket 8.7 is the reference the error comparison in tests/racket runs against) and on any
# machine that already has them. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

apt_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    echo "setup: please install: $*" >&2
    exit 1
  fi
}

PYTHON=${PYTHON:-python3}
command -v "$PYTHON" >/dev/null 2>&1 || apt_install python3
"$PYTHON" - <<'PY' || { echo "setup: Python 3.11 or newer is needed" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 11) else 1)
PY

if [ ! -x .venv/bin/python ]; then
  if ! "$PYTHON" -m venv .venv >/dev/null 2>&1; then
    rm -rf .venv
    apt_install python3-venv
    "$PYTHON" -m venv .venv
  fi
fi
if [ "$want_test" = 1 ]; then
  # The suite's private network namespace (tests/netns.py): unshare and mount, and ip to bring lo up.
  command -v unshare >/dev/null 2>&1 || apt_install util-linux
  command -v mount >/dev/null 2>&1 || apt_install mount
  command -v ip >/dev/null 2>&1 || apt_install iproute2
  command -v racket >/dev/null 2>&1 || apt_install racket
  # The Node client's tests (clients/node): Node.js, npm, and the packages of its lock file.
  command -v node >/dev/null 2>&1 || apt_install nodejs
  command -v npm >/dev/null 2>&1 || apt_install npm
  # The proxy door's tests drive the real curl through it (tests/behaviour/test_proxy.py).
  command -v curl >/dev/null 2>&1 || apt_install curl
  extras='.[test]'
else
  extras='.'
fi
# Installed once per pyproject.toml; what --test installed is a superset of the rest.
stamp=".venv/.installed-$(sha1sum <pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp-$want_test" ] && [ ! -f "$stamp-1" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e "$extras"
  touch "$stamp-$want_test"
fi
if [ "$want_test" = 1 ] && [ -f clients/node/package-lock.json ]; then
  node_stamp="clients/node/node_modules/.installed-$(sha1sum <clients/node/package-lock.json | cut -c1-12)"
  if [ ! -f "$node_stamp" ]; then
    (cd clients/node && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    touch "$node_stamp"
  fi
fi
