#!/usr/bin/env bash
# Set-up, Release build on all cores, and the whole test suite (ctest).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash launch/setup.sh
jobs="$(nproc)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j "$jobs"
cd build
ctest --output-on-failure --timeout 600  # one test at a time: each uses every core
