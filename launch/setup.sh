#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages relora needs to build, test and run (apt-get, as
# root or through sudo). Idempotent: when everything is present it installs nothing and
# prints nothing.
#   usage: bash launch/setup.sh    (no arguments; -h/--help prints this)
set -euo pipefail
usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; }  # the header
case "${1:-}" in
  "") ;;
  -h|--help) usage; exit 0 ;;
  *) echo "setup.sh: takes no arguments, got '$1' (see --help)" >&2; exit 2 ;;
esac

PACKAGES=(
  build-essential cmake pkg-config
  libopenmpi-dev openmpi-bin
  libhdf5-dev hdf5-tools
  libyaml-cpp-dev
  libopenblas-openmp-dev
  libsentencepiece-dev sentencepiece zlib1g-dev
  libgtest-dev
  python3 fortunes
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep "install ok installed" >/dev/null || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup: need root or sudo to install: ${missing[*]}" >&2; exit 2; }
  SUDO="sudo"
fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
