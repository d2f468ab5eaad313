#!/usr/bin/env bash
# The GPU check, one command on a machine with an NVIDIA GPU (a few minutes on one
# H100/H200, under 8): the CUDA tests, `relora bench` of each model in both phases (and
# a --profile of each op for the larger ones, in DIR/profile_*.txt), the memory check
# (llama_1b, recompute on: device memory the ReLoRA phase's tensors hold over the full
# phase's, and the device memory each reserves, target <= 0.60), a real training run on
# synthetic text with a restart, a resume (bit-identical) and an eval, and with time left
# llama_350m with FAST_16BF products (no bf16 copies of the operands), with TF32 products,
# then with bf16 activations. A failing, crashing or hanging step is recorded and
# the next one runs, so one GPU session yields every figure it can; the summary lists
# the figures, the targets and every problem.
#   usage: launch/gpu_check.sh [--bundle FILE] [--models "tiny llama_350m"] [--out DIR]
#                              [--work DIR] [--deadline SECONDS]
#     --bundle FILE  a tarball from launch/bundle.sh: unpacked into the work directory and run
#                    with its binaries and lib/ (no compiler needed). Without it: from a
#                    checkout, builds build-gpu/ (Release, CUDA, the GPU's architecture) and
#                    runs that; from an unpacked bundle (bin/relora next to launch/), runs the
#                    bundle's binaries.
#     --models "M.." configs/M.yaml to bench (default "tiny llama_350m"); 20 steps for tiny
#                    (its own seq_len), 10 at model.seq_len=512 for the others
#     --out DIR      the reports: gpu_check.log, bench.jsonl, tests.log, smoke.log (the GPU
#                    training run's output), profile_*.txt
#                    (default: a new directory /tmp/relora-gpu-check.XXXXXX)
#     --work DIR     the unpacked bundle, the synthetic data and checkpoints (hundreds of MB;
#                    default: a new directory /tmp/relora-gpu-work.XXXXXX)
#     --deadline S   stop starting steps S seconds after the start (a build from a checkout
#                    included) and print the summary (default 480); every step's time limit
#                    is cut to what is left
# Finds cuBLAS (the soname the binary needs) / libnccl.so.2 under /usr/local/cuda*, /usr/lib/<machine>-linux-gnu and
# pip's nvidia/*/lib when the loader does not, and prepends them to the LD_LIBRARY_PATH the
# relora binaries (only they) run with.
# Exit status: 0 all passed; 1 a check failed, a target was missed or the deadline cut steps
# short; 2 bad arguments or no usable NVIDIA GPU.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; }  # the header
die_usage() { echo "gpu_check.sh: $*" >&2; exit 2; }

bundle=""
models="tiny llama_350m"
out=""
work=""
deadline=480
while [ $# -gt 0 ]; do
  case "$1" in
    --bundle|--models|--out|--work|--deadline)
      [ $# -ge 2 ] && [ -n "$2" ] || die_usage "$1 needs a value (see --help)"
      case "$1" in
        --bundle) bundle="$2" ;;
        --models) models="$2" ;;
        --out) out="$2" ;;
        --work) work="$2" ;;
        --deadline) deadline="$2" ;;
      esac
      shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) die_usage "unknown argument '$1' (see --help)" ;;
  esac
done
if [ -n "$bundle" ]; then
  [ -f "$bundle" ] || die_usage "--bundle '$bundle': no such file"
  case "$bundle" in
    *.tar.xz|*.txz|*.tar.zst|*.tar.gz|*.tgz|*.tar) ;;
    *) die_usage "--bundle '$bundle': expected a .tar.xz or .tar.zst from launch/bundle.sh" ;;
  esac
  bundle="$(cd "$(dirname "$bundle")" && pwd)/$(basename "$bundle")"
fi
[ -n "${models// /}" ] || die_usage "--models is empty"
[[ "$deadline" =~ ^[0-9]+$ ]] && [ "$deadline" -ge 60 ] || die_usage "--deadline '$deadline': expected seconds, at least 60"
make_dir() {  # OPTION DIR TEMPLATE: DIR created (or a new one from TEMPLATE), as an absolute path
  local dir="$2"
  if [ -n "$dir" ]; then mkdir -p "$dir" || die_usage "$1 '$dir': cannot create it"; else dir="$(mktemp -d "$3")"; fi
  (cd "$dir" && pwd)
}
out="$(make_dir --out "$out" /tmp/relora-gpu-check.XXXXXX)"
work="$(make_dir --work "$work" /tmp/relora-gpu-work.XXXXXX)"
log="$out/gpu_check.log"
jsonl="$out/bench.jsonl"
: >"$log"
: >"$jsonl"
exec > >(tee -a "$log") 2>&1
tee_pid=$!
trap 'exec >&- 2>&-; wait "$tee_pid" 2>/dev/null || true' EXIT  # let tee finish the log
started=$SECONDS
step() { printf '\n== %s (%d s so far)\n' "$1" $((SECONDS - started)); }
# fail: nothing after this can run (no binaries, no GPU). problem: recorded, the run goes on.
fail() { printf '\nFAILED: %s\n(log: %s)\n' "$*" "$log"; exit 1; }
problems=()
problem() { printf 'PROBLEM: %s\n' "$*"; problems+=("$*"); }
# limit N: N seconds or what is left before the deadline (with 20 s kept for the summary),
# whichever is less; fails (returns 1) when under 10 s are left.
limit() {
  local left=$((deadline - (SECONDS - started) - 20))
  [ "$left" -ge 10 ] || return 1
  echo $(( $1 < left ? $1 : left ))
}
echo "relora gpu_check: $(date -u '+%Y-%m-%dT%H:%M:%SZ') on $(hostname); reports in $out, work in $work; deadline $deadline s"
# a plain process: no MPI launcher's variables (they would make relora load the MPI plugin)
unset OMPI_COMM_WORLD_SIZE PMI_SIZE PMIX_RANK PMI_RANK MPI_LOCALNRANKS

