#!/usr/bin/env bash
# Installs damocles-py and what it needs on a fresh machine, idempotently:
#   - the Python package with its Rust extension built in release mode (maturin, editable),
#   - the Groth parameters for 2KiB sectors (generated locally, once).
# Cargo's target dir and the parameter cache live outside the clone so that later builds and CI
# runs on the same machine reuse them: override with CARGO_TARGET_DIR / DAMOCLES_PY_CACHE.
set -euo pipefail
cd "$(dirname "$0")/.."

export DAMOCLES_PY_CACHE="${DAMOCLES_PY_CACHE:-$HOME/.cache/damocles-py}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$DAMOCLES_PY_CACHE/cargo-target}"
mkdir -p "$DAMOCLES_PY_CACHE" "$CARGO_TARGET_DIR"

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo (the Rust toolchain) is required to build the proofs extension" >&2
  exit 2
fi

echo "installing damocles-py: building the Rust proofs extension (release; a cold build takes ~5-10 min on 2 cores, cached in $CARGO_TARGET_DIR)" >&2
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -e '.[test]'
echo "checking the 2KiB Groth parameters (generated once, ~20 min on a fresh machine)" >&2
damocles-worker params generate --sector-size 2KiB
