#!/usr/bin/env bash
# Tokenisation throughput of `relora data prepare --tokenizer`, against the yardstick, the
# spm_encode CLI (package sentencepiece), on the same text with the same model: the fortune
# files (not their .dat indexes), COPIES times over, and data/tiny/tokenizer.model.
#   usage: launch/bench_tokenize.sh [COPIES] [JOBS]   (defaults: 1, every core)
set -euo pipefail
usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; }  # the header
case "${1:-}" in -h|--help) usage; exit 0 ;; esac
[ $# -le 2 ] || { echo "bench_tokenize.sh: two arguments at most, COPIES and JOBS (see --help)" >&2; exit 2; }
copies="${1:-1}"
jobs="${2:-$(nproc)}"
for value in "$copies" "$jobs"; do
  [[ "$value" =~ ^[1-9][0-9]*$ ]] ||
    { echo "bench_tokenize.sh: '$value': COPIES and JOBS are whole numbers, at least 1 (see --help)" >&2; exit 2; }
done
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
model=data/tiny/tokenizer.model
if [ ! -x build/relora ] || [ ! -f "$model" ]; then
  echo "bench_tokenize: needs build/relora and $model (bash launch/quickstart.sh makes both)" >&2
  exit 2
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

mkdir "$work/text"
for ((i = 0; i < copies; i++)); do
  for f in /usr/share/games/fortunes/*; do
    if [ -f "$f" ] && [ ! -L "$f" ] && [[ "$f" != *.dat ]]; then cp "$f" "$work/text/$i-${f##*/}"; fi
  done
done
cat "$work"/text/* >"$work/all.txt"
bytes=$(stat -c %s "$work/all.txt")
echo "text: $(ls "$work/text" | wc -l) files, $bytes bytes; $(nproc) cores: $(lscpu | sed -n 's/^Model name: *//p')"

start=$(date +%s%N)
spm_encode --model="$model" --output_format=id <"$work/all.txt" >"$work/ids.txt"
elapsed_ns=$(($(date +%s%N) - start))
python3 -c "import sys; b, ns = int(sys.argv[1]), int(sys.argv[2]); \
print(f'spm_encode: {ns / 1e9:.2f} s, {b / ns * 1e3:.2f} MB/s (one thread; whole process)')" \
  "$bytes" "$elapsed_ns"

start=$(date +%s%N)
build/relora data prepare --input "$work/text" --doc-separator % --tokenizer "$model" \
  --jobs "$jobs" --out "$work/shards" | grep 'encoded'
elapsed_ns=$(($(date +%s%N) - start))
python3 -c "import sys; b, ns = int(sys.argv[1]), int(sys.argv[2]); \
print(f'relora data prepare: {ns / 1e9:.2f} s, {b / ns * 1e3:.2f} MB/s ({sys.argv[3]} threads; whole process)')" \
  "$bytes" "$elapsed_ns" "$jobs"