# the driver's tools where a container mounts them (the driver's own directory)
if ! command -v nvidia-smi >/dev/null && [ -x /usr/local/nvidia/bin/nvidia-smi ]; then
  export PATH="$PATH:/usr/local/nvidia/bin"
fi
gpu_present() {
  command -v nvidia-smi >/dev/null || { echo "no NVIDIA GPU found (nvidia-smi is not on PATH)" >&2; return 1; }
  local list
  list="$(nvidia-smi -L 2>&1)" || { echo "no NVIDIA GPU found (nvidia-smi -L failed: $(head -1 <<<"$list"))" >&2; return 1; }
  grep -q '^GPU ' <<<"$list" || { echo "no NVIDIA GPU found (nvidia-smi -L lists none: $(head -1 <<<"$list"))" >&2; return 1; }
}
gpu_arch() {  # compute capability of GPU 0 as 90, 80, 120...; 90 when unknown
  local cap
  cap="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' ')" || true
  if [[ "$cap" =~ ^[0-9]+\.[0-9]+$ ]]; then echo "${cap/./}"; else echo 90; fi
}

# ---- the binaries: unpacked bundle, this bundle tree, or a build ---------------------------
if [ -n "$bundle" ]; then
  step "unpack $bundle"
  rm -rf "$work/bundle"
  mkdir -p "$work/bundle"
  case "$bundle" in
    *.zst) command -v zstd >/dev/null || fail "zstd is not on PATH to unpack $bundle: rebuild the bundle with --out NAME.tar.xz"
           zstd -dc "$bundle" | tar -C "$work/bundle" -xf - ;;
    *) if ! tar -C "$work/bundle" -xf "$bundle" 2>"$work/tar.err"; then  # tar needs xz(1) for .xz
         cat "$work/tar.err"
         echo "tar could not unpack it; trying python3's tarfile"
         python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$bundle" "$work/bundle" ||
           fail "could not unpack $bundle (tar, then python3)"
       fi ;;
  esac
  tree="$(dirname "$(find "$work/bundle" -maxdepth 3 -path '*/bin/relora' -type f | head -1)")"
  [ "$tree" != . ] || fail "$bundle holds no bin/relora"
  tree="$(dirname "$tree")"
  mode=bundle
elif [ ! -f "$here/CMakeLists.txt" ] && [ -x "$here/bin/relora" ]; then
  tree="$here"
  mode=bundle
else
  tree="$here"
  mode=build
fi
for m in $models; do
  [[ "$m" =~ ^[A-Za-z0-9_.-]+$ ]] && [ -f "$tree/configs/$m.yaml" ] ||
    die_usage "--models: no configs/$m.yaml in $tree (have: $(ls "$tree/configs" | sed 's/\.yaml$//' | tr '\n' ' '))"
done
[ -f "$tree/configs/llama_1b.yaml" ] || fail "no configs/llama_1b.yaml in $tree for the memory check"

# The library path the binaries run with (set only for them: python3 and nvidia-smi keep
# the system's libraries): the bundle's lib/, then CUDA's and NCCL's where found below.
libpath="${LD_LIBRARY_PATH:-}"
prepend_lib() { libpath="$1${libpath:+:$libpath}"; }
with_libs() { LD_LIBRARY_PATH="$libpath" "$@"; }

if [ "$mode" = build ]; then
  gpu_present || exit 2
  arch="$(gpu_arch)"
  step "build: $here/build-gpu (Release, RELORA_CUDA=ON, RELORA_CUDA_ARCHS=$arch, $(nproc) jobs)"
  if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH="/usr/local/cuda/bin:$PATH"; fi
  command -v nvcc >/dev/null || fail "nvcc not found (PATH, /usr/local/cuda/bin): install the CUDA toolkit, or use --bundle"
  cmake -S "$here" -B "$here/build-gpu" -DCMAKE_BUILD_TYPE=Release -DRELORA_CUDA=ON \
    -DRELORA_CUDA_ARCHS="$arch" >"$out/configure.log" 2>&1 ||
    { tail -20 "$out/configure.log"; fail "cmake configure failed (log: $out/configure.log)"; }
  # bounded by the deadline like every step; what it built stays in build-gpu/ for a rerun
  t="$(limit "$deadline")" || fail "no time left for the build before the deadline (--deadline $deadline)"
  build_rc=0 build_started=$SECONDS
  timeout -k 10 "$t" cmake --build "$here/build-gpu" -j "$(nproc)" --target relora relora_tests \
    >"$out/build.log" 2>&1 || build_rc=$?
  case "$build_rc" in
    0) echo "built in $((SECONDS - build_started)) s" ;;
    124|137) fail "the build did not finish in the $t s left before the deadline; run again (build-gpu/ keeps what was built) or give a larger --deadline" ;;
    *) grep -m 20 -i 'error' "$out/build.log" || tail -20 "$out/build.log"; fail "build failed (log: $out/build.log)" ;;
  esac
  relora="$here/build-gpu/relora"
  tests="$here/build-gpu/relora_tests"
