#!/usr/bin/env bash
# Set-up (launch/setup.sh), Release build in build/ on all cores, and the whole test suite
# (ctest, one test at a time; a test that fails prints its output).
#   usage: bash launch/test.sh    (no arguments; -h/--help prints this)
set -euo pipefail
usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; }  # the header
case "${1:-}" in
  "") ;;
  -h|--help) usage; exit 0 ;;
  *) echo "test.sh: takes no arguments, got '$1' (see --help)" >&2; exit 2 ;;
esac
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash launch/setup.sh
jobs="$(nproc)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$jobs"
cd build
ctest --output-on-failure --timeout 600  # one test at a time: each uses every core
