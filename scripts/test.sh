#!/usr/bin/env bash
# The test command: install (idempotent, reuses the cached build and parameters), then run pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
# install.sh also installs the Debian packages the tests use (prometheus, postgresql) when missing.
bash scripts/install.sh
# A plain run includes the short chaos test (tests/test_chaos.py); `bash scripts/test.sh -m chaos`
# runs only its long form. CI (.ci/run) passes no arguments.
python3 -m pytest -q --durations=20 tests "$@"
