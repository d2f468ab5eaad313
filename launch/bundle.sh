#!/usr/bin/env bash
# Builds relora for one GPU architecture on any machine with the CUDA toolkit (no GPU needed)
# and packs what a GPU machine needs to run it into one compressed tarball: bin/relora,
# bin/relora_tests (and bin/librelora_mpi.so when built), configs/, the test fixtures
# (tests/reference/fixtures/), launch/gpu_check.sh, MANIFEST.txt and lib/ with the shared
# libraries the executables need, except glibc, the NVIDIA driver, CUDA's own libraries
# (cuBLAS, cudart, NCCL) and MPI's (the MPI plugin is only loaded under mpirun).
#   usage: launch/bundle.sh --arch ARCH [--out FILE] [--build-dir DIR] [--no-cuda]
#     --arch ARCH      CUDA architecture, e.g. 90 (H100/H200), 80 (A100); required
#     --out FILE       the tarball, ending .tar.xz or .tar.zst (default: relora-bundle-smARCH.tar.xz,
#                      or .tar.zst when zstd packs smaller than xz -9)
#     --build-dir DIR  build directory (default: build-bundle-ARCH), Release, RELORA_NATIVE=OFF
#     --no-cuda        build without the CUDA backend (RELORA_CUDA=OFF): only to test the
#                      packing where the CUDA build fails; such a bundle cannot use a GPU
# On the GPU machine: tar -xf the tarball, then bash DIR/launch/gpu_check.sh, or
# launch/gpu_check.sh --bundle FILE from a checkout.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

usage() { awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; }  # the header
die_usage() { echo "bundle.sh: $*" >&2; exit 2; }
die() { echo "bundle.sh: $*" >&2; exit 1; }

arch=""
out=""
build_dir=""
cuda=ON
while [ $# -gt 0 ]; do
  case "$1" in
    --arch|--out|--build-dir)
      [ $# -ge 2 ] && [ -n "$2" ] || die_usage "$1 needs a value (see --help)"
      case "$1" in
        --arch) arch="$2" ;;
        --out) out="$2" ;;
        --build-dir) build_dir="$2" ;;
      esac
      shift 2 ;;
    --no-cuda) cuda=OFF; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die_usage "unknown argument '$1' (see --help)" ;;
  esac
done
[ -n "$arch" ] || die_usage "--arch is required, e.g. --arch 90 for H100/H200 (see --help)"
[[ "$arch" =~ ^[0-9]{2,3}[af]?$ ]] || die_usage "--arch '$arch': expected a CUDA architecture number such as 80, 90 or 90a"
build_dir="${build_dir:-build-bundle-$arch}"
case "$out" in
  "") formats="xz zst"; base="$root/relora-bundle-sm$arch" ;;
  *.tar.xz) formats="xz"; base="${out%.tar.xz}" ;;
  *.tar.zst) formats="zst"; base="${out%.tar.zst}" ;;
  *) die_usage "--out '$out': the name must end in .tar.xz or .tar.zst" ;;