else
  relora="$tree/bin/relora"
  tests="$tree/bin/relora_tests"
  prepend_lib "$tree/lib"
  echo "bundle: $tree"
  if [ -f "$tree/MANIFEST.txt" ]; then
    sed -n '1,12p' "$tree/MANIFEST.txt" | sed 's/^/  /'
    built_from="$(sed -n 's/^commit: *\([0-9a-f]*\).*/\1/p' "$tree/MANIFEST.txt")"
    checkout="$(git -C "$here" rev-parse HEAD 2>/dev/null || true)"
    if [ -n "$built_from" ] && [ -n "$checkout" ] && [ "$built_from" != "$checkout" ]; then
      echo "WARNING: the bundle was built from $built_from, this checkout is $checkout: its binaries are not this tree's"
    fi
  fi
  need="$(sed -n 's/^needs glibc: *>= *\([0-9.]*\).*/\1/p' "$tree/MANIFEST.txt" 2>/dev/null || true)"
  have="$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}' || true)"
  if [ -n "$need" ] && [ -n "$have" ] && [ "$(printf '%s\n' "$need" "$have" | sort -V | head -1)" != "$need" ]; then
    # The bundled libstdc++/libgcc_s are what need the newer glibc; the binaries themselves
    # need less. Use the system's when it is new enough for them (gcc 12's, GLIBCXX_3.4.30).
    # (awk reads to the end: quitting early would SIGPIPE ldconfig, fatal under pipefail)
    system_stdcxx="$(ldconfig -p 2>/dev/null | awk -F'=> ' '!found && /libstdc\+\+\.so\.6 .*x86-64/ {print $2; found = 1}')"
    if [ -n "$system_stdcxx" ] && grep -a GLIBCXX_3.4.30 "$system_stdcxx" >/dev/null 2>&1; then
      echo "glibc $have < $need: the bundle's libraries without its libstdc++.so.6 and libgcc_s.so.1 (in $work/lib), the system's $system_stdcxx instead"
      mkdir -p "$work/lib"
      for f in "$tree"/lib/*; do
        case "$(basename "$f")" in libstdc++.so.6*|libgcc_s.so.1) ;; *) ln -sf "$f" "$work/lib/" ;; esac
      done
      libpath="$work/lib${libpath#"$tree/lib"}"
    else
      fail "the bundle needs glibc >= $need, this machine has $have and no libstdc++ with GLIBCXX_3.4.30 to use instead"
    fi
  fi
fi
[ -x "$relora" ] && [ -x "$tests" ] || fail "missing $relora or $tests"
export RELORA_SOURCE_DIR="$tree"   # configs/ and tests/reference/fixtures/ for the tests
cd "$tree"

# ---- shared libraries ---------------------------------------------------------------------
step "shared libraries"
lib_dirs() {  # candidate directories for CUDA's libraries
  local d
  local machine target
  machine="$(uname -m)"  # x86_64, or aarch64 (Grace Hopper), whose CUDA target is sbsa-linux
  target="$([ "$machine" = aarch64 ] && echo sbsa || echo "$machine")-linux"
  for d in ${CUDA_HOME:-} ${CUDA_PATH:-} /usr/local/cuda /usr/local/cuda-*; do
    [ -d "$d" ] && printf '%s\n' "$d/lib64" "$d/lib" "$d/targets/$target/lib"
  done
  echo "/usr/lib/$machine-linux-gnu"
  ldconfig -p 2>/dev/null | awk -F'=> ' '/libcublas\.so|libnccl\.so/ {print $2}' | xargs -r -n1 dirname
  if command -v python3 >/dev/null; then  # pip wheels: site-packages/nvidia/<pkg>/lib
    python3 - 2>/dev/null <<'PY' || true
import os, site, sys
roots = set()
try:
    import nvidia
    roots.update(nvidia.__path__)  # a namespace package: no __file__
except Exception:
    pass
for p in list(getattr(site, "getsitepackages", lambda: [])()) + [site.getusersitepackages()] + sys.path:
    if p and os.path.isdir(os.path.join(p, "nvidia")):
        roots.add(os.path.join(p, "nvidia"))
for r in sorted(roots):
    print(r)
PY
  fi
}
find_lib() {  # NAME: directory holding it, searched in lib_dirs (pip trees two levels deep)
  local d hit
  while read -r d; do
    [ -d "$d" ] || continue
    hit="$(find -L "$d" -maxdepth 3 -name "$1" \( -type f -o -type l \) 2>/dev/null | head -1)"
    [ -n "$hit" ] && { dirname "$hit"; return 0; }
  done < <(lib_dirs | awk '!seen[$0]++')
  return 1
}
loader_finds() {  # NAME: does the dynamic loader find it (libpath or ld.so.cache)?
  local d
  for d in ${libpath//:/ }; do [ -e "$d/$1" ] && return 0; done
  ldconfig -p 2>/dev/null | grep "^[[:space:]]*$1 " >/dev/null  # not -q: no SIGPIPE under pipefail
}
# cuBLAS as the binary was linked against (libcublas.so.13 for CUDA 13), and NCCL (dlopened)
cublas_names="$(with_libs ldd "$relora" 2>/dev/null | { grep -o 'libcublas[A-Za-z]*\.so\.[0-9]*' || true; } | sort -u | tr '\n' ' ')"
for name in ${cublas_names:-libcublas.so.13 libcublasLt.so.13} libnccl.so.2; do
  if ! loader_finds "$name"; then
    if dir="$(find_lib "$name")"; then
      echo "$name: not on the loader path; found in $dir: prepended to the binaries' LD_LIBRARY_PATH"
      prepend_lib "$dir"
    elif [ "$name" = libnccl.so.2 ]; then
      echo "$name: not found (only multi-GPU runs load it; CudaModel.NcclAllReduceWithOneRank will fail)"
    fi
  fi
done
echo "the binaries' LD_LIBRARY_PATH=$libpath"
missing="$( { with_libs ldd "$relora"; with_libs ldd "$tests"; } | { grep 'not found' || true; } | awk '{print $1}' | sort -u | tr '\n' ' ')"
if [ -n "$missing" ]; then
  { with_libs ldd "$relora" | grep 'not found' || true; } | sed 's/^[[:space:]]*/  relora: /'
  { with_libs ldd "$tests" | grep 'not found' || true; } | sed 's/^[[:space:]]*/  relora_tests: /'
