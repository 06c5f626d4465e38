#!/usr/bin/env bash
# The README's second command (and CI's): set up, then lint, type-check and run the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff"
ruff check daemon proto/python clients tests bench scripts
ruff format --check daemon proto/python clients tests bench scripts
echo "== mypy (strict: daemon, wire package, clients, tests, bench)"
mypy
echo "== pytest (in a private network namespace: lo only, its own hosts file; tests/README.md)"
python tests/netns.py -- pytest "$@"
