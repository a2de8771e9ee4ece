#!/usr/bin/env bash
# Profiles mman with NVIDIA Nsight: a whole experiment under Nsight Systems (nsys), chosen kernels under
# Nsight Compute (ncu). Documented in docs/profiling.md; `tools/profile.sh help` prints the usage.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage:
  tools/profile.sh check
      Says which of nsys / ncu are installed and whether the build has -lineinfo.
  tools/profile.sh nsys [options] CONFIG [-- MMAN_EXP_RUN_ARGS...]
      Timeline of `mman_exp run CONFIG` (CUDA API, kernels, cuBLAS, cuDNN, NVTX ranges, OS runtime),
      then summary tables of kernels, NVTX ranges and CUDA API calls.
  tools/profile.sh ncu [options] CONFIG [-- MMAN_EXP_RUN_ARGS...]
      Kernel metrics (Nsight Compute) for the kernels of `mman_exp run CONFIG` chosen by --kernel/--range.
  tools/profile.sh ncu [options] --cmd -- PROGRAM [ARGS...]
      The same for any program, e.g. a GPU test:  --cmd -- build/tests/test_cuda_backend --gtest_filter='*Lstm*'
Options:
  --build DIR      build directory with mman_exp (default: $MMAN_BUILD_DIR or build)
  --out DIR        report directory (default: runs/profile-<tool>-<date>-<time>)
  --backend B      passed as `mman_exp run --backend B` (default: the config's backend)
  --range NAME     nsys: record only the first NVTX range NAME (e.g. epoch, step);
                   ncu: only kernels launched inside the NVTX push/pop range NAME
  --kernel REGEX   ncu: only kernels whose function name matches REGEX (default: all)
  --skip N         ncu: skip the first N matching launches (default: 0)
  --count N        ncu: profile N matching launches (default: 10)
  --set NAME       ncu: section set (default: full; `ncu --list-sets` lists them)
Exit status: 0 on success, 2 for a usage error, 3 when the profiler (or mman_exp) is missing.
EOF
}

die() {
  echo "profile.sh: $1" >&2
  exit "${2:-2}"
}

# The path of a profiler: PATH first, then the CUDA toolkit and the standalone Nsight installs.
find_tool() {
  local name="$1" found=""
  found="$(command -v "$name" 2>/dev/null || true)"
  if [[ -z "$found" ]]; then
    local candidate
    for candidate in /usr/local/cuda/bin/"$name" /opt/nvidia/nsight-systems/*/bin/"$name" \
      /opt/nvidia/nsight-compute/*/"$name" /usr/local/cuda/nsight-compute*/"$name" \
      /usr/local/cuda/nsight-systems*/bin/"$name"; do
      if [[ -x "$candidate" ]]; then
        found="$candidate"
        break
      fi
    done
  fi
  echo "$found"
}

require_tool() {
  local name="$1" what="$2" path
  path="$(find_tool "$name")"
  [[ -n "$path" ]] || die "$name ($what) is not installed or not on PATH: install $what (it ships with the CUDA toolkit's nsight packages, or standalone from NVIDIA) or add its bin folder to PATH" 3
  echo "$path"
}

lineinfo_state() {  # "on", "off" or "unknown" for the build directory's CMake cache
  local cache="$1/CMakeCache.txt"
  if [[ ! -f "$cache" ]]; then echo unknown; return; fi
  if grep -q '^MMAN_CUDA_LINEINFO:BOOL=ON' "$cache"; then echo on; else echo off; fi
}

mode="${1:-help}"
[[ $# -gt 0 ]] && shift
case "$mode" in
  help | -h | --help) usage; exit 0 ;;
  check | nsys | ncu) ;;
  *) usage >&2; die "unknown mode '$mode' (expected check, nsys or ncu)" ;;
esac

