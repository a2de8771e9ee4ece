#!/usr/bin/env bash
# Sets up, builds and runs the whole test suite (what CI runs: .ci/run calls this).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
bash tools/build.sh
cd "${MMAN_BUILD_DIR:-build}"
ctest --output-on-failure -j "${MMAN_JOBS:-$(nproc)}" --timeout 1200
