#!/usr/bin/env bash
# Sets up, builds and runs the main job on the embedded synthetic IEMOCAP-shaped data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
bash tools/build.sh
data="${MMAN_BUILD_DIR:-build}/iemocap_synth.h5"
"${MMAN_BUILD_DIR:-build}/mman_exp" synth --preset iemocap --seed 0 --out "$data"
"${MMAN_BUILD_DIR:-build}/mman_exp" inspect "$data" --protocol iemocap4
