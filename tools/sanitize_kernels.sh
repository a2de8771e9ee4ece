#!/usr/bin/env bash
# Runs the native kernel tests (tests/test_kernels_native.cpp) under NVIDIA compute-sanitizer: memcheck over
# all of them, racecheck over those whose kernels use shared memory. ctest runs it as
# KernelsNative.ComputeSanitizer; exit 77 (ctest: skipped) says why it cannot run here. docs/simt.md.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: tools/sanitize_kernels.sh TEST_KERNELS_NATIVE_BINARY
  Runs the binary under `compute-sanitizer --tool memcheck` (every test), then under
  `--tool racecheck` (the tests of kernels with shared memory: fused MMA and its weight
  gradients, cross-entropy, gradient norm, sum, row softmax).
  compute-sanitizer is looked for in $MMAN_COMPUTE_SANITIZER, on PATH, in $CUDA_HOME/bin,
  /usr/local/cuda/bin and /usr/local/cuda/compute-sanitizer.
Exit status: 0 clean; 1 a sanitizer reported errors or a test failed; 2 usage error;
  77 skipped: compute-sanitizer is not installed or no CUDA device is usable (the reason is printed).
EOF
}

die() {
  echo "sanitize_kernels.sh: $1" >&2
  exit "${2:-2}"
}

skip() {
  echo "sanitize_kernels.sh: skipped: $1"
  exit 77
}

# The tests whose kernels use shared memory (racecheck only checks shared memory). The full-batch MMA test
# is left to memcheck: racecheck's cost grows with every shared access of its 40 blocks.
readonly shared_memory_tests='KernelsNative.Mma*:KernelsNative.CrossEntropy*:KernelsNative.GradNorm*:KernelsNative.Sum*:KernelsNative.SoftmaxRows*:-KernelsNative.*FullBatch*'
# compute-sanitizer's exit status when it found errors (distinct from a failing test's 1).
readonly sanitizer_error=86

find_sanitizer() {
  if [[ -n "${MMAN_COMPUTE_SANITIZER:-}" ]]; then
    [[ -x "$MMAN_COMPUTE_SANITIZER" ]] && echo "$MMAN_COMPUTE_SANITIZER"
    return 0
  fi
  local candidate
  candidate="$(command -v compute-sanitizer 2>/dev/null || true)"
  if [[ -n "$candidate" ]]; then
    echo "$candidate"
    return 0
  fi
  for candidate in "${CUDA_HOME:-/nonexistent}/bin/compute-sanitizer" /usr/local/cuda/bin/compute-sanitizer \
    /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
    if [[ -x "$candidate" ]]; then
      echo "$candidate"
      return 0
    fi
  done
}

[[ $# -eq 1 ]] || { usage >&2; die "expected one argument, the test_kernels_native binary"; }
case "$1" in -h | --help | help) usage; exit 0 ;; esac
bin="$1"
[[ -f "$bin" && -x "$bin" ]] || die "'$bin' is not an executable file (build the test_kernels_native target)"

sanitizer="$(find_sanitizer)"
if [[ -z "$sanitizer" ]]; then
  if [[ -n "${MMAN_COMPUTE_SANITIZER:-}" ]]; then
    skip "MMAN_COMPUTE_SANITIZER='$MMAN_COMPUTE_SANITIZER' is not an executable"
  fi
  skip "compute-sanitizer not found (looked on PATH, in \$CUDA_HOME/bin, /usr/local/cuda/bin and /usr/local/cuda/compute-sanitizer; it ships with the CUDA toolkit)"
fi

# Whether a device is usable: the binary's own probe test passes, or skips with the runtime's reason.
probe_status=0
probe="$("$bin" --gtest_filter=KernelsNative.DeviceIsUsable 2>&1)" || probe_status=$?
if [[ "$probe_status" -ne 0 ]]; then
  echo "$probe"
  die "the device probe (KernelsNative.DeviceIsUsable) failed with exit status $probe_status" 1
fi
if grep -q '^\[  SKIPPED \] KernelsNative.DeviceIsUsable' <<<"$probe"; then
  reason="$(grep -m1 'no usable CUDA device' <<<"$probe" || true)"
  skip "${reason:-the device probe was skipped}"
fi
grep -q '^\[       OK \] KernelsNative.DeviceIsUsable' <<<"$probe" ||
  die "'$bin' has no passing test KernelsNative.DeviceIsUsable: is it test_kernels_native?" 1

status=0
run() {  # run TOOL [GTEST_FILTER]
  local tool="$1" code=0
  local args=(--tool "$tool" --error-exitcode "$sanitizer_error" "$bin")
  [[ $# -gt 1 ]] && args+=("--gtest_filter=$2")
  echo "== $sanitizer ${args[*]}"
  "$sanitizer" "${args[@]}" || code=$?
  if [[ "$code" -eq "$sanitizer_error" ]]; then
    echo "sanitize_kernels.sh: $tool reported errors" >&2
    status=1
  elif [[ "$code" -ne 0 ]]; then
    echo "sanitize_kernels.sh: tests failed under $tool (exit status $code)" >&2
    status=1
  fi
}
run memcheck
run racecheck "$shared_memory_tests"
[[ "$status" -eq 0 ]] && echo "sanitize_kernels.sh: memcheck and racecheck clean"
exit "$status"
