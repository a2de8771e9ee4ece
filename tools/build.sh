#!/usr/bin/env bash
# Configures and builds mman into ${MMAN_BUILD_DIR:-build} (Release, CUDA when nvcc is found).
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir="${MMAN_BUILD_DIR:-build}"
jobs="${MMAN_JOBS:-$(nproc)}"
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE="${MMAN_BUILD_TYPE:-Release}" -DMMAN_CUDA="${MMAN_CUDA:-AUTO}" "$@" >"$build_dir.configure.log" 2>&1 \
  || { cat "$build_dir.configure.log"; exit 1; }
cmake --build "$build_dir" -j "$jobs"