esac
case "$base" in /*) ;; *) base="$root/$base" ;; esac
[ -d "$(dirname "$base")" ] || die_usage "--out '$out': directory $(dirname "$base") does not exist"
for tool in cmake ldd objdump strings tar xz; do
  command -v "$tool" >/dev/null || die "needs '$tool' on PATH"
done
command -v zstd >/dev/null || formats="${formats/zst/}"
[ -n "${formats// /}" ] || die "--out '$out' asks for zstd, which is not on PATH"

# ---- build --------------------------------------------------------------------------------
if [ "$cuda" = ON ] && ! command -v nvcc >/dev/null; then
  if [ -x /usr/local/cuda/bin/nvcc ]; then export PATH="/usr/local/cuda/bin:$PATH"
  else die "nvcc not found (not on PATH, not in /usr/local/cuda/bin): install the CUDA toolkit, or --no-cuda to test the packing"
  fi
fi
echo "== build: $build_dir (Release, RELORA_CUDA=$cuda, RELORA_CUDA_ARCHS=$arch, RELORA_NATIVE=OFF)"
cmake -S "$root" -B "$build_dir" -DCMAKE_BUILD_TYPE=Release -DRELORA_CUDA="$cuda" \
  -DRELORA_CUDA_ARCHS="$arch" -DRELORA_NATIVE=OFF >"$build_dir.configure.log" 2>&1 ||
  { tail -20 "$build_dir.configure.log" >&2; die "cmake configure failed (log: $build_dir.configure.log)"; }
if [ "$cuda" = ON ] && grep -q "WITHOUT NCCL" "$build_dir.configure.log"; then
  die "nccl.h was not found, so the bundle's GPU runs would be single-rank: install NCCL's headers or set NCCL_HOME"
fi
rm -f "$build_dir.configure.log"
cmake --build "$build_dir" -j "$(nproc)" --target relora relora_tests || die "build failed in $build_dir"  # (and the MPI plugin)
for exe in relora relora_tests; do
  [ -x "$build_dir/$exe" ] || die "the build made no $build_dir/$exe"
done
plugin="$(find "$build_dir" -maxdepth 2 -name 'librelora_mpi.so' -type f | head -1)"
if [ "$cuda" = ON ] && ! objdump -p "$build_dir/relora" | grep 'NEEDED *libcublas' >/dev/null; then
  die "$build_dir/relora does not link cuBLAS: the CUDA backend was not built"
fi

# ---- stage --------------------------------------------------------------------------------
name="$(basename "$base")"
stage_root="$(mktemp -d)"
trap 'rm -rf "$stage_root"' EXIT
stage="$stage_root/$name"
mkdir -p "$stage/bin" "$stage/lib" "$stage/launch" "$stage/tests/reference"
cp "$build_dir/relora" "$build_dir/relora_tests" "$stage/bin/"
[ -z "$plugin" ] || cp "$plugin" "$stage/bin/"
cp -r configs "$stage/configs"
# The tests read configs/*.yaml and tests/reference/fixtures/llama_small.{txt,bin} under
# $RELORA_SOURCE_DIR (environment; gpu_check.sh sets it), else the compiled-in source dir.
cp -r tests/reference/fixtures "$stage/tests/reference/fixtures"
cp launch/gpu_check.sh "$stage/launch/"

# Libraries: for each executable (and the plugin), its direct needs except MPI's, each with
# the whole tree ldd shows for it; minus glibc, the driver, CUDA's own libraries, the vDSO.
skip_re='^(linux-vdso|linux-gate|ld-linux|libc\.so|libm\.so|libmvec\.so|libpthread\.so|libdl\.so|librt\.so|libresolv\.so|libutil\.so|libanl\.so|libcuda\.so|libnvidia-|libcublas|libcudart|libnccl)'
mpi_re='^(libmpi|libopen-rte|libopen-pal|libpmix|libprrte)'
declare -A libs=()    # soname -> path
ldd_map() {  # FILE: "soname path" per resolved line; fails on "not found"
  local line
  ldd "$1" | while read -r line; do
    case "$line" in
      *"=> not found"*) echo "NOTFOUND ${line%% *}" ;;
      *" => /"*) set -- $line; echo "$1 $3" ;;
    esac
  done
}
for bin in "$stage"/bin/*; do
  mapfile -t needed < <(objdump -p "$bin" | awk '$1 == "NEEDED" {print $2}')
  declare -A where=()
  while read -r so path; do where[$so]="$path"; done < <(ldd_map "$bin")
  [ -z "${where[NOTFOUND]:-}" ] || die "ldd $bin: ${where[NOTFOUND]} not found on this machine"
  for so in "${needed[@]}"; do
    [[ "$so" =~ $skip_re || "$so" =~ $mpi_re ]] && continue
    path="${where[$so]:-}"
    [ -n "$path" ] || die "ldd $bin does not resolve $so"
    libs[$so]="$path"
    while read -r dep deppath; do
      [ "$dep" != NOTFOUND ] || die "ldd $path: $deppath not found"
      [[ "$dep" =~ $skip_re ]] || libs[$dep]="$deppath"
    done < <(ldd_map "$path")
  done
  unset where
done
for so in "${!libs[@]}"; do
  [[ "$so" =~ $mpi_re ]] && die "$so (MPI) is needed by a non-MPI library (${libs[$so]}): the bundle would need MPI"
  cp -L "${libs[$so]}" "$stage/lib/$so"
done
blas="${libs[libopenblas.so.0]:-}"
[ -n "$blas" ] || die "relora does not link libopenblas.so.0: unexpected, check the build"
[[ "$blas" == *openblas-openmp* ]] || die "libopenblas.so.0 resolves to $blas, not the OpenMP build (openblas-openmp)"
objdump -p "$stage/lib/libopenblas.so.0" | grep 'NEEDED *libgomp' >/dev/null || die "$blas does not link libgomp: not the OpenMP OpenBLAS"

# Direct MPI links: the executables should reach MPI through the plugin only.
mpi_direct=""
for bin in "$stage/bin/relora" "$stage/bin/relora_tests"; do
  if objdump -p "$bin" | awk '$1 == "NEEDED" {print $2}' | grep -Eq "$mpi_re"; then
    mpi_direct+=" $(basename "$bin")"
  fi
done

# ---- manifest -----------------------------------------------------------------------------
glibc_need="$(objdump -T "$stage"/bin/* "$stage"/lib/* 2>/dev/null | grep -o 'GLIBC_[0-9.]*[0-9]' | sort -Vu | tail -1)"
commit="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
[ -z "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] || commit+=" + uncommitted changes"
[ -z "$(git status --porcelain 2>/dev/null | grep '^??' | grep -v ' build-\| relora-bundle-')" ] || commit+=" + untracked files"
if [ "$cuda" = ON ]; then nvcc_version="$(nvcc --version | tail -2 | tr '\n' ' ')"; else nvcc_version="(not used: --no-cuda)"; fi
# The oldest driver the statically linked CUDA runtime starts on (CUDA's minor version
# compatibility: any driver of its major release), and the cuBLAS soname it links.
cuda_major="$(nvcc --version 2>/dev/null | sed -n 's/.*release \([0-9]*\)\..*/\1/p')"
case "$cuda_major" in 11) driver_need=450 ;; 12) driver_need=525 ;; 13) driver_need=580 ;; *) driver_need="" ;; esac
cublas_soname="$(objdump -p "$build_dir/relora" | awk '$1 == "NEEDED" && $2 ~ /^libcublas\.so/ {print $2}')"
if strings "$stage/bin/relora_tests" | grep -x RELORA_SOURCE_DIR >/dev/null; then src_override=yes; else src_override=no; fi
lib_list="$(cd "$stage/lib" && for f in $(ls | sort); do printf '  %-34s %8s  %s\n' "$f" "$(du -k "$f" | cut -f1)K" "${libs[$f]}"; done)"
{
  echo "relora bundle $name"
  echo "commit:       $commit"
  echo "date:         $(date -u '+%Y-%m-%dT%H:%M:%SZ')"
  echo "build host:   $(uname -a)"
  echo "build glibc:  $(getconf GNU_LIBC_VERSION 2>/dev/null || ldd --version | head -1)"
  echo "compiler:     $(c++ --version | head -1)"
  echo "nvcc:         $nvcc_version"
  echo "arch:         $arch"
  echo "cuda backend: $cuda"
  echo "cmake:        -DCMAKE_BUILD_TYPE=Release -DRELORA_CUDA=$cuda -DRELORA_CUDA_ARCHS=$arch -DRELORA_NATIVE=OFF"
  echo "needs glibc:  >= ${glibc_need#GLIBC_} (highest GLIBC_ symbol version of bin/ and lib/)"
  if [ "$cuda" = ON ]; then
    echo "needs driver: >= ${driver_need:-?} (the CUDA $cuda_major runtime, linked statically)"
    echo "needs:        $cublas_soname and ${cublas_soname/libcublas/libcublasLt} (CUDA $cuda_major) on"
    echo "              LD_LIBRARY_PATH; libnccl.so.2 for multi-GPU runs only"
  fi
  echo "MPI plugin:   $([ -n "$plugin" ] && echo "bin/$(basename "$plugin") (needs libmpi, not bundled)" || echo "not built")"
  [ -z "$mpi_direct" ] || echo "WARNING:      links libmpi directly:$mpi_direct -- will not start without MPI"
  echo "tests honor RELORA_SOURCE_DIR from the environment: $src_override"
  echo "run:          LD_LIBRARY_PATH=\$PWD/lib:\$LD_LIBRARY_PATH bin/relora ...  or  bash launch/gpu_check.sh"
  echo "bin:"
  (cd "$stage" && sha256sum bin/* | sed 's/^/  /')
  echo "lib ($(ls "$stage/lib" | wc -l) files, dereferenced copies named by SONAME; source path):"
  echo "$lib_list"
} >"$stage/MANIFEST.txt"

# ---- pack ---------------------------------------------------------------------------------
echo "== pack: $(du -sh "$stage" | cut -f1) staged; compressing ($formats)"
tar -C "$stage_root" --owner=0 --group=0 --numeric-owner -cf "$stage_root/bundle.tar" "$name"
best=""
for f in $formats; do
  case "$f" in
    xz) xz -9 -T0 -c "$stage_root/bundle.tar" >"$stage_root/bundle.tar.xz" ;;
    zst) zstd -q -19 --long=27 -T0 -c "$stage_root/bundle.tar" >"$stage_root/bundle.tar.zst" ;;
  esac
  size=$(stat -c %s "$stage_root/bundle.tar.$f")
  echo "   $f: $size bytes"
  if [ -z "$best" ] || [ "$size" -lt "$(stat -c %s "$stage_root/bundle.tar.$best")" ]; then best="$f"; fi
done
final="$base.tar.$best"
mv "$stage_root/bundle.tar.$best" "$final"
size=$(stat -c %s "$final")

echo
echo "bundle:   $final"
echo "size:     $size bytes ($(awk -v s="$size" 'BEGIN {printf "%.1f", s / 1048576}') MiB)"
echo "binaries: $(cd "$stage" && ls bin | tr '\n' ' ')"
echo "glibc:    needs >= ${glibc_need#GLIBC_}"
echo "libs ($(ls "$stage/lib" | wc -l)):"
echo "$lib_list"
[ -z "$mpi_direct" ] || echo "WARNING: links libmpi directly:$mpi_direct -- it will not start on a machine without MPI" >&2
[ "$src_override" = yes ] || echo "note: relora_tests reads configs/fixtures from the compiled-in RELORA_SOURCE_DIR ($root), not from the environment" >&2
if [ "$size" -ge $((60 * 1000 * 1000)) ]; then
  die "the bundle is $size bytes, over the 60 MB limit"
fi