root="$(cd "$(dirname "$0")/.." && pwd)"
build="${MMAN_BUILD_DIR:-build}"
out="" backend="" range="" kernel="" skip=0 count=10 set_name="full" use_cmd=0 config=""
extra=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) [[ $# -ge 2 ]] || die "--build needs a directory"; build="$2"; shift 2 ;;
    --out) [[ $# -ge 2 ]] || die "--out needs a directory"; out="$2"; shift 2 ;;
    --backend) [[ $# -ge 2 ]] || die "--backend needs auto, cpu or cuda"; backend="$2"; shift 2 ;;
    --range) [[ $# -ge 2 ]] || die "--range needs an NVTX range name"; range="$2"; shift 2 ;;
    --kernel) [[ $# -ge 2 ]] || die "--kernel needs a regular expression"; kernel="$2"; shift 2 ;;
    --skip) [[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] || die "--skip needs a count"; skip="$2"; shift 2 ;;
    --count) [[ $# -ge 2 && "$2" =~ ^[1-9][0-9]*$ ]] || die "--count needs a positive count"; count="$2"; shift 2 ;;
    --set) [[ $# -ge 2 ]] || die "--set needs a section set name"; set_name="$2"; shift 2 ;;
    --cmd) use_cmd=1; shift ;;
    --) shift; extra=("$@"); break ;;
    -*) die "unknown option '$1' (tools/profile.sh help lists them)" ;;
    *) [[ -z "$config" ]] || die "one CONFIG only (got '$config' and '$1')"; config="$1"; shift ;;
  esac
done
[[ "$build" = /* ]] || build="$root/$build"
out="${out:-$root/runs/profile-$mode-$(date +%Y%m%d-%H%M%S)}"

if [[ "$mode" == check ]]; then
  status=0
  for pair in "nsys:Nsight Systems" "ncu:Nsight Compute"; do
    name="${pair%%:*}" what="${pair#*:}" path="$(find_tool "${pair%%:*}")"
    if [[ -n "$path" ]]; then
      echo "$name ($what): $path"
    else
      echo "$name ($what): not found"
      status=3
    fi
  done
  echo "build $build: -lineinfo $(lineinfo_state "$build") (configure with -DMMAN_CUDA_LINEINFO=ON for source-level ncu)"
  if [[ -x "$build/mman_exp" ]]; then echo "mman_exp: $build/mman_exp"; else echo "mman_exp: not built in $build"; fi
  exit "$status"
fi

# Usage errors first, then what this machine lacks (the profiler, the build), then the command.
if [[ "$use_cmd" == 1 ]]; then
  [[ "$mode" == ncu ]] || die "--cmd is for ncu (nsys profiles an experiment)"
  [[ -z "$config" ]] || die "--cmd takes the program after --, not a CONFIG"
  [[ ${#extra[@]} -gt 0 ]] || die "--cmd needs a program after --"
else
  [[ -n "$config" ]] || die "$mode needs a CONFIG (an experiment YAML, e.g. experiments/smoke.yaml)"
  [[ -f "$config" ]] || die "config file '$config' does not exist"
fi
if [[ "$mode" == nsys ]]; then tool="$(require_tool nsys "Nsight Systems")"; else tool="$(require_tool ncu "Nsight Compute")"; fi
if [[ "$use_cmd" == 1 ]]; then
  target=("${extra[@]}")
else
  exe="$build/mman_exp"
  [[ -x "$exe" ]] || die "no mman_exp in $build: build it first (tools/build.sh) or pass --build DIR" 3
  target=("$exe" run "$config" --out "$out/run")
  [[ -z "$backend" ]] || target+=(--backend "$backend")
  target+=("${extra[@]}")
fi
mkdir -p "$out"

if [[ "$mode" == nsys ]]; then
  nsys="$tool"
  # shellcheck disable=SC2054  # the commas belong to nsys's --trace list
  args=(profile --trace=cuda,nvtx,cublas,cudnn,osrt --cuda-memory-usage=true --force-overwrite=true
    --output "$out/mman")
  if [[ -n "$range" ]]; then
    # Our ranges use plain (unregistered) strings, which nsys only matches with this set.
    export NSYS_NVTX_PROFILER_REGISTER_ONLY=0
    args+=(--capture-range=nvtx --nvtx-capture="$range" --capture-range-end=stop)
  fi
  echo "+ $nsys ${args[*]} ${target[*]}"
  "$nsys" "${args[@]}" "${target[@]}"
  echo "+ $nsys stats (kernels, NVTX ranges, CUDA API) -> $out/summary.txt"
  "$nsys" stats --force-export=true --report cuda_gpu_kern_sum --report nvtx_sum --report cuda_api_sum \
    "$out/mman.nsys-rep" | tee "$out/summary.txt" ||
    echo "profile.sh: nsys stats failed (older nsys report names?); open $out/mman.nsys-rep in the Nsight Systems GUI" >&2
  echo "report: $out/mman.nsys-rep"
  exit 0
fi

# ncu
ncu="$tool"
if [[ "$(lineinfo_state "$build")" != on ]]; then
  echo "profile.sh: note: $build is not configured with -DMMAN_CUDA_LINEINFO=ON; ncu shows no CUDA source lines" >&2
fi
args=(--target-processes all --set "$set_name" --import-source yes --launch-skip "$skip" --launch-count "$count"
  --force-overwrite --export "$out/mman")
[[ -z "$kernel" ]] || args+=(--kernel-name "regex:$kernel")
# A push/pop range in NVTX's default domain is written NAME/ in ncu's filter syntax.
[[ -z "$range" ]] || args+=(--nvtx --nvtx-include "$range/")
echo "+ $ncu ${args[*]} ${target[*]}"
"$ncu" "${args[@]}" "${target[@]}"
echo "+ $ncu --import $out/mman.ncu-rep --print-summary per-kernel"
"$ncu" --import "$out/mman.ncu-rep" --print-summary per-kernel | tee "$out/summary.txt" || true
echo "report: $out/mman.ncu-rep"