else
  echo "ldd: every library of relora and relora_tests resolves"
fi
{ with_libs ldd "$relora" | grep -E 'libcublas|libstdc|libopenblas|libgomp' || true; } | sed 's/^[[:space:]]*/  /'

# ---- the GPU ------------------------------------------------------------------------------
step "GPU"
gpu_present || exit 2
nvidia-smi -L
echo "driver: $(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1)," \
     "compute capability $(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1)," \
     "memory $(nvidia-smi --query-gpu=memory.total --format=csv,noheader | head -1)"
# A bundle's CUDA runtime (linked statically) starts only on a driver of its release or newer:
# short of it every CUDA test would skip and every bench stop with "insufficient driver".
driver_need="$(sed -n 's/^needs driver: *>= *\([0-9]*\).*/\1/p' "$tree/MANIFEST.txt" 2>/dev/null || true)"
driver_have="$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1 | cut -d. -f1 | tr -d ' ')"
if [ -n "$driver_need" ] && [ -n "$driver_have" ] && [ "$driver_have" -lt "$driver_need" ] 2>/dev/null; then
  fail "the bundle's binaries need NVIDIA driver >= $driver_need (they link $(sed -n 's/^needs driver:.*the \(CUDA [0-9]*\) runtime.*/\1/p' "$tree/MANIFEST.txt")'s runtime), this machine's is $driver_have: build the bundle with a CUDA toolkit this driver supports (nvidia-smi names the newest CUDA it runs), or run gpu_check.sh from a checkout on a machine with that toolkit"
fi
if [ -n "$missing" ]; then
  case "$missing" in
    *libcublas*) fail "${cublas_names:-libcublas} not found: add the lib directory of the CUDA release the binaries were built with to LD_LIBRARY_PATH (look with: ldconfig -p | grep cublas; find / -name 'libcublas.so.13*' 2>/dev/null; pip's nvidia-cublas puts it under site-packages/nvidia/*/lib). Missing: $missing" ;;
    *libmpi*) fail "the binaries link MPI directly ($missing): this machine has none; they should reach MPI through the plugin librelora_mpi.so" ;;
    *) fail "shared libraries not found: $missing (a bundle carries all but CUDA's and glibc's in lib/)" ;;
  esac
fi
if [ "$mode" = bundle ] && [ -f "$tree/MANIFEST.txt" ]; then
  built="$(sed -n 's/^arch: *//p' "$tree/MANIFEST.txt")"
  have="$(gpu_arch)"
  if [[ "$built" =~ ^[0-9]+ ]] && [ "${BASH_REMATCH[0]}" -gt "$have" ]; then
    fail "the bundle is built for sm_$built, the GPU is sm_$have: rebuild with launch/bundle.sh --arch $have"
  fi
  [ "$built" = "$have" ] || echo "note: bundle built for sm_$built, GPU is sm_$have: kernels are JIT-compiled from PTX at start-up"
fi

