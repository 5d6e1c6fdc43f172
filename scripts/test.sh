#!/usr/bin/env bash
# Installs what is missing, builds lowbit (Release) and runs the whole test suite with CTest.
# Usage: scripts/test.sh [BUILD_DIR]      env: LOWBIT_SANITIZE=ON for the ASan+UBSan build
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
build=${1:-build}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DLOWBIT_SANITIZE="${LOWBIT_SANITIZE:-OFF}"
cmake --build "$build" -j "$(nproc)"
cd "$build"
ctest --output-on-failure -j "$(nproc)"
