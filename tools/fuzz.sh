#!/usr/bin/env bash
# Builds the libFuzzer targets with Clang (ASan + UBSan) and fuzzes each for a set time.
#
#   tools/fuzz.sh [SECONDS] [TARGET...]     TARGET: config, dataset, checkpoint (default: all)
#
# SECONDS (default 60) is per target. New interesting inputs collect in
# build-fuzz/tests/fuzz/corpus_<target>/; a crash stops that target and leaves its input
# in build-fuzz/tests/fuzz/fuzz-artifacts/. Keep a crash as a regression test by copying
# it to tests/fuzz/corpus/<target>/regression-<what>.<ext> (test_fuzz_corpus replays it)
# once it is fixed. Exit status: 0 when no target crashed. docs/reliability.md has more.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
shift || true
targets=("$@")
[[ ${#targets[@]} -eq 0 ]] && targets=(config dataset checkpoint)
build_dir="${MMAN_FUZZ_BUILD_DIR:-build-fuzz}"
jobs="${MMAN_JOBS:-$(nproc)}"

cxx="$(command -v clang++-14 || command -v clang++ || true)"
cc="$(command -v clang-14 || command -v clang || true)"
if [[ -z "$cxx" || -z "$cc" ]]; then
  echo "fuzz.sh: clang is not installed (Debian: apt-get install clang-14 libclang-rt-14-dev libomp-14-dev)" >&2
  exit 2
fi

cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" \
  -DCMAKE_C_COMPILER="$cc" -DCMAKE_CXX_COMPILER="$cxx" -DMMAN_CUDA=OFF -DMMAN_FUZZ=ON \
  -DMMAN_BUILD_TESTS=OFF -DMMAN_BUILD_BENCH=OFF >"$build_dir.configure.log" 2>&1 \
  || { cat "$build_dir.configure.log"; exit 1; }
cmake --build "$build_dir" -j "$jobs" --target "${targets[@]/#/fuzz_}"

# HDF5 hangs on some damaged files; h5::probe turns that into an error after this many
# seconds instead of the default 30, so the fuzzers keep their pace.
export MMAN_HDF5_PROBE_TIMEOUT="${MMAN_HDF5_PROBE_TIMEOUT:-0.5}"
out="$build_dir/tests/fuzz"
mkdir -p "$out/fuzz-artifacts"
failed=()
for t in "${targets[@]}"; do
  mkdir -p "$out/corpus_$t"
  echo "== fuzz_$t for ${seconds}s"
  if ! "$out/fuzz_$t" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=3072 -print_final_stats=1 \
      -artifact_prefix="$out/fuzz-artifacts/$t-" "$out/corpus_$t" "tests/fuzz/corpus/$t"; then
    failed+=("$t")
  fi
done
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzz.sh: crashes in: ${failed[*]} (inputs in $out/fuzz-artifacts/)" >&2
  exit 1
fi
echo "fuzz.sh: no crash in ${targets[*]}"