# ---- (1) the CUDA tests -------------------------------------------------------------------
# Three processes, so that one broken kernel cannot hide the others: a sticky CUDA error
# (an illegal address) fails every later test of its process, and a hung NCCL set-up ends
# its process through the watchdog. The per-op tests first, then the model tests, then
# NCCL alone; each test that failed is run again alone with CUDA_LAUNCH_BLOCKING=1, so an
# asynchronous fault is reported at the launch that caused it.
step "(1) the CUDA tests: relora_tests --gtest_filter=CudaOps.*, then CudaModel.*, NCCL alone"
: >"$out/tests.log"
tests_ran=0
tests_notes=()       # crashes, timeouts, skips: the summary's words
skipped="" failed_tests="" crashed_in=""
run_tests() {  # TIMEOUT POSITIVE NEGATIVE [VAR=VALUE..]: relora_tests over the tests matching
  # POSITIVE but not NEGATIVE (gtest patterns), appended to tests.log; after a crash or a
  # timeout the tests it did not reach run in a new process (twice at most)
  local limit_s="$1" positive="$2" negative="$3" t rc ran last_test finished filter file="$work/tests.part" tries=0
  shift 3
  while :; do
    filter="$positive${negative:+-$negative}"
    t="$(limit "$limit_s")" || { tests_notes+=("$filter not run (deadline)"); return 0; }
    echo "\$ ${*:+$* }relora_tests --gtest_filter='$filter'"
    set +e
    timeout -k 10 "$t" env LD_LIBRARY_PATH="$libpath" "$@" "$tests" --gtest_filter="$filter" \
      --gtest_color=no >"$file" 2>&1
    rc=$?
    set -e
    cat "$file" >>"$out/tests.log"
    grep -E '^\[ +(OK|FAILED|SKIPPED) +\] [A-Za-z_0-9]+\.|^\[==========\]|^\[  PASSED  \]' "$file" || true
    ran="$(sed -n 's/^\[==========\] \([0-9]*\) tests\{0,1\} from .* ran\..*/\1/p' "$file" | tail -1)"
    last_test="$( { grep -E '^\[ RUN      \] ' "$file" || true; } | tail -1 | awk '{print $4}')"
    skipped+="$({ grep -E '^\[  SKIPPED \] [A-Za-z_0-9]+\.' "$file" || true; } | awk '{print $4}' | sort -u | tr '\n' ' ')"
    failed_tests+="$({ grep -E '^\[  FAILED  \] [A-Za-z_0-9]+\.[A-Za-z_0-9/]+ \(' "$file" || true; } | awk '{print $4}' | sort -u | tr '\n' ' ')"
    if [ -n "$ran" ]; then
      [ "$ran" -gt 0 ] || tests_notes+=("$filter ran no test (built with RELORA_CUDA=ON?)")
      tests_ran=$((tests_ran + ran))
      return 0
    fi
    # crashed or timed out: the tests it finished count; the one it was in is recorded
    finished="$( { grep -E '^\[ +(OK|FAILED|SKIPPED) +\] [A-Za-z_0-9]+\.[A-Za-z_0-9/]+ \(' "$file" || true; } | awk '{print $(NF-2)}')"
    tests_ran=$((tests_ran + $(grep -c . <<<"$finished" || true)))
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
      tests_notes+=("$filter TIMED OUT after $t s in ${last_test:-?}")
    else
      tests_notes+=("$filter CRASHED (exit $rc) in ${last_test:-?}")
    fi
    [ -n "$last_test" ] || return 0
    crashed_in+="$last_test "
    tries=$((tries + 1))
    [ "$tries" -le 2 ] || return 0
    negative="$(tr ' ' '\n' <<<"${negative//:/ } $finished $last_test" | awk 'NF' | paste -sd:)"
  done
}
run_tests 150 'CudaOps.*:FlashAttentionSharedMemory.*' ''
run_tests 150 'CudaModel.*' 'CudaModel.NcclAllReduceWithOneRank'
# One rank bootstraps over a socket too: the loopback interface, where no other is given.
nccl_env=(NCCL_SOCKET_IFNAME="${NCCL_SOCKET_IFNAME:-lo}" NCCL_DEBUG=WARN)
run_tests 90 'CudaModel.NcclAllReduceWithOneRank' '' "${nccl_env[@]}"
failed_tests="$(tr ' ' '\n' <<<"$failed_tests $crashed_in" | awk 'NF && !seen[$0]++' | paste -sd' ')"
passed_alone=" "  # of those, the ones that pass alone (victims of another's fault, or flaky)
reruns=0
for name in $failed_tests; do  # alone, faults reported at their launch: in tests.log
  reruns=$((reruns + 1))
  [ "$reruns" -le 4 ] || { tests_notes+=("more failed tests not rerun alone"); break; }
  t="$(limit 60)" || break
  echo "\$ CUDA_LAUNCH_BLOCKING=1 relora_tests --gtest_filter='$name'"
  echo "== $name again, alone, with CUDA_LAUNCH_BLOCKING=1" >>"$out/tests.log"
  set +e
  timeout -k 10 "$t" env LD_LIBRARY_PATH="$libpath" CUDA_LAUNCH_BLOCKING=1 "${nccl_env[@]}" "$tests" \
    --gtest_filter="$name" --gtest_color=no >>"$out/tests.log" 2>&1
  rc=$?
  set -e
  if [ "$rc" = 0 ]; then
    tests_notes+=("$name passes alone")
    passed_alone+="$name "
  else
    tests_notes+=("$name fails alone too (exit $rc)")
  fi
done
if [ -n "$skipped" ]; then
  tests_notes+=("SKIPPED on a GPU machine (GPU, cuBLAS or NCCL not usable; reasons in tests.log): ${skipped% }")
fi
if [ -n "$failed_tests" ]; then tests_notes+=("FAILED: $failed_tests"); fi
if [ "${#tests_notes[@]}" -eq 0 ]; then
  tests_summary="$tests_ran CUDA tests passed, none skipped"
else
  tests_summary="$(printf '%s; ' "${tests_notes[@]}")"
  tests_summary="CUDA tests: $tests_ran ran; ${tests_summary%; }"
  problem "$tests_summary"
fi
echo "$tests_summary"
# The fused attention kernels serve every shipped config: when their test failed, and did
# not pass alone (a sticky error of another test's can fail it too), measure the rest with
# attention through cuBLAS products rather than lose every figure.
if [[ " $failed_tests " == *" CudaOps.FusedAttention "* && "$passed_alone" != *" CudaOps.FusedAttention "* ]]; then
  export RELORA_ATTENTION=products
  problem "the fused attention kernels failed their test: every figure below is with RELORA_ATTENTION=products (attention through cuBLAS products)"
fi

# ---- (2, 3) relora bench ------------------------------------------------------------------
field() { { grep -o "\"$2\":[^,}]*" <<<"$1" || true; } | head -1 | cut -d: -f2- | tr -d '"'; }
bench() {  # LABEL TIMEOUT ARGS...: relora bench; its JSON line (labelled) to bench.jsonl and
           # $last; a failure is a problem, returns 1 and leaves $last empty
  local label="$1" t line rc
  last=""
  t="$(limit "$2")" || { problem "relora bench $label: not run (deadline)"; return 1; }
  shift 2
  echo "\$ relora bench $*"
  set +e
  line="$(timeout -k 10 "$t" env LD_LIBRARY_PATH="$libpath" "$relora" bench "$@" 2>"$work/bench.stderr")"
  rc=$?
  set -e
  cat "$work/bench.stderr"
  if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then problem "relora bench $label timed out after $t s"; return 1; fi
  [ "$rc" = 0 ] || { problem "relora bench $label exited $rc"; return 1; }
  line="$( { grep '^{' <<<"$line" || true; } | tail -1)"
  [ -n "$line" ] || { problem "relora bench $label printed no JSON line"; return 1; }
  echo "$line"
  case "$line" in *'"device":"cpu'*) problem "relora bench $label ran on the CPU, not the GPU"; return 1 ;; esac
  echo "{\"label\":\"$label\",${line#\{}" >>"$jsonl"
  last="$line"
}
ratio_of() { awk -v a="$1" -v b="$2" 'BEGIN {if (b + 0 == 0) print "nan"; else printf("%.3f", a / b)}'; }  # A / B
at_most() { awk -v x="$1" -v y="$2" 'BEGIN {exit !(x <= y)}'; }           # X <= Y ?

