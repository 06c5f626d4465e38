#!/usr/bin/env bash
# The README's first command: set up, then start the daemon on its embedded defaults
# (gRPC on 127.0.0.1:50051, REST on 127.0.0.1:8080, a fresh token file). Extra arguments go to
# `sockbroker serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/sockbroker serve "$@"
