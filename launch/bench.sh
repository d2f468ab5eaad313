#!/usr/bin/env bash
# relora against PyTorch on the same machine: `relora bench` and the PyTorch reference
# (tests/reference/llama_ref.py --bench, the same model and training step) on each config,
# both phases, 1 thread and every core, one after the other, several repetitions, then a
# markdown table of tokens/s (best and median of the repetitions), their ratio, MFU and peak
# memory.
#   usage: launch/bench.sh [--reps N] [--steps N] [--set section.key=value]... [--out FILE]
#                          [CONFIG...]
#          launch/bench.sh --table FILE
#   (default configs/tiny.yaml, 3 repetitions of 10 timed steps; --set applies to every
#   config and to both programs, e.g. --set model.seq_len=256 --set train.micro_batch=8;
#   --out appends each run's JSON line, with "config" and "program", to FILE; --table
#   prints the table of such a file without running anything)
# Without PyTorch (Debian's python3-torch) or the reference script, only relora is timed.
# Timings need an otherwise idle machine: the load averages are printed at start and end.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
reps=3
steps=10
sets=()
configs=()
results=""
table_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --reps) reps="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --set) sets+=(--set "$2"); shift 2 ;;
    --out) results="$2"; shift 2 ;;
    --table) results="$2"; table_only=1; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "bench.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) configs+=("$1"); shift ;;
  esac
done
[ ${#configs[@]} -gt 0 ] || configs=(configs/tiny.yaml)
python=/usr/bin/python3
if [ "$table_only" = 0 ]; then
  relora=build/relora
  [ -x "$relora" ] || { echo "bench.sh: build first (bash launch/test.sh)" >&2; exit 2; }
  reference=tests/reference/llama_ref.py
  have_torch=1
  if [ ! -f "$reference" ] || ! "$python" -c 'import torch' 2>/dev/null; then
    have_torch=0
    echo "bench.sh: no PyTorch reference ($reference with $python and torch): timing relora only" >&2
  fi
  cores="$(nproc)"
  threads=(1)
  [ "$cores" -gt 1 ] && threads+=("$cores")
  if [ -z "$results" ]; then
    results="$(mktemp)"
    trap 'rm -f "$results"' EXIT
  fi

  # One measurement: appends {"config","program",...the program's JSON line} to $results.
  measure() {  # program config phase threads
    local line
    if [ "$1" = relora ]; then
      line="$("$relora" bench --config "$2" --phase "$3" --steps "$steps" "${sets[@]}" --set train.threads="$4")"
    else
      line="$("$python" "$reference" --bench --config "$2" --phase "$3" --steps "$steps" "${sets[@]}" --threads "$4")"
    fi
    echo "{\"config\":\"$2$overrides\",\"program\":\"$1\",${line#\{}" >> "$results"
  }
  # the --set values, shown after the config's name in the table: " (k=v, k=v)"
  overrides=""
  for ((i = 1; i < ${#sets[@]}; i += 2)); do overrides+="${overrides:+, }${sets[i]}"; done
  overrides="${overrides:+ ($overrides)}"

  echo "bench.sh: $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $cores cores," \
       "$(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo); load average at start:" \
       "$(cut -d' ' -f1-3 /proc/loadavg)" >&2
  for rep in $(seq 1 "$reps"); do
    for config in "${configs[@]}"; do
      for phase in relora full; do
        for t in "${threads[@]}"; do
          echo "bench.sh: repetition $rep/$reps: $config, $phase phase, $t thread(s)" >&2
          measure relora "$config" "$phase" "$t"
          [ "$have_torch" = 1 ] && measure pytorch "$config" "$phase" "$t"
        done
      done
    done
  done
  echo "bench.sh: load average at end: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
fi

"$python" - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]

def runs(program, config, phase, threads=None):
    return [r for r in rows if r["program"] == program and r["config"] == config
            and r["phase"] == phase and threads in (None, r["threads"])]

def best(rs):
    return max(rs, key=lambda r: r["tokens_per_s"]) if rs else None

def tokens(rs, with_median):
    if not rs:
        return "n/a"
    median = f" ({statistics.median(r['tokens_per_s'] for r in rs):,.0f})" if with_median else ""
    return f"{best(rs)['tokens_per_s']:,.0f}{median}"

def mfu(rs):
    return f"{best(rs)['mfu']:.2f}" if rs else "n/a"

def memory(rs):
    if not rs:
        return "n/a"
    b = best(rs)
    return f"{b['peak_mem_bytes'] / 2**20:,.0f} ({b['peak_mem_bytes'] / b['tokens_per_step'] / 1024:,.0f})"

print("| config | phase | threads | relora tokens/s best (median) | PyTorch tokens/s best (median) "
      "| ratio of bests | relora MFU | PyTorch MFU | relora peak MiB (KiB/token) | PyTorch peak MiB (KiB/token) |")
print("|---|---|---|---|---|---|---|---|---|---|")
for config in dict.fromkeys(r["config"] for r in rows):
    for phase in ("relora", "full"):
        thread_counts = sorted({r["threads"] for r in runs("relora", config, phase)})
        for threads in thread_counts + [None]:  # None: the best over every thread count
            ours, theirs = runs("relora", config, phase, threads), runs("pytorch", config, phase, threads)
            ratio = (f"{best(ours)['tokens_per_s'] / best(theirs)['tokens_per_s']:.2f}x"
                     if ours and theirs else "n/a")
            label, bold = (str(threads), "") if threads else ("best", "**")
            print(f"| {config} | {phase} | {label} | {bold}{tokens(ours, bool(threads))}{bold} "
                  f"| {bold}{tokens(theirs, bool(threads))}{bold} | {bold}{ratio}{bold} | {mfu(ours)} "
                  f"| {mfu(theirs)} | {memory(ours)} | {memory(theirs)} |")
PY