step "(2) relora bench: ${models}"
targets=()  # "figure = value (target ...: met|MISSED)" lines for the summary
for m in $models; do
  if [ "$m" = tiny ]; then args=(--steps 20); else args=(--set model.seq_len=512 --steps 10); fi
  declare -A step_ms=() mfu=()
  for phase in full relora; do
    if bench "$m/$phase" 150 --config "configs/$m.yaml" --set train.device=cuda "${args[@]}" \
      --warmup 2 --phase "$phase"; then
      step_ms[$phase]="$(field "$last" step_ms)"
      mfu[$phase]="$(field "$last" mfu)"
      peak_line="$last"
      [ "$m/$phase" = llama_350m/full ] && default_350m_line="$last"
    fi
  done
  if [ -n "${step_ms[full]:-}" ] && [ -n "${step_ms[relora]:-}" ]; then
    r="$(ratio_of "${step_ms[relora]}" "${step_ms[full]}")"
    if [ "$m" = tiny ]; then  # launch-bound at this size: no target
      targets+=("tiny: ReLoRA/full step time $r (no target)")
    else
      at_most "$r" 0.9 && verdict=met || verdict=MISSED
      targets+=("$m: ReLoRA/full step time $r (target <= 0.9: $verdict)")
    fi
  fi
  if [ "$m" = llama_350m ] && [ -n "${mfu[full]:-}" ]; then
    at_most 0.30 "${mfu[full]}" && verdict=met || verdict=MISSED
    targets+=("llama_350m: full-rank mfu ${mfu[full]} (target >= 0.30, aim 0.5: $verdict)")
  fi
done

step "(2b) where the time goes: relora bench --profile (each op synchronised), models other than tiny"
for m in $models; do
  [ "$m" != tiny ] || continue
  for phase in full relora; do
    t="$(limit 90)" || { problem "profile $m/$phase: not run (deadline)"; continue; }
    echo "\$ relora bench --config configs/$m.yaml --set train.device=cuda --set model.seq_len=512 --steps 3 --warmup 1 --phase $phase --profile"
    set +e
    timeout -k 10 "$t" env LD_LIBRARY_PATH="$libpath" "$relora" bench --config "configs/$m.yaml" \
      --set train.device=cuda --set model.seq_len=512 --steps 3 --warmup 1 --phase "$phase" --profile \
      >/dev/null 2>"$out/profile_${m}_$phase.txt"
    rc=$?
    set -e
    head -32 "$out/profile_${m}_$phase.txt"
    [ "$rc" = 0 ] || problem "relora bench --profile $m/$phase exited $rc"
  done
done

step "(3) memory: llama_1b, micro_batch 4, seq_len 512, recompute on"
declare -A mem=() held=()
for phase in full relora; do
  if bench "llama_1b-mem/$phase" 150 --config configs/llama_1b.yaml --set train.device=cuda \
    --set train.micro_batch=4 --set model.seq_len=512 --set train.recompute=true \
    --steps 2 --warmup 1 --phase "$phase"; then
    mem[$phase]="$(field "$last" peak_mem_bytes)"
    held[$phase]="$(field "$last" device_reserved_bytes)"
  fi
done
if [[ "${mem[full]:-}" =~ ^[0-9]+$ && "${mem[relora]:-}" =~ ^[0-9]+$ && "${mem[full]}" -gt 0 ]]; then
  r="$(ratio_of "${mem[relora]}" "${mem[full]}")"
  at_most "$r" 0.60 && verdict=met || verdict=MISSED
  targets+=("llama_1b: ReLoRA/full device memory of the tensors $r (${mem[relora]} / ${mem[full]} bytes; target <= 0.60: $verdict)")
fi
if [[ "${held[full]:-}" =~ ^[0-9]+$ && "${held[relora]:-}" =~ ^[0-9]+$ && "${held[full]}" -gt 0 ]]; then
  r="$(ratio_of "${held[relora]}" "${held[full]}")"
  at_most "$r" 0.60 && verdict=met || verdict=MISSED
  targets+=("llama_1b: ReLoRA/full device memory reserved (the arena, as for a run resumed in the phase) $r (${held[relora]} / ${held[full]} bytes; target <= 0.60: $verdict)")
