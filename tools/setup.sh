#!/usr/bin/env bash
# Installs what mman needs on Debian 12 from Debian's packages. Idempotent: prints
# nothing and touches nothing when everything is already there. The CUDA toolkit is not
# a Debian package here; when nvcc is absent the build simply leaves CUDA out.
set -euo pipefail

packages=(
  build-essential cmake pkg-config ccache
  libyaml-cpp-dev libhdf5-dev hdf5-tools libopenblas-dev
  libgtest-dev libgmock-dev libcli11-dev libspdlog-dev libfmt-dev nlohmann-json3-dev
  python3 python3-numpy python3-h5py python3-torch python3-matplotlib python3-yaml
  clang-14 libclang-rt-14-dev libomp-14-dev  # the fuzz targets (libFuzzer), tools/test.sh
)

missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

echo "setup: installing ${missing[*]}"
sudo=""
[[ $(id -u) -eq 0 ]] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done"
