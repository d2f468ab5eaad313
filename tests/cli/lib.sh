# Shared by the command-line test scripts (tests/cli/*.sh, tests/mpi/failures.sh): a token
# shard writer and the pass/fail reporter. Source it; it defines functions only.

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