fi
# the same ReLoRA phase with relora.master_on_host (bf16 block weights, fp32 masters on the host)
if bench "llama_1b-mem/relora-host-masters" 150 --config configs/llama_1b.yaml --set train.device=cuda \
  --set train.micro_batch=4 --set model.seq_len=512 --set train.recompute=true \
  --set relora.master_on_host=true --steps 2 --warmup 1 --phase relora &&
  [[ "${mem[full]:-}" =~ ^[0-9]+$ && "${mem[full]}" -gt 0 ]]; then
  host_mem="$(field "$last" peak_mem_bytes)"
  targets+=("llama_1b: ReLoRA/full device memory with relora.master_on_host $(ratio_of "$host_mem" "${mem[full]}") (no target; step $(field "$last" step_ms) ms)")
fi

# (4) A real run on the GPU: synthetic text (a fixed random Markov chain over 400 made-up
# words, so there is something to learn) -> tokenizer and shards -> tiny for 60 updates
# through the warm start (20 updates) and a merge-and-restart (after 40), checkpoints every
# 10; the loss must fall by more than 1 nat -> a second run resumed from step 30 must end
# exactly where the first did (every kernel sums in a fixed order) -> eval of the final
# checkpoint. (On the CPU the same commands take 35 s and resume bit-identically too.)
step "(4) training on the GPU: synthetic text, tiny for 60 updates, resume from 30, eval"
smoke="$work/smoke"
rm -rf "$smoke"
mkdir -p "$smoke"
: >"$out/smoke.log"
run_checked() {  # LABEL TIMEOUT ARGS...: relora ARGS, logged; a failure is a problem (returns 1)
  local label="$1" t rc
  t="$(limit "$2")" || { problem "relora $label: not run (deadline)"; return 1; }
  shift 2
  echo "\$ relora $*"
  set +e
  timeout -k 10 "$t" env LD_LIBRARY_PATH="$libpath" "$relora" "$@" 2>&1 | tee -a "$out/smoke.log" | tail -5
  rc=${PIPESTATUS[0]}
  set -e
  [ "$rc" = 0 ] || { problem "relora $label exited $rc"; return 1; }
}
smoke_run() {  # the steps of (4); returns 1 at the first problem
  python3 - "$smoke/text.txt" <<'PY' || { problem "python3 could not write the synthetic text"; return 1; }
import random, sys
rng = random.Random(1)
words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 8)))
         for _ in range(400)]
successors = {w: rng.sample(words, 3) for w in words}
with open(sys.argv[1], "w") as out:
    for _ in range(4000):  # documents, separated by blank lines
        w = rng.choice(words)
        sentence = [w]
        for _ in range(rng.randint(20, 60)):
            w = rng.choice(successors[w])
            sentence.append(w)
        out.write(" ".join(sentence) + ".\n\n")
PY
  run_checked "data prepare" 90 data prepare --input "$smoke/text.txt" --vocab-size 512 \
    --val-fraction 0.05 --out "$smoke/data" || return 1
  local smoke_train=(train --config configs/tiny.yaml --set train.device=cuda --set model.vocab_size=512
    --set "data.train=$smoke/data/train_*.bin" --set "data.val=$smoke/data/val_*.bin"
    --set train.steps=60 --set relora.warm_start_steps=20 --set relora.reset_every=20
    --set schedule.warmup_steps=10 --set relora.restart_warmup_steps=5 --set checkpoint.every=10
    --set checkpoint.keep=10 --set data.eval_every=0 --set log.every=10)
  run_checked "train (60 updates)" 120 "${smoke_train[@]}" --set "checkpoint.dir=$smoke/run" || return 1
  [ -s "$smoke/run/metrics.jsonl" ] || { problem "the GPU run wrote no metrics.jsonl"; return 1; }
  local first_metrics last_metrics restarts resumed_metrics
  first_metrics="$(grep -m1 '"loss"' "$smoke/run/metrics.jsonl" || true)"
  last_metrics="$( { grep '"loss"' "$smoke/run/metrics.jsonl" || true; } | tail -1)"
  [ -n "$first_metrics" ] || { problem "no loss line in the GPU run's metrics.jsonl"; return 1; }
  restarts="$(grep -c '"event":"restart"' "$smoke/run/metrics.jsonl" || true)"
  echo "loss $(field "$first_metrics" loss) at step $(field "$first_metrics" step) -> $(field "$last_metrics" loss) at step $(field "$last_metrics" step); $restarts restart(s)"
  awk -v a="$(field "$first_metrics" loss)" -v b="$(field "$last_metrics" loss)" 'BEGIN {exit !(b < a - 1.0)}' ||
    problem "the GPU run did not learn: loss $(field "$first_metrics" loss) -> $(field "$last_metrics" loss)"
  [ "$restarts" -ge 1 ] || problem "no merge-and-restart in the GPU run's metrics"
  cp -r "$smoke/run" "$smoke/resumed"
  run_checked "train (resumed from 30)" 120 "${smoke_train[@]}" --set "checkpoint.dir=$smoke/resumed" \
    --resume "$smoke/resumed/step_00000030.h5" || return 1
  resumed_metrics="$( { grep '"loss"' "$smoke/resumed/metrics.jsonl" 2>/dev/null || true; } | tail -1)"
  [ -n "$resumed_metrics" ] || { problem "no loss line in the resumed run's metrics.jsonl"; return 1; }
  echo "final loss: first run $(field "$last_metrics" loss), resumed from 30 $(field "$resumed_metrics" loss)"
  if [ "$(field "$last_metrics" loss)" = "$(field "$resumed_metrics" loss)" ]; then
    resume_summary="resume from step 30: the same final loss, to every printed digit"
  else
    resume_summary="resume from step 30 ended ELSEWHERE: $(field "$last_metrics" loss) vs $(field "$resumed_metrics" loss)"
    problem "$resume_summary"
  fi
  run_checked "eval" 60 eval --checkpoint "$smoke/run/step_00000060.h5" --data "$smoke/data/val_*.bin" || return 1
}
resume_summary="resume not checked"
smoke_run || true

