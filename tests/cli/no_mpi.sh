#!/usr/bin/env bash
# A single-process run needs no MPI runtime: the relora executable links no MPI library, a
# train run without a launcher never loads the MPI plugin (RELORA_MPI_PLUGIN names a file
# that does not exist), and a run started by a launcher whose plugin cannot be loaded exits 2
# with one line that says what failed and what to do.
#   usage: no_mpi.sh RELORA_BINARY
set -uo pipefail
relora="$1"
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
# No launcher's variables (launched_by_mpi() looks for these), whatever ran this script.
unset OMPI_COMM_WORLD_SIZE PMI_SIZE PMIX_RANK PMI_RANK MPI_LOCALNRANKS

write_shard train_000000.bin 64 5000 3
cat > run.yaml <<'YAML'
model: {vocab_size: 64, hidden_size: 32, num_layers: 2, num_heads: 2, intermediate_size: 48, seq_len: 16}
relora: {rank: 4, warm_start_steps: 1, reset_every: 1}
train: {steps: 3, global_batch: 4, micro_batch: 2, threads: 1, device: cpu}
data: {train: "train_*.bin", eval_every: 0}
checkpoint: {dir: out}
log: {every: 1}
YAML

# 1. the executable links no MPI library (ldd lists dependencies of dependencies too)
ldd "$relora" > ldd.out && ! grep -qi "libmpi" ldd.out
check executable_links_no_mpi $? "$(grep -i libmpi ldd.out)"

# 2. one process, no launcher: trains without loading the plugin
RELORA_MPI_PLUGIN="$work/no_such_plugin.so" "$relora" train --config run.yaml > local.out 2>&1
rc=$?
[ "$rc" -eq 0 ] && grep -q "1 rank" local.out && [ -f out/latest ]
check trains_without_the_plugin $? "exit $rc; $(tail -3 local.out)"

# 3. a launcher's environment but no plugin: exit 2, one line naming the file and the remedy
OMPI_COMM_WORLD_SIZE=1 RELORA_MPI_PLUGIN="$work/no_such_plugin.so" \
  "$relora" train --config run.yaml > missing.out 2> missing.err
rc=$?
[ "$rc" -eq 2 ] && [ "$(wc -l < missing.err)" -eq 1 ] &&
  grep -q "^relora: error: .*MPI plugin $work/no_such_plugin.so cannot be loaded: .*run without mpirun" missing.err
check missing_plugin_exits_2_with_one_line $? "exit $rc; $(cat missing.err)"

# 4. a launcher's environment and a library that is not the plugin: exit 2, one line
libz="$(awk '/libz\.so/ {print $3; exit}' ldd.out)"
OMPI_COMM_WORLD_SIZE=1 RELORA_MPI_PLUGIN="$libz" "$relora" train --config run.yaml > wrong.out 2> wrong.err
rc=$?
[ "$rc" -eq 2 ] && [ "$(wc -l < wrong.err)" -eq 1 ] && grep -q "^relora: error: .*is not relora's MPI plugin" wrong.err
check wrong_library_exits_2_with_one_line $? "exit $rc; $(cat wrong.err)"

echo "no-MPI cases: $((checks - failures)) passed, $failures failed"
[ "$failures" -eq 0 ]
