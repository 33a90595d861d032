#!/usr/bin/env bash
# The test command: install (idempotent, reuses the cached build and parameters), then run pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
python3 -m pytest -q tests "$@"
