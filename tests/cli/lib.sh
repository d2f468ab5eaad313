# Shared by the command-line test scripts (tests/cli/*.sh, tests/mpi/failures.sh): a token
# shard writer, the pass/fail reporter, and the emulated device runs' case and loss
# comparisons. Source it; it defines functions only.

# write_shard PATH VOCAB TOKENS SEED: an llm.c token shard (uint16) of TOKENS uniform random
# tokens below VOCAB, written by python3's standard library.
write_shard() {
  python3 - "$@" <<'PY'
import struct, sys, random
path, vocab, count, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
random.seed(seed)
tokens = [random.randrange(vocab) for _ in range(count)]
with open(path, "wb") as f:
    f.write(struct.pack("<256i", 20240520, 1, len(tokens), *([0] * 253)))
    f.write(struct.pack("<%dH" % len(tokens), *tokens))
PY
}

# check NAME CONDITION_EXIT_CODE DETAIL: prints ok or FAIL and counts checks in $checks,
# failures in $failures.
checks=0
failures=0
check() {
  checks=$((checks + 1))
  if [ "$2" -eq 0 ]; then echo "ok   $1"; else echo "FAIL $1: $3"; failures=$((failures + 1)); fi
}

# write_emulated_case: the case of the emulated device runs (emulated_cuda.sh,
# emulated_nccl.sh), in the current directory. train_000000.bin: a learnable stream (a
# permutation of period 97, shifted every 970 tokens), on which the loss falls from about
# 4.9 to 3.9 in 12 steps, so a wrong gradient shows. run.yaml: head size 64 (the fused
# attention kernels), 12 steps, restarts at steps 8 and 12, checkpoints every 6.
write_emulated_case() {
  python3 - <<'PY'
import struct
tokens = [(i * 7 + 3) % 97 + (i // 970) % 3 for i in range(40000)]
with open("train_000000.bin", "wb") as f:
    f.write(struct.pack("<256i", 20240520, 1, len(tokens), *([0] * 253)))
    f.write(struct.pack("<%dH" % len(tokens), *tokens))
PY
  cat > run.yaml <<'YAML'
model: {vocab_size: 128, hidden_size: 128, num_layers: 2, num_heads: 2, intermediate_size: 256, seq_len: 32}
relora: {rank: 8, warm_start_steps: 4, reset_every: 4}
optimizer: {lr: 3e-3}
schedule: {warmup_steps: 2}
train: {steps: 12, global_batch: 4, micro_batch: 2, threads: 1, device: cpu}
data: {train: "train_*.bin", eval_every: 0}
checkpoint: {dir: out, every: 6, keep: 3}
log: {every: 1}
YAML
}
# metric DIR KEY: the numeric KEY of each line of DIR/metrics.jsonl that has it
metric() { sed -n 's/.*"'"$2"'":\([-0-9.e+]*\).*/\1/p' "$1/metrics.jsonl"; }
# losses DIR: "step loss" per line from DIR/metrics.jsonl
losses() { sed -n 's/.*"step":\([0-9]*\),.*"loss":\([-0-9.e+]*\),.*/\1 \2/p' "$1/metrics.jsonl"; }
# within A B: 12 steps; step 1's loss of A within 1e-4 (relative) of B's, later ones 2e-3
within() {
  paste <(losses "$1") <(losses "$2") | awk '
    { n++; d = $2 - $4; if (d < 0) d = -d; tol = $1 == 1 ? 1e-4 : 2e-3
      if ($1 != $3 || d > tol * ($4 < 0 ? -$4 : $4)) bad++ }
    END { exit (n == 12 && bad == 0) ? 0 : 1 }'
}
