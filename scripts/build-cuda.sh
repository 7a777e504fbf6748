#!/usr/bin/env bash
# Builds codesearchd with candle's CUDA back end on a machine with no GPU and no
# system CUDA: the compiler and headers come from NVIDIA's PyPI wheels, installed into
# a folder this script owns.
#
#   scripts/build-cuda.sh                  # target/release/codesearchd (+ a stripped copy)
#   CODESEARCH_CUDA_DIR=/opt/cs-cuda scripts/build-cuda.sh
#   CUDA_COMPUTE_CAP=89 scripts/build-cuda.sh            # another GPU generation
#   scripts/build-cuda.sh --toolkit-only   # install the toolkit, print its env, build nothing
#
# What it does:
# 1. `pip download`s nvidia-cuda-nvcc, nvidia-nvvm (nvcc's cicc), nvidia-cuda-crt,
#    nvidia-cuda-runtime and nvidia-cuda-cccl of one CUDA version (13.0 by default:
#    the newest that driver 580 runs) and unpacks them into $CODESEARCH_CUDA_DIR
#    (default .cuda/ in the repository, git-ignored).
# 2. Writes link stubs for the libraries candle links by name (libcuda.so.1,
#    libcublas.so.13, libcublasLt.so.13, libcurand.so.10, libnvrtc.so.13): candle 0.11
#    builds cudarc with `dynamic-linking`, so the linker wants them, but only their
#    sonames end up in the binary. Each stub defines every function cudarc declares
#    for that library (read from cudarc's source in the cargo registry) and nothing
#    else; the real libraries are found at run time through the loader's usual path
#    (the driver's libcuda, cuBLAS/cuRAND/NVRTC from the CUDA toolkit or PyTorch's
#    nvidia-* wheels, see docs/INSTALL.md).
# 3. `cargo build --release -p codesearchd --features cuda` with nvcc on the PATH,
#    CUDA_HOME pointing at the unpacked toolkit and CUDA_COMPUTE_CAP (default 90, H100).
#
# Idempotent: a complete toolkit is reused. Needs python3 with pip, a C/C++ compiler
# (gcc/g++ ≤ 15 as nvcc's host compiler) and cargo; reaches PyPI once.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
dir="${CODESEARCH_CUDA_DIR:-$repo/.cuda}"
cuda_version="${CODESEARCH_CUDA_VERSION:-13.0}"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
toolkit_only=false
[[ "${1:-}" == "--toolkit-only" ]] && toolkit_only=true

# Wheel versions of one CUDA release (PyPI versions are per component).
case "$cuda_version" in
  13.0) wheels=(nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-crt==13.0.88
                nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85)
        # Sonames of the libraries candle links (CUDA 13.x).
        sonames=(cuda:libcuda.so.1 cublas:libcublas.so.13 cublasLt:libcublasLt.so.13
                 curand:libcurand.so.10 nvrtc:libnvrtc.so.13) ;;
  *) echo "build-cuda.sh: CODESEARCH_CUDA_VERSION=$cuda_version is not one this script knows (13.0)" >&2
     exit 1 ;;
esac

die() { echo "build-cuda.sh: error: $*" >&2; exit 1; }
command -v python3 >/dev/null || die "python3 is needed (pip downloads the CUDA wheels)"
command -v cc >/dev/null || die "a C compiler (cc) is needed for the link stubs"

home="$dir/cuda-$cuda_version"   # CUDA_HOME: bin/ include/ lib/ nvvm/
stamp="$home/.complete"
want="${wheels[*]}"

if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  echo "== CUDA $cuda_version toolkit from PyPI into $home"
  rm -rf "$home" "$dir/wheels" "$dir/unpack"
  mkdir -p "$dir/wheels" "$dir/unpack"
  python3 -m pip download --quiet --no-deps --only-binary=:all: \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 \
    --python-version 3.11 --implementation cp \
    -d "$dir/wheels" "${wheels[@]}"
  for w in "$dir"/wheels/*.whl; do python3 -m zipfile -e "$w" "$dir/unpack"; done
  # The CUDA 13 wheels share one prefix, nvidia/cu13: the usual toolkit layout.
  mv "$dir/unpack/nvidia/cu13" "$home"
  rm -rf "$dir/unpack" "$dir/wheels"
  # zip archives drop the executable bits.
  chmod +x "$home"/bin/* "$home"/nvvm/bin/*
fi

# Link stubs (see above) and the unversioned name the linker looks for.
stubs="$home/lib/stubs"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  cudarc="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-"$(
    sed -n '/^name = "cudarc"$/{n;s/^version = "\(.*\)"$/\1/p}' "$repo/Cargo.lock")" 2>/dev/null | head -1 || true)"
  if [[ -z "$cudarc" ]]; then
    (cd "$repo" && cargo fetch --locked >/dev/null)
    cudarc="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-"$(
      sed -n '/^name = "cudarc"$/{n;s/^version = "\(.*\)"$/\1/p}' "$repo/Cargo.lock")" | head -1)"
  fi
  [[ -d "$cudarc/src" ]] || die "cannot find cudarc's source in the cargo registry"
  mkdir -p "$stubs"
  for pair in "${sonames[@]}"; do
    lib="${pair%%:*}" soname="${pair#*:}"
    case "$lib" in cuda) src=driver ;; cublasLt) src=cublaslt ;; *) src="$lib" ;; esac
    c="$stubs/$lib.c"
    echo "/* Link stub for $soname: every function cudarc declares, no bodies that matter. */" > "$c"
    sed -n 's/^pub unsafe fn \([A-Za-z0-9_]*\)(.*/void \1(void) {}/p' "$cudarc/src/$src/sys/mod.rs" | sort -u >> "$c"
    cc -shared -fPIC -Wl,-soname,"$soname" -o "$stubs/lib$lib.so" "$c"
    rm -f "$c"
  done
  ln -sf libcudart.so.13 "$home/lib/libcudart.so"
  echo "$want" > "$stamp"
fi

export CUDA_HOME="$home"
export PATH="$home/bin:$PATH"
export NVCC="$home/bin/nvcc"
export CUDARC_CUDA_VERSION="${cuda_version/./0}0"   # 13.0 -> 13000
nvcc --version | tail -2

if $toolkit_only; then
  echo "export CUDA_HOME='$CUDA_HOME' PATH='$home/bin':\"\$PATH\" NVCC='$NVCC' CUDARC_CUDA_VERSION=$CUDARC_CUDA_VERSION CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP"
  exit 0
fi

echo "== cargo build --release -p codesearchd --features cuda (CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP)"
cd "$repo"
cargo build --release --locked -p codesearchd --features cuda
strip -o target/release/codesearchd-cuda target/release/codesearchd
ls -l target/release/codesearchd target/release/codesearchd-cuda
echo "built target/release/codesearchd (and the stripped copy codesearchd-cuda)"
echo "run it with the CUDA libraries on the loader's path, e.g.:"
echo "  LD_LIBRARY_PATH=\$(python3 -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], \"cu13\", \"lib\"))') target/release/codesearchd-cuda bench-embed --device cuda"
