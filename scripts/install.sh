#!/usr/bin/env bash
# Installs damocles-py and what it needs on a fresh machine, idempotently:
#   - Debian packages, only those missing: pkg-config and libhwloc-dev (build dependencies of the
#     multicore SDR feature, built by default), postgresql and prometheus (servers the tests start),
#   - the Python package with its Rust extension built in release mode (maturin, editable) for this
#     machine's CPU (.cargo/config.toml: target-cpu=native, which PC1's SHA-NI path needs),
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

# One apt step for everything, run only when a package is missing (CI runs as root on a possibly
# fresh Debian machine). Build dependencies must be there; the test servers only warn.
BUILD_DEBS=(pkg-config libhwloc-dev)
TEST_DEBS=(postgresql prometheus)
deb_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
if command -v dpkg-query >/dev/null 2>&1; then
  missing=()
  for deb in "${BUILD_DEBS[@]}" "${TEST_DEBS[@]}"; do deb_installed "$deb" || missing+=("$deb"); done
  if ((${#missing[@]})); then
    sudo=(); [ "$(id -u)" -eq 0 ] || sudo=(sudo -n)
    echo "installing missing Debian packages: ${missing[*]} (apt-get update && apt-get install -y ${missing[*]})" >&2
    "${sudo[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
      || echo "warning: apt-get could not install ${missing[*]}" >&2
  fi
  for deb in "${BUILD_DEBS[@]}"; do
    if ! deb_installed "$deb"; then
      echo "error: Debian package $deb is required to build the proofs extension (multicore SDR); install it: apt-get install ${BUILD_DEBS[*]}" >&2
      exit 2
    fi
  done
  for deb in "${TEST_DEBS[@]}"; do
    deb_installed "$deb" || echo "warning: Debian package $deb is missing; the tests that need it will be skipped" >&2
  done
elif ! pkg-config --exists hwloc 2>/dev/null; then
  echo "error: hwloc (with its pkg-config file) is required to build the proofs extension (multicore SDR); install your distribution's hwloc development package" >&2
  exit 2
fi

echo "installing damocles-py: building the Rust proofs extension (release; a cold build takes ~5-10 min on 2 cores, cached in $CARGO_TARGET_DIR)" >&2
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -e '.[test]'
echo "checking the 2KiB Groth parameters (generated once, ~20 min on a fresh machine)" >&2
damocles-worker params generate --sector-size 2KiB