# (5, 6, 7) llama_350m's full-rank phase with one setting changed, against the run of (2):
# (5) train.matmul: bf16 (FAST_16BF: the operands rounded inside kernels that read fp32,
# against the default bf16_copy's bf16 copies and cuBLAS's kernels for bf16 storage; also
# its ReLoRA phase, whose step-time ratio has a target, with 2 minutes left),
# (6) train.matmul: tf32 (products on fp32 tensors rounded to TF32 rather than bf16), (7)
# train.activation_dtype: bf16 (what backward keeps in bf16: its step time and tensor
# memory). No targets: they tell which settings a GPU should default to. Last, and each
# only with 120 s left (100 for it, 20 kept for the summary), so they never cost a check
# above.
variant_350m() {  # STEP LABEL KEY=VALUE [relora]: the full-rank phase (and the ReLoRA phase)
  step "($1) llama_350m, full-rank phase${4:+ and ReLoRA phase}, $3, against (2)"
  if [ -z "${default_350m_line:-}" ]; then
    echo "not run: no llama_350m full-rank line from (2)"
  elif ! limit 100 >/dev/null || [ "$(limit 100)" -lt 100 ]; then
    echo "not run: under 120 s left before the deadline"
  elif bench "llama_350m/full-$2" 150 --config configs/llama_350m.yaml --set train.device=cuda \
    --set model.seq_len=512 --set "$3" --steps 10 --warmup 2 --phase full; then
    local full_line="$last" t
    targets+=("llama_350m: $3, full-rank step time $(ratio_of "$(field "$last" step_ms)" \
"$(field "$default_350m_line" step_ms)") and tensor memory $(ratio_of "$(field "$last" peak_mem_bytes)" \
"$(field "$default_350m_line" peak_mem_bytes)") of (2)'s, mfu $(field "$last" mfu), training gemm \
$(field "$last" train_product_gflops) GFLOP/s (no target)")
    if [ -z "${4:-}" ]; then
      :
    elif ! t="$(limit 100)" || [ "$t" -lt 100 ]; then
      echo "ReLoRA phase not run: under 120 s left before the deadline"
    elif bench "llama_350m/relora-$2" 150 --config configs/llama_350m.yaml --set train.device=cuda \
      --set model.seq_len=512 --set "$3" --steps 10 --warmup 2 --phase relora; then
      targets+=("llama_350m: $3, ReLoRA/full step time $(ratio_of "$(field "$last" step_ms)" \
"$(field "$full_line" step_ms)") (no target here; the default's is in (2))")
    fi
  fi
}
variant_350m 5 fast16bf-products train.matmul=bf16 relora
variant_350m 6 tf32-products train.matmul=tf32
variant_350m 7 bf16-activations train.activation_dtype=bf16

# ---- summary ------------------------------------------------------------------------------
step "summary"
echo "tests: $tests_summary"
printf '%-34s %-7s %12s %9s %9s %7s %10s %10s\n' run phase tokens/s step_ms gflops mfu tensor_GiB held_GiB
while read -r line; do
  label="$(field "$line" label)"
  awk -v r="$label" -v p="$(field "$line" phase)" -v t="$(field "$line" tokens_per_s)" \
    -v s="$(field "$line" step_ms)" -v g="$(field "$line" achieved_gflops)" -v m="$(field "$line" mfu)" \
    -v b="$(field "$line" peak_mem_bytes)" -v h="$(field "$line" device_reserved_bytes)" \
    'BEGIN {printf "%-34s %-7s %12.0f %9.1f %9.0f %7.3f %10.2f %10.2f\n", r, p, t, s, g, m, b / 1073741824, h / 1073741824}'
done <"$jsonl"
if [ -n "${peak_line:-}" ]; then
  echo "products: peak (bf16 8192^3) $(field "$peak_line" peak_gflops) GFLOP/s, training gemm on fp32 tensors (bf16 copies included) $(field "$peak_line" train_product_gflops) GFLOP/s"
  echo "device: $(field "$peak_line" device)"
fi
for line in ${targets[@]+"${targets[@]}"}; do echo "target: $line"; done
echo "GPU run: $resume_summary"
echo "$(nvidia-smi -L | head -1); JSON lines: $jsonl; log: $log; $((SECONDS - started)) s in all"
for line in ${targets[@]+"${targets[@]}"}; do
  case "$line" in *MISSED*) problem "target missed: $line" ;; esac
done
if [ "${#problems[@]}" -gt 0 ]; then
  printf '\n%d problem(s):\n' "${#problems[@]}"
  printf '  - %s\n' "${problems[@]}"
  fail "see the problems above"
fi
echo "gpu_check: all passed"
