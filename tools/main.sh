#!/usr/bin/env bash
# Sets up, builds and runs the main job: the paper's whole pipeline (experiments/mman.yaml)
# on the built-in synthetic IEMOCAP-shaped data. Each invocation writes a new run
# directory under runs/ (a finished run is never overwritten). Extra arguments go to
# `mman_exp run`, e.g. `bash tools/main.sh --set train.seeds=[0,1,2]`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
bash tools/build.sh
build="${MMAN_BUILD_DIR:-build}"
"$build/mman_exp" info
exec "$build/mman_exp" run experiments/mman.yaml --out "runs/mman-$(date -u +%Y%m%d-%H%M%S)" "$@"
