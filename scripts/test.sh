#!/usr/bin/env bash
# The test command: install (idempotent, reuses the cached build and parameters), then run pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# promtool and prometheus for tests/test_metrics.py (Debian's package; CI runs as root)
command -v promtool >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus) \
  || echo "warning: could not install Debian's prometheus package; the Prometheus tests will be skipped" >&2
# A plain run includes the short chaos test (tests/test_chaos.py); `bash scripts/test.sh -m chaos`
# runs only its long form. CI (.ci/run) passes no arguments.
python3 -m pytest -q tests "$@"
