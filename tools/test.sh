#!/usr/bin/env bash
# Sets up, builds and runs the whole test suite (what CI runs: .ci/run calls this).
# Then the same suite under AddressSanitizer + UndefinedBehaviorSanitizer, and a short run
# of each fuzz target (docs/reliability.md); MMAN_SANITIZERS=0 skips both.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs="${MMAN_JOBS:-$(nproc)}"
bash tools/setup.sh
bash tools/build.sh
(cd "${MMAN_BUILD_DIR:-build}" && ctest --output-on-failure -j "$jobs" --timeout 1200)

[[ "${MMAN_SANITIZERS:-1}" == 0 ]] && exit 0

# ---- ASan + UBSan: the whole suite, CPU only (no nvcc), -O1 for speed of build and run.
# Being a build without the CUDA backend, it also builds the device emulation and runs the GPU
# tests on it (test_*_emulated, ctest names "emulated.*"; docs/cuda_backend.md).
# Excluded: Learning.* (trains every model to convergence: ~50 s in Release, ~12 min under
# ASan; the code it runs is covered by the layer, model, trainer and pipeline tests).
asan_dir="${MMAN_ASAN_BUILD_DIR:-build-asan}"
cmake -S . -B "$asan_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" \
  -DMMAN_CUDA=OFF -DMMAN_SANITIZE=ON -DMMAN_BUILD_BENCH=OFF >"$asan_dir.configure.log" 2>&1 \
  || { cat "$asan_dir.configure.log"; exit 1; }
cmake --build "$asan_dir" -j "$jobs"
(cd "$asan_dir" && UBSAN_OPTIONS=print_stacktrace=1 ctest --output-on-failure -j "$jobs" --timeout 1200 -E '^Learning\.')

# ---- libFuzzer (Clang): the three fuzz targets replay their corpus (seeds and saved
# crashes) and fuzz for MMAN_FUZZ_SECONDS each; only mman_core and the targets are built.
fuzz_dir="${MMAN_FUZZ_BUILD_DIR:-build-fuzz}"
cmake -S . -B "$fuzz_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" \
  -DCMAKE_C_COMPILER="$(command -v clang-14 || command -v clang)" \
  -DCMAKE_CXX_COMPILER="$(command -v clang++-14 || command -v clang++)" -DMMAN_CUDA=OFF -DMMAN_FUZZ=ON \
  -DMMAN_FUZZ_SECONDS="${MMAN_FUZZ_SECONDS:-10}" -DMMAN_BUILD_TESTS=OFF -DMMAN_BUILD_BENCH=OFF \
  >"$fuzz_dir.configure.log" 2>&1 || { cat "$fuzz_dir.configure.log"; exit 1; }
cmake --build "$fuzz_dir" -j "$jobs" --target fuzz_config fuzz_dataset fuzz_checkpoint
(cd "$fuzz_dir" && ctest --output-on-failure -j "$jobs" -L fuzz)
